"""The audit ledger's write-ahead log: every field leadsync writes to a CRM is recorded before
the call (an intent) and confirmed as its batch returns, so a crash at any instant leaves no
value in the CRM that the ledger does not know about.

A row's life: `intent` (about to be written) → `written` (the CRM accepted it), or removed (the
CRM refused it, or it was never sent). Intents left open by a run that died are reconciled with
the CRM by the next run that takes the write lease (`reconcile_open_intents`), before it writes:
those the CRM holds become `written` under the run that wrote them, so rollback covers crashed
runs; the rest are removed and their leads owed a retry.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import pandas as pd
from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    String,
    Table,
    Text,
    and_,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine

from flows.database import in_slices, metadata

if TYPE_CHECKING:
    from connectors import Connector
    from flows.ledger import Ledger

ROWS_PER_INSERT = 5_000
LEADS_PER_RECONCILE = 2_000  # open intents reconciled a slice of leads at a time
UNCONFIRMED = "a run stopped before the CRM confirmed this write; rescored and written again"

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
    Column("written_at", DateTime(timezone=True), nullable=False),  # intended, then confirmed
    Column("state", String(16), nullable=False, server_default="written", index=True),
)


class AuditLog:
    def __init__(self, engine: Engine):
        self.engine = engine

    def intend(self, run_id: str, source: str, changes: pd.DataFrame) -> None:
        """Record `changes` (crm_id, field, old, new) as about to be written. Inserted a slice
        at a time, so a large chunk's rows never sit in memory twice over. Values repeat (a
        run's few statuses and scores, its one qualification time): each distinct value is
        made text once."""
        if changes.empty:
            return
        now, text = datetime.now(UTC), functools.lru_cache(maxsize=None, typed=True)(as_text)
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
                        "old": text(old),
                        "new": text(new),
                        "written_at": now,
                        "state": "intent",
                    }
                    for crm_id, field, old, new in part.itertuples(index=False)
                ]
                connection.execute(insert(writes), rows)

    def confirm(
        self, run_id: str, source: str, written: Iterable[str], not_written: Iterable[str]
    ) -> None:
        """A batch returned: its accepted leads' intents become writes; the others' go."""
        written, not_written = list(written), list(not_written)
        now = datetime.now(UTC)
        mine = and_(writes.c.run_id == run_id, writes.c.source == source, _open())
        with self.engine.begin() as connection:
            for ids in in_slices(written):
                connection.execute(
                    update(writes)
                    .where(mine, writes.c.crm_id.in_(ids))
                    .values(state="written", written_at=now)
                )
            for ids in in_slices(not_written):
                connection.execute(delete(writes).where(mine, writes.c.crm_id.in_(ids)))

    def open_leads(self, source: str, limit: int) -> list[str]:
        """Leads with intents no batch confirmed (their run stopped, or is writing now)."""
        with self.engine.connect() as connection:
            query = (
                select(writes.c.crm_id)
                .where(writes.c.source == source, _open())
                .group_by(writes.c.crm_id)
                .order_by(writes.c.crm_id)
                .limit(limit)
            )
            return list(connection.execute(query).scalars())

    def open_intents(self, source: str, crm_ids: list[str]) -> pd.DataFrame:
        with self.engine.connect() as connection:
            frames = [
                pd.DataFrame(
                    connection.execute(
                        select(writes.c.run_id, writes.c.crm_id, writes.c.field, writes.c.new)
                        .where(writes.c.source == source, _open(), writes.c.crm_id.in_(ids))
                    ).all(),
                    columns=["run_id", "crm_id", "field", "new"],
                )
                for ids in in_slices(crm_ids)
            ]
        return pd.concat(frames, ignore_index=True)

    def writes_of_run(
        self, run_id: str, source: str | None = None, after: str | None = None, leads: int = 0
    ) -> pd.DataFrame:
        """What a run wrote (confirmed writes only), by lead; with `leads`, only the first
        that many leads after the lead `after`, so a large run can be read a page at a time."""
        where = [writes.c.run_id == run_id, writes.c.state == "written"]
        if source is not None:
            where.append(writes.c.source == source)
        if after is not None:
            where.append(writes.c.crm_id > after)
        with self.engine.connect() as connection:
            if leads:
                last = connection.execute(
                    select(writes.c.crm_id)
                    .where(*where)
                    .group_by(writes.c.crm_id)
                    .order_by(writes.c.crm_id)
                    .offset(leads - 1)
                    .limit(1)
                ).scalar()
                if last is not None:
                    where.append(writes.c.crm_id <= last)
            rows = connection.execute(
                select(writes).where(*where).order_by(writes.c.crm_id, writes.c.id)
            ).mappings()
            return pd.DataFrame(list(rows), columns=[c.name for c in writes.columns])

    def count_open(self, source: str) -> int:
        with self.engine.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).where(writes.c.source == source, _open())
                ).scalar()
            )

def reconcile_open_intents(ledger: Ledger, connector: Connector) -> tuple[int, int]:
    """Settle every open intent of `connector`'s CRM against what the CRM holds now: a lead
    holding every value its intent names was written (confirmed under the run that wrote it);
    any other is not, and is owed a retry. Only the holder of the write lease may call this,
    so no live run is writing meanwhile. Returns (leads confirmed, leads owed)."""
    source, audit = connector.source, ledger.audit
    confirmed = owed = 0
    while leads := audit.open_leads(source, LEADS_PER_RECONCILE):
        intents = audit.open_intents(source, leads)
        current = connector.read_by_ids(leads).set_index("crm_id")
        held = holds_intended(intents, current)
        for run_id, rows in intents.assign(held=held).groupby("run_id"):
            by_lead = rows.groupby("crm_id")["held"].all()
            audit.confirm(run_id, source, by_lead.index[by_lead], by_lead.index[~by_lead])
            missing = by_lead.index[~by_lead]
            ledger.owe(source, pd.DataFrame({"crm_id": missing, "reason": UNCONFIRMED}), run_id)
            confirmed, owed = confirmed + int(by_lead.sum()), owed + len(missing)
    return confirmed, owed


def holds_intended(intents: pd.DataFrame, current: pd.DataFrame) -> pd.Series:
    """Per intent row (crm_id, field, new): whether the lead in `current` (indexed by crm_id,
    canonical columns) holds that value now; a lead gone from the CRM holds nothing."""
    present = intents["crm_id"].isin(current.index).to_numpy()
    now = [
        as_text(current.at[crm_id, field]) if here else None
        for crm_id, field, here in zip(intents["crm_id"], intents["field"], present, strict=True)
    ]
    intended = intents["new"].astype(object).where(intents["new"].notna(), None).tolist()
    return pd.Series(
        [here and value == want for here, value, want in zip(present, now, intended, strict=True)],
        index=intents.index,
    )


def as_text(value) -> str | None:
    """A canonical value as the ledger keeps it."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).tz_convert("UTC").isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _open():
    return writes.c.state == "intent"
