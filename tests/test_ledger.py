"""The audit ledger behaves the same on SQLite (the default) and PostgreSQL (a team's)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from flows.ledger import Ledger


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path) -> Ledger:
    if request.param == "sqlite":
        return Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    cluster = request.getfixturevalue("postgres_cluster")
    name = f"ledger_{uuid.uuid4().hex[:8]}"
    cluster.create_database(name)
    return Ledger(cluster.url(name))


def test_writes_round_trip_as_text_in_order(ledger):
    stamp = pd.Timestamp("2026-11-02 09:30", tz="Europe/Paris")
    changes = pd.DataFrame(
        {
            "crm_id": ["a", "a", "b"],
            "field": ["score", "qualified_at", "status"],
            "old": [None, None, "Open"],
            "new": [71.0, stamp, "Qualified"],
        }
    )
    for run, written in (("run-1", changes), ("run-2", changes.iloc[:1])):
        ledger.audit.intend(run, "hubspot", written)
        ledger.audit.confirm(run, "hubspot", written["crm_id"], [])
    written = ledger.audit.writes_of_run("run-1")
    assert written[["crm_id", "field", "old", "new"]].fillna("-").values.tolist() == [
        ["a", "score", "-", "71"],
        ["a", "qualified_at", "-", "2026-11-02T08:30:00+00:00"],
        ["b", "status", "Open", "Qualified"],
    ]
    assert written["id"].is_monotonic_increasing and set(written["run_id"]) == {"run-1"}
    first_lead = ledger.audit.writes_of_run("run-1", leads=1)
    assert set(first_lead["crm_id"]) == {"a"} and len(first_lead) == 2  # a page of whole leads
    assert ledger.audit.writes_of_run("run-1", after="a")["crm_id"].tolist() == ["b"]


def test_watermarks_keep_their_instant_and_are_replaced(ledger):
    assert ledger.watermark("salesforce") is None
    first = datetime(2026, 11, 24, 8, 0, tzinfo=UTC)
    ledger.set_watermark("salesforce", first, "run-1")
    ledger.set_watermark("salesforce", first + timedelta(minutes=15), "run-2")
    assert ledger.watermark("salesforce") == first + timedelta(minutes=15)
    assert ledger.watermark("salesforce").utcoffset() == timedelta(0)
    assert ledger.watermark("hubspot") is None
    ledger.reset_watermark("salesforce")
    assert ledger.watermark("salesforce") is None


def test_owed_records_are_kept_per_source_until_settled(ledger):
    reasons = pd.DataFrame({"crm_id": ["1", "2"], "reason": ["UNABLE_TO_LOCK_ROW", "x" * 2000]})
    ledger.owe("hubspot", reasons, "run-1")
    ledger.owe("hubspot", reasons.iloc[:1], "run-2")  # owed again: one row, not two
    assert sorted(ledger.owed("hubspot")) == ["1", "2"] and ledger.owed("salesforce") == []
    ledger.settle("hubspot", ["1"])
    assert ledger.owed("hubspot") == ["2"]


def test_owed_records_settle_in_one_call_beyond_sqlites_parameter_limit(ledger):
    ids = [f"00Q{number:012d}" for number in range(40_000)]
    ledger.owe("salesforce", pd.DataFrame({"crm_id": ids, "reason": "x"}), "run-1")
    assert len(ledger.owed("salesforce")) == 40_000
    ledger.settle("salesforce", ids)
    assert ledger.owed("salesforce") == []


def test_a_backfills_progress_is_kept_under_its_key_until_cleared(ledger):
    from flows.ledger import Progress

    until = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    assert ledger.progress("backfill:hubspot:-:-:7d") is None
    ledger.save_progress("backfill:hubspot:-:-:7d", Progress(until=until, position="42"), "r")
    assert ledger.progress("backfill:hubspot:-:-:7d") == Progress(until, None, "42")
    ledger.clear_progress("backfill:hubspot:-:-:7d")
    assert ledger.progress("backfill:hubspot:-:-:7d") is None
