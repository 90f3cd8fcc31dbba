"""Describe global (`GET /services/data/vXX.X/sobjects`): the org's sObjects, each with the
flags and resource URLs Salesforce lists for it. Clients call it first to learn what an org
holds (simple-salesforce's `sf.describe()`, ETL connectors' discovery)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

MAX_BATCH_SIZE = 200  # records per sObject Collections call, as describe global reports it
FLAGS = (  # describe global's per-object flags, taken from the object's own describe
    "createable",
    "updateable",
    "deletable",
    "queryable",
    "custom",
)


def describe_global(version: str, objects: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Describe global from each object's describe (`schema.describe()` for Lead)."""
    return {
        "encoding": "UTF-8",
        "maxBatchSize": MAX_BATCH_SIZE,
        "sobjects": [_entry(version, described) for described in objects],
    }


def _entry(version: str, described: Mapping[str, Any]) -> dict[str, Any]:
    name = described["name"]
    base = f"/services/data/v{version}/sobjects/{name}"
    return {
        "name": name,
        "label": described["label"],
        "labelPlural": described["labelPlural"],
        "keyPrefix": described.get("keyPrefix"),
        **{flag: bool(described.get(flag, False)) for flag in FLAGS},
        "activateable": False,
        "customSetting": False,
        "deepCloneable": False,
        "deprecatedAndHidden": False,
        "feedEnabled": False,
        "hasSubtypes": False,
        "isInterface": False,
        "isSubtype": False,
        "layoutable": False,
        "mergeable": False,
        "mruEnabled": False,
        "replicateable": True,
        "retrieveable": True,
        "searchable": False,
        "triggerable": False,
        "undeletable": False,
        "urls": {
            "sobject": base,
            "describe": f"{base}/describe",
            "rowTemplate": f"{base}/{{ID}}",
        },
    }
