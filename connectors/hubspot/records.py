"""Pure translation between HubSpot contacts and the canonical frame, and search request bodies."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd

from connectors.mapping import FieldMapping
from expectations.frame import COLUMNS, conform

BOOLEAN_TEXT = {"true": True, "false": False}


def epoch_millis(moment: datetime) -> str:
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        raise ValueError(f"time without a timezone: {moment!r}")
    return str(stamp.value // 1_000_000)


def filter_group(*filters: dict) -> dict:
    return {"filters": list(filters)}


def search_body(
    groups: Sequence[dict],
    sort_property: str,
    properties: Sequence[str],
    limit: int,
    direction: str = "ASCENDING",
) -> dict:
    """A search request; it never pages by offset (`after`), only by id bounds in filters."""
    return {
        "filterGroups": list(groups),
        "sorts": [{"propertyName": sort_property, "direction": direction}],
        "properties": list(properties),
        "limit": limit,
    }


def to_frame(contacts: Sequence[dict], mapping: FieldMapping) -> pd.DataFrame:
    """Contacts as the API returns them as canonical rows; property values are strings."""
    properties = [contact["properties"] for contact in contacts]
    frame = pd.DataFrame(
        {column: [got.get(name) for got in properties] for column, name in mapping.read.items()}
    )
    frame["crm_id"] = [str(contact["id"]) for contact in contacts]
    if mapping.converted_values and "converted" in frame.columns:
        frame["converted"] = frame["converted"].isin(mapping.converted_values)
    for column in frame.columns:
        if COLUMNS[column] == "boolean":
            frame[column] = frame[column].astype("str").str.lower().map(BOOLEAN_TEXT)
    return conform(frame.assign(source="hubspot"))


def to_inputs(updates: pd.DataFrame, mapping: FieldMapping) -> list[dict]:
    """Canonical write-back columns as batch update inputs (only mapped write properties)."""
    columns = [column for column in mapping.write if column in updates.columns]
    inputs = []
    for row in updates[["crm_id", *columns]].itertuples(index=False):
        properties = {
            mapping.write[column]: _text(value)
            for column, value in zip(columns, row[1:], strict=True)
        }
        inputs.append({"id": str(row[0]), "properties": properties})
    return inputs


def _text(value) -> str:
    """HubSpot property values are strings; an empty string clears a property."""
    if (
        value is None
        or value is pd.NA
        or value is pd.NaT
        or (isinstance(value, float) and value != value)
    ):
        return ""
    if isinstance(value, pd.Timestamp | datetime):
        return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "item"):
        return _text(value.item())
    return str(value)
