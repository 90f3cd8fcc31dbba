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
    ledger.record_writes("run-1", "hubspot", changes)
    ledger.record_writes("run-2", "hubspot", changes.iloc[:1])
    written = ledger.writes_of_run("run-1")
    assert written[["crm_id", "field", "old", "new"]].fillna("-").values.tolist() == [
        ["a", "score", "-", "71"],
        ["a", "qualified_at", "-", "2026-11-02T08:30:00+00:00"],
        ["b", "status", "Open", "Qualified"],
    ]
    assert written["id"].is_monotonic_increasing and set(written["run_id"]) == {"run-1"}


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
