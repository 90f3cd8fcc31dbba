"""One API budget per CRM account, shared by every run, process and host using the same store
(connectors/budget.py), on SQLite and PostgreSQL; and runs of one HubSpot portal at once that
meet no 429 between them."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import text

from connectors import connector_for
from connectors.budget import BudgetStore, CallBudget

ROOT = Path(__file__).resolve().parent.parent
SPAWN = multiprocessing.get_context("spawn")  # children that share nothing with the test


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'budget.sqlite3'}"
    cluster = request.getfixturevalue("postgres_cluster")
    name = f"budget_{uuid.uuid4().hex[:8]}"
    cluster.create_database(name)
    return cluster.url(name)


def rows(store: BudgetStore, table: str) -> int:
    with store.engine.connect() as connection:
        return connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()


def test_a_window_admits_its_limit_then_says_how_long_to_wait(store_url):
    store, other_process = BudgetStore(store_url), BudgetStore(store_url)  # two engines
    starts = [store.take("portal-a", 3, 0.5).start for _ in range(3)]
    assert all(start is not None for start in starts) and starts == sorted(starts)
    refused = other_process.take("portal-a", 3, 0.5)
    assert refused.start is None and 0 < refused.wait <= 0.5
    assert other_process.take("portal-b", 3, 60.0).start is not None  # its own budget
    time.sleep(refused.wait)  # the first start has left the window
    assert other_process.take("portal-a", 3, 0.5).start is not None
    time.sleep(0.5)
    assert store.starts_in_window("portal-a") == 0
    assert store.take("portal-a", 3, 0.5).start is not None
    assert rows(store, "api_budget_calls") == 2  # expired starts are deleted: a's last, and b's


def take_starts(url: str, account: str, limit: int, seconds: float, calls: int, threads: int,
                ready, results) -> None:  # fmt: skip
    """A process of the test below: `threads` threads each waiting for `calls` call starts."""
    budget = CallBudget(BudgetStore(url), account, limit, seconds)
    ready.wait()
    starts: list[float] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(calls):
            start = budget.wait()
            with lock:
                starts.append(start)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(starts)


def test_processes_sharing_a_store_never_exceed_the_limit_in_any_window(store_url):
    BudgetStore(store_url)  # the tables exist before the processes race for them
    processes, threads, calls, limit, seconds = 3, 2, 8, 6, 0.5
    ready, results = SPAWN.Barrier(processes), SPAWN.Queue()
    children = [
        SPAWN.Process(
            target=take_starts,
            args=(store_url, "portal", limit, seconds, calls, threads, ready, results),
        )
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    per_process = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    starts = sorted(start for process_starts in per_process for start in process_starts)
    assert len(starts) == processes * threads * calls
    # Any `limit` + 1 consecutive starts span at least the window: never more than `limit` in it.
    spans = [later - earlier for earlier, later in zip(starts, starts[limit:], strict=False)]
    assert min(spans) >= seconds - 1e-6
    # ... and the budget was used, not wasted: each window's share went at once.
    fastest = (len(starts) // limit - 1) * seconds
    assert starts[-1] - starts[0] < fastest + 2.0


def take_and_die(url: str, account: str, limit: int, seconds: float) -> None:
    store = BudgetStore(url)
    for _ in range(limit):
        store.take(account, limit, seconds)
    store.acquire("org", 2, seconds)
    store.acquire("org", 2, seconds)
    os._exit(0)  # no cleanup of any kind, as a killed process


def test_a_dead_process_blocks_no_one_past_its_window(store_url):
    store = BudgetStore(store_url)
    child = SPAWN.Process(target=take_and_die, args=(store_url, "portal", 4, 1.0))
    child.start()
    child.join(timeout=60)
    died = time.monotonic()
    assert store.take("portal", 4, 1.0).start is None  # its starts still count ...
    assert isinstance(store.acquire("org", 2, 1.0), float)  # ... and its leases
    CallBudget(store, "portal", 4, 1.0).wait()  # until they expire
    with store.cap("org", 2, 1.0).held():
        assert time.monotonic() - died < 2.0  # its rows expired 1 s after it took them
    time.sleep(1.0)  # every row of the dead process has expired: the next take deletes them
    assert store.take("portal", 4, 1.0).start is not None
    assert isinstance(store.acquire("org", 2, 1.0), str)
    assert rows(store, "api_budget_calls") == 1 and rows(store, "api_budget_leases") == 1


def hold_leases(url: str, limit: int, calls: int, threads: int, ready, results) -> None:
    cap = BudgetStore(url).cap("org", limit, 60.0)
    ready.wait()
    held: list[tuple[float, float]] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(calls):
            with cap.held():
                entered = time.time()
                time.sleep(0.05)
                left = time.time()
            with lock:
                held.append((entered, left))

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    results.put(held)


def test_processes_sharing_a_store_never_exceed_the_cap_on_calls_in_flight(store_url):
    BudgetStore(store_url)
    processes, threads, calls, limit = 3, 3, 4, 2
    ready, results = SPAWN.Barrier(processes), SPAWN.Queue()
    children = [
        SPAWN.Process(target=hold_leases, args=(store_url, limit, calls, threads, ready, results))
        for _ in range(processes)
    ]
    for child in children:
        child.start()
    held = [interval for _ in children for interval in results.get(timeout=120)]
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0
    assert len(held) == processes * threads * calls
    events = sorted([(entered, 1) for entered, _ in held] + [(left, -1) for _, left in held])
    in_flight = peak = 0
    for _, change in events:  # a release sorts before an entry at the same instant
        in_flight += change
        peak = max(peak, in_flight)
    assert peak == limit


def test_salesforce_connectors_of_one_org_share_its_cap_on_calls_in_flight(
    start_sandbox, tmp_path, monkeypatch
):
    from sandbox.http import FaultPlan

    for name in ("SALESFORCE_SESSION_ID", "SALESFORCE_USERNAME", "SALESFORCE_CONSUMER_KEY"):
        monkeypatch.delenv(name, raising=False)
    sandbox = start_sandbox(leads=1200, faults=FaultPlan(latency_seconds=0.1))
    sandbox.write_info(tmp_path / "crm.json")
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "crm.json"))
    monkeypatch.setenv("LEADSYNC_BUDGET_URL", f"sqlite:///{tmp_path / 'budget.sqlite3'}")
    monkeypatch.setenv("LEADSYNC_SALESFORCE_CALLS_IN_FLIGHT", "2")
    monkeypatch.setenv("LEADSYNC_WRITE_CONCURRENCY", "4")
    connectors = [connector_for("salesforce") for _ in range(3)]  # as three runs would
    leads = pd.concat(connectors[0].read_all())
    updates = pd.DataFrame({"crm_id": leads["crm_id"], "score": 42.0})
    sandbox.salesforce_server.in_flight.peak = 0
    with ThreadPoolExecutor(3) as runs:  # 6 collections each, 4 at a time per run
        written = list(runs.map(lambda connector: connector.write(updates), connectors))
    assert all(result["success"].all() and len(result) == 1200 for result in written)
    assert sandbox.salesforce_server.in_flight.peak == 2


# --- runs of one HubSpot portal at once -------------------------------------------------------


def test_connectors_of_one_portal_pace_their_calls_together(start_sandbox, tmp_path, monkeypatch):
    from sandbox.hubspot import HubSpotSettings

    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    sandbox = start_sandbox(leads=300, hubspot=HubSpotSettings(search_per_second=1))
    sandbox.write_info(tmp_path / "crm.json")
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "crm.json"))
    monkeypatch.setenv("LEADSYNC_BUDGET_URL", f"sqlite:///{tmp_path / 'budget.sqlite3'}")
    monkeypatch.setenv("LEADSYNC_HUBSPOT_SEARCHES_PER_SECOND", "1")
    connectors = [connector_for("hubspot") for _ in range(3)]  # as three runs would
    with ThreadPoolExecutor(3) as runs:
        reads = list(runs.map(lambda connector: len(pd.concat(connector.read_all())), connectors))
    assert reads == [300, 300, 300]
    assert sandbox.hubspot.rate_limited_responses == 0, sandbox.hubspot.rate_limited
    assert (tmp_path / "budget.sqlite3").exists()


def test_a_sync_a_review_and_a_dry_run_of_one_portal_at_once_meet_no_429(
    start_sandbox, prefect_api, tmp_path, monkeypatch
):
    from flows.jobs import sync_leads
    from sandbox.hubspot import HubSpotSettings

    for name in ("HUBSPOT_ACCESS_TOKEN", "LEADSYNC_BUDGET_URL"):
        monkeypatch.delenv(name, raising=False)
    sandbox = start_sandbox(
        leads=300, seed=5, hubspot=HubSpotSettings(ten_second_limit=10, search_per_second=1)
    )
    sandbox.write_info(tmp_path / "crm.json")
    environment = {
        "LEADSYNC_SANDBOX_INFO": str(tmp_path / "crm.json"),
        "LEADSYNC_LEDGER_URL": f"sqlite:///{tmp_path / 'ledger.sqlite3'}",  # and the budget's
        "LEADSYNC_HUBSPOT_REQUESTS_PER_TEN_SECONDS": "10",
        "LEADSYNC_HUBSPOT_SEARCHES_PER_SECOND": "1",
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    as_of = pd.Timestamp.now(tz="UTC").floor("s")
    # Leads scored before (the review has something to judge), each to be scored again.
    connector = connector_for("hubspot")
    leads = pd.concat(connector.read_all())
    written = connector.write(pd.DataFrame({"crm_id": leads["crm_id"], "score": 1.0}))
    assert written["success"].all()

    # The review in a process of its own, the sync and the dry run in threads of this one,
    # started as the review begins.
    review = subprocess.Popen(
        [sys.executable, "-m", "flows", "review", "--source", "hubspot"],
        cwd=ROOT,
        env={**os.environ, "PREFECT_API_URL": prefect_api},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    for line in review.stdout:
        lines.append(line)
        if "Beginning flow run" in line:
            break
    drain = threading.Thread(target=lambda: lines.extend(review.stdout))
    drain.start()
    with ThreadPoolExecutor(2) as runs:
        sync, dry_run = (
            runs.submit(sync_leads, source="hubspot", as_of=as_of, dry_run=dry, return_state=True)
            for dry in (False, True)
        )
        sync, dry_run = sync.result(timeout=300), dry_run.result(timeout=300)
    review.wait(timeout=300)
    drain.join(timeout=30)
    output = "".join(lines)

    assert sync.is_completed(), sync.message
    assert dry_run.is_completed(), dry_run.message
    assert review.returncode == 0 and "review-criteria: Completed" in output, output
    assert sync.result().written > 250 and dry_run.result().written == 0
    assert sandbox.hubspot.rate_limited_responses == 0, sandbox.hubspot.rate_limited

    # The runs shared the portal's two budgets, named without its token.
    budgets = {connector._pace.account, connector._pace_search.account}
    with connector._pace.store.engine.connect() as connection:
        stored = connection.execute(text("SELECT DISTINCT account FROM api_budget_calls"))
        accounts = set(stored.scalars())
    assert accounts and accounts <= budgets and len(budgets) == 2
    assert not any(sandbox.info["hubspot"]["access_token"] in name for name in accounts)
