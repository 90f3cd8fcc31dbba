"""The Salesforce sandbox as clients nobody here wrote see it: describe global, request fields
Salesforce does not define refused in its error shape, and 405 for a method a resource lacks."""

from __future__ import annotations

import json

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest


@pytest.fixture
def org(start_sandbox, trusted_session):
    """(simple-salesforce client, plain session with the org's token, REST base URL)."""
    sandbox = start_sandbox(leads=5)
    info = sandbox.info["salesforce"]
    sf = Salesforce(
        instance_url=info["instance_url"],
        session_id=info["session_id"],
        session=trusted_session(sandbox),
    )
    session = trusted_session(sandbox)
    session.headers["Authorization"] = f"Bearer {info['session_id']}"
    return sf, session, f"{info['instance_url']}/services/data/v59.0"


def lead_ids(sf: Salesforce) -> list[str]:
    return [record["Id"] for record in sf.query("SELECT Id FROM Lead ORDER BY Id")["records"]]


def test_describe_global_lists_lead_with_its_urls(org):
    sf, _, _ = org
    described = sf.describe()
    assert described["encoding"] == "UTF-8" and described["maxBatchSize"] == 200
    lead = next(entry for entry in described["sobjects"] if entry["name"] == "Lead")
    assert (lead["label"], lead["labelPlural"], lead["keyPrefix"]) == ("Lead", "Leads", "00Q")
    assert lead["queryable"] and lead["updateable"] and not lead["custom"]
    assert lead["urls"]["describe"] == "/services/data/v59.0/sobjects/Lead/describe"
    # the URLs it gives lead to resources the org serves
    assert sf.restful(lead["urls"]["describe"].removeprefix("/services/data/v59.0/"))["name"] == (
        "Lead"
    )


def collection_body(records: list[dict], **extra) -> dict:
    return {
        "allOrNone": False,
        "records": [{"attributes": {"type": "Lead"}, **record} for record in records],
        **extra,
    }


def test_a_collection_with_an_unknown_top_level_field_is_a_json_parser_error(org):
    sf, session, base = org
    first = lead_ids(sf)[0]
    body = json.dumps(collection_body([{"id": first, "Lead_Score__c": 1}], allOrNothing=True))
    response = session.patch(
        f"{base}/composite/sobjects", data=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    [error] = response.json()
    assert error["errorCode"] == "JSON_PARSER_ERROR"
    assert error["message"].startswith('Unrecognized field "allOrNothing" at [line:1, column:')
    assert sf.Lead.get(first)["Lead_Score__c"] is None


@pytest.mark.parametrize("method", ["PATCH", "POST"])
def test_a_collection_naming_a_field_lead_lacks_fails_as_a_whole(org, method):
    sf, _, _ = org
    first, second = lead_ids(sf)[:2]
    records = [{"id": first, "Lead_Score__c": 7}, {"id": second, "Lead_Scor__c": 8}]
    if method == "POST":
        records = [
            {"LastName": "New", "Company": "Acme", "Lead_Score__c": 7},
            {"LastName": "Newer", "Company": "Acme", "Lead_Scor__c": 8},
        ]
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.restful("composite/sobjects", method=method, json=collection_body(records))
    [error] = raised.value.content
    assert error["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Lead_Scor__c' on sobject of type Lead" in error["message"]
    assert sf.Lead.get(first)["Lead_Score__c"] is None
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 5


@pytest.mark.parametrize("method", ["PUT", "OPTIONS", "TRACE"])
def test_an_unsupported_method_is_a_405_in_salesforce_shape(org, method):
    sf, session, base = org
    response = session.request(method, f"{base}/sobjects/Lead/{lead_ids(sf)[0]}")
    assert response.status_code == 405
    assert set(response.headers["Allow"].split(",")) >= {"GET", "PATCH", "DELETE"}
    [error] = response.json()
    assert error["errorCode"] == "METHOD_NOT_ALLOWED"


def test_an_unknown_method_on_an_unknown_resource_is_a_404(org):
    _, session, base = org
    response = session.request("OPTIONS", f"{base}/nothing/here")
    assert response.status_code == 404
    assert response.json()[0]["errorCode"] == "NOT_FOUND"


def test_head_answers_the_headers_of_the_get(org):
    """Salesforce documents HEAD on its resources as the GET's headers without the body; the
    next request on the kept-alive connection still reads its own answer."""
    sf, session, base = org
    url = f"{base}/sobjects/Lead/{lead_ids(sf)[0]}"
    head, get = session.head(url), session.get(url)
    assert head.status_code == get.status_code == 200 and head.content == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"] != "0"
    assert get.json()["attributes"]["type"] == "Lead"
