"""The ledger: leadsync's state in one database (flows/database.py). It holds the audit log of
every field written (flows/audit.py, written ahead of each call), the watermark of each source,
the records still owed a retry, and where a stopped backfill or rollback resumes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import Column, DateTime, String, Table, Text, delete, insert, select

from flows.audit import AuditLog, writes
from flows.database import engine_for, in_slices, ledger_url, metadata

watermarks = Table(
    "watermarks",
    metadata,
    Column("source", String(255), primary_key=True),
    Column("watermark", DateTime(timezone=True), nullable=False),
    Column("run_id", String(64)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
pending = Table(
    "pending",
    metadata,
    Column("source", String(32), primary_key=True),
    Column("crm_id", String(64), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("run_id", String(64)),
    Column("recorded_at", DateTime(timezone=True), nullable=False),
)
progress = Table(
    "progress",
    metadata,
    Column("key", String(512), primary_key=True),  # what the admin asked for, e.g. a backfill's
    Column("until", DateTime(timezone=True)),  # the end the first attempt resolved, kept
    Column("done", DateTime(timezone=True)),  # windows finished up to here
    Column("position", Text),  # a full read's or a rollback's resume point
    Column("run_id", String(64)),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)


@dataclass(frozen=True)
class Progress:
    """How far a stopped long run got, under the key of what was asked for."""

    until: datetime | None = None
    done: datetime | None = None
    position: str | None = None


class Ledger:
    def __init__(self, url: str | None = None):
        self.engine = engine_for(ledger_url(url))
        self.audit = AuditLog(self.engine)

    def watermark(self, source: str) -> datetime | None:
        with self.engine.connect() as connection:
            value = connection.execute(
                select(watermarks.c.watermark).where(watermarks.c.source == source)
            ).scalar()
        return _utc(value) if value is not None else None

    def set_watermark(self, source: str, watermark: datetime, run_id: str | None) -> None:
        self._put(watermarks.c.source, source, watermark=watermark, run_id=run_id)

    def reset_watermark(self, source: str) -> None:
        """Forget where a source's sync got to: its next sync reads every lead."""
        with self.engine.begin() as connection:
            connection.execute(delete(watermarks).where(watermarks.c.source == source))

    def progress(self, key: str) -> Progress | None:
        with self.engine.connect() as connection:
            row = connection.execute(select(progress).where(progress.c.key == key)).first()
        if row is None:
            return None
        stamp = lambda value: _utc(value) if value is not None else None  # noqa: E731
        return Progress(stamp(row.until), stamp(row.done), row.position)

    def save_progress(self, key: str, state: Progress, run_id: str | None) -> None:
        self._put(
            progress.c.key,
            key,
            until=state.until,
            done=state.done,
            position=state.position,
            run_id=run_id,
        )

    def clear_progress(self, key: str) -> None:
        """The long run finished: the same request made again starts afresh."""
        with self.engine.begin() as connection:
            connection.execute(delete(progress).where(progress.c.key == key))

    def owed(self, source: str) -> list[str]:
        """Records a previous run could not finish (failed or skipped writes): retried next run."""
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(pending.c.crm_id).where(pending.c.source == source)
                ).scalars()
            )

    def settle(self, source: str, crm_ids: Iterable[str]) -> None:
        """These records owe nothing any more."""
        ids = list(dict.fromkeys(crm_ids))
        if ids:
            with self.engine.begin() as connection:
                _settle(connection, source, ids)

    def owe(self, source: str, reasons: pd.DataFrame, run_id: str | None) -> None:
        """`reasons`: crm_id and reason of each record the next run must retry; one row per
        record (a record owed again gets the newer reason), in one transaction."""
        if reasons.empty:
            return
        latest = reasons.drop_duplicates("crm_id", keep="last")
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            _settle(connection, source, latest["crm_id"].tolist())
            for part in in_slices(latest[["crm_id", "reason"]].to_numpy().tolist(), 5_000):
                connection.execute(
                    insert(pending),
                    [
                        {
                            "source": source,
                            "crm_id": crm_id,
                            "reason": str(reason)[:1000],
                            "run_id": run_id,
                            "recorded_at": now,
                        }
                        for crm_id, reason in part
                    ],
                )

    def purge(self, source: str, crm_ids: Iterable[str]) -> int:
        """Forget these leads (a right-to-be-forgotten request): their audited writes and the
        retries owed them, in one transaction; returns the rows deleted. Their writes can no
        longer be rolled back."""
        ids, deleted = list(dict.fromkeys(crm_ids)), 0
        with self.engine.begin() as connection:
            for table in (writes, pending):
                for part in in_slices(ids):
                    deleted += connection.execute(
                        delete(table).where(table.c.source == source, table.c.crm_id.in_(part))
                    ).rowcount
        return deleted

    def _put(self, key_column: Column, key: str, **values) -> None:
        """The row of `key` in `key_column`'s table, replaced by `values`."""
        table = key_column.table
        with self.engine.begin() as connection:
            connection.execute(delete(table).where(key_column == key))
            connection.execute(
                insert(table),
                [{key_column.name: key, **values, "updated_at": datetime.now(UTC)}],
            )


def _settle(connection, source: str, ids: list[str]) -> None:
    for part in in_slices(ids):
        connection.execute(
            delete(pending).where(pending.c.source == source, pending.c.crm_id.in_(part))
        )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)

