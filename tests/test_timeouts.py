"""Every CRM call is bounded in time: against sandbox CRMs that leave some requests unanswered
(the `hang` fault), the real clients give up after the read timeout and the connectors retry,
so reads and writes finish with every record; a Bulk API 2.0 job that never finishes stops the
run after the configured time. Each test has a hard timeout: without the bounds it would hang
forever (the thread method ends the session instead of waiting on a thread stuck in a read)."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from connectors import ConnectorError
from connectors.credentials import HubSpotCredentials, SalesforceCredentials
from connectors.hubspot import HubSpotConnector, HubSpotLimits
from connectors.hubspot import connect as connect_hubspot
from connectors.retry import RetryPolicy
from connectors.salesforce import SalesforceConnector
from connectors.salesforce import connect as connect_salesforce
from connectors.salesforce.bulk import BulkJobTimeout
from connectors.settings import ConnectorSettings
from sandbox.http import FaultPlan
from sandbox.hubspot import HubSpotSettings
from sandbox.salesforce import SalesforceSettings

FAST_RETRIES = RetryPolicy(attempts=12, initial_seconds=0.01, max_seconds=0.05, jitter_seconds=0.01)
HANGS = FaultPlan(hang=0.2, seed=2)  # hang_seconds: an hour, far past any test


@pytest.fixture
def short_timeouts(monkeypatch) -> ConnectorSettings:
    monkeypatch.setenv("LEADSYNC_CONNECT_TIMEOUT_SECONDS", "2")
    monkeypatch.setenv("LEADSYNC_READ_TIMEOUT_SECONDS", "0.4")
    return ConnectorSettings()


def salesforce(sandbox, settings: ConnectorSettings | None = None) -> SalesforceConnector:
    info = sandbox.info
    credentials = SalesforceCredentials(
        instance_url=info["salesforce"]["instance_url"],
        session_id=info["salesforce"]["session_id"],
        ca_bundle=info["ca_cert"],
    )
    return SalesforceConnector(
        connect_salesforce(credentials, settings), retry=FAST_RETRIES, settings=settings
    )


def hubspot(sandbox) -> HubSpotConnector:
    info = sandbox.info
    credentials = HubSpotCredentials(
        access_token=info["hubspot"]["access_token"],
        base_url=info["hubspot"]["base_url"],
        ca_bundle=info["ca_cert"],
    )
    return HubSpotConnector(
        connect_hubspot(credentials),
        limits=HubSpotLimits(per_ten_seconds=1_000_000, search_per_second=100_000),
        retry=FAST_RETRIES,
        write_concurrency=4,
    )


def test_timeouts_default_per_api_and_come_from_the_environment(monkeypatch):
    defaults = ConnectorSettings()
    assert defaults.timeout("salesforce") == (10.0, 90.0)
    assert defaults.timeout("hubspot") == (10.0, 60.0)
    assert defaults.bulk_job_timeout_seconds == 3600.0
    monkeypatch.setenv("LEADSYNC_CONNECT_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("LEADSYNC_READ_TIMEOUT_SECONDS", "7.5")
    monkeypatch.setenv("LEADSYNC_BULK_JOB_TIMEOUT_SECONDS", "90")
    settings = ConnectorSettings()
    assert settings.timeout("salesforce") == settings.timeout("hubspot") == (3.0, 7.5)
    assert settings.bulk_job_timeout_seconds == 90.0


@pytest.mark.timeout(60, method="thread")
def test_salesforce_reads_and_writes_every_record_through_unanswered_requests(
    start_sandbox, short_timeouts, caplog
):
    sandbox = start_sandbox(leads=2_500, faults=HANGS)
    connector = salesforce(sandbox)  # the settings from the environment
    everyone = pd.concat(connector.read_all())
    assert len(everyone) == 2_500 and everyone["crm_id"].is_unique
    assert "Salesforce did not answer in time" in caplog.text  # a read did hang
    caplog.clear()
    ids = everyone["crm_id"].tolist()[:1_000]
    report = connector.write(pd.DataFrame({"crm_id": ids, "score": 57, "status": "Nurture"}))
    assert report["success"].all(), report["error"].dropna().unique()
    assert "Salesforce did not answer in time" in caplog.text  # a write did hang

    sandbox.salesforce_faults.configure(FaultPlan())
    assert set(connector.read_by_ids(ids)["score"]) == {57}


@pytest.mark.timeout(60, method="thread")
def test_hubspot_reads_and_writes_every_record_through_unanswered_requests(
    start_sandbox, short_timeouts, caplog
):
    unlimited = HubSpotSettings(ten_second_limit=1_000_000, search_per_second=100_000)
    sandbox = start_sandbox(leads=1_500, hubspot=unlimited, faults=HANGS)
    connector = hubspot(sandbox)  # the settings from the environment
    everyone = pd.concat(connector.read_all())
    assert len(everyone) == 1_500 and everyone["crm_id"].is_unique
    assert "HubSpot did not answer in time" in caplog.text  # a read did hang
    caplog.clear()
    ids = everyone["crm_id"].tolist()[:600]
    report = connector.write(pd.DataFrame({"crm_id": ids, "score": 57, "status": "Nurture"}))
    assert report["success"].all(), report["error"].dropna().unique()
    assert "HubSpot did not answer in time" in caplog.text  # a write did hang

    sandbox.hubspot_faults.configure(FaultPlan())
    assert set(connector.read_by_ids(ids)["score"]) == {57}


@pytest.mark.timeout(60, method="thread")
def test_a_bulk_job_that_never_finishes_stops_the_read_and_the_write(start_sandbox, caplog):
    sandbox = start_sandbox(leads=30, salesforce=SalesforceSettings(bulk_job_seconds=3_600))
    settings = ConnectorSettings(salesforce_bulk_threshold=10, bulk_job_timeout_seconds=2)
    connector = salesforce(sandbox, settings)
    with pytest.raises(BulkJobTimeout, match="did not finish within 2 s") as stopped:
        list(connector.read_all())
    assert isinstance(stopped.value, ConnectorError)

    ids = pd.concat(salesforce(sandbox).read_all())["crm_id"].tolist()[:20]  # REST: 30 < 10k
    caplog.set_level(logging.WARNING)
    with pytest.raises(ConnectorError, match="did not finish within 2 s") as interrupted:
        connector.write(pd.DataFrame({"crm_id": ids, "score": 12}))
    assert not interrupted.value.report["success"].any()
    assert "retrying" not in caplog.text  # a job that did not finish is not sent again
    states = [job.state for job in sandbox.salesforce.bulk._jobs.values()]
    assert sorted(states) == ["Aborted", "InProgress"]  # simple-salesforce aborts the ingest job
