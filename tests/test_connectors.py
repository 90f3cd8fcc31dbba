"""Each connector against its sandbox CRM, through the CRM's real client library.

The suite runs once per CRM (the `crm` fixture): what differs between CRMs (how to start and
seed the sandbox, build a connector, the CRM's error names and hints) is in a `Crm` helper, so a
new CRM, or a new way to sign in, gets every test. What only one CRM has is tested in that
CRM's own file: HubSpot's 10,000-result search cap, ten-second budget and custom properties in
test_connector_hubspot.py; Salesforce's SOQL and Bulk API 2.0 in test_connector_salesforce.py.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from connectors import AuthenticationFailed, DailyLimitReached, MissingFields, connector_for
from connectors.credentials import HubSpotCredentials, SalesforceCredentials
from connectors.hubspot import HubSpotConnector, HubSpotLimits
from connectors.hubspot import connect as connect_hubspot
from connectors.hubspot.connector import DEFAULT_MAPPING as HUBSPOT_MAPPING
from connectors.mapping import load_mapping
from connectors.retry import RetryPolicy
from connectors.salesforce import SalesforceConnector
from connectors.salesforce import connect as connect_salesforce
from connectors.salesforce.connector import DEFAULT_MAPPING as SALESFORCE_MAPPING
from connectors.settings import ConnectorSettings
from sandbox.http import FaultPlan
from sandbox.hubspot import HubSpotSettings
from sandbox.seed import generate_leads

FAST_RETRIES = RetryPolicy(attempts=12, initial_seconds=0.01, max_seconds=0.05, jitter_seconds=0.01)
NOW = pd.Timestamp.now(tz="UTC").floor("s")


@dataclass(frozen=True)
class Crm:
    """What the suite needs to know of one CRM and its sandbox."""

    name: str  # the connector's source, and the sandbox's attribute prefix
    page_size: int  # leads per read call
    write_batch_size: int  # leads per write call
    default_mapping: Path
    closed_statuses: frozenset[str]  # the CRM's finished lead statuses in the seeded data
    missing_id: str  # a well-formed id no lead has
    bad_secret: str  # a well-formed secret the CRM refuses
    invalid_option_error: str  # the error name for a value not among a field's options
    missing_record_error: str  # the error name for a write to a lead that does not exist
    daily_limit_error: str  # what the connector says when the day's calls are spent
    refused_error: str  # what the connector says when the CRM refuses its secret
    unknown_field: str  # a field name the CRM does not have
    how_to_create: str  # what the missing-field error says to do (a regular expression)
    read_order: str | None  # the column a read's pages come in order of (None: no order)
    sandbox_config: dict  # SandboxConfig fields this suite starts the CRM with

    def start(self, start_sandbox, **config):
        return start_sandbox(**{**self.sandbox_config, **config})

    def api(self, sandbox):
        """The sandbox's CRM: its store (`seed`), daily counter (`daily`)."""
        return getattr(sandbox, self.name)

    def faults(self, sandbox):
        return getattr(sandbox, f"{self.name}_faults")

    def server(self, sandbox):
        return getattr(sandbox, f"{self.name}_server")

    def secret(self, sandbox) -> str:
        raise NotImplementedError

    def credentials(self, sandbox, secret: str | None = None):
        raise NotImplementedError

    def connector(self, sandbox, *, secret=None, mapping=None, write_concurrency=None, **options):
        """A connector signed in to the sandbox (with `secret` instead of the right one), with
        fast retries and, unless `write_concurrency` is given, the CRM's default concurrency."""
        raise NotImplementedError


class SalesforceCrm(Crm):
    def secret(self, sandbox) -> str:
        return sandbox.info["salesforce"]["session_id"]

    def credentials(self, sandbox, secret=None) -> SalesforceCredentials:
        return SalesforceCredentials(
            instance_url=sandbox.info["salesforce"]["instance_url"],
            session_id=secret or self.secret(sandbox),
            ca_bundle=sandbox.info["ca_cert"],
        )

    def connector(self, sandbox, *, secret=None, mapping=None, write_concurrency=None, **options):
        if write_concurrency is not None:
            options["settings"] = ConnectorSettings(write_concurrency=write_concurrency)
        client = connect_salesforce(self.credentials(sandbox, secret))
        return SalesforceConnector(client, mapping, **{"retry": FAST_RETRIES, **options})


