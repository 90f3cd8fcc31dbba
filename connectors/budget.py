"""API budgets shared by every run, process and host that uses the same store: a SQL database
through SQLAlchemy (the ledger's by default; LEADSYNC_BUDGET_URL to choose another).

HubSpot counts its per-10-second and per-second budgets per portal and app, not per run: a sync,
a criteria review and a dry run of one portal at the same time share them. `CallBudget` is the
shared form of `connectors.pacing.Pacer`: at most `limit` call starts in any `seconds` window per
account, each start a row that expires when it leaves the window. `ConcurrencyCap` caps calls in
flight per account (Salesforce's concurrent long-running requests) with leases that expire.

A check-and-take is one short transaction that no other can interleave with: on SQLite
`BEGIN IMMEDIATE` (the database's write lock, taken before the count), on PostgreSQL a
transaction-level advisory lock per account (`pg_advisory_xact_lock`), with the database
server's clock as every host's clock. Nothing is held between calls: a process that dies leaves
only rows that expire on their own, and each take deletes expired rows.
SQLite serves the processes of one host; runs on several hosts share a PostgreSQL store.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import NamedTuple

import requests
from requests.adapters import BaseAdapter
from sqlalchemy import (
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from connectors.base import ConnectorError

LEDGER_DEFAULT_URL = "sqlite:///.leadsync/ledger.sqlite3"  # flows.ledger's default
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
metadata = MetaData()

calls = Table(
    "api_budget_calls",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account", String(100), nullable=False),
    Column("expires_at", Double, nullable=False),  # epoch seconds: start + window
    Index("api_budget_calls_by_account", "account", "expires_at"),
    Index("api_budget_calls_by_expiry", "expires_at"),
)
leases = Table(
    "api_budget_leases",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("account", String(100), nullable=False),
    Column("expires_at", Double, nullable=False),  # a holder that died stops counting here
    Index("api_budget_leases_by_account", "account", "expires_at"),
    Index("api_budget_leases_by_expiry", "expires_at"),
)


def store_url(configured: str | None = None) -> str:
    """The store: `configured` (LEADSYNC_BUDGET_URL), else the ledger's URL."""
    return configured or os.environ.get("LEADSYNC_LEDGER_URL") or LEDGER_DEFAULT_URL


