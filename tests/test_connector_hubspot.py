"""What only the HubSpot connector has, against the sandbox, through hubspot-api-client: the
search's 10,000-result cap, the ten-second budget, the leadsync custom properties. What every
connector does is in test_connectors.py."""

from __future__ import annotations

import pandas as pd
import pytest

from connectors import MissingFields
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
    """Contacts sharing only `stamps` modification times: ties straddle the 10k cap."""
    leads = generate_leads(count, seed=8, now=NOW)
    leads["modified_at"] = NOW - pd.to_timedelta(leads.index % stamps, unit="min")
    sandbox.hubspot.seed(leads)


def test_backfill_of_twice_the_search_cap_gets_each_contact_once(start_sandbox):
    sandbox = start_sandbox(leads=20_000, hubspot=UNLIMITED)
    connector = make_connector(sandbox)
    searched = pd.concat(connector.read_modified(*everything()))["crm_id"]
    assert len(searched) == 20_000 and searched.is_unique
    searches = connector.usage().reads
    assert searches == 100  # 20,000 / 200: no request past the 10,000 cap, none wasted

    listed = pd.concat(connector.read_all())["crm_id"]
    assert len(listed) == 20_000 and listed.is_unique
    assert set(listed) == set(searched)
    assert connector.usage().reads - searches == 100  # unfiltered, also 200 per call


def test_more_contacts_than_the_cap_on_one_stamp_are_each_read_once(start_sandbox):
    sandbox = start_sandbox(hubspot=UNLIMITED)
    seed_with_ties(sandbox, 10_300, stamps=1)
    frame = pd.concat(make_connector(sandbox).read_modified(*everything()))
    assert len(frame) == 10_300 and frame["crm_id"].is_unique


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