class HubSpotCrm(Crm):
    def secret(self, sandbox) -> str:
        return sandbox.info["hubspot"]["access_token"]

    def credentials(self, sandbox, secret=None) -> HubSpotCredentials:
        return HubSpotCredentials(
            access_token=secret or self.secret(sandbox),
            base_url=sandbox.info["hubspot"]["base_url"],
            ca_bundle=sandbox.info["ca_cert"],
        )

    def connector(self, sandbox, *, secret=None, mapping=None, write_concurrency=None, **options):
        if write_concurrency is not None:
            options["write_concurrency"] = write_concurrency
        client = connect_hubspot(self.credentials(sandbox, secret))
        return HubSpotConnector(
            client, mapping, **{"limits": NO_PACING, "retry": FAST_RETRIES, **options}
        )


UNLIMITED = HubSpotSettings(ten_second_limit=1_000_000, search_per_second=100_000)
NO_PACING = HubSpotLimits(per_ten_seconds=1_000_000, search_per_second=100_000)
CRMS = {
    "salesforce": SalesforceCrm(
        name="salesforce",
        page_size=SalesforceConnector.page_size,
        write_batch_size=SalesforceConnector.write_batch_size,
        default_mapping=SALESFORCE_MAPPING,
        closed_statuses=frozenset({"Closed - Converted", "Closed - Not Converted"}),
        missing_id="00Q000000000000AAA",
        bad_secret="00Dwrong!token",
        invalid_option_error="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
        missing_record_error="INVALID_CROSS_REFERENCE_KEY",
        daily_limit_error="daily API request limit",
        refused_error="expired or is invalid",
        unknown_field="Lead_Grade__c",
        how_to_create="setup --source salesforce.*Setup > Object Manager > Lead",
        read_order="modified_at",
        sandbox_config={},
    ),
    "hubspot": HubSpotCrm(
        name="hubspot",
        page_size=HubSpotConnector.page_size,
        write_batch_size=HubSpotConnector.write_batch_size,
        default_mapping=HUBSPOT_MAPPING,
        closed_statuses=frozenset({"OPEN_DEAL", "UNQUALIFIED"}),
        missing_id="999999999",
        bad_secret="pat-wrong",
        invalid_option_error="INVALID_OPTION",
        missing_record_error="OBJECT_NOT_FOUND",
        daily_limit_error="daily API limit",
        refused_error="refused the access token",
        unknown_field="leadsync_grade",
        how_to_create="setup --source hubspot.*Settings > Properties",
        read_order=None,  # by id, up and down at once
        sandbox_config={"hubspot": UNLIMITED},
    ),
}


@pytest.fixture(params=list(CRMS))
def crm(request) -> Crm:
    return CRMS[request.param]


def everything() -> tuple[pd.Timestamp, pd.Timestamp]:
    """A window holding every seeded lead (seeded as of the sandbox's start)."""
    now = pd.Timestamp.now(tz="UTC")
    return now - pd.Timedelta(days=3650), now + pd.Timedelta(hours=1)


def seed_with_ties(crm: Crm, sandbox, count: int, stamps: int) -> None:
    """Leads sharing only `stamps` modification times (NOW, NOW - 1h, ...), so ties straddle
    page edges."""
    leads = generate_leads(count, seed=3, now=NOW)
    leads["modified_at"] = NOW - pd.to_timedelta(leads.index % stamps, unit="h")
    crm.api(sandbox).seed(leads)


def read_ids(pages) -> set[str]:
    pages = list(pages)
    return set(pd.concat(pages)["crm_id"]) if pages else set()


# --- Every CRM --------------------------------------------------------------------------------


