"""A Salesforce sync skips leadsync's own writes (LastModifiedById is the integration user's),
and a person's edit racing a write still ends rescored, by each path README ("Syncs at scale")
names: the next sync for an edit after the write, the pre-write recheck or else the change
listener and requalification for an edit between the read and the write."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import pandas as pd
import pytest

from connectors import connector_for
from flows.backfill import backfill_leads
from flows.jobs import requalify_leads, sync_leads
from flows.ledger import Ledger
from flows.listen import Listener
from flows.report import RunReport
from flows.settings import ListenSettings
from sandbox.http import FaultPlan
from sandbox.salesforce import SalesforceSettings
from sandbox.salesforce.api import PERSON_ID, USER_ID
from sandbox.salesforce.schema import epoch_ms
from tests.stack import wait_until

LEADS = 300
HOLD_SECONDS = 1.0  # every sandbox call waits this long: the person edits meanwhile
NOT_A_STUDENT = "student|intern|seeking|looking|graduate|unemployed"
# A person's note in the reason field: the sync restores its own reason, so it writes the lead.
HAND_NOTE = {"Qualification_Reason__c": "Checked by hand"}
STUDENT = {"Title": "Student"}  # a red flag the reason names: proof the lead was rescored


@pytest.fixture(scope="module", autouse=True)
def prefect_engine(prefect_api):
    """The session's Prefect test server (tests/conftest.py)."""


@pytest.fixture
def org(start_sandbox, tmp_path, monkeypatch):
    """A sandbox org of a few hundred leads, synced once; the connector and ledger point at it."""
    for name in ("SALESFORCE_SESSION_ID", "SALESFORCE_USERNAME", "SALESFORCE_CONSUMER_KEY"):
        monkeypatch.delenv(name, raising=False)
    quick = SalesforceSettings(pubsub_keepalive_seconds=0.5)  # a listener is ready at once
    sandbox = start_sandbox(leads=LEADS, seed=5, salesforce=quick)
    sandbox.write_info(tmp_path / "crm.json")
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "crm.json"))
    monkeypatch.setenv("LEADSYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    assert sync().written > 0
    return sandbox


def sync(**parameters) -> RunReport:
    state = sync_leads(source="salesforce", return_state=True, **parameters)
    assert state.is_completed(), state.message
    return state.result()


def stored(sandbox, crm_id: str) -> dict:
    """The lead as the sandbox org holds it, LastModifiedById included."""
    return sandbox.salesforce.table.get(crm_id)


def written_lead(sandbox) -> str:
    """A lead the first sync wrote, not a student already."""
    leads = pd.concat(connector_for("salesforce").read_all())
    student = leads["title"].str.contains(NOT_A_STUDENT, case=False).fillna(False)
    ours = leads["crm_id"].map(lambda crm_id: stored(sandbox, crm_id)["LastModifiedById"])
    return leads.loc[~student & ours.eq(USER_ID), "crm_id"].iloc[0]


def next_second() -> None:
    """A sync reads up to the whole second it starts: what changed earlier in that second is
    the next sync's. Waiting for the next second puts every change so far in the next sync."""
    time.sleep(1.0 - time.time() % 1.0)


def edit(sandbox, crm_id: str, fields: dict) -> None:
    sandbox.salesforce.edit_as_person(crm_id, fields)
    next_second()


def reason(crm_id: str) -> str:
    return connector_for("salesforce").read_by_ids([crm_id])["reason"].iloc[0]


def read_by_next_sync() -> set[str]:
    """The leads the next sync's window holds (from the watermark, less the overlap)."""
    since = Ledger().watermark("salesforce") - timedelta(minutes=10)
    until = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=1)
    pages = connector_for("salesforce").read_modified(since, until, skip_own_writes=True)
    return {crm_id for page in pages for crm_id in page["crm_id"]}


@contextmanager
def edit_once_the_write_is_due(sandbox, crm_id: str, fields: dict) -> Iterator[threading.Event]:
    """A person edits the lead after leadsync read it and recorded its write as intended
    (the ledger's open intent), before the write lands: every sandbox call is held back
    HOLD_SECONDS meanwhile. The event is set once the edit is made."""
    edited, audit = threading.Event(), Ledger().audit

    def edit() -> None:
        deadline = time.monotonic() + 60
        while crm_id not in audit.open_leads("salesforce", LEADS):
            if time.monotonic() > deadline:
                return
            time.sleep(0.02)
        sandbox.salesforce.edit_as_person(crm_id, fields)
        edited.set()

    sandbox.salesforce_faults.configure(FaultPlan(latency_seconds=HOLD_SECONDS))
    person = threading.Thread(target=edit, name="person", daemon=True)
    person.start()
    try:
        yield edited
    finally:
        person.join(timeout=60)
        sandbox.salesforce_faults.configure(FaultPlan())


