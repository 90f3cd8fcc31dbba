"""Change Data Capture for Lead: the change events every write of a Lead appends to a durable
log in the org's database, and the LeadChangeEvent Avro schema they are delivered in.

As in Salesforce, an event's header carries the changed, nulled and diff fields as bitmaps: hex
strings ("0x..."), bit i set for the schema's top-level field i (field 0 is ChangeEventHeader).
An event's body holds the new values of the fields that changed (an update), every set field (a
create), or nothing (a delete). Events are kept `retention_hours` (Salesforce: 72 hours); a
replay id outside that window is refused by the Pub/Sub server.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import fastavro

from sandbox.salesforce.schema import FIELDS, Field
from sandbox.store import Database

TOPIC = "/data/LeadChangeEvent"
ENTITY = "Lead"
NAMESPACE = "com.sforce.eventbus"
REPLAY_ID_BYTES = 8
# Lead fields a change event carries: all but the key (in the header's recordIds) and those
# Salesforce leaves out of change events.
EVENT_FIELDS: tuple[Field, ...] = tuple(
    lead_field
    for lead_field in FIELDS
    if lead_field.name not in ("Id", "IsDeleted", "SystemModstamp")
)
POSITIONS = {lead_field.name: index for index, lead_field in enumerate(EVENT_FIELDS, start=1)}
AVRO_TYPES = {
    "int": "int",
    "double": "double",
    "currency": "double",
    "boolean": "boolean",
    "datetime": {"type": "long", "logicalType": "timestamp-millis"},
    "date": {"type": "int", "logicalType": "date"},
}
CHANGE_TYPES = (
    "CREATE",
    "UPDATE",
    "DELETE",
    "UNDELETE",
    "GAP_CREATE",
    "GAP_UPDATE",
    "GAP_DELETE",
    "GAP_UNDELETE",
    "GAP_OVERFLOW",
    "SNAPSHOT",
)
HEADER = {
    "type": "record",
    "name": "ChangeEventHeader",
    "namespace": "com.salesforce.eventbus",
    "fields": [
        {"name": "entityName", "type": "string"},
        {"name": "recordIds", "type": {"type": "array", "items": "string"}},
        {
            "name": "changeType",
            "type": {
                "type": "enum",
                "name": "ChangeType",
                "namespace": "com.salesforce.eventbus",
                "symbols": list(CHANGE_TYPES),
            },
        },
        {"name": "changeOrigin", "type": "string"},
        {"name": "transactionKey", "type": "string"},
        {"name": "sequenceNumber", "type": "int"},
        {"name": "commitTimestamp", "type": "long"},
        {"name": "commitNumber", "type": "long"},
        {"name": "commitUser", "type": "string"},
        {"name": "nulledFields", "type": {"type": "array", "items": "string"}},
        {"name": "diffFields", "type": {"type": "array", "items": "string"}},
        {"name": "changedFields", "type": {"type": "array", "items": "string"}},
    ],
}


def _avro_field(lead_field: Field) -> dict[str, Any]:
    kind = AVRO_TYPES.get(lead_field.type, "string")
    return {
        "name": lead_field.name,
        "type": ["null", kind],
        "doc": f"Data:{lead_field.type}",
        "default": None,
    }


AVRO_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "LeadChangeEvent",
    "namespace": NAMESPACE,
    "doc": "Change event for Lead",
    "fields": [
        {"name": "ChangeEventHeader", "type": HEADER, "doc": "Data:EventHeader"},
        *(_avro_field(lead_field) for lead_field in EVENT_FIELDS),
    ],
}
SCHEMA_JSON = json.dumps(AVRO_SCHEMA, separators=(",", ":"))
SCHEMA_ID = base64.urlsafe_b64encode(hashlib.sha256(SCHEMA_JSON.encode()).digest()[:16]).decode()[
    :22
]
PARSED_SCHEMA = fastavro.parse_schema(AVRO_SCHEMA)


@dataclass(frozen=True)
class Author:
    """Who made a change: the user whose session it was, and through what (changeOrigin)."""

    user_id: str
    origin: str


@dataclass
class Transaction:
    """One write transaction's events: one transactionKey, numbered from 1 (sequenceNumber)."""

    key: str = field(default_factory=lambda: str(uuid.uuid4()))
    events: int = 0


