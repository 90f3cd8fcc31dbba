"""The HubSpot sandbox as clients nobody here wrote see it: request fields it does not define are
refused (never ignored), object types in every spelling HubSpot takes, the discovery routes ETL
clients call first, and 404 / 405 / 401 in the order and shape HubSpot answers them."""

from __future__ import annotations

import pytest
import requests
from hubspot import HubSpot

from sandbox.hubspot import HubSpotSettings

FAST = HubSpotSettings(ten_second_limit=100_000, search_per_second=100_000)


@pytest.fixture
def portal(start_sandbox, trusted_session):
    """(base url, a session with the portal's token, the sandbox) on a portal of 30 contacts."""
    sandbox = start_sandbox(leads=30, hubspot=FAST)
    session = trusted_session(sandbox)
    session.headers["Authorization"] = f"Bearer {sandbox.info['hubspot']['access_token']}"
    return sandbox.info["hubspot"]["base_url"], session, sandbox


def client(sandbox) -> HubSpot:
    info = sandbox.info
    return HubSpot(
        access_token=info["hubspot"]["access_token"],
        host=info["hubspot"]["base_url"],
        ssl_ca_cert=info["ca_cert"],
    )


def assert_validation_error(response: requests.Response, field: str) -> None:
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"
    assert body["correlationId"] and f'"{field}"' in body["message"]


def test_a_top_level_filters_list_is_one_filter_group(portal):
    base, session, _ = portal
    first = session.get(f"{base}/crm/v3/objects/contacts?limit=1").json()["results"][0]
    filters = [{"propertyName": "hs_object_id", "operator": "EQ", "value": first["id"]}]
    found = session.post(f"{base}/crm/v3/objects/contacts/search", json={"filters": filters})
    assert found.status_code == 200, found.text
    assert [contact["id"] for contact in found.json()["results"]] == [first["id"]]


SEARCH = "/crm/v3/objects/contacts/search"
UNKNOWN_FIELDS = [
    (SEARCH, {"filterGroups": [], "limt": 10}, "limt"),
    (SEARCH, {"filterGroups": [{"filters": [], "operator": "AND"}]}, "operator"),
    (
        SEARCH,
        {"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY", "negate": True}]},
        "negate",
    ),
    (SEARCH, {"sorts": [{"propertyName": "email", "order": "DESC"}]}, "order"),
    (
        "/crm/v3/objects/contacts/batch/read",
        {"inputs": [{"id": "1"}], "archived": True},
        "archived",
    ),
    ("/crm/v3/objects/contacts/batch/read", {"inputs": [{"id": "1", "email": "x"}]}, "email"),
    ("/crm/v3/objects/contacts/batch/update", {"inputs": [], "allOrNone": True}, "allOrNone"),
    (
        "/crm/v3/objects/contacts/batch/update",
        {"inputs": [{"id": "1", "properties": {}, "upsert": True}]},
        "upsert",
    ),
    ("/crm/v3/objects/contacts/batch/create", {"inputs": [{"props": {}}]}, "props"),
    ("/crm/v3/objects/contacts", {"properties": {}, "archived": False}, "archived"),
    (
        "/crm/v3/properties/contacts",
        {
            "name": "x_score",
            "label": "X",
            "type": "number",
            "fieldType": "number",
            "groupName": "contactinformation",
            "required": True,
        },
        "required",
    ),
    (
        "/crm/v3/properties/contacts",
        {
            "name": "x_tier",
            "label": "Tier",
            "type": "enumeration",
            "fieldType": "select",
            "groupName": "contactinformation",
            "options": [{"label": "A", "value": "a", "hidden": False, "color": "red"}],
        },
        "color",
    ),
]


@pytest.mark.parametrize(("path", "body", "field"), UNKNOWN_FIELDS)
def test_a_request_field_hubspot_does_not_define_is_refused(portal, path, body, field):
    base, session, _ = portal
    assert_validation_error(session.post(f"{base}{path}", json=body), field)


def test_an_unknown_field_in_an_update_is_refused_and_nothing_is_written(portal):
    base, session, _ = portal
    first = session.get(f"{base}/crm/v3/objects/contacts?limit=1").json()["results"][0]
    url = f"{base}/crm/v3/objects/contacts/{first['id']}"
    response = session.patch(url, json={"properties": {"firstname": "Changed"}, "archived": True})
    assert_validation_error(response, "archived")
    assert session.get(url, params={"properties": "firstname"}).json()["properties"][
        "firstname"
    ] != "Changed"