def account_key(*parts: str) -> str:
    """A stable name for a CRM account (e.g. base URL and token) that stores no secret."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]


_STORES: dict[tuple[str, int], BudgetStore] = {}
_STORES_LOCK = threading.Lock()


class Turn(NamedTuple):
    start: float | None  # when taken: the call's start, epoch seconds on the store's clock
    wait: float  # when not: seconds until a start leaves the window


class BudgetStore:
    """The tables of shared budgets in one database. `BudgetStore.at(url)` gives one store per
    URL per process (its connection pool is shared by every connector of the process)."""

    @classmethod
    def at(cls, url: str) -> BudgetStore:
        with _STORES_LOCK:
            key = (url, os.getpid())  # a forked child must not reuse its parent's connections
            if key not in _STORES:
                _STORES[key] = cls(url)
            return _STORES[key]

    def __init__(self, url: str):
        parsed = make_url(url)
        self.url = parsed.render_as_string(hide_password=True)
        self.is_postgresql = parsed.get_backend_name() == "postgresql"
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        if self.is_sqlite:
            if parsed.database and parsed.database != ":memory:":
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            self.engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
            _begin_immediately(self.engine)
        else:
            self.engine = create_engine(url)
        # Threads of one process queue here rather than in SQLite's busy-wait polling.
        self._local = threading.Lock() if self.is_sqlite else nullcontext()
        try:
            with self._transaction(lock=_SCHEMA_LOCK) as connection:
                metadata.create_all(connection)
        except SQLAlchemyError as error:
            raise self._failed(error) from error

    # --- rolling windows ----------------------------------------------------------------------

    def take(self, account: str, limit: int, seconds: float) -> Turn:
        """Take a call start for `account` if fewer than `limit` started in the last `seconds`:
        the start (on the store's clock) when taken, else the seconds until one leaves the
        window."""
        try:
            with self._transaction(lock=account) as connection:
                now = self._now(connection)
                self._prune(connection, calls, now)
                count, soonest = connection.execute(
                    text(
                        "SELECT count(*), min(expires_at) FROM api_budget_calls "
                        "WHERE account = :account AND expires_at > :now"
                    ),
                    {"account": account, "now": now},
                ).one()
                if count < limit:
                    connection.execute(
                        calls.insert(), {"account": account, "expires_at": now + seconds}
                    )
                    return Turn(now, 0.0)
                return Turn(None, max(soonest - now, 0.001))
        except SQLAlchemyError as error:
            raise self._failed(error) from error

    def window(
        self,
        account: str,
        limit: int,
        seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> CallBudget:
        return CallBudget(self, account, limit, seconds, sleep)

    def starts_in_window(self, account: str) -> int:
        with self.engine.connect() as connection:
            return connection.execute(
                text(
                    "SELECT count(*) FROM api_budget_calls "
                    "WHERE account = :account AND expires_at > :now"
                ),
                {"account": account, "now": self._now(connection)},
            ).scalar_one()

    # --- leases ---------------------------------------------------------------------------------

    def acquire(self, account: str, limit: int, lease_seconds: float) -> str | float:
        """A lease id if fewer than `limit` unexpired leases of `account` are held, else the
        seconds to wait before asking again."""
        try:
            with self._transaction(lock="lease:" + account) as connection:
                now = self._now(connection)
                self._prune(connection, leases, now)
                count, soonest = connection.execute(
                    text(
                        "SELECT count(*), min(expires_at) FROM api_budget_leases "
                        "WHERE account = :account AND expires_at > :now"
                    ),
                    {"account": account, "now": now},
                ).one()
                if count < limit:
                    lease = uuid.uuid4().hex
                    connection.execute(
                        leases.insert(),
                        {"id": lease, "account": account, "expires_at": now + lease_seconds},
                    )
                    return lease
                # A holder usually returns its lease long before it expires: ask again soon.
                return min(max(soonest - now, 0.001), 0.05)
        except SQLAlchemyError as error:
            raise self._failed(error) from error

    def release(self, lease: str) -> None:
        try:
            with self._transaction() as connection:
                connection.execute(leases.delete().where(leases.c.id == lease))
        except SQLAlchemyError as error:
            raise self._failed(error) from error

    def leases_held(self, account: str) -> int:
        with self.engine.connect() as connection:
            return connection.execute(
                text(
                    "SELECT count(*) FROM api_budget_leases "
                    "WHERE account = :account AND expires_at > :now"
                ),
                {"account": account, "now": self._now(connection)},
            ).scalar_one()

    def cap(
        self,
        account: str,
        limit: int,
        lease_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> ConcurrencyCap:
        return ConcurrencyCap(self, account, limit, lease_seconds, sleep)

    # --- the database -------------------------------------------------------------------------

    @contextmanager
    def _transaction(self, lock: str | None = None) -> Iterator[Connection]:
        """A transaction that holds the store's lock for `lock` (an account) until it ends:
        SQLite's write lock (BEGIN IMMEDIATE, for every account at once), or PostgreSQL's
        advisory lock for that account. On PostgreSQL its commit does not wait for the disk:
        a crash could lose only the last call starts, which expire in seconds anyway."""
        with self._local, self.engine.begin() as connection:
            if self.is_postgresql:
                no_flush = "set_config('synchronous_commit', 'off', true)"
                if lock is None:
                    connection.execute(text(f"SELECT {no_flush}"))
                else:
                    connection.execute(
                        text(f"SELECT {no_flush}, pg_advisory_xact_lock(:key)"),
                        {"key": _lock_number(lock)},
                    )
            yield connection

    def _now(self, connection: Connection) -> float:
        """Epoch seconds: the server's clock on PostgreSQL (one clock for every host), this
        host's on SQLite (whose store only this host's processes can share)."""
        if self.is_postgresql:
            return connection.execute(
                text("SELECT extract(epoch FROM clock_timestamp())::float8")
            ).scalar_one()
        return time.time()

    def _prune(self, connection: Connection, table: Table, now: float) -> None:
        """Delete expired rows of every account. On PostgreSQL rows another transaction is
        deleting are skipped, not waited for: two prunes never wait on each other."""
        if self.is_postgresql:
            connection.execute(
                text(
                    f"DELETE FROM {table.name} WHERE id IN (SELECT id FROM {table.name} "
                    "WHERE expires_at <= :now FOR UPDATE SKIP LOCKED)"
                ),
                {"now": now},
            )
        else:
            connection.execute(table.delete().where(table.c.expires_at <= now))

    def _failed(self, error: SQLAlchemyError) -> ConnectorError:
        return ConnectorError(
            f"The shared API budget at {self.url} failed ({type(error).__name__}): check "
            "LEADSYNC_BUDGET_URL (default: LEADSYNC_LEDGER_URL)."
        )


class CallBudget:
    """At most `limit` call starts in any `seconds` window for `account`, across every process
    sharing the store: `wait()` blocks until a call may start, like `Pacer.wait()`."""

    def __init__(
        self,
        store: BudgetStore,
        account: str,
        limit: int,
        seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if limit < 1 or seconds <= 0:
            raise ValueError("a budget needs limit >= 1 and seconds > 0")
        self.store, self.account = store, account
        self.limit, self.seconds, self._sleep = limit, seconds, sleep

    def wait(self) -> float:
        """Block until a call may start; returns its start, in epoch seconds on the store's
        clock."""
        while (turn := self.store.take(self.account, self.limit, self.seconds)).start is None:
            self._sleep(turn.wait)
        return turn.start


class ConcurrencyCap:
    """At most `limit` calls in flight for `account` across every process sharing the store.
    Each call holds a lease for its duration; a holder that dies stops counting once its lease
    expires (`lease_seconds`: longer than any call may take)."""

    def __init__(
        self,
        store: BudgetStore,
        account: str,
        limit: int,
        lease_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if limit < 1 or lease_seconds <= 0:
            raise ValueError("a cap needs limit >= 1 and lease_seconds > 0")
        self.store, self.account = store, account
        self.limit, self.lease_seconds, self._sleep = limit, lease_seconds, sleep

    @contextmanager
    def held(self) -> Iterator[None]:
        while isinstance(
            lease := self.store.acquire(self.account, self.limit, self.lease_seconds), float
        ):
            self._sleep(lease)
        try:
            yield
        finally:
            self.store.release(lease)


class CappedAdapter(BaseAdapter):
    """A requests transport that holds a lease of `cap` while each request is sent, around the
    adapter it wraps (its retries, timeouts and pool stay as they are)."""

    def __init__(self, inner: BaseAdapter, cap: ConcurrencyCap):
        super().__init__()
        self.inner, self.cap = inner, cap

    def send(self, request, **kwargs) -> requests.Response:
        with self.cap.held():
            return self.inner.send(request, **kwargs)

    def close(self) -> None:
        self.inner.close()


def cap_session(session: requests.Session, cap: ConcurrencyCap) -> None:
    """Every request of `session` holds a lease of `cap` while it is sent."""
    for prefix, adapter in list(session.adapters.items()):
        if not isinstance(adapter, CappedAdapter):
            session.adapters[prefix] = CappedAdapter(adapter, cap)


_SCHEMA_LOCK = "leadsync api budget schema"


def _lock_number(name: str) -> int:
    """A PostgreSQL advisory lock key (a signed 64-bit integer) for a name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def _begin_immediately(engine: Engine) -> None:
    """pysqlite starts transactions itself, late and deferred (a SELECT takes no lock, so two
    processes could both count a free slot): it is told not to, and every transaction begins
    with BEGIN IMMEDIATE, which takes the write lock first (SQLAlchemy's SQLite documentation,
    'Enabling Non-Legacy SQLite Transactional Modes')."""

    @event.listens_for(engine, "connect")
    def _no_driver_transactions(dbapi_connection, _record) -> None:
        dbapi_connection.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
