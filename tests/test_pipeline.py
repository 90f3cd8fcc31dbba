"""The pipeline's own mechanics, without a CRM: chunking, reading ahead, whole-batch writes."""

from __future__ import annotations

import threading

import pandas as pd
import pytest

from expectations.suite import REASON_COLUMN, LeadContract
from flows.pipeline import Pending, chunks_of, read_ahead, score_chunk
from flows.report import RunReport
from sandbox.seed import LeadMix, generate_leads
from scoring import load_rules


def pending(ids: list[str], read_at: float = 100.0) -> Pending:
    updates = pd.DataFrame({"crm_id": ids, "score": [float(len(i)) for i in ids]})
    changes = pd.DataFrame({"crm_id": ids, "field": "score", "old": None, "new": updates["score"]})
    return Pending(updates, updates[["crm_id"]].assign(modified_at=1, read_at=read_at), changes)


def test_pending_writes_combine_keeping_a_leads_later_plan_and_split_in_order():
    combined = pending(["a", "b", "c"], read_at=50.0) + pending(["b", "d"], read_at=70.0)
    assert combined.updates["crm_id"].tolist() == ["a", "c", "b", "d"]
    assert combined.changes["crm_id"].tolist() == ["a", "c", "b", "d"]
    assert combined.read_at == 50.0  # the oldest read decides whether to recheck

    now, later = combined.split(3)
    assert now.updates["crm_id"].tolist() == ["a", "c", "b"]
    assert later.updates["crm_id"].tolist() == ["d"]
    assert later.read["crm_id"].tolist() == ["d"] and later.changes["crm_id"].tolist() == ["d"]
    assert later.read_at == 70.0  # what waits for the next chunk keeps its own read time


def test_unaddressable_rows_are_quarantined_and_nothing_is_planned_for_them():
    now = pd.Timestamp("2026-11-24T10:15:00Z")
    rules = load_rules()
    chunk = generate_leads(6, seed=3, now=now, mix=LeadMix(bad=0.0)).astype({"employees": object})
    chunk.loc[0, "crm_id"] = None
    chunk.loc[1, "employees"] = "fifty"
    ordinary = {"title": "VP of Sales", "company": "Acme", "email": "ana@acme.com"}
    chunk.loc[3, [*ordinary, "crm_status", "status_locked"]] = [*ordinary.values(), None, False]
    chunk.loc[3, "employees"] = -40
    chunk.loc[4, ["crm_status", "status", "employees"]] = ["Working - Contacted", "Nurture", -5]
    result = score_chunk.fn(chunk, rules, LeadContract(rules.data_quality, now), now, "test")
    assert result.validation.quarantined[REASON_COLUMN].tolist() == [
        "missing CRM id",
        "employees 'fifty' is not a number",
    ]
    planned = result.plan.updates.set_index("crm_id")
    assert planned.index.tolist() == chunk["crm_id"][2:].tolist()  # every lead is new
    assert planned.loc[chunk.at[3, "crm_id"], "status"] == "Needs review"
    report = RunReport()
    report.add_validation(result.validation, result.scored["status"])
    assert (report.valid, report.sent_to_review, report.quarantined) == (2, 2, 2)
    assert [row["outcome"] for row in report.quarantine] == [
        "Needs review in the CRM",
        "fix reason in the CRM, status Nurture",  # a person owns the status
        "quarantined, not written",
        "quarantined, not written",
    ]


def test_pages_combine_into_chunks_by_size_and_every_lead_arrives_once():
    pages = [pd.DataFrame({"crm_id": [f"{p}-{i}" for i in range(200)]}) for p in range(7)]
    waits: list[float] = []
    chunks = list(chunks_of(iter(pages), 500, 60.0, waits.append))
    assert [len(chunk) for chunk, _ in chunks] == [600, 600, 200]
    assert pd.concat([chunk for chunk, _ in chunks])["crm_id"].is_unique
    assert len(waits) == 8  # one per page, and the last, empty-handed


def test_read_ahead_keeps_order_and_raises_the_readers_error_here():
    def pages():
        yield from range(5)
        raise ConnectionError("CRM went away")

    seen = []
    with pytest.raises(ConnectionError, match="went away"):
        for item in read_ahead(pages(), depth=2):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]
    assert not [t for t in threading.enumerate() if t.name == "crm-read"]


def test_rollback_restores_first_old_values_and_leaves_changed_or_gone_leads():
    from flows.rollback import restorable

    written = pd.DataFrame(
        {
            "id": [1, 2, 3, 4, 5, 6],
            "crm_id": ["a", "a", "a", "b", "gone", "c"],
            "field": ["score", "score", "status", "score", "score", "score"],
            "old": ["10", "20", None, "5", "1", "3"],
            "new": ["20", "30", "Qualified", "6", "2", "4"],
        }
    )
    current = pd.DataFrame(
        {"score": [30.0, 7.0, 4.0], "status": ["Qualified", None, "Nurture"]},
        index=pd.Index(["a", "b", "c"]),
    )
    page = restorable(written, current)
    assert sorted(page.changed) == ["b", "gone"]  # b's score moved on since; gone is not in the CRM
    restored = page.restore.set_index("crm_id")
    assert restored["score"].to_dict() == {"a": 10.0, "c": 3.0}  # a's first old value
    assert pd.isna(restored.loc["a", "status"])  # it had none before the run
    assert restored.loc["c", "status"] == "Nurture"  # not written by the run: left as it is
    assert set(page.undo["crm_id"]) == {"a", "c"} and page.already == []

    current.loc["a", ["score", "status"]] = [10.0, None]  # an earlier attempt restored a
    again = restorable(written, current)
    assert again.already == ["a"] and "a" not in again.changed
    assert again.restore["crm_id"].tolist() == ["c"]


def test_a_batch_hook_that_withdraws_permission_stops_the_writing_and_reports_the_rest():
    from connectors.base import WriteInterrupted, WritingStopped, write_in_batches

    sent, seen = [], []

    def send(batch: pd.DataFrame) -> list[str | None]:
        sent.append(batch["crm_id"].tolist())
        return [None] * len(batch)

    def on_batch(report: pd.DataFrame) -> None:
        seen.append(report["crm_id"].tolist())
        raise WritingStopped("the write lease lapsed")

    updates = pd.DataFrame({"crm_id": [str(n) for n in range(5)]})
    with pytest.raises(WriteInterrupted) as stopped:
        write_in_batches(updates, 2, send, (), on_batch=on_batch)
    assert sent == [["0", "1"]] == seen  # nothing more went out after the first batch
    report = stopped.value.report
    assert report["success"].tolist() == [True, True, False, False, False]
    assert report["error"].iloc[2].startswith("not written: the write lease lapsed")
