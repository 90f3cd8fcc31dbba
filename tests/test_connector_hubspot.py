"""The HubSpot connector against the sandbox, through hubspot-api-client."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from connectors import AuthenticationFailed, DailyLimitReached, MissingFields
from connectors.__main__ import main as connectors_main
from connectors.credentials import HubSpotCredentials
from connectors.hubspot import HubSpotConnector, HubSpotLimits, connect
from connectors.retry import RetryPolicy
from sandbox.http import FaultPlan
from sandbox.hubspot import HubSpotSettings
from sandbox.seed import generate_leads

FAST_RETRIES = RetryPolicy(attempts=12, initial_seconds=0.01, max_seconds=0.05, jitter_seconds=0.01)
UNLIMITED = HubSpotSettings(ten_second_limit=1_000_000, search_per_second=100_000)
NO_PACING = HubSpotLimits(per_ten_seconds=1_000_000, search_per_second=100_000)
NOW = pd.Timestamp.now(tz="UTC").floor("s")


def everything() -> tuple[pd.Timestamp, pd.Timestamp]:
    """A window holding every seeded contact (seeded as of the sandbox's start)."""
    now = pd.Timestamp.now(tz="UTC")
    return now - pd.Timedelta(days=400), now + pd.Timedelta(hours=1)


def make_connector(sandbox, limits=NO_PACING, token=None, retry=FAST_RETRIES) -> HubSpotConnector:
    info = sandbox.info
    credentials = HubSpotCredentials(
        access_token=token or info["hubspot"]["access_token"],
        base_url=info["hubspot"]["base_url"],
        ca_bundle=info["ca_cert"],
    )
    return HubSpotConnector(connect(credentials), limits=limits, retry=retry)


def seed_with_ties(sandbox, count: int, stamps: int) -> None:
    """Contacts sharing only `stamps` modification times: ties straddle pages and the 10k cap."""
    leads = generate_leads(count, seed=8, now=NOW)
    leads["modified_at"] = NOW - pd.to_timedelta(leads.index % stamps, unit="min")
    sandbox.hubspot.seed(leads)


def test_backfill_of_50000_contacts_past_the_search_cap_gets_each_once(start_sandbox):
    sandbox = start_sandbox(leads=50_000, hubspot=UNLIMITED)
    connector = make_connector(sandbox)
    searched = pd.concat(connector.read_modified(*everything()))["crm_id"]
    assert len(searched) == 50_000 and searched.is_unique
    searches = connector.usage().reads
    assert searches == 250  # 50,000 / 200: no request past the cap, none wasted

    listed = pd.concat(connector.read_all())["crm_id"]
    assert len(listed) == 50_000 and listed.is_unique
    assert set(listed) == set(searched)
    assert connector.usage().reads - searches == 250  # unfiltered, also 200 per call


def test_more_contacts_than_the_cap_on_one_stamp_are_each_read_once(start_sandbox):
    sandbox = start_sandbox(hubspot=UNLIMITED)
    seed_with_ties(sandbox, 10_300, stamps=1)
    frame = pd.concat(make_connector(sandbox).read_modified(*everything()))
    assert len(frame) == 10_300 and frame["crm_id"].is_unique


def test_writes_during_a_read_do_not_make_it_skip_leads(start_sandbox):
    """Written leads leave the search window (their modification time moves to now): paging
    must not shift past leads that were never read."""
    sandbox = start_sandbox(leads=1_000, hubspot=UNLIMITED)
    connector = make_connector(sandbox)
    since, _ = everything()
    until = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=1)
    seen = []
    for page in connector.read_modified(since, until):
        seen += page["crm_id"].tolist()
        assert connector.write(pd.DataFrame({"crm_id": page["crm_id"], "score": 1})).success.all()
    assert len(seen) == 1_000 and len(set(seen)) == 1_000


