"""The HubSpot sandbox through hubspot-api-client 12 (and plain requests for raw error shapes).

Expected search results are computed in Python from the contacts the list endpoint returns, never
hard-coded, so the SQL the sandbox builds is checked against an independent reading of the rules.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
import urllib3
from hubspot import HubSpot
from hubspot.crm.contacts.exceptions import ApiException
from hubspot.crm.properties.exceptions import ApiException as PropertiesApiException

from sandbox.http import FaultPlan
from sandbox.hubspot import HubSpotSettings

FAST = HubSpotSettings(ten_second_limit=100_000, search_per_second=100_000)
SEARCHED = [
    "email",
    "jobtitle",
    "industry",
    "country",
    "numemployees",
    "hs_lead_status",
    "leadsync_budget",
    "lastmodifieddate",
]


def client(sandbox, **config) -> HubSpot:
    info = sandbox.info
    return HubSpot(
        access_token=info["hubspot"]["access_token"],
        host=info["hubspot"]["base_url"],
        ssl_ca_cert=info["ca_cert"],
        **config,
    )


def all_contacts(api: HubSpot, properties: list[str]) -> list:
    contacts, after = [], None
    while True:
        page = api.crm.contacts.basic_api.get_page(
            limit=100, after=after, properties=properties, archived=False
        )
        contacts.extend(page.results)
        if page.paging is None:
            return contacts
        after = page.paging.next.after


def search_all(api: HubSpot, body: dict) -> list:
    found, after = [], None
    while True:
        page = api.crm.contacts.search_api.do_search({**body, "limit": 200, "after": after})
        found.extend(page.results)
        if page.paging is None:
            return found
        after = page.paging.next.after


def error_body(error: Exception) -> dict:
    return json.loads(error.body)


def millis(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


# --- reading -------------------------------------------------------------------------------------


def test_list_pages_through_every_contact_exactly_once(start_sandbox):
    api = client(start_sandbox(leads=5_200, hubspot=FAST))
    contacts = all_contacts(api, ["email"])
    ids = [contact.id for contact in contacts]
    assert len(ids) == len(set(ids)) == 5_200
    assert all(contact.id.isdigit() and contact.properties["email"] for contact in contacts)
    assert {"createdate", "hs_object_id", "lastmodifieddate"} <= set(contacts[0].properties)


def test_default_properties_and_value_formats(start_sandbox):
    api = client(start_sandbox(leads=50, hubspot=FAST))
    contact = api.crm.contacts.basic_api.get_page(limit=1).results[0]
    assert set(contact.properties) == {
        "createdate",
        "email",
        "firstname",
        "hs_object_id",
        "lastmodifieddate",
        "lastname",
    }
    assert contact.properties["lastmodifieddate"].endswith("Z")
    assert contact.updated_at == datetime.fromisoformat(
        contact.properties["lastmodifieddate"].replace("Z", "+00:00")
    )
    full = api.crm.contacts.basic_api.get_by_id(
        contact.id, properties=["numemployees", "leadsync_timeline", "hs_lead_status"]
    )
    assert "." not in (full.properties["numemployees"] or "")
    timeline = full.properties["leadsync_timeline"]
    assert timeline is None or len(timeline) == 10  # YYYY-MM-DD
    assert full.properties["hs_lead_status"] in {"NEW", "IN_PROGRESS", "OPEN_DEAL", "UNQUALIFIED"}


def _number(text: str | None) -> float | None:
    return None if text is None else float(text)


def _lower(text: str | None) -> str | None:
    return None if text is None else text.lower()


def test_search_operators_match_an_independent_filter(start_sandbox):
    api = client(start_sandbox(leads=1_500, hubspot=FAST))
    contacts = {contact.id: contact.properties for contact in all_contacts(api, SEARCHED)}
    stamps = sorted(millis(p["lastmodifieddate"]) for p in contacts.values())
    low, high = stamps[len(stamps) // 4], stamps[len(stamps) // 2]
    cases: list[tuple[list[list[dict]], Callable[[dict], bool]]] = [
        (
            [[{"propertyName": "hs_lead_status", "operator": "EQ", "value": "open_deal"}]],
            lambda p: p["hs_lead_status"] == "OPEN_DEAL",
        ),
        (
            [[{"propertyName": "hs_lead_status", "operator": "NEQ", "value": "NEW"}]],
            lambda p: p["hs_lead_status"] != "NEW",
        ),
        (
            [[{"propertyName": "numemployees", "operator": "LT", "value": "50"}]],
            lambda p: _number(p["numemployees"]) is not None and float(p["numemployees"]) < 50,
        ),
        (
            [[{"propertyName": "numemployees", "operator": "LTE", "value": "49"}]],
            lambda p: _number(p["numemployees"]) is not None and float(p["numemployees"]) <= 49,
        ),
        (
            [[{"propertyName": "numemployees", "operator": "GT", "value": "1000"}]],
            lambda p: _number(p["numemployees"]) is not None and float(p["numemployees"]) > 1000,
        ),
        (
            [[{"propertyName": "numemployees", "operator": "GTE", "value": 1000}]],
            lambda p: _number(p["numemployees"]) is not None and float(p["numemployees"]) >= 1000,
        ),
        (
            [
                [
                    {
                        "propertyName": "lastmodifieddate",
                        "operator": "BETWEEN",
                        "value": str(low),
                        "highValue": str(high),
                    }
                ]
            ],
            lambda p: low <= millis(p["lastmodifieddate"]) <= high,
        ),
        (
            [
                [
                    {
                        "propertyName": "lastmodifieddate",
                        "operator": "GTE",
                        "value": datetime.fromtimestamp(high / 1000, UTC).isoformat(),
                    }
                ]
            ],
            lambda p: millis(p["lastmodifieddate"]) >= high,
        ),
        (
            [[{"propertyName": "industry", "operator": "IN", "values": ["software", "saas"]}]],
            lambda p: _lower(p["industry"]) in {"software", "saas"},
        ),
        (
            [[{"propertyName": "country", "operator": "NOT_IN", "values": ["us", "ca"]}]],
            lambda p: _lower(p["country"]) not in {"us", "ca"},
        ),
        (
            [[{"propertyName": "leadsync_budget", "operator": "HAS_PROPERTY"}]],
            lambda p: p["leadsync_budget"] is not None,
        ),
        (
            [[{"propertyName": "leadsync_budget", "operator": "NOT_HAS_PROPERTY"}]],
            lambda p: p["leadsync_budget"] is None,
        ),
        (
            [[{"propertyName": "email", "operator": "CONTAINS_TOKEN", "value": "*@gmail.com"}]],
            lambda p: (p["email"] or "").lower().endswith("@gmail.com"),
        ),
        (
            [[{"propertyName": "jobtitle", "operator": "CONTAINS_TOKEN", "value": "Sales"}]],
            lambda p: "sales" in (p["jobtitle"] or "").lower().split(" "),
        ),
        (
            [
                [{"propertyName": "hs_lead_status", "operator": "EQ", "value": "UNQUALIFIED"}],
                [
                    {"propertyName": "numemployees", "operator": "GTE", "value": "100"},
                    {"propertyName": "industry", "operator": "EQ", "value": "Retail"},
                ],
            ],
            lambda p: (
                p["hs_lead_status"] == "UNQUALIFIED"
                or (
                    _number(p["numemployees"]) is not None
                    and float(p["numemployees"]) >= 100
                    and _lower(p["industry"]) == "retail"
                )
            ),
        ),
    ]
    for groups, keep in cases:
        body = {"filterGroups": [{"filters": filters} for filters in groups]}
        found = [contact.id for contact in search_all(api, body)]
        expected = {contact_id for contact_id, p in contacts.items() if keep(p)}
        assert len(found) == len(set(found)), groups
        assert set(found) == expected, groups
        assert 0 < len(expected) < len(contacts), f"a weak case: {groups}"


def test_search_sorts_ties_deterministically_by_id(start_sandbox):
    api = client(start_sandbox(leads=600, hubspot=FAST))
    body = {
        "filterGroups": [],
        "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}],
        "properties": ["lastmodifieddate"],
    }
    found = search_all(api, body)
    keys = [(millis(c.properties["lastmodifieddate"]), int(c.id)) for c in found]
    assert keys == sorted(keys)
    assert len({stamp for stamp, _ in keys}) < len(keys), "the seed must give tied stamps"
    descending = api.crm.contacts.search_api.do_search(
        {"sorts": ["-lastmodifieddate"], "limit": 5, "properties": []}
    )
    assert (
        descending.results[0].properties["lastmodifieddate"]
        == found[-1].properties["lastmodifieddate"]
    )
    assert descending.total == 600


def test_search_stops_with_a_400_at_ten_thousand_results(start_sandbox):
    api = client(start_sandbox(leads=10_050, hubspot=FAST))
    body = {
        "filterGroups": [{"filters": [{"propertyName": "email", "operator": "HAS_PROPERTY"}]}],
        "sorts": ["hs_object_id"],
        "properties": ["email"],
        "limit": 200,
    }
    seen, after = [], None
    with pytest.raises(ApiException) as refused:
        while True:
            page = api.crm.contacts.search_api.do_search({**body, "after": after})
            assert page.total == 10_050
            seen.extend(contact.id for contact in page.results)
            after = page.paging.next.after
    assert refused.value.status == 400
    assert error_body(refused.value)["category"] == "VALIDATION_ERROR"
    assert after == "10000"
    assert len(seen) == len(set(seen)) == 10_000


def test_search_validates_limits_and_filters(start_sandbox):
    api = client(start_sandbox(leads=10, hubspot=FAST))
    has_email = {"propertyName": "email", "operator": "HAS_PROPERTY"}
    bad_bodies = [
        {"limit": 201},
        {"filterGroups": [{"filters": [has_email]}] * 6},
        {"filterGroups": [{"filters": [has_email] * 7}]},
        {"filterGroups": [{"filters": [has_email] * 6}] * 4},
        {"filterGroups": [{"filters": [{"propertyName": "nope", "operator": "EQ", "value": "x"}]}]},
        {
            "filterGroups": [
                {"filters": [{"propertyName": "numemployees", "operator": "GT", "value": "many"}]}
            ]
        },
    ]
    for body in bad_bodies:
        with pytest.raises(ApiException) as refused:
            api.crm.contacts.search_api.do_search(body)
        assert refused.value.status == 400, body
        assert error_body(refused.value)["category"] == "VALIDATION_ERROR"


# --- writing -------------------------------------------------------------------------------------


def test_batch_update_all_succeed_with_200_and_move_lastmodifieddate(start_sandbox):
    api = client(start_sandbox(leads=20, hubspot=FAST))
    before = api.crm.contacts.batch_api.read(
        {"inputs": [{"id": i} for i in ("1", "2", "3")], "properties": []}
    )
    inputs = [
        {
            "id": i,
            "properties": {
                "leadsync_score": "87",
                "leadsync_status": "Qualified",
                "leadsync_qualified_at": "2026-01-02T03:04:05.678Z",
            },
        }
        for i in ("1", "2", "3")
    ]
    data, status, _ = api.crm.contacts.batch_api.update_with_http_info({"inputs": inputs})
    assert status == 200 and data.status == "COMPLETE"
    assert {c.id for c in data.results} == {"1", "2", "3"}
    updated = {c.id: c for c in data.results}
    for contact in before.results:
        assert updated[contact.id].updated_at > contact.updated_at
        assert updated[contact.id].properties["leadsync_qualified_at"] == "2026-01-02T03:04:05.678Z"
    stamps = [millis(c.properties["lastmodifieddate"]) for c in data.results]
    assert stamps == sorted(stamps)  # never before an earlier write; writes may share a stamp
    again, _, _ = api.crm.contacts.batch_api.update_with_http_info({"inputs": inputs[:1]})
    assert millis(again.results[0].properties["lastmodifieddate"]) >= max(stamps)


def test_batch_update_partial_failure_is_207_with_per_record_errors(start_sandbox):
    api = client(start_sandbox(leads=20, hubspot=FAST))
    inputs = [
        {"id": "1", "properties": {"leadsync_score": "10"}},
        {"id": "999999", "properties": {"leadsync_score": "10"}},
        {"id": "2", "properties": {"no_such_property": "x"}},
        {"id": "3", "properties": {"leadsync_status": "Maybe"}},
        {"id": "4", "properties": {"leadsync_reason": "fits the ICP"}},
    ]
    data, status, _ = api.crm.contacts.batch_api.update_with_http_info({"inputs": inputs})
    assert status == 207
    assert sorted(c.id for c in data.results) == ["1", "4"]
    by_id = {i: error for error in data.errors for i in error.context["ids"]}
    assert set(by_id) == {"999999", "2", "3"}
    assert data.num_errors == len(data.errors)
    assert by_id["999999"].category == "OBJECT_NOT_FOUND"
    assert by_id["2"].category == by_id["3"].category == "VALIDATION_ERROR"
    assert "no_such_property" in by_id["2"].message and "Maybe" in by_id["3"].message
    unchanged = api.crm.contacts.basic_api.get_by_id("3", properties=["leadsync_status"])
    assert unchanged.properties["leadsync_status"] is None


def test_batches_over_100_inputs_are_rejected(start_sandbox):
    api = client(start_sandbox(leads=5, hubspot=FAST))
    inputs = [{"id": str(i), "properties": {"leadsync_score": "1"}} for i in range(1, 102)]
    with pytest.raises(ApiException) as refused:
        api.crm.contacts.batch_api.update({"inputs": inputs})
    assert refused.value.status == 400
    assert error_body(refused.value)["category"] == "VALIDATION_ERROR"


def test_batch_read_returns_found_contacts_and_errors_for_missing(start_sandbox):
    api = client(start_sandbox(leads=10, hubspot=FAST))
    data, status, _ = api.crm.contacts.batch_api.read_with_http_info(
        {
            "inputs": [{"id": "2"}, {"id": "5"}, {"id": "424242"}],
            "properties": ["company", "hs_lead_status"],
            "propertiesWithHistory": [],
        }
    )
    assert status == 207
    assert sorted(c.id for c in data.results) == ["2", "5"]
    assert {"company", "hs_lead_status"} <= set(data.results[0].properties)
    assert data.errors[0].context == {"ids": ["424242"]}
    everything = api.crm.contacts.batch_api.read({"inputs": [{"id": "1"}], "properties": []})
    assert everything.status == "COMPLETE" and everything.results[0].id == "1"


def test_create_single_and_batch(start_sandbox):
    api = client(start_sandbox(leads=3, hubspot=FAST))
    created, status, _ = api.crm.contacts.basic_api.create_with_http_info(
        {"properties": {"email": "ada@example.com", "firstname": "Ada", "hs_lead_status": "NEW"}}
    )
    assert status == 201 and created.id == "4"
    assert created.properties["email"] == "ada@example.com"
    batch, status, _ = api.crm.contacts.batch_api.create_with_http_info(
        {
            "inputs": [
                {"properties": {"email": "b@example.com"}, "associations": []},
                {"properties": {"email": "c@example.com", "lastname": "C"}, "associations": []},
            ]
        }
    )
    assert status == 201 and sorted(c.id for c in batch.results) == ["5", "6"]
    found = api.crm.contacts.search_api.do_search(
        {
            "filterGroups": [
                {
                    "filters": [
                        {"propertyName": "email", "operator": "EQ", "value": "ADA@example.com"}
                    ]
                }
            ]
        }
    )
    assert [c.id for c in found.results] == ["4"]


def test_patch_and_archive_single_contacts(start_sandbox):
    api = client(start_sandbox(leads=3, hubspot=FAST))
    first = api.crm.contacts.basic_api.update("1", {"properties": {"leadsync_score": "55"}})
    second = api.crm.contacts.basic_api.update("1", {"properties": {"leadsync_score": ""}})
    assert second.updated_at > first.updated_at
    assert second.properties["leadsync_score"] is None
    changed = api.crm.contacts.search_api.do_search(
        {
            "filterGroups": [
                {
                    "filters": [
                        {
                            "propertyName": "lastmodifieddate",
                            "operator": "GTE",
                            "value": str(millis(second.properties["lastmodifieddate"])),
                        }
                    ]
                }
            ]
        }
    )
    assert [c.id for c in changed.results] == ["1"]
    api.crm.contacts.basic_api.archive("2")
    with pytest.raises(ApiException) as missing:
        api.crm.contacts.basic_api.get_by_id("2")
    assert missing.value.status == 404
    archived = api.crm.contacts.basic_api.get_page(archived=True)
    assert [c.id for c in archived.results] == ["2"] and archived.results[0].archived
    assert api.crm.contacts.search_api.do_search({}).total == 2


# --- properties ----------------------------------------------------------------------------------


def test_properties_are_read_and_custom_ones_created_once(start_sandbox):
    sandbox = start_sandbox(leads=5, hubspot=HubSpotSettings(create_custom_properties=False))
    api = client(sandbox)
    names = {p.name for p in api.crm.properties.core_api.get_all("contacts").results}
    assert {"email", "hs_lead_status", "lastmodifieddate"} <= names
    assert not any(name.startswith("leadsync_") for name in names)
    lead_status = api.crm.properties.core_api.get_by_name("contacts", "hs_lead_status")
    assert [o.value for o in lead_status.options][:3] == ["NEW", "OPEN", "IN_PROGRESS"]
    definition = {
        "name": "leadsync_score",
        "label": "Lead score",
        "type": "number",
        "fieldType": "number",
        "groupName": "contactinformation",
    }
    created, status, _ = api.crm.properties.core_api.create_with_http_info("contacts", definition)
    assert status == 201 and created.name == "leadsync_score"
    with pytest.raises(PropertiesApiException) as duplicate:
        api.crm.properties.core_api.create("contacts", definition)
    assert duplicate.value.status == 409
    updated = api.crm.contacts.basic_api.update("1", {"properties": {"leadsync_score": "42.5"}})
    assert updated.properties["leadsync_score"] == "42.5"


# --- limits and faults ---------------------------------------------------------------------------


def test_ten_second_budget_answers_429_with_rate_limit_headers(start_sandbox):
    api = client(start_sandbox(leads=5, hubspot=HubSpotSettings(ten_second_limit=3)), retry=False)
    _, _, headers = api.crm.contacts.basic_api.get_page_with_http_info(limit=1)
    assert headers["X-HubSpot-RateLimit-Max"] == "3"
    assert headers["X-HubSpot-RateLimit-Remaining"] == "2"
    assert headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "10000"
    assert int(headers["X-HubSpot-RateLimit-Daily-Remaining"]) == 1_000_000 - 1
    for _ in range(2):
        api.crm.contacts.basic_api.get_page(limit=1)
    with pytest.raises(ApiException) as limited:
        api.crm.contacts.basic_api.get_page(limit=1)
    assert limited.value.status == 429
    assert 1 <= int(limited.value.headers["Retry-After"]) <= 10
    assert limited.value.headers["X-HubSpot-RateLimit-Remaining"] == "0"
    body = error_body(limited.value)
    assert body["policyName"] == "TEN_SECONDLY_ROLLING" and body["errorType"] == "RATE_LIMIT"
    assert body["message"] == "You have reached your ten_secondly_rolling limit."


def test_search_has_its_own_per_second_budget(start_sandbox):
    api = client(
        start_sandbox(leads=5, hubspot=HubSpotSettings(ten_second_limit=3, search_per_second=2)),
        retry=False,
    )
    for _ in range(2):
        _, _, headers = api.crm.contacts.search_api.do_search_with_http_info({"limit": 1})
        assert "X-HubSpot-RateLimit-Max" not in headers
    with pytest.raises(ApiException) as limited:
        api.crm.contacts.search_api.do_search({"limit": 1})
    assert limited.value.status == 429
    assert error_body(limited.value)["policyName"] == "SECONDLY"
    api.crm.contacts.basic_api.get_page(limit=1)  # the ten-second budget was not touched


def test_daily_limit(start_sandbox):
    api = client(start_sandbox(leads=5, hubspot=HubSpotSettings(daily_limit=2)), retry=False)
    api.crm.contacts.basic_api.get_page(limit=1)
    _, _, headers = api.crm.contacts.search_api.do_search_with_http_info({"limit": 1})
    assert headers["X-HubSpot-RateLimit-Daily-Remaining"] == "0"
    with pytest.raises(ApiException) as limited:
        api.crm.contacts.basic_api.get_page(limit=1)
    assert limited.value.status == 429
    assert error_body(limited.value)["policyName"] == "DAILY"
    assert "Retry-After" not in limited.value.headers


def test_bad_token_is_401_in_hubspots_shape(start_sandbox, trusted_session):
    sandbox = start_sandbox(leads=1)
    url = sandbox.info["hubspot"]["base_url"] + "/crm/v3/objects/contacts"
    response = trusted_session(sandbox).get(url, headers={"Authorization": "Bearer wrong"})
    assert response.status_code == 401
    body = response.json()
    assert body["status"] == "error" and body["category"] == "INVALID_AUTHENTICATION"
    assert body["message"].startswith("Authentication credentials not found")
    assert len(body["correlationId"]) == 36
    with pytest.raises(ApiException) as refused:
        HubSpot(
            access_token="wrong",
            host=sandbox.info["hubspot"]["base_url"],
            ssl_ca_cert=sandbox.info["ca_cert"],
        ).crm.contacts.basic_api.get_page()
    assert refused.value.status == 401


@pytest.mark.parametrize(
    ("fault", "status", "policy_or_category"),
    [
        ("rate_limited", 429, "TEN_SECONDLY_ROLLING"),
        ("server_error", 503, "SERVICE_UNAVAILABLE"),
    ],
)
def test_injected_error_responses(start_sandbox, fault, status, policy_or_category):
    api = client(start_sandbox(leads=5, faults=FaultPlan(**{fault: 1.0})), retry=False)
    with pytest.raises(ApiException) as failed:
        api.crm.contacts.basic_api.get_page(limit=1)
    assert failed.value.status == status
    body = error_body(failed.value)
    assert policy_or_category in (body.get("policyName"), body["category"])
    assert body["status"] == "error" and body["correlationId"]


def test_injected_slow_responses_still_answer(start_sandbox):
    api = client(start_sandbox(leads=5, faults=FaultPlan(slow=1.0, slow_seconds=0.3)))
    started = time.monotonic()
    assert len(api.crm.contacts.basic_api.get_page(limit=5).results) == 5
    assert time.monotonic() - started >= 0.3


def test_injected_dropped_connections(start_sandbox):
    sandbox = start_sandbox(leads=5, faults=FaultPlan(dropped=1.0))
    with pytest.raises(urllib3.exceptions.MaxRetryError):  # the client's default retries run out
        client(sandbox).crm.contacts.basic_api.get_page(limit=1)
    with pytest.raises(urllib3.exceptions.ProtocolError):  # no retries: the reset itself
        client(sandbox, retry=False).crm.contacts.search_api.do_search({"limit": 1})


def test_injected_per_record_write_errors(start_sandbox):
    api = client(start_sandbox(leads=5, faults=FaultPlan(write_error=1.0)))
    inputs = [{"id": i, "properties": {"leadsync_score": "1"}} for i in ("1", "2")]
    data, status, _ = api.crm.contacts.batch_api.update_with_http_info({"inputs": inputs})
    assert status == 207 and data.results == []
    assert sorted(i for error in data.errors for i in error.context["ids"]) == ["1", "2"]
    with pytest.raises(ApiException) as failed:
        api.crm.contacts.basic_api.update("1", {"properties": {"leadsync_score": "1"}})
    assert failed.value.status == 409
