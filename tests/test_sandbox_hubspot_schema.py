"""The HubSpot sandbox against HubSpot's own published OpenAPI documents (schemathesis).

Every operation the sandbox serves gets schema-valid and schema-invalid requests; the sandbox must
never answer 5xx, and must answer with the status codes, content types and bodies the documents
define. One documented deviation: HubSpot returns `null` for a requested property without a
value while its documents declare property values as plain strings, so the check allows null.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from sandbox.hubspot import HubSpotSettings

SPECS = Path(__file__).resolve().parents[2] / "shared" / "specs" / "hubspot"
pytestmark = pytest.mark.skipif(
    not SPECS.is_dir(), reason=f"no HubSpot OpenAPI documents in {SPECS}"
)

CONTACTS, PROPERTIES = "/crm/v3/objects/contacts", "/crm/v3/properties/{objectType}"
SERVED: dict[str, dict[tuple[str, str], dict[str, str]]] = {
    "contacts-v3.json": {
        ("GET", CONTACTS): {},
        ("POST", CONTACTS): {},
        ("POST", f"{CONTACTS}/search"): {},
        ("POST", f"{CONTACTS}/batch/read"): {},
        ("POST", f"{CONTACTS}/batch/update"): {},
        ("POST", f"{CONTACTS}/batch/create"): {},
        ("GET", CONTACTS + "/{contactId}"): {"contactId": "1"},
        ("PATCH", CONTACTS + "/{contactId}"): {"contactId": "2"},
        ("DELETE", CONTACTS + "/{contactId}"): {"contactId": "3"},
    },
    "properties-v3.json": {
        ("GET", PROPERTIES): {"objectType": "contacts"},
        ("POST", PROPERTIES): {"objectType": "contacts"},
        ("GET", PROPERTIES + "/{propertyName}"): {
            "objectType": "contacts",
            "propertyName": "email",
        },
    },
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
EXAMPLES = 12


def _with_nullable_property_values(node: Any) -> Any:
    """HubSpot's documents say `properties` values are strings; the API sends null for unset."""
    if isinstance(node, dict):
        patched = {key: _with_nullable_property_values(value) for key, value in node.items()}
        properties = patched.get("properties")
        if isinstance(properties, dict) and isinstance(properties.get("properties"), dict):
            values = properties["properties"].get("additionalProperties")
            if isinstance(values, dict) and values.get("type") == "string":
                values["nullable"] = True
        return patched
    if isinstance(node, list):
        return [_with_nullable_property_values(item) for item in node]
    return node


def _served_operations() -> list[tuple[Any, dict[str, str]]]:
    operations = []
    for filename, served in SERVED.items():
        raw = _with_nullable_property_values(json.loads((SPECS / filename).read_text()))
        for result in schemathesis.openapi.from_dict(raw).get_all_operations():
            operation = result.ok()
            key = (operation.method.upper(), operation.path)
            if key in served:
                operations.append((operation, served[key]))
    assert len(operations) == sum(len(served) for served in SERVED.values())
    return operations


@pytest.fixture
def hubspot(start_sandbox):
    sandbox = start_sandbox(
        leads=50, hubspot=HubSpotSettings(ten_second_limit=1_000_000, search_per_second=1_000_000)
    )
    info = sandbox.info["hubspot"]
    return info["base_url"], info["access_token"], sandbox.info["ca_cert"]


@pytest.mark.parametrize(
    "mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda mode: mode.value
)
def test_sandbox_conforms_to_hubspot_openapi_documents(hubspot, mode):
    base_url, token, ca_cert = hubspot
    headers = {"Authorization": f"Bearer {token}"}
    checked = 0
    for operation, path_parameters in _served_operations():
        strategy = operation.as_strategy(
            generation_mode=mode,
            path_parameters=path_parameters if mode is GenerationMode.POSITIVE else None,
        )

        @given(case=strategy)
        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def call_and_check(case) -> None:
            response = case.call(base_url=base_url, headers=headers, verify=ca_cert)
            case.validate_response(response, checks=CHECKS)

        try:
            call_and_check()
        except Unsatisfiable:
            # Some operations accept any request of their shape: no invalid one exists.
            assert mode is GenerationMode.NEGATIVE, operation.label
            continue
        checked += 1
    assert checked >= (12 if mode is GenerationMode.POSITIVE else 6)