def test_property_settings_hubspot_documents_are_kept(portal):
    base, session, _ = portal
    created = session.post(
        f"{base}/crm/v3/properties/contacts",
        json={
            "name": "x_rank",
            "label": "Rank",
            "type": "number",
            "fieldType": "number",
            "groupName": "contactinformation",
            "hidden": True,
            "displayOrder": 4,
            "numberDisplayHint": "formatted",
        },
    )
    assert created.status_code == 201, created.text
    read = session.get(f"{base}/crm/v3/properties/contacts/x_rank").json()
    assert (read["hidden"], read["displayOrder"], read["numberDisplayHint"]) == (
        True,
        4,
        "formatted",
    )


def test_object_types_in_the_singular_and_by_id_are_contacts(portal):
    base, session, _ = portal
    listed = session.get(f"{base}/crm/v3/objects/contacts?limit=5").json()["results"]
    for object_type in ("contact", "0-1"):
        other = session.get(f"{base}/crm/v3/objects/{object_type}?limit=5")
        assert other.status_code == 200, other.text
        assert [c["id"] for c in other.json()["results"]] == [c["id"] for c in listed]
        one = session.get(f"{base}/crm/v3/objects/{object_type}/{listed[0]['id']}")
        assert one.status_code == 200 and one.json()["id"] == listed[0]["id"]
        searched = session.post(f"{base}/crm/v3/objects/{object_type}/search", json={"limit": 5})
        assert searched.status_code == 200 and searched.json()["total"] == 30
        properties = session.get(f"{base}/crm/v3/properties/{object_type}")
        assert properties.status_code == 200
        assert "email" in {p["name"] for p in properties.json()["results"]}


def test_legacy_v2_contact_properties_list_every_v3_property(portal):
    base, session, _ = portal
    v3 = session.get(f"{base}/crm/v3/properties/contacts").json()["results"]
    v2 = session.get(f"{base}/properties/v2/contact/properties")
    assert v2.status_code == 200, v2.text
    listed = v2.json()
    assert isinstance(listed, list)
    assert [p["name"] for p in listed] == [p["name"] for p in v3]
    email = next(p for p in listed if p["name"] == "email")
    assert (email["type"], email["deleted"], email["readOnlyValue"]) == ("string", False, False)


def test_schemas_hold_no_custom_objects_through_the_client(portal):
    base, session, sandbox = portal
    schemas = client(sandbox).crm.schemas.core_api.get_all()
    assert schemas.results == []
    assert session.get(f"{base}/crm/v3/schemas").json() == {"results": []}


def test_contact_associations_read_an_empty_batch_through_the_client(portal):
    base, session, sandbox = portal
    first = session.get(f"{base}/crm/v3/objects/contacts?limit=1").json()["results"][0]
    batch = client(sandbox).crm.associations.v4.batch_api.get_page(
        from_object_type="contact",
        to_object_type="company",
        batch_input_public_fetch_associations_batch_request={"inputs": [{"id": first["id"]}]},
    )
    assert batch.status == "COMPLETE" and batch.results == []
    assert batch.started_at is not None and batch.completed_at is not None


def test_an_unknown_route_is_a_404_with_or_without_a_token(portal, trusted_session):
    base, session, sandbox = portal
    anonymous = trusted_session(sandbox)
    for caller in (session, anonymous):
        response = caller.get(f"{base}/crm/v3/objects/contacts/1/nothing-here")
        assert response.status_code == 404
        assert response.json()["category"] == "OBJECT_NOT_FOUND"
    known = anonymous.get(f"{base}/crm/v3/objects/contacts")
    assert known.status_code == 401 and known.json()["category"] == "INVALID_AUTHENTICATION"


@pytest.mark.parametrize("method", ["PUT", "OPTIONS", "TRACE"])
def test_an_unsupported_method_is_a_405_in_hubspot_shape(portal, method):
    base, session, _ = portal
    response = session.request(method, f"{base}/crm/v3/objects/contacts")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"] and "POST" in response.headers["Allow"]
    body = response.json()
    assert body["status"] == "error" and body["category"] == "VALIDATION_ERROR"


def test_head_answers_the_headers_of_the_get(portal):
    base, session, _ = portal
    url = f"{base}/crm/v3/objects/contacts?limit=3"
    head, get = session.head(url), session.get(url)  # one kept-alive connection
    assert head.status_code == get.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"] != "0"
    assert "X-HubSpot-RateLimit-Remaining" in head.headers
