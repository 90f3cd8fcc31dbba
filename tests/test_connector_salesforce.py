"""The Salesforce connector against the sandbox, through simple-salesforce."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from connectors import AuthenticationFailed, DailyLimitReached, MissingFields, connector_for
from connectors.credentials import SalesforceCredentials
from connectors.mapping import load_mapping
from connectors.retry import RetryPolicy
from connectors.salesforce import SalesforceConnector, connect
from connectors.salesforce.connector import DEFAULT_MAPPING
from connectors.salesforce.records import UnsafeValue
from connectors.settings import ConnectorSettings
from sandbox.http import FaultPlan
from sandbox.seed import generate_leads

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


def seed_with_ties(sandbox, count: int, stamps: int) -> pd.DataFrame:
    """Leads sharing only `stamps` distinct modification times, so ties straddle page edges."""
    leads = generate_leads(count, seed=3, now=NOW)
    leads["modified_at"] = NOW - pd.to_timedelta(leads.index % stamps, unit="h")
    sandbox.salesforce.seed(leads)
    return leads


def test_incremental_read_with_ties_at_page_boundaries_returns_each_lead_once(start_sandbox):
    sandbox = start_sandbox()
    seed_with_ties(sandbox, 5_000, stamps=3)
    connector = make_connector(sandbox)
    pages = list(connector.read_modified(NOW - pd.Timedelta(days=1), NOW + pd.Timedelta(seconds=1)))
    assert [len(page) for page in pages] == [2000, 2000, 1000]
    ids = pd.concat(pages)["crm_id"]
    assert ids.is_unique and len(ids) == 5_000
    edges = [
        (pages[i]["modified_at"].iloc[-1], pages[i + 1]["modified_at"].iloc[0]) for i in range(2)
    ]
    assert any(last == first for last, first in edges), "the test needs a tie across a page edge"
    stamps = pd.concat(pages)["modified_at"]
    assert stamps.is_monotonic_increasing
    assert connector.usage().reads == 3


def test_windows_are_half_open_and_timezone_independent(start_sandbox):
    sandbox = start_sandbox()
    seed_with_ties(sandbox, 300, stamps=3)
    connector = make_connector(sandbox)
    middle = NOW - pd.Timedelta(hours=1)

    def read(since, until):
        return set(pd.concat(connector.read_modified(since, until))["crm_id"])

    older, newer = (
        read(NOW - pd.Timedelta(hours=5), middle),
        read(middle, NOW + pd.Timedelta(hours=1)),
    )
    assert older.isdisjoint(newer) and len(older | newer) == 300
    new_york = "America/New_York"
    assert (
        read(middle.tz_convert(new_york), (NOW + pd.Timedelta(hours=1)).tz_convert(new_york))
        == newer
    )


def test_read_all_by_ids_and_stale(start_sandbox):
    sandbox = start_sandbox(leads=2_500)
    connector = make_connector(sandbox)
    everyone = pd.concat(connector.read_all())
    assert len(everyone) == 2_500 and everyone["crm_id"].is_unique
    assert set(everyone["source"]) == {"salesforce"}

    some = everyone["crm_id"].sample(7, random_state=1).tolist()
    assert set(connector.read_by_ids(some)["crm_id"]) == set(some)

    long_ago = NOW - pd.Timedelta(days=90)
    fresh, old = everyone["crm_id"].iloc[:10].tolist(), everyone["crm_id"].iloc[10:20].tolist()
    connector.write(pd.DataFrame({"crm_id": fresh, "qualified_at": NOW, "status": "Qualified"}))
    connector.write(pd.DataFrame({"crm_id": old, "qualified_at": long_ago}))
    stale = set(pd.concat(connector.read_stale(NOW - pd.Timedelta(days=30)))["crm_id"])
    closed = set(everyone.loc[everyone["crm_status"].str.startswith("Closed"), "crm_id"])
    expected = set(everyone["crm_id"]) - set(fresh) - closed
    assert stale == expected
    assert_cold_qualified_are_added(connector, everyone, fresh, closed, expected)


def test_write_reports_each_record_and_partial_failures(start_sandbox):
    sandbox = start_sandbox(leads=300)
    connector = make_connector(sandbox)
    ids = pd.concat(connector.read_all())["crm_id"].tolist()[:250]
    updates = pd.DataFrame(
        {
            "crm_id": ids,
            "status": "Nurture",
            "score": 41,
            "reason": "ICP industry: SaaS (+20)",
            "qualified_at": NOW,
        }
    )
    updates.loc[5, "status"] = "Maybe"  # not in the picklist
    updates.loc[7, "crm_id"] = "00Q000000000000AAA"  # no such lead
    report = connector.write(updates)
    assert report["crm_id"].tolist() == updates["crm_id"].tolist()
    assert report["success"].sum() == 248
    assert "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST" in report.loc[5, "error"]
    assert report.loc[7, "error"]
    assert connector.usage().writes == 2  # 200 + 50: the largest collections allowed
    written = connector.read_by_ids(ids[:3])
    assert set(written["status"]) == {"Nurture"} and set(written["score"]) == {41}


def test_retries_under_injected_faults_end_with_the_right_data(start_sandbox):
    faults = FaultPlan(rate_limited=0.15, server_error=0.15, dropped=0.1, seed=9)
    sandbox = start_sandbox(leads=4_500, faults=faults)
    connector = make_connector(sandbox)
    everyone = pd.concat(connector.read_all())
    assert len(everyone) == 4_500 and everyone["crm_id"].is_unique
    ids = everyone["crm_id"].tolist()[:400]
    report = connector.write(pd.DataFrame({"crm_id": ids, "score": 55}))
    assert report["success"].all()
    sandbox.salesforce_faults.configure(FaultPlan())
    assert set(make_connector(sandbox).read_by_ids(ids)["score"]) == {55}


def test_daily_limit_and_bad_token_stop_with_a_clear_error(start_sandbox):
    sandbox = start_sandbox(leads=10)
    sandbox.salesforce.daily.used = sandbox.salesforce.daily.limit
    with pytest.raises(DailyLimitReached, match="daily API request limit"):
        list(make_connector(sandbox).read_all())
    with pytest.raises(AuthenticationFailed, match="expired or is invalid"):
        list(make_connector(sandbox, session_id="00Dwrong!token").read_all())


def test_secrets_never_reach_logs_reprs_or_errors(start_sandbox, caplog):
    sandbox = start_sandbox(leads=4_500, faults=FaultPlan(server_error=0.5, seed=2))
    secret = sandbox.info["salesforce"]["session_id"]
    caplog.set_level(logging.DEBUG)
    connector = make_connector(sandbox)
    list(connector.read_all())
    with pytest.raises(AuthenticationFailed) as refused:
        list(make_connector(sandbox, session_id=secret + "x").read_all())
    credentials = SalesforceCredentials(instance_url="https://x", session_id=secret)
    assert "retrying" in caplog.text
    for text in (caplog.text, repr(credentials), str(credentials), str(refused.value)):
        assert secret not in text


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


def test_missing_custom_field_is_named_with_how_to_create_it(start_sandbox):
    sandbox = start_sandbox()
    mapping = load_mapping(DEFAULT_MAPPING)
    broken = mapping.model_copy(update={"write": {**mapping.write, "score": "Lead_Grade__c"}})
    make_connector(sandbox).check_fields()
    with pytest.raises(MissingFields, match="Lead_Grade__c.*Setup > Object Manager > Lead"):
        make_connector(sandbox, mapping=broken).check_fields()


def test_connector_for_uses_the_sandbox_info_file(start_sandbox, tmp_path, monkeypatch):
    sandbox = start_sandbox(leads=25)
    sandbox.write_info(tmp_path / "info.json")
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "info.json"))
    for name in ("SALESFORCE_SESSION_ID", "SALESFORCE_USERNAME", "SALESFORCE_CONSUMER_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert len(pd.concat(connector_for("salesforce").read_all())) == 25


def test_a_window_across_a_daylight_saving_change_reads_the_right_hours(start_sandbox):
    sandbox = start_sandbox()
    leads = generate_leads(240, seed=6, now=NOW)
    leads["modified_at"] = pd.Timestamp("2026-03-08T05:00:00Z") + pd.to_timedelta(
        leads.index, unit="min"
    )  # New York springs forward at 07:00 UTC that day
    sandbox.salesforce.seed(leads)
    new_york = "America/New_York"
    since = pd.Timestamp("2026-03-08T01:00:00").tz_localize(new_york)  # EST, 06:00 UTC
    until = pd.Timestamp("2026-03-08T04:00:00").tz_localize(new_york)  # EDT, 08:00 UTC
    read = pd.concat(make_connector(sandbox).read_modified(since, until))
    assert len(read) == 120
    assert read["modified_at"].min() == pd.Timestamp("2026-03-08T06:00:00Z")
    assert read["modified_at"].max() == pd.Timestamp("2026-03-08T07:59:00Z")


def assert_cold_qualified_are_added(connector, everyone, fresh, closed, stale) -> None:
    """Fresh Qualified leads come back too once they have not engaged since `cold_before`."""
    cold_before = NOW - pd.Timedelta(days=20)
    engaged = everyone.set_index("crm_id").loc[fresh, "last_engaged_at"]
    cold = set(engaged.index[engaged.isna() | (engaged < cold_before)]) - closed
    assert cold, "the test needs a fresh lead that went cold"
    with_cold = pd.concat(connector.read_stale(NOW - pd.Timedelta(days=30), cold_before))
    assert set(with_cold["crm_id"]) == stale | cold


def test_collection_writes_go_out_concurrently_and_report_in_input_order(start_sandbox):
    sandbox = start_sandbox(leads=1_000, faults=FaultPlan(latency_seconds=0.05))
    connector = SalesforceConnector(
        make_connector(sandbox).client, settings=ConnectorSettings(write_concurrency=3)
    )
    leads = pd.concat(connector.read_modified(NOW - pd.Timedelta(days=3650), NOW))
    updates = leads[["crm_id"]].assign(score=range(len(leads)), reason="concurrent")
    sandbox.salesforce_server.in_flight.peak = 0  # count the writes' concurrency only
    report = connector.write(updates)
    assert report["crm_id"].tolist() == updates["crm_id"].tolist()
    assert report["success"].all()
    assert connector.usage().writes == 5  # 1,000 leads in collections of 200
    assert sandbox.salesforce_server.in_flight.peak == 3
    after = connector.read_by_ids(updates["crm_id"]).set_index("crm_id")
    assert after.loc[updates["crm_id"], "score"].tolist() == list(map(float, updates["score"]))


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
