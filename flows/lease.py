"""One writer per CRM: a lease in the ledger that a dead holder cannot keep.

The holder renews its lease from a background thread every quarter of its time to live. Another
run takes the lease over when it has expired (its holder stopped renewing: a lost host, a hung
process), or at once when the holder was a process on the same host that no longer runs (a
SIGKILL, a crash). Nothing of it lives in the Prefect server, so a server restart or a
temporary server that went away changes nothing. A holder that cannot renew in time stops
writing (`check` raises `LeaseLost` before the next batch), so two live writers never overlap.
"""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psutil
from sqlalchemy import Column, DateTime, Float, Integer, String, Table, delete, insert, select
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from connectors.base import WritingStopped
from flows.database import metadata

POLL_SECONDS = 1.0
log = logging.getLogger(__name__)

leases = Table(
    "leases",
    metadata,
    Column("name", String(128), primary_key=True),
    Column("token", String(64), nullable=False),
    Column("run_id", String(64)),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("process_started", Float, nullable=False),  # tells a reused pid from its holder
    Column("acquired_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
)


class LeaseLost(WritingStopped):
    """The write lease could not be renewed in time: another run may now write."""


class LeaseTimeout(WritingStopped):
    """Another live run held the write lease for longer than this run would wait."""


@dataclass(frozen=True)
class Holder:
    run_id: str | None
    host: str
    pid: int
    acquired_at: datetime

    def describe(self) -> str:
        since = f"{self.acquired_at:%H:%M:%S}"
        return f"run {self.run_id} (pid {self.pid} on {self.host}, since {since} UTC)"


class Lease:
    """A held lease; `check()` before each write."""

    def __init__(self, engine: Engine, name: str, token: str, ttl: float):
        self.engine, self.name, self.token, self.ttl = engine, name, token, ttl
        self._valid_until = time.monotonic() + ttl
        self._lost = threading.Event()
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_until_stopped, daemon=True)
        self._renewer.start()

    def check(self) -> None:
        """Raise LeaseLost unless the lease is still held for at least half its time to live:
        a write call sent now ends (its read timeout being shorter) before another run could
        take the lease over. One missed renewal is survived, two are not."""
        if self._lost.is_set() or time.monotonic() > self._valid_until - self.ttl / 2:
            self._lost.set()
            raise LeaseLost(
                f"the write lease {self.name} could not be renewed in time; the run stops "
                "writing so that no other writer overlaps it (see the on-call runbook)"
            )

    def release(self) -> None:
        self._stop.set()
        self._renewer.join()
        with self.engine.begin() as connection:
            connection.execute(
                delete(leases).where(leases.c.name == self.name, leases.c.token == self.token)
            )

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl / 4):
            started = time.monotonic()
            try:
                with self.engine.begin() as connection:
                    renewed = connection.execute(
                        sql_update(leases)
                        .where(leases.c.name == self.name, leases.c.token == self.token)
                        .values(expires_at=_now() + timedelta(seconds=self.ttl))
                    ).rowcount
            except DBAPIError as error:  # the database is unreachable: try again, then give up
                log.warning("Could not renew the write lease %s: %s", self.name, error)
                continue
            if not renewed:
                log.error("The write lease %s was taken over; writing stops", self.name)
                self._lost.set()
                return
            self._valid_until = started + self.ttl


@contextmanager
def write_lease(
    engine: Engine,
    name: str,
    run_id: str | None,
    ttl: float,
    wait_seconds: float,
    logger: logging.Logger | logging.LoggerAdapter = log,
) -> Iterator[Lease]:
    """Hold the lease `name` for the block, waiting up to `wait_seconds` for a live holder."""
    deadline = time.monotonic() + wait_seconds
    told: str | None = None
    while True:
        token, holder = _try_take(engine, name, run_id, ttl, logger)
        if token is not None:
            break
        if holder is not None and holder.describe() != told:
            told = holder.describe()
            logger.info("Waiting for the write lease %s, held by %s", name, told)
        if time.monotonic() >= deadline:
            raise LeaseTimeout(
                f"the write lease {name} has been held by {told} for longer than "
                f"{wait_seconds / 60:.0f} minutes; see the on-call runbook"
            )
        time.sleep(POLL_SECONDS)
    lease = Lease(engine, name, token, ttl)
    try:
        yield lease
    finally:
        lease.release()


def current_holder(engine: Engine, name: str) -> Holder | None:
    with engine.connect() as connection:
        row = connection.execute(select(leases).where(leases.c.name == name)).first()
    return _holder(row) if row is not None else None


def _try_take(
    engine: Engine,
    name: str,
    run_id: str | None,
    ttl: float,
    logger: logging.Logger | logging.LoggerAdapter,
) -> tuple[str | None, Holder | None]:
    """Take the lease if it is free, expired, or its holder's process is gone."""
    token = secrets.token_hex(16)
    me = psutil.Process()
    try:
        with engine.begin() as connection:
            row = connection.execute(select(leases).where(leases.c.name == name)).first()
            if row is not None and not _stale(row):
                return None, _holder(row)
            if row is not None:
                logger.warning(
                    "Taking over the write lease %s from %s, which is gone or expired",
                    name,
                    _holder(row).describe(),
                )
                connection.execute(
                    delete(leases).where(leases.c.name == name, leases.c.token == row.token)
                )
            now = _now()
            connection.execute(
                insert(leases),
                [
                    {
                        "name": name,
                        "token": token,
                        "run_id": run_id,
                        "host": socket.gethostname(),
                        "pid": me.pid,
                        "process_started": me.create_time(),
                        "acquired_at": now,
                        "expires_at": now + timedelta(seconds=ttl),
                    }
                ],
            )
    except IntegrityError:  # another run took it at the same moment
        return None, None
    return token, None


def _stale(row) -> bool:
    if _utc(row.expires_at) <= _now():
        return True
    if row.host != socket.gethostname():
        return False  # only its time to live can tell
    try:
        return psutil.Process(row.pid).create_time() != row.process_started
    except psutil.NoSuchProcess:
        return True


def _holder(row) -> Holder:
    return Holder(row.run_id, row.host, row.pid, _utc(row.acquired_at))


def _now() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