def test_windows_are_half_open_and_timezone_independent(start_sandbox):
    sandbox = start_sandbox(hubspot=UNLIMITED)
    seed_with_ties(sandbox, 600, stamps=6)
    connector = make_connector(sandbox)
    middle = NOW - pd.Timedelta(minutes=2)

    def read(since, until) -> set[str]:
        pages = list(connector.read_modified(since, until))
        return set(pd.concat(pages)["crm_id"]) if pages else set()

    older = read(NOW - pd.Timedelta(hours=1), middle)
    newer = read(middle, NOW + pd.Timedelta(minutes=1))
    assert older.isdisjoint(newer) and len(older | newer) == 600
    tokyo = "Asia/Tokyo"
    assert (
        read(middle.tz_convert(tokyo), (NOW + pd.Timedelta(minutes=1)).tz_convert(tokyo)) == newer
    )


def test_read_by_ids_and_stale(start_sandbox):
    sandbox = start_sandbox(leads=400, hubspot=UNLIMITED)
    connector = make_connector(sandbox)
    everyone = pd.concat(connector.read_all())
    some = everyone["crm_id"].iloc[::37].tolist()
    assert set(connector.read_by_ids(some)["crm_id"]) == set(some)

    fresh = everyone["crm_id"].iloc[:10].tolist()
    connector.write(pd.DataFrame({"crm_id": fresh, "qualified_at": NOW, "status": "Qualified"}))
    connector.write(
        pd.DataFrame(
            {"crm_id": everyone["crm_id"].iloc[10:20], "qualified_at": NOW - pd.Timedelta(days=90)}
        )
    )
    stale = set(pd.concat(connector.read_stale(NOW - pd.Timedelta(days=30)))["crm_id"])
    closed = set(everyone.loc[everyone["crm_status"].isin(["OPEN_DEAL", "UNQUALIFIED"]), "crm_id"])
    expected = set(everyone["crm_id"]) - set(fresh) - closed
    assert stale == expected
    assert_cold_qualified_are_added(connector, everyone, fresh, closed, expected)


def test_batch_partial_failure_is_reported_per_record(start_sandbox):
    sandbox = start_sandbox(leads=250, hubspot=UNLIMITED)
    connector = make_connector(sandbox)
    ids = pd.concat(connector.read_all())["crm_id"].tolist()[:150]
    updates = pd.DataFrame(
        {
            "crm_id": ids,
            "status": "Qualified",
            "score": 71.0,
            "reason": "Seniority: VP (+12)",
            "qualified_at": NOW,
        }
    )
    updates.loc[3, "status"] = "Maybe"  # not an option of the enumeration
    updates.loc[120, "crm_id"] = "999999999"  # no such contact
    report = connector.write(updates)
    assert report["crm_id"].tolist() == updates["crm_id"].tolist()
    assert report["success"].sum() == 148
    assert report.loc[3, "error"] and report.loc[120, "error"]
    assert connector.usage().writes == 2  # 100 + 50: the largest batches allowed
    written = connector.read_by_ids(ids[:2])
    assert set(written["status"]) == {"Qualified"} and set(written["score"]) == {71}


def test_retries_under_injected_faults_end_with_the_right_data(start_sandbox):
    faults = FaultPlan(rate_limited=0.15, server_error=0.15, dropped=0.1, seed=4)
    sandbox = start_sandbox(leads=1_500, hubspot=UNLIMITED, faults=faults)
    connector = make_connector(sandbox)
    everyone = pd.concat(connector.read_all())
    assert len(everyone) == 1_500 and everyone["crm_id"].is_unique
    ids = everyone["crm_id"].tolist()[:300]
    assert connector.write(pd.DataFrame({"crm_id": ids, "score": 64})).success.all()
    sandbox.hubspot_faults.configure(FaultPlan())
    assert set(make_connector(sandbox).read_by_ids(ids)["score"]) == {64}


