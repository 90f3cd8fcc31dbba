"""Bulk API 2.0 in the Salesforce sandbox, driven by simple-salesforce's own `bulk2` client over
HTTPS. Every call passes wait=0: the sandbox finishes a job before the client's first poll."""

from __future__ import annotations

import csv
import io
import time

import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceOperationError,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from sandbox.http import FaultPlan

FIELDS = "Id, Email, Lead_Score__c, IsConverted, AnnualRevenue, Timeline__c, SystemModstamp"
MISSING_ID = "00Q5g00000000zzAAA"  # well-formed, but no such lead


@pytest.fixture
def connect(trusted_session):
    def make(sandbox) -> Salesforce:
        info = sandbox.info["salesforce"]
        return Salesforce(
            instance_url=info["instance_url"],
            session_id=info["session_id"],
            session=trusted_session(sandbox),
        )

    return make


def rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def csv_text(value) -> str:
    """A REST API JSON value as Bulk API CSV writes it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def bulk_update(sf: Salesforce, records: list[dict[str, str]]) -> dict:
    [result] = sf.bulk2.Lead.update(records=records, wait=0)
    return result


def lead(sf: Salesforce, lead_id: str) -> dict:
    return sf.Lead.get(lead_id)


def test_query_pages_return_each_lead_once_and_match_the_rest_query(start_sandbox, connect):
    sandbox = start_sandbox(leads=1_000)
    sf = connect(sandbox)
    soql = f"SELECT {FIELDS} FROM Lead ORDER BY SystemModstamp, Id"

    pages = list(sf.bulk2.Lead.query(soql, max_records=300, wait=0))

    assert [len(rows(page)) for page in pages] == [300, 300, 300, 100]
    assert all(page.startswith('"Id","Email","Lead_Score__c"') for page in pages)
    bulk = [row for page in pages for row in rows(page)]
    rest = sf.query_all(soql)["records"]
    assert [row["Id"] for row in bulk] == [record["Id"] for record in rest]
    assert bulk == [
        {name: csv_text(value) for name, value in record.items() if name != "attributes"}
        for record in rest
    ]
    assert {row["IsConverted"] for row in bulk} == {"true", "false"}
    assert any(row["Lead_Score__c"] == "" for row in bulk)  # null is an empty value


def test_results_pages_carry_record_counts_and_locators(start_sandbox, connect, trusted_session):
    sandbox = start_sandbox(leads=250)
    sf = connect(sandbox)
    job = sf.bulk2.Lead._client.create_job("query", "SELECT Id FROM Lead")
    assert job["state"] == "UploadComplete"
    url = f"{sf.bulk2_url}query/{job['id']}"
    headers = {"Authorization": f"Bearer {sf.session_id}"}
    session = trusted_session(sandbox)
    info = session.get(url, headers=headers).json()
    assert (info["state"], info["numberRecordsProcessed"]) == ("JobComplete", 250)

    counts, locators, locator = [], [], None
    while locator != "null":
        params = {"maxRecords": 100, **({"locator": locator} if locator else {})}
        page = session.get(f"{url}/results", headers=headers, params=params)
        assert page.status_code == 200 and page.headers["Content-Type"] == "text/csv"
        counts.append(int(page.headers["Sforce-NumberOfRecords"]))
        locator = page.headers["Sforce-Locator"]
        locators.append(locator)
    assert counts == [100, 100, 50] and locators[-1] == "null"
    again = session.get(f"{url}/results", headers=headers, params={"locator": locators[0]})
    assert again.headers["Sforce-NumberOfRecords"] == "150"  # a locator stays valid
    assert session.get(f"{url}/results", headers=headers).headers["Sforce-Locator"] == "null"
    bad = session.get(f"{url}/results", headers=headers, params={"locator": "bm9wZQ"})
    assert bad.status_code == 400

    assert session.delete(url, headers=headers).status_code == 204
    assert session.get(url, headers=headers).status_code == 404


def test_writes_during_paging_do_not_shift_the_pages(start_sandbox, connect):
    sandbox = start_sandbox(leads=500)
    sf = connect(sandbox)
    soql = "SELECT Id, Lead_Score__c FROM Lead ORDER BY SystemModstamp, Id"
    expected = [record["Id"] for record in sf.query_all(soql)["records"]]

    pages = sf.bulk2.Lead.query(soql, max_records=100, wait=0)
    seen = [row["Id"] for row in rows(next(pages))]
    # Move leads of the first and of later pages to the end of the order, and add one.
    moved = [expected[5], expected[150], expected[420]]
    bulk_update(sf, [{"Id": lead_id, "Lead_Score__c": "99"} for lead_id in moved])
    sf.Lead.create({"LastName": "Late", "Company": "Newcomer Ltd"})
    later = [row for page in pages for row in rows(page)]
    seen += [row["Id"] for row in later]

    assert seen == expected
    assert {row["Lead_Score__c"] for row in later if row["Id"] in moved} == {"99.0"}


def test_query_all_includes_deleted_leads(start_sandbox, connect):
    sandbox = start_sandbox(leads=30)
    sf = connect(sandbox)
    victim = sf.query("SELECT Id FROM Lead LIMIT 1")["records"][0]["Id"]
    sf.Lead.delete(victim)
    soql = "SELECT Id, IsDeleted FROM Lead"
    live = [row["Id"] for page in sf.bulk2.Lead.query(soql, wait=0) for row in rows(page)]
    everything = [row for page in sf.bulk2.Lead.query_all(soql, wait=0) for row in rows(page)]
    assert len(live) == 29 and victim not in live
    assert {row["Id"]: row["IsDeleted"] for row in everything}[victim] == "true"


def test_query_jobs_reject_what_bulk_api_2_cannot_run(start_sandbox, connect):
    sf = connect(start_sandbox(leads=5))
    with pytest.raises(Exception, match="INVALID_FIELD"):
        list(sf.bulk2.Lead.query("SELECT Nope__c FROM Lead", wait=0))
    with pytest.raises(Exception, match="INVALIDJOB"):
        list(sf.bulk2.Lead.query("SELECT COUNT() FROM Lead", wait=0))


def test_update_job_writes_values_and_reports_failed_rows(start_sandbox, connect):
    sandbox = start_sandbox(leads=10)
    sf = connect(sandbox)
    ids = [record["Id"] for record in sf.query("SELECT Id FROM Lead ORDER BY Id")["records"]]
    records = [
        {"Id": ids[0], "Lead_Score__c": "81.5", "Qualification_Status__c": "Qualified"},
        {"Id": ids[1], "Lead_Score__c": "81.5", "Qualification_Status__c": "Maybe"},
        {"Id": ids[2], "Lead_Score__c": "high", "Qualification_Status__c": "Nurture"},
        {"Id": MISSING_ID, "Lead_Score__c": "1", "Qualification_Status__c": "Nurture"},
        {"Id": "not-an-id", "Lead_Score__c": "1", "Qualification_Status__c": "Nurture"},
        {"Id": ids[3], "Lead_Score__c": "7", "Qualification_Status__c": "Disqualified"},
    ]

    result = bulk_update(sf, records)

    assert (result["numberRecordsProcessed"], result["numberRecordsFailed"]) == (6, 4)
    failed = {row["Id"]: row for row in rows(sf.bulk2.Lead.get_failed_records(result["job_id"]))}
    assert {lead_id: row["sf__Error"].split(":")[0] for lead_id, row in failed.items()} == {
        ids[1]: "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        ids[2]: "INVALID_TYPE_ON_FIELD_IN_RECORD",
        MISSING_ID: "INVALID_CROSS_REFERENCE_KEY",
        "not-an-id": "MALFORMED_ID",
    }
    assert failed[ids[1]]["sf__Error"].endswith(":Qualification_Status__c --")
    assert failed[ids[1]]["Qualification_Status__c"] == "Maybe"  # the uploaded row, echoed
    successful = rows(sf.bulk2.Lead.get_successful_records(result["job_id"]))
    assert [(row["sf__Id"], row["sf__Created"]) for row in successful] == [
        (ids[0], "false"),
        (ids[3], "false"),
    ]
    assert rows(sf.bulk2.Lead.get_unprocessed_records(result["job_id"])) == []
    assert lead(sf, ids[0])["Lead_Score__c"] == 81.5
    assert lead(sf, ids[3])["Qualification_Status__c"] == "Disqualified"
    assert lead(sf, ids[1])["Qualification_Status__c"] is None  # failed rows change nothing


def test_na_sets_null_and_an_empty_value_leaves_the_field(start_sandbox, connect):
    sandbox = start_sandbox(leads=2)
    sf = connect(sandbox)
    first, second = [r["Id"] for r in sf.query("SELECT Id FROM Lead ORDER BY Id")["records"]]
    for lead_id in (first, second):
        sf.Lead.update(lead_id, {"Lead_Score__c": 50, "Qualification_Reason__c": "fit"})

    result = bulk_update(
        sf,
        [
            {"Id": first, "Lead_Score__c": "#N/A", "Qualification_Reason__c": ""},
            {"Id": second, "Lead_Score__c": "", "Qualification_Reason__c": "#N/A"},
        ],
    )

    assert result["numberRecordsFailed"] == 0
    assert (lead(sf, first)["Lead_Score__c"], lead(sf, first)["Qualification_Reason__c"]) == (
        None,
        "fit",
    )
    assert (lead(sf, second)["Lead_Score__c"], lead(sf, second)["Qualification_Reason__c"]) == (
        50.0,
        None,
    )


def test_csv_quoting_round_trips(start_sandbox, connect):
    sandbox = start_sandbox(leads=1)
    sf = connect(sandbox)
    lead_id = sf.query("SELECT Id FROM Lead")["records"][0]["Id"]
    reason = 'said "yes", then\nleft'
    bulk_update(sf, [{"Id": lead_id, "Qualification_Reason__c": reason}])
    [page] = sf.bulk2.Lead.query("SELECT Qualification_Reason__c FROM Lead", wait=0)
    assert rows(page) == [{"Qualification_Reason__c": reason}]


def test_insert_job_creates_leads(start_sandbox, connect):
    sandbox = start_sandbox()
    sf = connect(sandbox)
    [result] = sf.bulk2.Lead.insert(
        records=[
            {"LastName": "Okafor", "Company": "Acme", "Email": "ada@acme.example"},
            {"LastName": "Nobody", "Company": "", "Email": ""},
        ],
        wait=0,
    )
    [created] = rows(sf.bulk2.Lead.get_successful_records(result["job_id"]))
    [failed] = rows(sf.bulk2.Lead.get_failed_records(result["job_id"]))
    assert created["sf__Created"] == "true"
    assert lead(sf, created["sf__Id"])["Email"] == "ada@acme.example"
    assert failed["sf__Error"].startswith("REQUIRED_FIELD_MISSING:")
    assert sandbox.salesforce.lead_count() == 1


def test_a_job_with_an_unknown_field_fails_and_leaves_its_rows_unprocessed(start_sandbox, connect):
    sandbox = start_sandbox(leads=1)
    sf = connect(sandbox)
    lead_id = sf.query("SELECT Id FROM Lead")["records"][0]["Id"]
    bulk = sf.bulk2.Lead
    with pytest.raises(SalesforceOperationError, match="Field name not found : Nope__c"):
        bulk.update(records=[{"Id": lead_id, "Nope__c": "x"}], wait=0)
    [job] = [job for job in sandbox.salesforce.bulk._jobs.values()]
    assert rows(bulk.get_unprocessed_records(job.id)) == [{"Id": lead_id, "Nope__c": "x"}]


def test_an_open_job_can_be_aborted_and_takes_one_upload(start_sandbox, connect):
    sf = connect(start_sandbox(leads=1))
    client = sf.bulk2.Lead._client
    job = client.create_job("update")
    assert job["state"] == "Open"
    client.upload_job_data(job["id"], "Id,Lead_Score__c\n00Q5g0000000001EAA,5\n")
    with pytest.raises(Exception, match="INVALIDJOBSTATE"):
        client.upload_job_data(job["id"], "Id,Lead_Score__c\n00Q5g0000000001EAA,6\n")
    assert client.abort_job(job["id"], False)["state"] == "Aborted"
    assert client.get_job(job["id"], False)["state"] == "Aborted"
    assert len(rows(client.get_ingest_results(job["id"], "unprocessedrecords"))) == 1
    with pytest.raises(Exception, match="INVALIDJOBSTATE"):
        client.close_job(job["id"])


def test_line_ending_must_match_the_job(start_sandbox, connect):
    sf = connect(start_sandbox(leads=1))
    client = sf.bulk2.Lead._client
    job = client.create_job("update")  # lineEnding LF
    client.upload_job_data(job["id"], "Id,Lead_Score__c\r\n00Q5g0000000001EAA,5\r\n")
    client.close_job(job["id"])
    info = client.get_job(job["id"], False)
    assert info["state"] == "Failed" and "LineEnding is invalid" in info["errorMessage"]


def test_write_faults_fail_rows_as_in_collections(start_sandbox, connect):
    sandbox = start_sandbox(leads=3, faults=FaultPlan(write_error=1.0))
    sf = connect(sandbox)
    ids = [r["Id"] for r in sf.query("SELECT Id FROM Lead")["records"]]
    result = bulk_update(sf, [{"Id": lead_id, "Lead_Score__c": "1"} for lead_id in ids])
    failed = rows(sf.bulk2.Lead.get_failed_records(result["job_id"]))
    assert result["numberRecordsFailed"] == 3
    assert {row["sf__Error"].split(":")[0] for row in failed} == {"UNABLE_TO_LOCK_ROW"}


def test_every_bulk_call_counts_against_the_daily_limit(start_sandbox, connect):
    sandbox = start_sandbox(leads=250)
    sf = connect(sandbox)
    daily = sandbox.salesforce.daily
    used = daily.used
    list(sf.bulk2.Lead.query("SELECT Id FROM Lead", max_records=100, wait=0))
    assert daily.used - used == 5  # create, one poll, three results pages
    lead_id = sf.query("SELECT Id FROM Lead LIMIT 1")["records"][0]["Id"]
    used = daily.used
    bulk_update(sf, [{"Id": lead_id, "Lead_Score__c": "3"}])
    assert daily.used - used == 5  # create, upload, close, one poll, job info

    daily.used = daily.limit - 3  # enough to create the job, poll it, read one page
    pages = sf.bulk2.Lead.query("SELECT Id FROM Lead", max_records=100, wait=0)
    assert len(rows(next(pages))) == 100
    with pytest.raises(SalesforceRefusedRequest) as refused:
        next(pages)
    assert refused.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_a_hundred_query_jobs_at_once_all_stay_pollable(start_sandbox, connect):
    """A client slicing a backfill creates many jobs before it reads any: none is forgotten."""
    sf = connect(start_sandbox(leads=300))
    client = sf.bulk2.Lead._client
    soql = "SELECT Id FROM Lead ORDER BY Id LIMIT {}"
    slices = [(client.create_job("query", soql.format(3 * (n + 1)))["id"], n) for n in range(100)]
    for job_id, n in slices:
        assert client.get_job(job_id, True)["state"] == "JobComplete"
        result = client.get_query_results(job_id, max_records=1_000)
        assert result["number_of_records"] == 3 * (n + 1)
        assert len(rows(result["records"])) == 3 * (n + 1)


def test_job_results_live_on_disk_until_the_job_is_deleted(start_sandbox, connect, tmp_path):
    sf = connect(start_sandbox(leads=50, data_dir=tmp_path))
    client = sf.bulk2.Lead._client
    job_id = client.create_job("query", "SELECT Id, Email FROM Lead")["id"]
    jobs_dir = tmp_path / "salesforce-bulk-jobs"
    assert [path.name for path in jobs_dir.iterdir()] == [f"{job_id}.rowids"]
    assert len(rows(client.get_query_results(job_id)["records"])) == 50
    # simple-salesforce's delete_job parses the documented empty 204 as JSON and fails
    deleted = sf.session.delete(f"{sf.base_url}jobs/query/{job_id}", headers=sf.headers)
    assert deleted.status_code == 204
    assert list(jobs_dir.iterdir()) == []
    with pytest.raises(SalesforceResourceNotFound):
        client.get_job(job_id, True)


def test_jobs_past_their_retention_are_forgotten(start_sandbox, connect, monkeypatch):
    from sandbox.salesforce import bulk

    monkeypatch.setattr(bulk, "JOB_RETENTION_MS", 1)  # a week, shortened to a millisecond
    sf = connect(start_sandbox(leads=1))
    client = sf.bulk2.Lead._client
    old = client.create_job("query", "SELECT Id FROM Lead")["id"]
    time.sleep(0.01)
    new = client.create_job("query", "SELECT Id FROM Lead")["id"]
    assert client.get_job(new, True)["id"] == new
    with pytest.raises(SalesforceResourceNotFound):
        client.get_job(old, True)
