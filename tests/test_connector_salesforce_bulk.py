"""Bulk API 2.0 reads and write-back (connectors/salesforce/bulk.py) against the sandbox."""

from __future__ import annotations

from collections import Counter
from urllib.parse import urlsplit

import pandas as pd
import pytest
from simple_salesforce import Salesforce

from connectors.credentials import SalesforceCredentials
from connectors.mapping import load_mapping
from connectors.salesforce import bulk, connect, records
from connectors.salesforce.connector import DEFAULT_MAPPING

MAPPING = load_mapping(DEFAULT_MAPPING)
NOW = pd.Timestamp.now(tz="UTC").floor("s")
MISSING_ID = "00Q5g00000000zzAAA"  # well-formed, but no such lead


def client_for(sandbox) -> Salesforce:
    info = sandbox.info
    return connect(
        SalesforceCredentials(
            instance_url=info["salesforce"]["instance_url"],
            session_id=info["salesforce"]["session_id"],
            ca_bundle=info["ca_cert"],
        )
    )


def count_calls(client: Salesforce) -> Counter:
    """Requests by method and the first two segments of the path after /services/data/vXX.X/,
    e.g. "GET jobs/query": the response hook a caller can count Salesforce calls with."""
    calls: Counter = Counter()

    def hook(response, *args, **kwargs):
        resource = urlsplit(response.request.url).path.split("/", 4)[4]
        calls[f"{response.request.method} {'/'.join(resource.split('/')[:2])}"] += 1

    client.session.hooks["response"].append(hook)
    return calls


def rest_frame(client: Salesforce, soql: str) -> pd.DataFrame:
    return records.to_frame(client.query_all(soql)["records"], MAPPING)


def read(client: Salesforce, crm_ids: list[str]) -> pd.DataFrame:
    frame = rest_frame(client, records.select_by_ids(MAPPING, crm_ids))
    return frame.set_index("crm_id").loc[crm_ids]


def qualify(client: Salesforce, crm_ids: list[str]) -> None:
    """Give some leads every kind of value (scores, times, true flags) through the REST API."""
    for number, crm_id in enumerate(crm_ids):
        client.Lead.update(
            crm_id,
            {
                "Lead_Score__c": 40 + number / 4,
                "Qualification_Status__c": "Qualified",
                "Qualification_Reason__c": f'fit, "strong" #{number}',
                "Qualified_At__c": "2024-03-01T10:00:00.250Z",
                "Decision_Maker__c": True,
                "Status_Locked__c": number % 2 == 0,
            },
        )


def test_a_bulk_read_gives_the_same_frame_as_a_rest_read(start_sandbox):
    sandbox = start_sandbox(leads=700)
    client = client_for(sandbox)
    soql = records.select_all(MAPPING)
    qualify(client, [record["Id"] for record in client.query(soql + " LIMIT 30")["records"]])
    calls = count_calls(client)

    pages = list(bulk.query_frames(client, soql, MAPPING, 300, wait=0))

    assert [len(page) for page in pages] == [300, 300, 100]
    assert calls == {"POST jobs/query": 1, "GET jobs/query": 1 + 3}  # create, a poll, 3 pages
    rest = rest_frame(client, soql)
    pd.testing.assert_frame_equal(pd.concat(pages, ignore_index=True), rest)
    assert all((page.dtypes == rest.dtypes).all() for page in pages)
    assert rest["authority"].any() and rest["qualified_at"].notna().any()
    assert rest["reason"].str.contains('"', regex=False).any()


def test_a_bulk_read_of_nothing_gives_one_empty_frame(start_sandbox):
    client = client_for(start_sandbox(leads=5))
    soql = records.select_by_ids(MAPPING, [MISSING_ID])
    [page] = bulk.query_frames(client, soql, MAPPING, 100, wait=0)
    pd.testing.assert_frame_equal(page, records.to_frame([], MAPPING))


