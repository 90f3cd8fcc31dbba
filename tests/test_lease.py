"""The write lease: one live writer per CRM, and no dead holder keeps it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import insert, update

from flows.database import engine_for
from flows.lease import LeaseLost, LeaseTimeout, current_holder, leases, write_lease

NAME = "leadsync-write-hubspot"


@pytest.fixture
def url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.sqlite3'}"


def test_a_live_holder_keeps_the_lease_and_the_next_run_is_told_who_holds_it(url):
    engine = engine_for(url)
    with write_lease(engine, NAME, "run-a", ttl=10, wait_seconds=0):
        with pytest.raises(LeaseTimeout, match="run run-a"):
            with write_lease(engine, NAME, "run-b", ttl=10, wait_seconds=1.5):
                pass
    with write_lease(engine, NAME, "run-b", ttl=10, wait_seconds=0):  # released: free at once
        assert current_holder(engine, NAME).run_id == "run-b"
    assert current_holder(engine, NAME) is None


def test_a_killed_holder_on_this_host_is_taken_over_at_once(url):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from flows.database import engine_for\n"
            "from flows.lease import write_lease\n"
            f"with write_lease(engine_for({url!r}), {NAME!r}, 'killed', 600, 0):\n"
            "    print('held', flush=True)\n"
            "    time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    engine = engine_for(url)
    assert current_holder(engine, NAME).run_id == "killed"  # its 10-minute lease is still there
    started = time.monotonic()
    with write_lease(engine, NAME, "next", ttl=600, wait_seconds=30):
        assert time.monotonic() - started < 5
        assert current_holder(engine, NAME).run_id == "next"


def test_a_holder_elsewhere_is_taken_over_when_its_lease_expires(url):
    engine = engine_for(url)
    now = datetime.now(UTC)
    with engine.begin() as connection:
        connection.execute(
            insert(leases),
            [
                {
                    "name": NAME,
                    "token": "t",
                    "run_id": "on-a-lost-host",
                    "host": "a-lost-host",
                    "pid": 1,
                    "process_started": 0.0,
                    "acquired_at": now,
                    "expires_at": now + timedelta(seconds=3),
                }
            ],
        )
    started = time.monotonic()
    with write_lease(engine, NAME, "next", ttl=10, wait_seconds=30):
        assert 2 <= time.monotonic() - started < 8


def test_a_lease_taken_over_stops_its_holder_from_writing(url):
    engine = engine_for(url)
    with write_lease(engine, NAME, "slow", ttl=4, wait_seconds=0) as lease:
        lease.check()
        with engine.begin() as connection:  # another run took it over meanwhile
            connection.execute(update(leases).values(token="someone-else"))
        time.sleep(1.5)  # the next renewal finds it gone
        with pytest.raises(LeaseLost):
            lease.check()
