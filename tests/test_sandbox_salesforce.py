"""The Salesforce sandbox as simple-salesforce sees it: over real HTTPS, with the real client."""

from __future__ import annotations

import sqlite3
import time
from datetime import timedelta, timezone

import pandas as pd
import pytest
import requests
from simple_salesforce import Salesforce, format_soql
from simple_salesforce.exceptions import (
    SalesforceExpiredSession,
    SalesforceGeneralError,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from sandbox.http import FaultPlan
from sandbox.salesforce import SalesforceSettings
from sandbox.salesforce.api import PERSON_ID
from sandbox.salesforce.schema import IMPORT_USER_ID
from sandbox.seed import generate_leads

ALL_FIELDS = (
    "Id, Email, Status, Industry, NumberOfEmployees, AnnualRevenue, Budget__c, Need__c, "
    "Timeline__c, Decision_Maker__c, Page_Views__c, Last_Engaged_At__c, Lead_Score__c, "
    "Qualification_Status__c, Status_Locked__c, CreatedDate, LastModifiedDate, SystemModstamp, "
    "IsDeleted"
)


@pytest.fixture
def connect(trusted_session):
    def make(sandbox, session_id: str | None = None) -> Salesforce:
        info = sandbox.info["salesforce"]
        return Salesforce(
            instance_url=info["instance_url"],
            session_id=session_id or info["session_id"],
            session=trusted_session(sandbox),
        )

    return make


def api_url(sandbox, resource: str) -> str:
    return f"{sandbox.info['salesforce']['instance_url']}/services/data/v59.0/{resource}"


def auth(sandbox) -> dict[str, str]:
    return {"Authorization": f"Bearer {sandbox.info['salesforce']['session_id']}"}


def ids(records: list[dict]) -> list[str]:
    return [record["Id"] for record in records]


def as_frame(records: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame([{k: v for k, v in r.items() if k != "attributes"} for r in records])
    datetimes = ["CreatedDate", "LastModifiedDate", "SystemModstamp", "Last_Engaged_At__c"]
    for column in frame.columns.intersection(datetimes):
        frame[column] = pd.to_datetime(frame[column], format="%Y-%m-%dT%H:%M:%S.%f%z", utc=True)
    return frame


def error_code(error: Exception) -> str:
    return error.content[0]["errorCode"]


def test_query_all_and_query_more_page_through_every_lead(start_sandbox, connect):
    sandbox = start_sandbox(leads=5_500)
    sf = connect(sandbox)

    everything = sf.query_all("SELECT Id, SystemModstamp FROM Lead")
    assert everything["totalSize"] == len(everything["records"]) == sandbox.salesforce.lead_count()
    assert len(set(ids(everything["records"]))) == 5_500

    page = sf.query("SELECT Id FROM Lead ORDER BY SystemModstamp, Id")
    pages = [page]
    while not page["done"]:
        if len(pages) == 1:  # by locator, as query_more(identifier) builds the URL itself
            locator = page["nextRecordsUrl"].rsplit("/", 1)[1]
            page = sf.query_more(locator)
        else:
            assert page["nextRecordsUrl"].startswith("/services/data/v59.0/query/")
            page = sf.query_more(page["nextRecordsUrl"], identifier_is_url=True)
        pages.append(page)
    assert [len(p["records"]) for p in pages] == [2000, 2000, 1500]
    assert all(p["totalSize"] == 5_500 for p in pages)
    paged = [record_id for p in pages for record_id in ids(p["records"])]
    seeded = as_frame(everything["records"])
    assert paged == list(seeded.sort_values(["SystemModstamp", "Id"])["Id"])
    assert seeded["SystemModstamp"].duplicated().any()  # leads share stamps, as in real orgs


def test_query_all_includes_deleted_leads(start_sandbox, connect):
    sandbox = start_sandbox(leads=30)
    sf = connect(sandbox)
    victim = sf.query("SELECT Id FROM Lead LIMIT 1")["records"][0]["Id"]
    assert sf.Lead.delete(victim) == 204

    live = ids(sf.query_all("SELECT Id FROM Lead")["records"])
    with_deleted = sf.query_all("SELECT Id, IsDeleted FROM Lead", include_deleted=True)["records"]
    assert victim not in live and len(live) == 29
    assert {r["Id"]: r["IsDeleted"] for r in with_deleted}[victim] is True
    assert len(with_deleted) == 30
    assert sf.query("SELECT COUNT() FROM Lead WHERE IsDeleted = true")["totalSize"] == 0
    with pytest.raises(SalesforceResourceNotFound) as deleted:
        sf.Lead.get(victim)
    assert error_code(deleted.value) == "ENTITY_IS_DELETED"


def test_query_all_keeps_include_deleted_across_pages(start_sandbox, connect):
    sandbox = start_sandbox(leads=2_100)
    sf = connect(sandbox)
    deleted = ids(sf.query("SELECT Id FROM Lead ORDER BY Id DESC LIMIT 3")["records"])
    for record_id in deleted:
        sf.Lead.delete(record_id)
    records = sf.query_all("SELECT Id FROM Lead ORDER BY Id", include_deleted=True)["records"]
    assert len(records) == 2_100 and set(deleted) <= set(ids(records[2000:]))


def test_soql_filters_match_the_seeded_data(start_sandbox, connect):
    sandbox = start_sandbox(leads=400, seed=7)
    sf = connect(sandbox)
    leads = as_frame(sf.query_all(f"SELECT {ALL_FIELDS} FROM Lead")["records"])
    seeded = generate_leads(400, seed=7)
    assert sorted(leads["Email"].str.lower()) == sorted(seeded["email"].str.lower())
    assert leads["Status"].value_counts().to_dict() == seeded["crm_status"].value_counts().to_dict()

    def matching(soql: str) -> set[str]:
        return set(ids(sf.query_all(soql)["records"]))

    def expected(mask: pd.Series) -> set[str]:
        assert 0 < mask.sum() < len(leads), "a filter that tells nothing apart"
        return set(leads.loc[mask, "Id"])

    human = ["Working - Contacted", "Closed - Converted"]
    assert matching(
        f"SELECT Id FROM Lead WHERE Status IN ('{human[0]}', '{human[1]}')"
    ) == expected(leads["Status"].isin(human))
    assert matching("SELECT Id FROM Lead WHERE Status NOT IN ('Open - Not Contacted')") == expected(
        leads["Status"] != "Open - Not Contacted"
    )
    assert matching(
        "SELECT Id FROM Lead WHERE NumberOfEmployees >= 200 AND "
        "(Industry = 'software' OR Industry = 'SaaS')"
    ) == expected(
        (leads["NumberOfEmployees"] >= 200) & leads["Industry"].isin(["Software", "SaaS"])
    )
    assert matching("SELECT Id FROM Lead WHERE Email LIKE '%@GMAIL.com'") == expected(
        leads["Email"].str.lower().str.endswith("@gmail.com")
    )
    assert matching("SELECT Id FROM Lead WHERE Need__c = null") == expected(leads["Need__c"].isna())
    assert matching("SELECT Id FROM Lead WHERE Need__c != 'high'") == expected(
        leads["Need__c"] != "high"
    )
    assert matching(
        "SELECT Id FROM Lead WHERE NOT (Budget__c > 30000 OR Budget__c = null)"
    ) == expected(leads["Budget__c"] <= 30000)
    assert matching(
        "SELECT Id FROM Lead WHERE Timeline__c < 2030-01-01 AND Timeline__c != null"
    ) == expected(leads["Timeline__c"].notna())

    median = leads["SystemModstamp"].sort_values().iloc[len(leads) // 2].to_pydatetime()
    later = expected(leads["SystemModstamp"] > median)
    assert matching(format_soql("SELECT Id FROM Lead WHERE SystemModstamp > {}", median)) == later
    assert (
        matching(
            f"SELECT Id FROM Lead WHERE SystemModstamp > "
            f"{median.strftime('%Y-%m-%dT%H:%M:%S.000+0000')}"
        )
        == later
    )
    shifted = median.astimezone(timezone(timedelta(hours=2)))
    assert matching(f"SELECT Id FROM Lead WHERE SystemModstamp > {shifted.isoformat()}") == later
    assert (
        matching(
            f"SELECT Id FROM Lead WHERE SystemModstamp <= {median.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        )
        == set(leads["Id"]) - later
    )

    newest = sf.query(
        "SELECT Id, SystemModstamp FROM Lead ORDER BY SystemModstamp DESC, Id LIMIT 25"
    )
    assert newest["totalSize"] == 25
    assert ids(newest["records"]) == list(
        leads.sort_values(["SystemModstamp", "Id"], ascending=[False, True])["Id"][:25]
    )
    by_budget = ids(
        sf.query_all("SELECT Id FROM Lead ORDER BY Budget__c DESC NULLS LAST, Id")["records"]
    )
    assert by_budget == list(
        leads.sort_values(["Budget__c", "Id"], ascending=[False, True], na_position="last")["Id"]
    )
    ascending = ids(sf.query_all("SELECT Id FROM Lead ORDER BY Budget__c, Id")["records"])
    assert set(ascending[: leads["Budget__c"].isna().sum()]) == set(
        leads.loc[leads["Budget__c"].isna(), "Id"]
    )  # SOQL: nulls first when ascending

    count = sf.query("SELECT COUNT() FROM Lead WHERE Decision_Maker__c = false")
    assert count == {"totalSize": 400, "done": True, "records": []}
    case_blind = sf.query("select id, EMAIL from lead where email != null limit 1")["records"][0]
    assert set(case_blind) == {"attributes", "Id", "Email"}


def test_soql_values_come_back_typed_and_strings_escape(start_sandbox, connect):
    sandbox = start_sandbox(leads=5)
    sf = connect(sandbox)
    tricky = "O'Brien \\ 50%_off\nline"
    created = sf.Lead.create(
        {
            "LastName": tricky,
            "Company": "Acme",
            "NumberOfEmployees": 12,
            "AnnualRevenue": 1500000,
            "Decision_Maker__c": True,
            "Lead_Score__c": 71.5,
            "Timeline__c": "2024-01-17",
            "Qualified_At__c": "2024-01-17T19:55:04Z",
        }
    )
    found = sf.query(
        format_soql(
            "SELECT Id, LastName, NumberOfEmployees, AnnualRevenue, Decision_Maker__c, "
            "Lead_Score__c, Timeline__c, Qualified_At__c, Email FROM Lead WHERE LastName = {}",
            tricky,
        )
    )["records"]
    assert ids(found) == [created["id"]]
    record = found[0]
    assert record["LastName"] == tricky and record["Email"] is None
    assert record["NumberOfEmployees"] == 12 and isinstance(record["NumberOfEmployees"], int)
    assert record["AnnualRevenue"] == 1500000.0 and isinstance(record["AnnualRevenue"], float)
    assert record["Decision_Maker__c"] is True and record["Lead_Score__c"] == 71.5
    assert record["Timeline__c"] == "2024-01-17"
    assert record["Qualified_At__c"] == "2024-01-17T19:55:04.000+0000"
    like = sf.query(r"SELECT Id FROM Lead WHERE LastName LIKE '%50\%\_off%'")["records"]
    assert ids(like) == [created["id"]]


BAD_SOQL = {
    "SELECT Id, Foo FROM Lead": "INVALID_FIELD",
    "SELECT Id FROM Lead WHERE Bogus__c = 1": "INVALID_FIELD",
    "SELECT Id FROM Lead WHERE SystemModstamp > '2024-01-01'": "INVALID_FIELD",
    "SELECT Id FROM Lead WHERE": "MALFORMED_QUERY",
    "SELECT Id Lead": "MALFORMED_QUERY",
    "SELECT Id FROM Lead WHERE Email = 'unterminated": "MALFORMED_QUERY",
    "SELECT Id FROM Lead LIMIT ten": "MALFORMED_QUERY",
    "SELECT Id FROM Contact": "INVALID_TYPE",
}


def test_bad_soql_is_a_malformed_request(start_sandbox, connect):
    sf = connect(start_sandbox())
    for soql, code in BAD_SOQL.items():
        with pytest.raises(SalesforceMalformedRequest) as raised:
            sf.query(soql)
        assert (raised.value.status, error_code(raised.value)) == (400, code), soql
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.query("SELECT Id, Foo FROM Lead")
    assert "No such column 'Foo' on entity 'Lead'" in raised.value.content[0]["message"]


def test_describe_lists_every_field_with_its_type(start_sandbox, connect):
    sandbox = start_sandbox()
    described = connect(sandbox).Lead.describe()
    fields = {field["name"]: field for field in described["fields"]}
    assert described["name"] == "Lead"
    custom = {name for name, field in fields.items() if field["custom"]}
    assert custom == {
        "Budget__c",
        "Need__c",
        "Timeline__c",
        "Decision_Maker__c",
        "Page_Views__c",
        "Email_Opens__c",
        "Form_Submissions__c",
        "Last_Engaged_At__c",
        "Lead_Score__c",
        "Qualification_Status__c",
        "Qualification_Reason__c",
        "Qualified_At__c",
        "Status_Locked__c",
    }
    assert {
        name: fields[name]["type"]
        for name in (
            "Id",
            "Email",
            "Status",
            "NumberOfEmployees",
            "AnnualRevenue",
            "IsDeleted",
            "LastActivityDate",
            "SystemModstamp",
            "Lead_Score__c",
            "Qualification_Reason__c",
            "Description",
        )
    } == {
        "Id": "id",
        "Email": "email",
        "Status": "picklist",
        "NumberOfEmployees": "int",
        "AnnualRevenue": "currency",
        "IsDeleted": "boolean",
        "LastActivityDate": "date",
        "SystemModstamp": "datetime",
        "Lead_Score__c": "double",
        "Qualification_Reason__c": "string",
        "Description": "textarea",
    }
    assert [v["value"] for v in fields["Qualification_Status__c"]["picklistValues"]] == [
        "Qualified",
        "Nurture",
        "Disqualified",
        "Needs review",
    ]
    assert fields["Qualification_Reason__c"]["length"] == 255
    assert not fields["SystemModstamp"]["updateable"] and fields["Lead_Score__c"]["updateable"]


def test_record_get_patch_post_delete_move_the_stamps_forward(start_sandbox, connect):
    sandbox = start_sandbox(leads=10)
    sf = connect(sandbox)
    lead_id = sf.query("SELECT Id FROM Lead LIMIT 1")["records"][0]["Id"]
    before = sf.Lead.get(lead_id)
    assert sf.Lead.get(lead_id[:15])["Id"] == lead_id  # the 15-character form works too

    assert (
        sf.Lead.update(
            lead_id,
            {
                "Lead_Score__c": 88,
                "qualification_status__c": "Qualified",
                "Qualification_Reason__c": "Senior buyer, hot",
            },
        )
        == 204
    )
    first = sf.Lead.get(lead_id)
    assert sf.Lead.update(lead_id, {"Lead_Score__c": 89}) == 204
    second = sf.Lead.get(lead_id)
    assert (first["Lead_Score__c"], first["Qualification_Status__c"]) == (88.0, "Qualified")
    assert before["SystemModstamp"] < first["SystemModstamp"] < second["SystemModstamp"]
    assert first["LastModifiedDate"] == first["SystemModstamp"]
    assert second["CreatedDate"] == before["CreatedDate"] < before["SystemModstamp"]
    subset = sf.restful(f"sobjects/Lead/{lead_id}", params={"fields": "Id,lead_score__c"})
    assert set(subset) == {"attributes", "Id", "Lead_Score__c"}

    created = sf.Lead.create({"LastName": "Nguyen", "Company": "Acme", "Email": "an@acme.io"})
    assert created["success"] and created["errors"] == [] and created["id"].startswith("00Q")
    fresh = sf.Lead.get(created["id"])
    assert (fresh["Status"], fresh["IsDeleted"], fresh["Decision_Maker__c"]) == (
        "Open - Not Contacted",
        False,
        False,
    )
    assert fresh["CreatedDate"] == fresh["SystemModstamp"] > second["SystemModstamp"]

    assert sf.Lead.delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound):
        sf.Lead.get("00Q000000000000AAA")


INVALID_CHANGES = [
    ({"Nonexistent__c": 1}, "INVALID_FIELD"),
    ({"SystemModstamp": "2024-01-01T00:00:00Z"}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
    ({"Id": "00Q000000000000AAA"}, "INVALID_FIELD_FOR_INSERT_UPDATE"),
    ({"Qualification_Status__c": "Maybe"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    ({"Status": "Open"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
    ({"Qualification_Reason__c": "x" * 256}, "STRING_TOO_LONG"),
    ({"Lead_Score__c": "high"}, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
]


def test_invalid_writes_are_rejected_and_change_nothing(start_sandbox, connect):
    sf = connect(start_sandbox(leads=3))
    lead = sf.query("SELECT Id, SystemModstamp FROM Lead LIMIT 1")["records"][0]
    for change, code in INVALID_CHANGES:
        with pytest.raises(SalesforceMalformedRequest) as raised:
            sf.Lead.update(lead["Id"], change)
        assert error_code(raised.value) == code, change
    assert sf.Lead.get(lead["Id"])["SystemModstamp"] == lead["SystemModstamp"]


def collection(sf: Salesforce, method: str, records: list[dict], all_or_none: bool) -> list:
    body = {
        "allOrNone": all_or_none,
        "records": [{"attributes": {"type": "Lead"}, **record} for record in records],
    }
    return sf.restful("composite/sobjects", method=method, json=body)


def scores(sf: Salesforce, lead_ids: list[str]) -> dict[str, float | None]:
    soql = format_soql("SELECT Id, Lead_Score__c FROM Lead WHERE Id IN {}", lead_ids)
    return {r["Id"]: r["Lead_Score__c"] for r in sf.query(soql)["records"]}


def test_collection_update_reports_each_record_in_order(start_sandbox, connect):
    sandbox = start_sandbox(leads=5)
    sf = connect(sandbox)
    lead_ids = ids(sf.query("SELECT Id FROM Lead ORDER BY Id")["records"])
    results = collection(
        sf,
        "PATCH",
        [
            {"id": lead_ids[0], "Lead_Score__c": 10},
            {"id": lead_ids[1], "Qualification_Status__c": "Hot!"},
            {"id": lead_ids[2], "Lead_Score__c": 30},
            {"id": "00Q5g0000000zzzAAA", "Lead_Score__c": 40},
            {"Lead_Score__c": 50},
        ],
        all_or_none=False,
    )
    assert [r["success"] for r in results] == [True, False, True, False, False]
    assert [r["id"] for r in results[:3:2]] == [lead_ids[0], lead_ids[2]]
    assert results[1]["errors"] == [
        {
            "statusCode": "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            "message": "Qualification Status: bad value for restricted picklist field: Hot!",
            "fields": ["Qualification_Status__c"],
        }
    ]
    assert results[3]["errors"][0]["statusCode"] == "INVALID_CROSS_REFERENCE_KEY"
    assert results[4]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    assert scores(sf, lead_ids[:3]) == {lead_ids[0]: 10.0, lead_ids[1]: None, lead_ids[2]: 30.0}


def test_collection_all_or_none_rolls_everything_back(start_sandbox, connect):
    sandbox = start_sandbox(leads=5)
    sf = connect(sandbox)
    leads = sf.query("SELECT Id, SystemModstamp FROM Lead ORDER BY Id")["records"]
    results = collection(
        sf,
        "PATCH",
        [
            {"id": leads[0]["Id"], "Lead_Score__c": 10},
            {"id": leads[1]["Id"], "Qualification_Reason__c": "y" * 300},
            {"id": leads[2]["Id"], "Lead_Score__c": 30},
        ],
        all_or_none=True,
    )
    assert [r["success"] for r in results] == [False, False, False]
    assert [r["errors"][0]["statusCode"] for r in results] == [
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
        "STRING_TOO_LONG",
        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    ]
    after = sf.query("SELECT Id, SystemModstamp, Lead_Score__c FROM Lead ORDER BY Id")["records"]
    assert [(r["Id"], r["SystemModstamp"], r["Lead_Score__c"]) for r in after] == [
        (r["Id"], r["SystemModstamp"], None) for r in leads
    ]


def test_collection_create_and_its_200_record_limit(start_sandbox, connect):
    sandbox = start_sandbox(leads=2)
    sf = connect(sandbox)
    results = collection(
        sf,
        "POST",
        [
            {"LastName": "One", "Company": "A"},
            {"LastName": "Two"},
            {"LastName": "Three", "Company": "C", "Need__c": "medium"},
        ],
        all_or_none=False,
    )
    assert [r["success"] for r in results] == [True, False, True]
    assert results[1]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert sandbox.salesforce.lead_count() == 4

    too_many = [{"id": results[0]["id"], "Lead_Score__c": n} for n in range(201)]
    with pytest.raises(SalesforceMalformedRequest) as raised:
        collection(sf, "PATCH", too_many, all_or_none=False)
    assert error_code(raised.value) == "EXCEEDED_ID_LIMIT"
    assert sf.Lead.get(results[0]["id"])["Lead_Score__c"] is None
    assert all(r["success"] for r in collection(sf, "PATCH", too_many[:200], all_or_none=False))


def test_daily_limit_refuses_with_request_limit_exceeded(start_sandbox, connect):
    sandbox = start_sandbox(leads=3, salesforce=SalesforceSettings(daily_limit=100))
    sf = connect(sandbox)
    sandbox.salesforce.daily.used = 98
    assert sf.restful("limits")["DailyApiRequests"] == {"Max": 100, "Remaining": 1}
    sf.query("SELECT COUNT() FROM Lead")
    assert sf.api_usage["api-usage"].used == 100 and sf.api_usage["api-usage"].total == 100
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query("SELECT COUNT() FROM Lead")
    assert refused.value.status == 403
    assert refused.value.content == [
        {"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}
    ]


def test_a_bad_token_is_an_expired_session(start_sandbox, connect, trusted_session):
    sandbox = start_sandbox()
    with pytest.raises(SalesforceExpiredSession):
        connect(sandbox, session_id="00Dwrong!token").query("SELECT Id FROM Lead")
    response = trusted_session(sandbox).get(api_url(sandbox, "query/"), params={"q": "x"})
    assert response.status_code == 401
    assert response.json() == [
        {"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}
    ]
    assert sandbox.salesforce.daily.used == 0


def test_oauth_token_endpoint(start_sandbox, connect, trusted_session):
    sandbox = start_sandbox(leads=1)
    info, session = sandbox.info["salesforce"], trusted_session(sandbox)
    client = {"client_id": info["client_id"], "client_secret": info["client_secret"]}
    password_grant = {
        "grant_type": "password",
        **client,
        "username": info["username"],
        "password": info["password"],
    }
    for form in (password_grant, {"grant_type": "client_credentials", **client}):
        granted = session.post(info["token_url"], data=form)
        assert granted.status_code == 200
        token = granted.json()
        assert token["access_token"] != info["session_id"] and token["token_type"] == "Bearer"
        assert token["instance_url"] == info["instance_url"]
        assert {"id", "issued_at", "signature"} <= set(token)
        sf = connect(sandbox, session_id=token["access_token"])
        assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 1

    for wrong, error, description in (
        ({"password": "nope"}, "invalid_grant", "authentication failure"),
        ({"username": "eve"}, "invalid_grant", "authentication failure"),
        ({"client_secret": "nope"}, "invalid_client", "invalid client credentials"),
        ({"client_id": "nope"}, "invalid_client_id", "client identifier invalid"),
        ({"grant_type": "device"}, "unsupported_grant_type", "grant type not supported"),
        ({"colour": "blue"}, "invalid_request", "unsupported parameter: colour"),
    ):
        refused = session.post(info["token_url"], data={**password_grant, **wrong})
        assert refused.status_code == 400
        assert refused.json() == {"error": error, "error_description": description}
    assert sandbox.salesforce.daily.used == 2  # token calls are not API calls


@pytest.mark.parametrize(
    ("plan", "status", "code"),
    [
        (FaultPlan(rate_limited=1.0), 429, "REQUEST_LIMIT_EXCEEDED"),
        (FaultPlan(server_error=1.0), 503, "SERVER_UNAVAILABLE"),
    ],
)
def test_injected_error_responses(start_sandbox, connect, plan, status, code):
    sandbox = start_sandbox(faults=plan)
    with pytest.raises(SalesforceGeneralError) as raised:
        connect(sandbox).query("SELECT Id FROM Lead")
    assert raised.value.status == status and error_code(raised.value) == code


def test_injected_slow_response_still_answers(start_sandbox, connect):
    sandbox = start_sandbox(leads=2, faults=FaultPlan(slow=1.0, slow_seconds=0.3))
    started = time.monotonic()
    assert connect(sandbox).query("SELECT COUNT() FROM Lead")["totalSize"] == 2
    assert time.monotonic() - started >= 0.3


def test_injected_dropped_connection(start_sandbox, connect):
    sandbox = start_sandbox(faults=FaultPlan(dropped=1.0))
    with pytest.raises(requests.exceptions.ConnectionError):
        connect(sandbox).query("SELECT Id FROM Lead")


def test_injected_write_errors_fail_each_record(start_sandbox, connect):
    sandbox = start_sandbox(leads=3, faults=FaultPlan(write_error=1.0))
    sf = connect(sandbox)
    lead_ids = ids(sf.query("SELECT Id FROM Lead")["records"])
    results = collection(sf, "PATCH", [{"id": i, "Lead_Score__c": 1} for i in lead_ids], False)
    assert [r["errors"][0]["statusCode"] for r in results] == ["UNABLE_TO_LOCK_ROW"] * 3
    with pytest.raises(SalesforceMalformedRequest) as raised:
        sf.Lead.update(lead_ids[0], {"Lead_Score__c": 1})
    assert error_code(raised.value) == "UNABLE_TO_LOCK_ROW"
    assert set(scores(sf, lead_ids).values()) == {None}


def test_state_persists_across_a_restart(start_sandbox, connect, tmp_path):
    first = start_sandbox(leads=20, data_dir=tmp_path)
    sf = connect(first)
    lead_id = sf.query("SELECT Id FROM Lead LIMIT 1")["records"][0]["Id"]
    sf.Lead.update(lead_id, {"Qualification_Status__c": "Nurture"})
    first.stop()

    again = start_sandbox(leads=20, data_dir=tmp_path)
    sf = connect(again)
    assert sf.Lead.get(lead_id)["Qualification_Status__c"] == "Nurture"
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 20
    created = sf.Lead.create({"LastName": "After", "Company": "Restart"})
    assert created["id"] not in ids(
        sf.query("SELECT Id FROM Lead WHERE LastName != 'After'")["records"]
    )


def test_every_change_records_who_made_it_and_soql_filters_on_it(start_sandbox, connect):
    """LastModifiedById: the data import's on seeded leads, the API user's after an API write,
    a person's after their edit; never writable; `!=` on it in REST and Bulk API 2.0 queries."""
    sandbox = start_sandbox(leads=30)
    sf = connect(sandbox)
    api_user = sf.restful("chatter/users/me")["id"]
    seeded = ids(sf.query("SELECT Id FROM Lead ORDER BY Id")["records"])
    written, edited = seeded[:2]
    sf.Lead.update(written, {"Lead_Score__c": 50})
    sandbox.salesforce.edit_as_person(edited, {"Rating": "Hot"})
    created = sf.Lead.create({"LastName": "Okafor", "Company": "Acme"})["id"]
    records = sf.query_all("SELECT Id, LastModifiedById FROM Lead")["records"]
    modified_by = {record["Id"]: record["LastModifiedById"] for record in records}
    assert (modified_by[written], modified_by[created], modified_by[edited]) == (
        api_user,
        api_user,
        PERSON_ID,
    )
    assert {modified_by[crm_id] for crm_id in seeded[2:]} == {IMPORT_USER_ID}

    not_ours = format_soql("SELECT Id FROM Lead WHERE LastModifiedById != {} ORDER BY Id", api_user)
    by_others = ids(sf.query_all(not_ours)["records"])
    assert by_others == [crm_id for crm_id in seeded if crm_id != written]
    pages = sf.bulk2.Lead.query(not_ours, wait=0)
    assert [row for page in pages for row in page.split()[1:]] == [f'"{i}"' for i in by_others]

    with pytest.raises(SalesforceMalformedRequest) as refused:
        sf.Lead.update(edited, {"LastModifiedById": api_user})
    assert error_code(refused.value) == "INVALID_FIELD_FOR_INSERT_UPDATE"


def test_an_org_kept_from_before_last_modified_by_gets_it_on_restart(
    start_sandbox, connect, tmp_path
):
    first = start_sandbox(leads=20, data_dir=tmp_path)
    first.stop()
    with sqlite3.connect(tmp_path / "salesforce.sqlite3") as database:  # an older sandbox's org
        database.execute('ALTER TABLE "Lead" DROP COLUMN "LastModifiedById"')

    again = start_sandbox(leads=20, data_dir=tmp_path)
    sf = connect(again)
    records = sf.query("SELECT Id, LastModifiedById FROM Lead")["records"]
    assert {record["LastModifiedById"] for record in records} == {IMPORT_USER_ID}
    lead_id = records[0]["Id"]
    sf.Lead.update(lead_id, {"Lead_Score__c": 50})
    assert sf.Lead.get(lead_id)["LastModifiedById"] == sf.restful("chatter/users/me")["id"]
