"""The audit ledger: every field leadsync wrote (old and new value, run, time), the watermark of
each source, and the records still owed a retry. SQLite by default, any SQLAlchemy URL
(e.g. PostgreSQL) through LEADSYNC_LEDGER_URL."""

from __future__ import annotations

import os
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    insert,
    select,
)
from sqlalchemy.engine import Engine

DEFAULT_URL = "sqlite:///.leadsync/ledger.sqlite3"
metadata = MetaData()

writes = Table(
    "writes",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("source", String(32), nullable=False),
    Column("crm_id", String(64), nullable=False, index=True),
    Column("field", String(64), nullable=False),
    Column("old", Text),
    Column("new", Text),
    Column("written_at", DateTime(timezone=True), nullable=False),
)
watermarks = Table(
    "watermarks",
    metadata,
    Column("source", String(255), primary_key=True),  # a CRM, or a backfill's checkpoint
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


ROWS_PER_INSERT = 5_000


class Ledger:
    def __init__(self, url: str | None = None):
        url = url or os.environ.get("LEADSYNC_LEDGER_URL") or DEFAULT_URL
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        self.engine: Engine = create_engine(url)
        metadata.create_all(self.engine)

    def record_writes(self, run_id: str, source: str, changes: pd.DataFrame) -> None:
        """`changes`: crm_id, field, old, new, for the records the CRM accepted. Inserted a
        slice at a time, so a large chunk's rows never sit in memory twice over."""
        if changes.empty:
            return
        now = datetime.now(UTC)
        columns = changes[["crm_id", "field", "old", "new"]]
        with self.engine.begin() as connection:
            for start in range(0, len(columns), ROWS_PER_INSERT):
                part = columns.iloc[start : start + ROWS_PER_INSERT]
                rows = [
                    {
                        "run_id": run_id,
                        "source": source,
                        "crm_id": crm_id,
                        "field": field,
                        "old": as_text(old),
                        "new": as_text(new),
                        "written_at": now,
                    }
                    for crm_id, field, old, new in part.itertuples(index=False)
                ]
                connection.execute(insert(writes), rows)

    def writes_of_run(self, run_id: str) -> pd.DataFrame:
        with self.engine.connect() as connection:
            rows = connection.execute(select(writes).where(writes.c.run_id == run_id)).mappings()
            return pd.DataFrame(list(rows), columns=[c.name for c in writes.columns])

    def watermark(self, source: str) -> datetime | None:
        with self.engine.connect() as connection:
            value = connection.execute(
                select(watermarks.c.watermark).where(watermarks.c.source == source)
            ).scalar()
        return _utc(value) if value is not None else None

    def set_watermark(self, source: str, watermark: datetime, run_id: str | None) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(watermarks).where(watermarks.c.source == source))
            connection.execute(
                insert(watermarks),
                [
                    {
                        "source": source,
                        "watermark": watermark,
                        "run_id": run_id,
                        "updated_at": datetime.now(UTC),
                    }
                ],
            )

    def reset_watermark(self, source: str) -> None:
        """Forget where a source's sync got to: its next sync reads every lead."""
        with self.engine.begin() as connection:
            connection.execute(delete(watermarks).where(watermarks.c.source == source))

    def owed(self, source: str) -> list[str]:
        """Records a previous run could not finish (failed or skipped writes): retried next run."""
        with self.engine.connect() as connection:
            return list(
                connection.execute(
                    select(pending.c.crm_id).where(pending.c.source == source)
                ).scalars()
            )

    def settle(self, source: str, crm_ids: Iterable[str]) -> None:
        ids = list(crm_ids)
        if not ids:
            return
        with self.engine.begin() as connection:
            connection.execute(
                delete(pending).where(pending.c.source == source, pending.c.crm_id.in_(ids))
            )

    def owe(self, source: str, reasons: pd.DataFrame, run_id: str | None) -> None:
        """`reasons`: crm_id and reason of each record the next run must retry."""
        if reasons.empty:
            return
        self.settle(source, reasons["crm_id"])
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
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
                    for crm_id, reason in reasons[["crm_id", "reason"]].itertuples(index=False)
                ],
            )


def as_text(value) -> str | None:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).tz_convert("UTC").isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
