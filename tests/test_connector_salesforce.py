"""What only the Salesforce connector has, against the sandbox, through simple-salesforce: SOQL
built from values, and Bulk API 2.0. What every connector does is in test_connectors.py."""

from __future__ import annotations

import pandas as pd
import pytest

from connectors.credentials import SalesforceCredentials
from connectors.mapping import load_mapping
from connectors.retry import RetryPolicy
from connectors.salesforce import SalesforceConnector, connect
from connectors.salesforce.connector import DEFAULT_MAPPING
from connectors.salesforce.records import UnsafeValue
from connectors.settings import ConnectorSettings

FAST_RETRIES = RetryPolicy(attempts=12, initial_seconds=0.01, max_seconds=0.05, jitter_seconds=0.01)
NOW = pd.Timestamp.now(tz="UTC").floor("s")


def make_connector(
    sandbox, retry=FAST_RETRIES, mapping=None, session_id=None
) -> SalesforceConnector:
    info = sandbox.info
    credentials = SalesforceCredentials(
        instance_url=info["salesforce"]["instance_url"],
        session_id=session_id or info["salesforce"]["session_id"],
        ca_bundle=info["ca_cert"],
    )
    return SalesforceConnector(connect(credentials), mapping, retry)


def test_soql_injection_in_a_parameter_is_rejected_or_escaped(start_sandbox):
    sandbox = start_sandbox(leads=100)
    connector = make_connector(sandbox)
    with pytest.raises(UnsafeValue):
        connector.read_by_ids(["00Q000000000000AAA' OR Name != '"])
    with pytest.raises(UnsafeValue):
        list(connector.read_modified("2026-01-01' OR Id != '", NOW))
    tricky = load_mapping(DEFAULT_MAPPING).model_copy(
        update={"closed_statuses": ["Closed - Converted') OR (Status != '"]}
    )
    stale = pd.concat(make_connector(sandbox, mapping=tricky).read_stale(NOW))
    assert len(stale) == 100  # the odd status is a value, not SOQL: it excludes nothing


def test_large_backfills_read_and_write_through_bulk_api_jobs(start_sandbox):
    sandbox = start_sandbox(leads=1_200)
    rest = SalesforceConnector(
        make_connector(sandbox).client, settings=ConnectorSettings(salesforce_bulk=False)
    )
    bulk = SalesforceConnector(
        make_connector(sandbox).client, settings=ConnectorSettings(salesforce_bulk_threshold=1_000)
    )
    by_rest, by_bulk = pd.concat(rest.read_all()), pd.concat(bulk.read_all())
    pd.testing.assert_frame_equal(by_bulk.reset_index(drop=True), by_rest.reset_index(drop=True))
    assert rest.usage().reads == 1  # one REST page of up to 2,000
    assert bulk.usage().reads == 1 + 3  # a count to decide; create job, its status, one page

    updates = by_bulk[["crm_id"]].assign(score=7.0, reason="bulk")
    updates.loc[updates.index[0], "crm_id"] = "00Q5g00000000zzAAA"  # no such lead
    report = bulk.write(updates)
    assert report["crm_id"].tolist() == updates["crm_id"].tolist()
    assert report["success"].tolist() == [False] + [True] * (len(updates) - 1)
    assert bulk.usage().writes == 6  # create, upload, close, status, job info, failed results
    assert (rest.read_by_ids(updates["crm_id"][1:])["score"] == 7.0).all()


def test_a_bulk_job_that_fails_as_a_whole_fails_its_records_not_the_run(start_sandbox):
    sandbox = start_sandbox(leads=30)
    default = load_mapping(DEFAULT_MAPPING)
    unknown_field = default.model_copy(update={"write": {**default.write, "reason": "Nope__c"}})
    connector = SalesforceConnector(
        make_connector(sandbox).client,
        unknown_field,
        settings=ConnectorSettings(salesforce_bulk_threshold=10),
    )
    ids = pd.concat(connector.read_modified(NOW - pd.Timedelta(days=3650), NOW))["crm_id"]
    report = connector.write(pd.DataFrame({"crm_id": ids, "reason": "x"}))
    assert report["crm_id"].tolist() == ids.tolist()
    assert not report["success"].any()
    assert report["error"].str.startswith("Bulk API job failed").all()
