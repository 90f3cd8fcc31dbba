"""Where leadsync keeps its state: one SQLAlchemy database (SQLite by default, any URL such as
PostgreSQL through LEADSYNC_LEDGER_URL) holding the audit ledger, the watermarks, the records
owed a retry, the progress of long runs and the write leases. Each module that owns a table
declares it on `metadata`."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

from sqlalchemy import MetaData, create_engine, event, inspect, text
from sqlalchemy.engine import Engine

DEFAULT_URL = "sqlite:///.leadsync/ledger.sqlite3"
IDS_PER_STATEMENT = 500  # far below SQLite's 32,766 bound parameters, and PostgreSQL's 65,535
SQLITE_BUSY_SECONDS = 60  # writers from several threads and processes wait their turn
metadata = MetaData()
T = TypeVar("T")


def ledger_url(url: str | None = None) -> str:
    return url or os.environ.get("LEADSYNC_LEDGER_URL") or DEFAULT_URL


def engine_for(url: str) -> Engine:
    """An engine with every table created (and columns added by later versions)."""
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    is_sqlite = url.startswith("sqlite")
    engine = create_engine(
        url, connect_args={"timeout": SQLITE_BUSY_SECONDS} if is_sqlite else {}
    )
    if is_sqlite:
        event.listen(engine, "connect", _sqlite_without_implicit_transactions)
        event.listen(
            engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE")
        )
    metadata.create_all(engine)
    _add_missing_columns(engine)
    return engine


def in_slices(items: Sequence[T], size: int = IDS_PER_STATEMENT) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_without_implicit_transactions(connection, _record) -> None:
    """pysqlite opens transactions lazily, after the first read, so two writers can both read
    and then fail to write without waiting; SQLAlchemy's documented fix is to begin explicitly:
    `BEGIN IMMEDIATE` (see `engine_for`), so each transaction waits its turn to write."""
    connection.isolation_level = None


def _add_missing_columns(engine: Engine) -> None:
    """Ledgers made by an earlier version get the columns added since, with their defaults."""
    inspector = inspect(engine)
    for table in metadata.sorted_tables:
        existing = {column["name"] for column in inspector.get_columns(table.name)}
        for column in table.columns:
            if column.name in existing:
                continue
            kind = column.type.compile(engine.dialect)
            default = f" DEFAULT '{column.server_default.arg}'" if column.server_default else ""
            with engine.begin() as connection:
                connection.execute(
                    text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}{default}')
                )