@dataclass(frozen=True)
class Change:
    change_type: str
    record_id: str
    values: dict[str, Any]  # stored values (sandbox.salesforce.schema), by field name
    changed: list[str]
    nulled: list[str]
    author: Author


def bitmap(names: list[str]) -> list[str]:
    """Salesforce's field bitmap of top-level fields: [] when none, else one hex string of
    whole bytes ("0x0C02": fields 1, 10 and 11)."""
    bits = sum(1 << POSITIONS[name] for name in names)
    digits = -(-bits.bit_length() // 8) * 2
    return [f"0x{bits:0{digits}X}"] if bits else []


def replay_id(position: int) -> bytes:
    return position.to_bytes(REPLAY_ID_BYTES, "big")


def position_of(replay: bytes) -> int | None:
    """The log position a replay id names, or None if it is not one the log hands out."""
    return int.from_bytes(replay, "big") if len(replay) == REPLAY_ID_BYTES else None


class ChangeLog:
    """The durable log of Lead change events, in the org's database. Appends happen inside the
    write's own transaction, so an event exists exactly when its change does."""

    def __init__(self, db: Database, retention_hours: float):
        self.db = db
        self.retention_ms = int(retention_hours * 3_600_000)
        # AUTOINCREMENT: a position is never handed out twice, even after the events before it
        # were purged.
        db.execute(
            'CREATE TABLE IF NOT EXISTS "LeadChangeEventLog" ('
            '"ReplayPosition" INTEGER PRIMARY KEY AUTOINCREMENT, '
            '"CommitTimestamp" INTEGER NOT NULL, "Event" TEXT NOT NULL)'
        )
        db.execute(
            'CREATE INDEX IF NOT EXISTS "LeadChangeEventLog_CommitTimestamp" '
            'ON "LeadChangeEventLog" ("CommitTimestamp")'
        )
        self._appended = threading.Condition()
        self._generation = 0  # counts appends (and wake-ups), so a waiter misses none
        self._transaction: Transaction | None = None  # the open one (the database lock's holder)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction of the org's database (`Database.transaction`), whose change
        events share one transactionKey and are numbered in order, as in Salesforce."""
        with self.db.transaction() as connection:
            self._transaction = Transaction()
            try:
                yield connection
            finally:
                self._transaction = None

    # --- appending ---------------------------------------------------------------------------

    def created(self, connection: sqlite3.Connection, row: dict[str, Any], author: Author) -> None:
        values = {
            lead_field.name: row[lead_field.name]
            for lead_field in EVENT_FIELDS
            if row.get(lead_field.name) is not None
        }
        change = Change("CREATE", row["Id"], values, [], [], author)
        self._append(connection, row["LastModifiedDate"], change)

    def updated(
        self,
        connection: sqlite3.Connection,
        old: dict[str, Any],
        new: dict[str, Any],
        author: Author,
    ) -> None:
        changed = [
            lead_field.name
            for lead_field in EVENT_FIELDS
            if lead_field.name in new and new[lead_field.name] != old.get(lead_field.name)
        ]
        if "LastModifiedDate" not in changed:
            changed.append("LastModifiedDate")
        values = {name: new.get(name) for name in changed}
        nulled = [name for name in changed if values[name] is None]
        change = Change("UPDATE", old["Id"], values, changed, nulled, author)
        self._append(connection, new["LastModifiedDate"], change)

    def deleted(
        self, connection: sqlite3.Connection, record_id: str, stamp: int, author: Author
    ) -> None:
        self._append(connection, stamp, Change("DELETE", record_id, {}, [], [], author))

    def _append(self, connection: sqlite3.Connection, committed_at: int, change: Change) -> None:
        transaction = self._transaction or Transaction()
        transaction.events += 1
        event = {
            "changeType": change.change_type,
            "recordIds": [change.record_id],
            "changeOrigin": change.author.origin,
            "transactionKey": transaction.key,
            "sequenceNumber": transaction.events,
            "commitUser": change.author.user_id,
            "changedFields": change.changed,
            "nulledFields": change.nulled,
            "values": change.values,
        }
        connection.execute(
            'INSERT INTO "LeadChangeEventLog" ("CommitTimestamp", "Event") VALUES (?, ?)',
            [committed_at, json.dumps(event)],
        )
        connection.execute(
            'DELETE FROM "LeadChangeEventLog" WHERE "CommitTimestamp" < ?',
            [int(time.time() * 1000) - self.retention_ms],
        )
        self.wake()

    # --- reading -----------------------------------------------------------------------------

    def tip(self) -> int:
        """The position of the newest event (0 before the first)."""
        rows = self.db.execute(
            "SELECT seq FROM sqlite_sequence WHERE name = 'LeadChangeEventLog'"
        )
        return rows[0][0] if rows else 0

    def earliest(self) -> int:
        """The position just before the oldest event still kept."""
        rows = self.db.execute(
            'SELECT MIN("ReplayPosition") FROM "LeadChangeEventLog" WHERE "CommitTimestamp" >= ?',
            [self._oldest_kept()],
        )
        return rows[0][0] - 1 if rows[0][0] else self.tip()

    def is_resumable(self, position: int) -> bool:
        """Whether a subscription can start after `position`: an event still kept, or the tip
        of a log that has nothing older than the retention window to have lost."""
        if position == self.tip():
            return True
        rows = self.db.execute(
            'SELECT 1 FROM "LeadChangeEventLog" WHERE "ReplayPosition" = ? '
            'AND "CommitTimestamp" >= ?',
            [position, self._oldest_kept()],
        )
        return bool(rows) or (position == 0 and self.earliest() == 0)

    def after(
        self, position: int, limit: int, readable: Callable[[Field], bool] = lambda _: True
    ) -> list[tuple[int, bytes]]:
        """Up to `limit` events after `position`, each as its position and Avro payload, with
        only the fields the subscriber can read (field-level security, as in Salesforce)."""
        rows = self.db.execute(
            'SELECT "ReplayPosition", "CommitTimestamp", "Event" FROM "LeadChangeEventLog" '
            'WHERE "ReplayPosition" > ? AND "CommitTimestamp" >= ? '
            'ORDER BY "ReplayPosition" LIMIT ?',
            [position, self._oldest_kept(), limit],
        )
        return [
            (row[0], encode(json.loads(row[2]), row[0], row[1], readable)) for row in rows
        ]

    def generation(self) -> int:
        with self._appended:
            return self._generation

    def wait(self, seen: int, timeout: float) -> None:
        """Until something was appended (or `wake` called) since `generation()` was `seen`, or
        `timeout` seconds pass."""
        with self._appended:
            self._appended.wait_for(lambda: self._generation != seen, timeout)

    def wake(self) -> None:
        with self._appended:
            self._generation += 1
            self._appended.notify_all()

    def _oldest_kept(self) -> int:
        return int(time.time() * 1000) - self.retention_ms


def encode(
    event: dict[str, Any],
    position: int,
    committed_at: int,
    readable: Callable[[Field], bool] = lambda _: True,
) -> bytes:
    """The event as Salesforce delivers it: Avro binary, without a container or schema, and
    without the fields the subscriber cannot read."""
    hidden = {lead_field.name for lead_field in EVENT_FIELDS if not readable(lead_field)}
    header = {
        "entityName": ENTITY,
        "recordIds": event["recordIds"],
        "changeType": event["changeType"],
        "changeOrigin": event["changeOrigin"],
        "transactionKey": event["transactionKey"],
        "sequenceNumber": event["sequenceNumber"],
        "commitTimestamp": committed_at,
        "commitNumber": position,
        "commitUser": event["commitUser"],
        "nulledFields": bitmap([name for name in event["nulledFields"] if name not in hidden]),
        "diffFields": [],
        "changedFields": bitmap([name for name in event["changedFields"] if name not in hidden]),
    }
    record = {"ChangeEventHeader": header}
    for lead_field in EVENT_FIELDS:
        stored = None if lead_field.name in hidden else event["values"].get(lead_field.name)
        record[lead_field.name] = _avro_value(lead_field, stored)
    buffer = io.BytesIO()
    fastavro.schemaless_writer(buffer, PARSED_SCHEMA, record)
    return buffer.getvalue()


def _avro_value(lead_field: Field, stored: Any) -> Any:
    """A stored value (see sandbox.salesforce.schema) in the Avro type of its field."""
    if stored is None:
        return None
    if lead_field.type == "boolean":
        return bool(stored)
    if lead_field.type == "date":
        return (date.fromisoformat(stored) - date(1970, 1, 1)).days
    if lead_field.type in ("int", "datetime"):
        return int(stored)
    if lead_field.type in ("double", "currency"):
        return float(stored)
    return stored