def test_concurrent_writes_are_paced_under_the_ten_second_budget(start_sandbox):
    sandbox = start_sandbox(
        leads=500,
        hubspot=HubSpotSettings(ten_second_limit=5),
        faults=FaultPlan(latency_seconds=0.05),
    )
    connector = HubSpotConnector(
        make_connector(sandbox).client,
        limits=HubSpotLimits(per_ten_seconds=5, search_per_second=5),
        retry=RetryPolicy(attempts=1),  # a single 429 would fail the test
        write_concurrency=4,
    )
    contacts = pd.concat(connector.read_all())  # 3 searches: 2 of the budget's 5 remain
    updates = contacts[["crm_id"]].assign(score=11.0, reason="paced")
    sandbox.hubspot_server.in_flight.peak = 0  # count the writes' concurrency only
    report = connector.write(updates)  # 5 batches: 2 at once, 3 once the window frees up
    assert report["success"].all() and report["crm_id"].tolist() == updates["crm_id"].tolist()
    assert sandbox.hubspot_server.in_flight.peak >= 2


def test_daily_limit_and_bad_token_stop_with_a_clear_error(start_sandbox):
    sandbox = start_sandbox(leads=10, hubspot=HubSpotSettings(daily_limit=2))
    connector = make_connector(sandbox)
    list(connector.read_all())
    connector.read_by_ids(["1"])  # the day's last call
    with pytest.raises(DailyLimitReached, match="daily API limit"):
        connector.read_by_ids(["2"])
    assert connector.usage().remaining == 0
    with pytest.raises(AuthenticationFailed, match="refused the access token"):
        list(make_connector(sandbox, token="pat-wrong").read_all())


def test_secrets_never_reach_logs_reprs_or_errors(start_sandbox, caplog):
    sandbox = start_sandbox(
        leads=500, hubspot=UNLIMITED, faults=FaultPlan(server_error=0.5, seed=3)
    )
    secret = sandbox.info["hubspot"]["access_token"]
    caplog.set_level(logging.DEBUG)
    list(make_connector(sandbox).read_all())
    with pytest.raises(AuthenticationFailed) as refused:
        list(make_connector(sandbox, token=secret + "x").read_all())
    credentials = HubSpotCredentials(access_token=secret, base_url="https://x")
    assert "retrying" in caplog.text
    for text in (caplog.text, repr(credentials), str(credentials), str(refused.value)):
        assert secret not in text


def test_missing_properties_are_named_and_the_setup_command_creates_them(
    start_sandbox, tmp_path, monkeypatch, capsys
):
    sandbox = start_sandbox(hubspot=HubSpotSettings(create_custom_properties=False))
    with pytest.raises(MissingFields, match="leadsync_score.*setup --source hubspot"):
        make_connector(sandbox).check_fields()
    sandbox.write_info(tmp_path / "info.json")
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "info.json"))
    monkeypatch.delenv("HUBSPOT_ACCESS_TOKEN", raising=False)
    assert connectors_main(["check", "--source", "hubspot"]) == 1
    assert "leadsync_score" in capsys.readouterr().err
    assert connectors_main(["setup", "--source", "hubspot"]) == 0
    assert "create contact property leadsync_" in capsys.readouterr().out
    assert connectors_main(["check", "--source", "hubspot"]) == 0


def assert_cold_qualified_are_added(connector, everyone, fresh, closed, stale) -> None:
    """Fresh Qualified leads come back too once they have not engaged since `cold_before`."""
    cold_before = NOW - pd.Timedelta(days=20)
    engaged = everyone.set_index("crm_id").loc[fresh, "last_engaged_at"]
    cold = set(engaged.index[engaged.isna() | (engaged < cold_before)]) - closed
    assert cold, "the test needs a fresh lead that went cold"
    with_cold = pd.concat(connector.read_stale(NOW - pd.Timedelta(days=30), cold_before))
    assert set(with_cold["crm_id"]) == stale | cold
