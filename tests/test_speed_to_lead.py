"""Speed to lead end to end: a listener on each sandbox's change stream (HubSpot webhooks,
Salesforce Change Data Capture) rescores an edited lead within its window, its own writes start
no run, a deletion settles what was owed, a burst stays within the API budget, and a listener
killed and restarted misses nothing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pandas as pd
import pytest

from connectors import connector_for
from flows.jobs import sync_leads
from flows.ledger import Ledger
from flows.listen import REPLAY_KEY, Listener
from flows.settings import ListenSettings
from sandbox.hubspot import HubSpotSettings
from sandbox.salesforce import SalesforceSettings
from tests.stack import ROOT, wait_until

WINDOW = ListenSettings(window_seconds=0.5, window_leads=100, port=0)  # any free port
WITHIN = 30  # seconds to wait for a write before calling it missing
TARGET_LAG = 10  # seconds from an edit to its write: the window, then one run
TITLE = {"salesforce": "Title", "hubspot": "jobtitle"}


@pytest.fixture(scope="module", autouse=True)
def prefect_engine(prefect_api):
    """The session's Prefect test server (tests/conftest.py)."""


@pytest.fixture
def crm(start_sandbox, tmp_path, monkeypatch):
    """Sandbox CRMs with a few leads, synced once, the connectors and ledger pointed at them."""
    for name in ("SALESFORCE_SESSION_ID", "SALESFORCE_USERNAME", "HUBSPOT_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)

    def start(source: str, leads: int = 60, **config):
        quick = SalesforceSettings(pubsub_keepalive_seconds=0.5)  # an idle stream says so soon
        sandbox = start_sandbox(leads=leads, seed=3, salesforce=quick, **config)
        sandbox.write_info(tmp_path / "crm.json")
        monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "crm.json"))
        monkeypatch.setenv("LEADSYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
        assert sync_leads(source=source, return_state=True).is_completed()
        return sandbox

    return start


@contextmanager
def listening(source: str, settings: ListenSettings = WINDOW) -> Iterator[Listener]:
    listener = Listener(source, settings)
    thread = threading.Thread(target=listener.run, name="listener", daemon=True)
    thread.start()
    try:
        assert listener.ready.wait(30), "the listener did not start"
        yield listener
    finally:
        listener.stop.set()
        thread.join(timeout=30)
        assert not thread.is_alive()


def edit(sandbox, source: str, crm_id: str) -> None:
    """A rep's edit the score reacts to: the lead turns out to be a student (a red flag, named
    first in the reason)."""
    getattr(sandbox, source).edit_as_person(crm_id, {TITLE[source]: "Student"})


def every_lead(source: str) -> pd.DataFrame:
    """The CRM's leads, by id. Read by search, which HubSpot budgets apart from the batch reads
    and writes the listener makes: the test's polling does not slow the runs it waits for."""
    return pd.concat(connector_for(source).read_all()).set_index("crm_id")


def not_students(source: str, count: int | None = None) -> pd.DataFrame:
    """Leads the edit changes (not a student or job seeker already), as they are now."""
    every = every_lead(source)
    student = every["title"].str.contains("student|intern|seeking|looking|graduate", case=False)
    return every[~student.fillna(False)].head(count)


def rescored(source: str, before: pd.DataFrame) -> Callable[[], bool]:
    """True once every lead of `before` shows a reason other than the one it had."""
    return lambda: (every_lead(source).loc[before.index, "reason"] != before["reason"]).all()


@pytest.mark.parametrize("source", ["salesforce", "hubspot"])
def test_an_edit_is_rescored_within_its_window_and_the_write_starts_no_run(crm, source):
    sandbox = crm(source)
    with listening(source) as listener:
        chosen = not_students(source, 2)
        started = time.monotonic()
        for crm_id in chosen.index:
            edit(sandbox, source, crm_id)
        wait_until(rescored(source, chosen), "the edited leads rescored", WITHIN)
        lag = time.monotonic() - started
        time.sleep(3 * WINDOW.window_seconds + 1)  # the write's own events come back meanwhile
    assert len(listener.states) == 1, [state.message for state in listener.states]
    report = listener.states[0].result()
    assert report.written == 2 and (report.usage.reads, report.usage.writes) == (1, 1)
    assert lag < TARGET_LAG, lag


def test_a_deletion_settles_what_was_owed(crm):
    sandbox = crm("hubspot")
    ids = every_lead("hubspot").index[:1].tolist()
    ledger = Ledger()
    ledger.owe("hubspot", pd.DataFrame({"crm_id": ids, "reason": ["a write failed"]}), "run-1")
    with listening("hubspot") as listener:
        sandbox.hubspot.delete_as_person(ids[0])
        wait_until(lambda: not ledger.owed("hubspot"), "the deleted lead settled", WITHIN)
    assert listener.states[-1].result().read == 0  # nothing left to read of it


def test_a_hubspot_listener_on_a_port_in_use_says_which_address(crm):
    crm("hubspot", leads=5)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        listener = Listener("hubspot", WINDOW.model_copy(update={"port": port}))
        with pytest.raises(RuntimeError, match=f"cannot listen on http://127.0.0.1:{port}/"):
            listener.run()


def test_a_burst_is_absorbed_in_few_runs_within_the_api_budget(crm, monkeypatch):
    """About 100 changes need one batch read and one batch write, after the sync and the
    listener's start spent the 3 calls of this 10 s: the runs must wait for the budget."""
    monkeypatch.setenv("LEADSYNC_HUBSPOT_REQUESTS_PER_TEN_SECONDS", "3")
    sandbox = crm("hubspot", leads=100, hubspot=HubSpotSettings(ten_second_limit=3))
    before = not_students("hubspot")
    ids = before.index.tolist()
    with listening("hubspot") as listener:
        for crm_id in ids:
            edit(sandbox, "hubspot", crm_id)
        written = lambda: sum(state.result().written for state in listener.states)  # noqa: E731
        # Waits on the runs, not on the CRM: the connector paces searches under the budget too.
        wait_until(lambda: written() >= len(ids), "the burst rescored", 90)
    assert rescored("hubspot", before)()
    assert sandbox.hubspot.rate_limited_responses == 0
    assert len(listener.states) <= 3  # a window per batch or backlog, not per lead
    reads = sum(state.result().usage.reads for state in listener.states)
    assert reads <= len(listener.states) + len(ids) // 100  # each lead read once, in batches


def test_a_listener_killed_and_restarted_resumes_from_its_replay_id(crm, prefect_api):
    sandbox = crm("salesforce")
    chosen = not_students("salesforce", 4)
    ids = chosen.index.tolist()
    environment = {
        **os.environ,
        "PREFECT_API_URL": prefect_api,
        "LEADSYNC_LISTEN_WINDOW_SECONDS": "0.5",
    }
    command = [sys.executable, "-m", "flows", "listen", "--source", "salesforce"]

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            command, cwd=ROOT, env=environment, stdout=subprocess.PIPE, text=True
        )

    ledger = Ledger()
    replay_id = lambda: getattr(ledger.progress(REPLAY_KEY), "position", None)  # noqa: E731
    first = start()
    try:
        assert "until Ctrl-C" in first.stdout.readline()
        wait_until(lambda: replay_id() is not None, "the listener subscribed", WITHIN)
        subscribed_at, before = replay_id(), chosen.iloc[:1]
        edit(sandbox, "salesforce", ids[0])
        wait_until(rescored("salesforce", before), "the first edit rescored", WITHIN)
        wait_until(lambda: replay_id() != subscribed_at, "the window's replay id kept", WITHIN)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    missed = chosen.iloc[1:]
    for crm_id in ids[1:]:  # while no listener runs
        edit(sandbox, "salesforce", crm_id)
    second = start()
    try:
        wait_until(rescored("salesforce", missed), "the edits made while down rescored", WITHIN)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(timeout=30) == 0
