"""The write-ahead audit log: intents before the call, outcomes as batches return, and open
intents of a stopped run reconciled with what the CRM holds."""

from __future__ import annotations

import pandas as pd
import pytest

from flows.audit import holds_intended
from flows.ledger import Ledger


@pytest.fixture
def ledger(tmp_path) -> Ledger:
    return Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite3'}")


def changes(*leads: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "crm_id": [lead for lead in leads for _ in range(2)],
            "field": ["score", "status"] * len(leads),
            "old": [None, "Nurture"] * len(leads),
            "new": [80.0, "Qualified"] * len(leads),
        }
    )


def test_an_intent_is_no_write_until_its_batch_confirms_it(ledger):
    audit = ledger.audit
    audit.intend("run-1", "hubspot", changes("1", "2", "3"))
    assert audit.writes_of_run("run-1").empty  # intended, not written
    assert audit.open_leads("hubspot", 10) == ["1", "2", "3"]

    audit.confirm("run-1", "hubspot", written=["1"], not_written=["2"])
    written = audit.writes_of_run("run-1")
    assert written["crm_id"].tolist() == ["1", "1"] and set(written["state"]) == {"written"}
    assert audit.open_leads("hubspot", 10) == ["3"]  # 2 was refused: its intent is gone
    assert audit.count_open("hubspot") == 2 and audit.count_open("salesforce") == 0


def test_a_later_runs_confirmation_leaves_an_earlier_runs_intent_open(ledger):
    audit = ledger.audit
    audit.intend("crashed", "hubspot", changes("1"))
    audit.intend("rerun", "hubspot", changes("1"))
    audit.confirm("rerun", "hubspot", written=["1"], not_written=[])
    assert audit.open_intents("hubspot", ["1"])["run_id"].unique().tolist() == ["crashed"]


def test_an_intent_is_held_when_the_crm_has_every_value_it_names():
    intents = pd.DataFrame(
        {
            "crm_id": ["a", "a", "b", "gone"],
            "field": ["score", "status", "score", "score"],
            "new": ["80", "Qualified", "80", "80"],
        }
    )
    current = pd.DataFrame(
        {"score": [80.0, 12.0], "status": ["Qualified", None]}, index=pd.Index(["a", "b"])
    )
    assert holds_intended(intents, current).tolist() == [True, True, False, False]
