"""Pure translation between Salesforce and the canonical frame: SOQL text and record shapes.

Every value that reaches SOQL goes through simple-salesforce's `format_soql`, which quotes and
escapes it; ids are also checked against the Salesforce id format, so a parameter cannot change
the shape of a query.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

import pandas as pd
from simple_salesforce import format_soql

from connectors.mapping import FieldMapping
from expectations.frame import conform

SALESFORCE_ID = re.compile(r"^[A-Za-z0-9]{15}(?:[A-Za-z0-9]{3})?$")
FIELD_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
MODIFIED_BY = "LastModifiedById"  # a standard field of every object: who made the last change


class UnsafeValue(ValueError):
    """A parameter that is not what it claims to be (an id, a field name, a time)."""


def select_modified(
    mapping: FieldMapping, since: datetime, until: datetime, not_by: str | None = None
) -> str:
    """Leads modified in [since, until); with `not_by` (a user's id), only those whose last
    modification was another user's."""
    stamp, key = _field(mapping.modified_field), _field(mapping.id_field)
    where = f"{stamp} >= {{}} AND {stamp} < {{}}"
    values = [_utc_seconds(since), _utc_seconds(until)]
    if not_by is not None:
        where += f" AND {MODIFIED_BY} != {{}}"
        values.append(_salesforce_id(not_by))
    return format_soql(f"{_select(mapping)} WHERE {where} ORDER BY {stamp}, {key}", *values)


def select_all(mapping: FieldMapping, after: str | None = None) -> str:
    """Every lead in id order; with `after`, those after that id (a resumed read)."""
    key = _field(mapping.id_field)
    if after is None:
        return f"{_select(mapping)} ORDER BY {key}"
    return format_soql(
        f"{_select(mapping)} WHERE {key} > {{}} ORDER BY {key}", _salesforce_id(after)
    )


def select_count(mapping: FieldMapping) -> str:
    return f"SELECT COUNT() FROM {_field(mapping.object)}"


def select_by_ids(mapping: FieldMapping, crm_ids: Sequence[str]) -> str:
    bad = [crm_id for crm_id in crm_ids if not SALESFORCE_ID.match(str(crm_id))]
    if bad:
        raise UnsafeValue(f"not Salesforce ids: {bad[:5]!r}")
    return format_soql(
        f"{_select(mapping)} WHERE {_field(mapping.id_field)} IN {{}}", list(crm_ids)
    )


def select_stale(
    mapping: FieldMapping, qualified_before: datetime, cold_before: datetime | None = None
) -> str:
    qualified = _field(mapping.read["qualified_at"])
    where = f"({qualified} < {{}} OR {qualified} = null"
    values: list = [_utc_seconds(qualified_before)]
    if cold_before is not None:
        status, engaged = _field(mapping.read["status"]), _field(mapping.read["last_engaged_at"])
        where += f" OR ({status} = 'Qualified' AND ({engaged} < {{}} OR {engaged} = null))"
        values.append(_utc_seconds(cold_before))
    where += ")"
    if mapping.closed_statuses:
        where += f" AND {_field(mapping.read['crm_status'])} NOT IN {{}}"
        values.append(list(mapping.closed_statuses))
    return format_soql(
        f"{_select(mapping)} WHERE {where} ORDER BY {_field(mapping.id_field)}", *values
    )


def to_frame(records: list[dict], mapping: FieldMapping) -> pd.DataFrame:
    """Query records (attributes and all) as canonical rows."""
    by_field = {field: column for column, field in mapping.read.items()}
    frame = pd.DataFrame.from_records(records, columns=list(by_field)).rename(columns=by_field)
    return conform(frame.assign(source="salesforce"))


def to_records(updates: pd.DataFrame, mapping: FieldMapping) -> list[dict]:
    """Canonical write-back columns as sObject Collection records (only mapped write fields)."""
    columns = [column for column in mapping.write if column in updates.columns]
    records = []
    for row in updates[["crm_id", *columns]].itertuples(index=False):
        values = dict(zip(columns, row[1:], strict=True))
        record = {"attributes": {"type": mapping.object}, "id": row[0]}
        record.update(
            {mapping.write[column]: json_value(value) for column, value in values.items()}
        )
        records.append(record)
    return records


def _select(mapping: FieldMapping) -> str:
    fields = ", ".join(_field(field) for field in mapping.read.values())
    return f"SELECT {fields} FROM {_field(mapping.object)}"


def _salesforce_id(value: str) -> str:
    if not SALESFORCE_ID.match(str(value)):
        raise UnsafeValue(f"not a Salesforce id: {value!r}")
    return value


def _field(name: str) -> str:
    if not FIELD_NAME.match(name):
        raise UnsafeValue(f"not a Salesforce field name: {name!r}")
    return name


def _utc_seconds(moment: datetime) -> datetime:
    try:
        stamp = pd.Timestamp(moment)
    except (TypeError, ValueError):
        raise UnsafeValue(f"not a time: {moment!r}") from None
    if stamp.tzinfo is None:
        raise UnsafeValue(f"time without a timezone: {moment!r}")
    return stamp.tz_convert("UTC").floor("s").to_pydatetime().replace(tzinfo=UTC)


def json_value(value):
    """A frame value as the REST API takes it: None for any missing value, UTC datetimes."""
    if (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and value != value)
    ):
        return None
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if hasattr(value, "item"):
        return value.item()
    return value