def test_update_reports_each_row_in_input_order_and_nulls_clear(start_sandbox):
    sandbox = start_sandbox(leads=6)
    client = client_for(sandbox)
    ids = [record["Id"] for record in client.query("SELECT Id FROM Lead ORDER BY Id")["records"]]
    qualify(client, ids)
    updates = pd.DataFrame(
        {
            "crm_id": [ids[0], MISSING_ID, ids[1], "bogus", ids[2], ids[3]],
            "status": ["Nurture", "Nurture", "Maybe", "Nurture", "Disqualified", "Nurture"],
            "score": [55.5, 1.0, 2.0, 3.0, None, 12.0],
            "reason": ["re-scored", "x", "x", "x", "", None],
            "qualified_at": [NOW, NOW, NOW, NOW, pd.NaT, NOW],
        }
    ).astype({"score": "Float64"})
    calls = count_calls(client)

    results = bulk.update(client, updates, MAPPING, wait=0)

    assert results[0] is None and results[4] is None and results[5] is None
    assert results[1].startswith("INVALID_CROSS_REFERENCE_KEY:")
    assert results[2].startswith("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:")
    assert results[3].startswith("MALFORMED_ID:")
    # create, upload, close, one poll, job info, failed results: all write-path calls
    assert calls == {
        "POST jobs/ingest": 1,
        "PUT jobs/ingest": 1,
        "PATCH jobs/ingest": 1,
        "GET jobs/ingest": 3,
    }
    leads = read(client, ids[:4])
    assert leads.loc[ids[0], ["status", "score", "reason"]].tolist() == [
        "Nurture",
        55.5,
        "re-scored",
    ]
    assert leads.loc[ids[0], "qualified_at"] == NOW
    assert leads.loc[ids[1], "status"] == "Qualified"  # its row failed: nothing changed
    cleared = leads.loc[ids[2]]
    assert cleared["status"] == "Disqualified"
    assert pd.isna(cleared["score"]) and pd.isna(cleared["reason"])
    assert pd.isna(cleared["qualified_at"])
    assert pd.isna(leads.loc[ids[3], "reason"]) and leads.loc[ids[3], "score"] == 12.0


def test_update_matches_failures_among_equal_ids_by_their_values(start_sandbox):
    sandbox = start_sandbox(leads=2)
    client = client_for(sandbox)
    first = client.query("SELECT Id FROM Lead ORDER BY Id LIMIT 1")["records"][0]["Id"]
    updates = pd.DataFrame(
        {"crm_id": [first, first, first], "status": ["Nope", "Nurture", "Nope"], "score": 1.0}
    )
    results = bulk.update(client, updates, MAPPING, wait=0)
    assert results[1] is None
    assert all(message.startswith("INVALID_OR_NULL") for message in (results[0], results[2]))


def test_updating_nothing_makes_no_calls(start_sandbox):
    client = client_for(start_sandbox())
    calls = count_calls(client)
    empty = pd.DataFrame(columns=["crm_id", "status", "score"])
    assert bulk.update(client, empty, MAPPING, wait=0) == []
    assert not calls


def test_a_failed_job_raises(start_sandbox):
    sandbox = start_sandbox(leads=1)
    client = client_for(sandbox)
    lead_id = client.query("SELECT Id FROM Lead")["records"][0]["Id"]
    wrong = MAPPING.model_copy(update={"write": {"status": "No_Such_Field__c"}})
    with pytest.raises(Exception, match="Field name not found"):
        bulk.update(client, pd.DataFrame({"crm_id": [lead_id], "status": ["x"]}), wrong, wait=0)


def test_rows_a_finished_job_left_unprocessed_are_reported_as_such():
    """The sandbox processes every row of a finished job; Salesforce may not, so the successful
    results decide (this stands in for the client's results calls)."""

    class Results:
        def get_failed_records(self, job_id: str) -> str:
            return '"sf__Id","sf__Error","Id","Lead_Score__c"\n"","BAD:no:--","a","1"\n'

        def get_successful_records(self, job_id: str) -> str:
            return '"sf__Id","sf__Created","Id","Lead_Score__c"\n"b","false","b","2"\n'

    job = {
        "job_id": "750x",
        "numberRecordsTotal": 3,
        "numberRecordsProcessed": 2,
        "numberRecordsFailed": 1,
    }
    keys = [("a", "1"), ("b", "2"), ("c", "3")]
    messages = bulk._job_messages(Results(), job, ["Id", "Lead_Score__c"], keys)
    assert messages == ["BAD:no:--", None, bulk.NOT_PROCESSED]
