"""The pipeline's own mechanics: chunking, reading ahead, whole-batch writes, and chunks scored
at once on the flow's task runner (threads, or a Dask cluster of two workers) against a sandbox
CRM."""

from __future__ import annotations

import math
import os
import threading

import pandas as pd
import pytest

from connectors import connector_for
from expectations.suite import REASON_COLUMN, LeadContract
from flows.jobs import sync_leads
from flows.pipeline import Pending, chunks_of, read_ahead, score_chunk
from flows.report import RunReport, Span
from flows.settings import task_runner
from sandbox.seed import LeadMix, generate_leads
from scoring import load_rules

CHUNKS = 6  # HubSpot search pages of 200 contacts, one chunk each
WRITTEN = ["status", "score", "reason", "qualified_at"]


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


@pytest.fixture
def hubspot(start_sandbox, tmp_path, monkeypatch, prefect_api):
    """`hubspot(name)` starts a sandbox of CHUNKS search pages of contacts (the same ones each
    time) and points the connectors and the ledger at it; chunks hold one page each."""
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    monkeypatch.setenv("LEADSYNC_CHUNK_LEADS", "200")
    as_of = pd.Timestamp.now(tz="UTC").floor("s")

    def start(name: str) -> pd.Timestamp:
        sandbox = start_sandbox(leads=200 * CHUNKS, seed=17, seeded_at=as_of)
        sandbox.write_info(tmp_path / f"{name}.json")
        monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / f"{name}.json"))
        monkeypatch.setenv("LEADSYNC_LEDGER_URL", f"sqlite:///{tmp_path / name}.sqlite3")
        return as_of

    return start


def synced(flow, as_of: pd.Timestamp) -> RunReport:
    state = flow(source="hubspot", as_of=as_of, return_state=True)
    assert state.is_completed(), state.message
    return state.result()


def spans(report: RunReport, stage: str) -> list[Span]:
    return [span for span in report.timeline if span.stage == stage]


def hubspot_state() -> pd.DataFrame:
    return pd.concat(connector_for("hubspot").read_all()).set_index("crm_id").sort_index()


def test_a_chunks_scoring_starts_before_the_previous_ones_ends_and_results_stay_in_order(
    hubspot,
):
    report = synced(sync_leads, hubspot("threads"))
    scoring = spans(report, "score")
    assert [span.chunk for span in scoring] == [f"hubspot-{n}" for n in range(1, CHUNKS + 1)]
    assert any(later.start < earlier.end for earlier, later in zip(scoring, scoring[1:]))
    assert {span.worker.split()[1] for span in scoring} == {str(os.getpid())}  # threads
    assert set(report.worker_seconds) == {span.worker for span in scoring}
    assert len(spans(report, "read")) == CHUNKS
    assert report.written == report.changed > 1_000
    assert report.usage.writes == math.ceil(report.changed / 100)  # whole batches still


def test_on_a_dask_cluster_of_two_workers_both_score_chunks_and_write_what_threads_write(
    hubspot, monkeypatch
):
    synced(sync_leads, hubspot("threads"))
    on_threads = hubspot_state()[WRITTEN]

    as_of = hubspot("dask")
    monkeypatch.setenv("LEADSYNC_TASK_RUNNER", "dask")
    monkeypatch.setenv("LEADSYNC_DASK_WORKERS", "2")
    report = synced(sync_leads.with_options(task_runner=task_runner()), as_of)
    scoring = spans(report, "score")
    workers = {span.worker for span in scoring}
    assert len(workers) == 2 and all(worker.startswith("dask worker") for worker in workers)
    assert any(  # both at once
        later.start < earlier.end and later.worker != earlier.worker
        for earlier, later in zip(scoring, scoring[1:])
    )
    assert set(report.worker_seconds) == workers and min(report.worker_seconds.values()) > 0
    pd.testing.assert_frame_equal(hubspot_state()[WRITTEN], on_threads)


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