@contextmanager
def listening() -> Iterator[Listener]:
    listener = Listener("salesforce", ListenSettings(window_seconds=0.5, port=0))
    thread = threading.Thread(target=listener.run, name="listener", daemon=True)
    thread.start()
    try:
        assert listener.ready.wait(30), "the listener did not start"
        yield listener
    finally:
        listener.stop.set()
        thread.join(timeout=30)


def test_a_rerun_with_nothing_changed_reads_none_of_leadsyncs_writes(org):
    since = (Ledger().watermark("salesforce") - timedelta(minutes=10)).replace(microsecond=0)
    rows = org.salesforce.table.select(
        ["LastModifiedById"], '"SystemModstamp" >= ?', [epoch_ms(since)]
    )
    in_window = pd.Series([row["LastModifiedById"] for row in rows], dtype=object)
    assert in_window.eq(USER_ID).sum() > LEADS / 2  # what the rerun used to read again
    next_second()
    rerun = sync()
    assert rerun.read == in_window.ne(USER_ID).sum() and rerun.written == 0
    assert (rerun.usage.reads, rerun.usage.metadata) == (1, 2)  # a page; describe, who it is


def test_a_backfill_from_a_date_and_a_sync_told_to_read_own_writes_read_them(org, monkeypatch):
    """Only a sync skips leadsync's own writes: a backfill after a rules change must rescore
    them too; and a sync reads them when the integration user is shared with another tool."""
    start = (Ledger().watermark("salesforce") - timedelta(days=1)).replace(microsecond=0)
    ours = sum(
        row["LastModifiedById"] == USER_ID
        for row in org.salesforce.table.select(["LastModifiedById"], "1 = 1", [])
    )
    assert ours > LEADS / 2
    next_second()  # a backfill, like a sync, reads up to the whole second it starts
    state = backfill_leads(source="salesforce", start=start, dry_run=True, return_state=True)
    assert state.is_completed(), state.message
    assert state.result().read >= ours
    monkeypatch.setenv("LEADSYNC_SALESFORCE_SKIP_OWN_WRITES", "false")
    next_second()
    assert sync().read >= ours


def test_an_edit_after_leadsyncs_write_is_read_and_rescored_by_the_next_sync(org):
    crm_id = written_lead(org)
    edit(org, crm_id, STUDENT)
    report = sync()
    assert report.read >= 1 and report.written >= 1
    assert "student" in reason(crm_id).lower()
    assert stored(org, crm_id)["LastModifiedById"] == USER_ID
    assert crm_id not in read_by_next_sync()  # rescored: nothing new to read


def test_an_edit_between_read_and_write_is_skipped_by_the_recheck_and_rescored_next_sync(
    org, monkeypatch
):
    monkeypatch.setenv("LEADSYNC_RECHECK_AFTER_SECONDS", "0")  # every chunk re-read first
    crm_id = written_lead(org)
    edit(org, crm_id, HAND_NOTE)
    with edit_once_the_write_is_due(org, crm_id, STUDENT) as edited:
        held = sync()
    assert edited.is_set() and held.rechecked >= 1 and held.skipped == 1
    assert stored(org, crm_id)["LastModifiedById"] == PERSON_ID  # not written over
    assert Ledger().owed("salesforce") == [crm_id]
    after = sync()
    assert after.written >= 1 and "student" in reason(crm_id).lower()


def test_an_edit_between_read_and_write_written_over_is_rescored_by_the_listener(org):
    crm_id = written_lead(org)
    edit(org, crm_id, HAND_NOTE)
    with listening() as listener:
        with edit_once_the_write_is_due(org, crm_id, STUDENT) as edited:
            held = sync()  # its chunk is seconds old: no recheck, its write lands on the edit
        assert edited.is_set() and held.rechecked == 0 and held.skipped == 0
        wait_until(lambda: "student" in reason(crm_id).lower(), "the edit rescored", 60)
    assert any(state.result().written for state in listener.states)
    assert crm_id not in read_by_next_sync()  # the sync alone would not have read it


def test_an_edit_between_read_and_write_written_over_is_rescored_by_requalification(org):
    crm_id = written_lead(org)
    edit(org, crm_id, HAND_NOTE)
    with edit_once_the_write_is_due(org, crm_id, STUDENT) as edited:
        held = sync()
    assert edited.is_set() and held.skipped == 0
    assert stored(org, crm_id)["LastModifiedById"] == USER_ID
    assert "student" not in reason(crm_id).lower()  # written over by the stale score
    assert crm_id not in read_by_next_sync()
    a_week_on = pd.Timestamp.now(tz="UTC").floor("s") + pd.Timedelta(days=8)
    state = requalify_leads(source="salesforce", as_of=a_week_on, return_state=True)
    assert state.is_completed(), state.message
    assert "student" in reason(crm_id).lower()