def test_incremental_read_with_ties_at_page_boundaries_returns_each_lead_once(
    crm, start_sandbox
):
    sandbox = crm.start(start_sandbox)
    size = crm.page_size
    seed_with_ties(crm, sandbox, 2 * size + size // 2, stamps=3)
    connector = crm.connector(sandbox)
    pages = list(connector.read_modified(NOW - pd.Timedelta(days=1), NOW + pd.Timedelta(seconds=1)))
    assert [len(page) for page in pages] == [size, size, size // 2]
    ids = pd.concat(pages)["crm_id"]
    assert ids.is_unique and len(ids) == 2 * size + size // 2
    assert connector.usage().reads == 3
    if crm.read_order:  # pages in order of modification: ties must straddle a page edge
        column = crm.read_order
        edges = [(pages[i][column].iloc[-1], pages[i + 1][column].iloc[0]) for i in range(2)]
        assert any(last == first for last, first in edges), "the test needs a tie at a page edge"
        assert pd.concat(pages)[column].is_monotonic_increasing


def test_windows_are_half_open_and_timezone_independent(crm, start_sandbox):
    sandbox = crm.start(start_sandbox)
    seed_with_ties(crm, sandbox, 600, stamps=6)
    connector = crm.connector(sandbox)
    middle = NOW - pd.Timedelta(hours=2)

    def read(since, until) -> set[str]:
        return read_ids(connector.read_modified(since, until))

    later = NOW + pd.Timedelta(hours=1)
    older, newer = read(NOW - pd.Timedelta(hours=5), middle), read(middle, later)
    assert older.isdisjoint(newer) and len(older | newer) == 600
    everyone = pd.concat(connector.read_all())
    assert (everyone["modified_at"] == middle).any(), "the test needs leads on the boundary"
    assert newer == set(everyone.loc[everyone["modified_at"] >= middle, "crm_id"])
    for zone in ("America/New_York", "Asia/Tokyo"):
        assert read(middle.tz_convert(zone), later.tz_convert(zone)) == newer


def test_a_window_across_a_daylight_saving_change_reads_the_right_hours(crm, start_sandbox):
    sandbox = crm.start(start_sandbox)
    leads = generate_leads(240, seed=6, now=NOW)
    leads["modified_at"] = pd.Timestamp("2026-03-08T05:00:00Z") + pd.to_timedelta(
        leads.index, unit="min"
    )  # New York springs forward at 07:00 UTC that day
    crm.api(sandbox).seed(leads)
    new_york = "America/New_York"
    since = pd.Timestamp("2026-03-08T01:00:00").tz_localize(new_york)  # EST, 06:00 UTC
    until = pd.Timestamp("2026-03-08T04:00:00").tz_localize(new_york)  # EDT, 08:00 UTC
    connector = crm.connector(sandbox)
    read = pd.concat(connector.read_modified(since, until))
    stamps = pd.concat(connector.read_all()).set_index("crm_id")["modified_at"]
    start, end = pd.Timestamp("2026-03-08T06:00Z"), pd.Timestamp("2026-03-08T08:00Z")
    in_utc = (stamps >= start) & (stamps < end)
    assert len(read) == 120 and set(read["crm_id"]) == set(stamps.index[in_utc])
    change = pd.Timestamp("2026-03-08T07:00Z")
    assert read["modified_at"].min() < change <= read["modified_at"].max()


def test_writes_during_a_read_do_not_make_it_skip_leads(crm, start_sandbox):
    """Written leads leave the window (their modification time moves to now): paging must not
    shift past leads that were never read."""
    count = crm.page_size + crm.page_size // 2
    sandbox = crm.start(start_sandbox, leads=count)
    connector = crm.connector(sandbox)
    since, _ = everything()
    until = pd.Timestamp.now(tz="UTC") + pd.Timedelta(seconds=1)
    seen, pages = [], 0
    for page in connector.read_modified(since, until):
        seen += page["crm_id"].tolist()
        pages += 1
        assert connector.write(pd.DataFrame({"crm_id": page["crm_id"], "score": 1})).success.all()
    assert pages == 2, "the test needs writes between pages"
    assert len(seen) == count and len(set(seen)) == count


def test_read_all_by_ids_and_stale(crm, start_sandbox):
    count = crm.page_size + crm.page_size // 4  # more than a page
    sandbox = crm.start(start_sandbox, leads=count)
    connector = crm.connector(sandbox)
    everyone = pd.concat(connector.read_all())
    assert len(everyone) == count and everyone["crm_id"].is_unique
    assert set(everyone["source"]) == {crm.name}

    some = everyone["crm_id"].sample(7, random_state=1).tolist()
    assert set(connector.read_by_ids(some)["crm_id"]) == set(some)

    long_ago = NOW - pd.Timedelta(days=90)
    fresh, old = everyone["crm_id"].iloc[:10].tolist(), everyone["crm_id"].iloc[10:20].tolist()
    connector.write(pd.DataFrame({"crm_id": fresh, "qualified_at": NOW, "status": "Qualified"}))
    connector.write(pd.DataFrame({"crm_id": old, "qualified_at": long_ago}))
    stale = read_ids(connector.read_stale(NOW - pd.Timedelta(days=30)))
    assert set(everyone["crm_status"]) > crm.closed_statuses, "the test needs closed leads"
    closed = set(everyone.loc[everyone["crm_status"].isin(crm.closed_statuses), "crm_id"])
    expected = set(everyone["crm_id"]) - set(fresh) - closed
    assert stale == expected

    # Fresh Qualified leads come back too once they have not engaged since `cold_before`.
    cold_before = NOW - pd.Timedelta(days=20)
    engaged = everyone.set_index("crm_id").loc[fresh, "last_engaged_at"]
    cold = set(engaged.index[engaged.isna() | (engaged < cold_before)]) - closed
    assert cold, "the test needs a fresh lead that went cold"
    with_cold = read_ids(connector.read_stale(NOW - pd.Timedelta(days=30), cold_before))
    assert with_cold == expected | cold


def test_write_reports_each_record_and_partial_failures(crm, start_sandbox):
    batch = crm.write_batch_size
    sandbox = crm.start(start_sandbox, leads=batch + batch // 4 + 50)
    connector = crm.connector(sandbox)
    ids = pd.concat(connector.read_all())["crm_id"].tolist()[: batch + batch // 4]
    updates = pd.DataFrame(
        {
            "crm_id": ids,
            "status": "Nurture",
            "score": 41,
            "reason": "ICP industry: SaaS (+20)",
            "qualified_at": NOW,
        }
    )
    missing = batch + 7  # in the second batch
    updates.loc[5, "status"] = "Maybe"  # not one of the field's options
    updates.loc[missing, "crm_id"] = crm.missing_id
    report = connector.write(updates)
    assert report["crm_id"].tolist() == updates["crm_id"].tolist()
    assert report.index[~report["success"]].tolist() == [5, missing]
    assert crm.invalid_option_error in report.loc[5, "error"]
    assert crm.missing_record_error in report.loc[missing, "error"]
    assert connector.usage().writes == 2  # a full batch and a quarter: the largest allowed
    written = connector.read_by_ids(ids[:3])
    assert set(written["status"]) == {"Nurture"} and set(written["score"]) == {41}


def test_retries_under_injected_faults_end_with_the_right_data(crm, start_sandbox):
    faults = FaultPlan(rate_limited=0.15, server_error=0.15, dropped=0.1, seed=9)
    count = 2 * crm.page_size + crm.page_size // 4
    sandbox = crm.start(start_sandbox, leads=count, faults=faults)
    connector = crm.connector(sandbox)
    everyone = pd.concat(connector.read_all())
    assert len(everyone) == count and everyone["crm_id"].is_unique
    ids = everyone["crm_id"].tolist()[: 2 * crm.write_batch_size]
    report = connector.write(pd.DataFrame({"crm_id": ids, "score": 55}))
    assert report["success"].all()
    assert crm.faults(sandbox).injected, "the test needs faults to retry"
    crm.faults(sandbox).configure(FaultPlan())
    assert set(crm.connector(sandbox).read_by_ids(ids)["score"]) == {55}


def test_collection_writes_go_out_concurrently_and_report_in_input_order(crm, start_sandbox):
    sandbox = crm.start(
        start_sandbox, leads=5 * crm.write_batch_size, faults=FaultPlan(latency_seconds=0.05)
    )
    connector = crm.connector(sandbox, write_concurrency=3)
    leads = pd.concat(connector.read_modified(*everything()))
    updates = leads[["crm_id"]].assign(score=range(len(leads)), reason="concurrent")
    crm.server(sandbox).in_flight.peak = 0  # count the writes' concurrency only
    report = connector.write(updates)
    assert report["crm_id"].tolist() == updates["crm_id"].tolist()
    assert report["success"].all()
    assert connector.usage().writes == 5
    assert crm.server(sandbox).in_flight.peak == 3
    after = connector.read_by_ids(updates["crm_id"]).set_index("crm_id")
    assert after.loc[updates["crm_id"], "score"].tolist() == list(map(float, updates["score"]))


def test_daily_limit_and_bad_token_stop_with_a_clear_error(crm, start_sandbox):
    sandbox = crm.start(start_sandbox, leads=10)
    connector = crm.connector(sandbox)
    ids = pd.concat(connector.read_all())["crm_id"].tolist()
    daily = crm.api(sandbox).daily
    daily.used = daily.limit - 1
    connector.read_by_ids(ids[:1])  # the day's last call
    with pytest.raises(DailyLimitReached, match=crm.daily_limit_error):
        connector.read_by_ids(ids[1:2])
    with pytest.raises(DailyLimitReached, match=crm.daily_limit_error):
        list(crm.connector(sandbox).read_all())
    assert connector.usage().remaining == 0
    with pytest.raises(AuthenticationFailed, match=crm.refused_error):
        list(crm.connector(sandbox, secret=crm.bad_secret).read_all())


def test_secrets_never_reach_logs_reprs_or_errors(crm, start_sandbox, caplog):
    count = 2 * crm.page_size + crm.page_size // 4
    sandbox = crm.start(start_sandbox, leads=count, faults=FaultPlan(server_error=0.5, seed=2))
    secret = crm.secret(sandbox)
    caplog.set_level(logging.DEBUG)
    list(crm.connector(sandbox).read_all())
    with pytest.raises(AuthenticationFailed) as refused:
        list(crm.connector(sandbox, secret=secret + "x").read_all())
    credentials = crm.credentials(sandbox, secret)
    assert "retrying" in caplog.text
    for text in (caplog.text, repr(credentials), str(credentials), str(refused.value)):
        assert secret not in text


def test_missing_field_is_named_with_how_to_create_it(crm, start_sandbox):
    sandbox = crm.start(start_sandbox)
    mapping = load_mapping(crm.default_mapping)
    broken = mapping.model_copy(update={"write": {**mapping.write, "score": crm.unknown_field}})
    crm.connector(sandbox).check_fields()
    with pytest.raises(MissingFields, match=f"{crm.unknown_field}.*{crm.how_to_create}") as error:
        crm.connector(sandbox, mapping=broken).check_fields()
    assert error.value.fields == [crm.unknown_field]


def test_connector_for_uses_the_sandbox_info_file(crm, start_sandbox, tmp_path, monkeypatch):
    sandbox = crm.start(start_sandbox, leads=25)
    point_connector_for_at(sandbox, crm, tmp_path, monkeypatch)
    assert len(pd.concat(connector_for(crm.name).read_all())) == 25


def point_connector_for_at(sandbox, crm: Crm, tmp_path, monkeypatch) -> None:
    """`connector_for` signs in to this sandbox through its info file, and no other way."""
    sandbox.write_info(tmp_path / "info.json")
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "info.json"))
    for name in list(os.environ):
        if name.startswith(f"{crm.name.upper()}_"):  # any other way to sign in
            monkeypatch.delenv(name)


@pytest.mark.parametrize(
    ("setting", "expected"),
    [(None, {"salesforce": 4, "hubspot": 8}), ("2", {"salesforce": 2, "hubspot": 2})],
)
def test_each_crm_has_its_own_default_writes_in_flight(
    crm, start_sandbox, tmp_path, monkeypatch, setting, expected
):
    """Salesforce writes 4 collections at once (concurrent updates of related records risk row
    locks), HubSpot 8 batches (its pacing bounds them), unless LEADSYNC_WRITE_CONCURRENCY says."""
    sandbox = crm.start(
        start_sandbox, leads=10 * crm.write_batch_size, faults=FaultPlan(latency_seconds=0.1)
    )
    point_connector_for_at(sandbox, crm, tmp_path, monkeypatch)
    monkeypatch.setenv("LEADSYNC_BUDGET_URL", f"sqlite:///{tmp_path / 'budget.sqlite3'}")
    if setting is None:
        monkeypatch.delenv("LEADSYNC_WRITE_CONCURRENCY", raising=False)
    else:
        monkeypatch.setenv("LEADSYNC_WRITE_CONCURRENCY", setting)
    connector = connector_for(crm.name)
    leads = pd.concat(connector.read_all())
    crm.server(sandbox).in_flight.peak = 0
    report = connector.write(leads[["crm_id"]].assign(score=7.0))
    assert report["success"].all()
    assert crm.server(sandbox).in_flight.peak == expected[crm.name]
