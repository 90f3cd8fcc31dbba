"""HubSpot routes that widely used clients (ETL connectors, SDK helpers) call first to find out
what a portal holds: the legacy v2 list of contact properties, the custom object schemas (none
here) and the v4 associations of contacts (none here), each in its documented shape."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sandbox.hubspot.schema import (
    InvalidRequest,
    expect_known_fields,
    expect_list,
    expect_string,
)

ASSOCIATIONS_BATCH_LIMIT = 1_000  # inputs per v4 associations batch read
LEGACY_CONTACT_PROPERTIES = r"/properties/v2/(?:contact|contacts)/properties"
SCHEMAS = r"/(?:crm/v3|crm-object-schemas/v3)/schemas"  # the client calls the latter
CONTACT_ASSOCIATIONS = (
    r"/crm/v4/associations/(?:contact|contacts|0-1)/(?P<to_type>[^/]+)/batch/read"
)


def legacy_property(definition: Mapping[str, Any]) -> dict[str, Any]:
    """A v3 property definition in the shape of the legacy v2 contact properties API: epoch
    milliseconds for times, `readOnlyValue` and `deleted` at the top level."""
    metadata = definition["modificationMetadata"]
    return {
        "name": definition["name"],
        "label": definition["label"],
        "description": definition.get("description", ""),
        "groupName": definition["groupName"],
        "type": definition["type"],
        "fieldType": definition["fieldType"],
        "options": [
            {
                "label": option["label"],
                "value": option["value"],
                "displayOrder": option.get("displayOrder", index),
                "hidden": option.get("hidden", False),
                "description": option.get("description"),
                "readOnly": False,
                "doubleData": None,
            }
            for index, option in enumerate(definition.get("options", []))
        ],
        "displayOrder": definition.get("displayOrder", -1),
        "readOnlyValue": metadata["readOnlyValue"],
        "readOnlyDefinition": metadata["readOnlyDefinition"],
        "hidden": definition.get("hidden", False),
        "mutableDefinitionNotDeletable": definition.get("hubspotDefined", False),
        "calculated": definition.get("calculated", False),
        "externalOptions": definition.get("externalOptions", False),
        "formField": definition.get("formField", False),
        "hubspotDefined": definition.get("hubspotDefined", False),
        "hasUniqueValue": definition.get("hasUniqueValue", False),
        "deleted": False,
        "createdAt": _epoch_ms(definition.get("createdAt")),
        "updatedAt": _epoch_ms(definition.get("updatedAt")),
        "createdUserId": None,
        "updatedUserId": None,
        "displayMode": "current_value",
        "favorited": False,
        "favoritedOrder": -1,
        "currencyPropertyName": definition.get("currencyPropertyName"),
        "showCurrencySymbol": definition.get("showCurrencySymbol"),
        "textDisplayHint": definition.get("textDisplayHint"),
        "numberDisplayHint": definition.get("numberDisplayHint"),
    }


def no_custom_schemas() -> dict[str, Any]:
    """`GET /crm/v3/schemas`: the portal defines no custom objects."""
    return {"results": []}


def no_associations(body: Any, started: str, completed: str) -> dict[str, Any]:
    """`POST /crm/v4/associations/contact/{toObjectType}/batch/read`: the sandbox's contacts
    have no associations, so every valid request reads an empty batch."""
    body = expect_known_fields(body, ("inputs",), "BatchInputPublicFetchAssociationsBatchRequest")
    inputs = expect_list(body.get("inputs"), "inputs")
    if len(inputs) > ASSOCIATIONS_BATCH_LIMIT:
        raise InvalidRequest(
            f"Batch input limit exceeded: {len(inputs)} inputs, at most "
            f"{ASSOCIATIONS_BATCH_LIMIT} are allowed."
        )
    for item in inputs:
        item = expect_known_fields(item, ("id", "after"), "PublicFetchAssociationsBatchRequest")
        expect_string(item.get("id"), "inputs[].id")
        if item.get("after") is not None:
            expect_string(item["after"], "inputs[].after")
    return {"status": "COMPLETE", "results": [], "startedAt": started, "completedAt": completed}


def _epoch_ms(iso: str | None) -> int | None:
    if not iso:
        return None
    return round(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)
