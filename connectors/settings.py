"""How hard the connectors may drive each CRM: environment variables LEADSYNC_<NAME>.

The defaults are safe for any org or portal: a few write calls in flight, HubSpot's
Professional/Enterprise budgets, and Bulk API 2.0 only where it saves calls; and every call
bounded in time, so a CRM that stops answering costs a retry, not a run that never ends.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

SALESFORCE_READ_TIMEOUT, HUBSPOT_READ_TIMEOUT = 90.0, 60.0  # seconds
WRITES_IN_FLIGHT = {"salesforce": 4, "hubspot": 8}  # per chunk, unless set


class ConnectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEADSYNC_", extra="ignore")

    write_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=16,
        description="write calls in flight at once for one chunk; unset: "
        f"{WRITES_IN_FLIGHT['salesforce']} for Salesforce (concurrent updates of related records "
        f"risk row locks), {WRITES_IN_FLIGHT['hubspot']} for HubSpot (its pacing alone bounds "
        "them); with LEADSYNC_CHUNKS_IN_FLIGHT chunks written together, up to their product",
    )
    read_concurrency: int = Field(
        default=8,
        ge=1,
        le=16,
        description="pages read by id at once (a rescore of changed leads, the owed leads of a "
        "sync); every call stays paced under the CRM's budget",
    )
    salesforce_bulk: bool = Field(
        default=True, description="use Bulk API 2.0 for large backfill reads and writes"
    )
    salesforce_bulk_threshold: int = Field(
        default=10_000,
        ge=1,
        description="leads at or above which a backfill read or a write goes through Bulk API 2.0",
    )
    hubspot_requests_per_ten_seconds: int = Field(
        default=190, ge=1, description="the portal's burst budget (Free/Starter: 100)"
    )
    hubspot_searches_per_second: int = Field(default=5, ge=1)
    hubspot_portal_id: int | None = Field(
        default=None,
        description="the portal's Hub ID (the account menu shows it), for links to contacts in "
        "artifacts; unset: links to each contact's API URL",
    )
    salesforce_skip_own_writes: bool = Field(
        default=True,
        description="a sync leaves out leads the integration user changed last (its own "
        "writes); turn off when another tool or person also signs in as that user",
    )
    salesforce_calls_in_flight: int = Field(
        default=20,
        ge=1,
        le=25,
        description="Salesforce calls in flight at once per org, across every run; Salesforce "
        "refuses more than 25 concurrent long-running requests from all the org's integrations",
    )
    budget_url: str | None = Field(
        default=None,
        description="where runs share each CRM account's API budget (a SQLAlchemy URL); "
        "default: LEADSYNC_LEDGER_URL's database",
    )
    connect_timeout_seconds: float = Field(
        default=10.0, gt=0, description="to open a connection to either CRM"
    )
    read_timeout_seconds: float | None = Field(
        default=None,
        gt=0,
        description="how long either CRM may stay silent while a call waits for its answer; "
        f"unset: {SALESFORCE_READ_TIMEOUT:g} s for Salesforce, {HUBSPOT_READ_TIMEOUT:g} s for "
        "HubSpot (keep it under half of LEADSYNC_WRITE_LEASE_SECONDS)",
    )
    bulk_job_timeout_seconds: float = Field(
        default=3600.0,
        gt=0,
        description="how long to wait for a Salesforce Bulk API 2.0 job to finish",
    )

    def timeout(self, source: str) -> tuple[float, float]:
        """(connect, read) seconds for each HTTP call to `source`."""
        default = SALESFORCE_READ_TIMEOUT if source == "salesforce" else HUBSPOT_READ_TIMEOUT
        return self.connect_timeout_seconds, self.read_timeout_seconds or default

    def writes_in_flight(self, source: str) -> int:
        """Write calls in flight at once for one chunk written to `source`."""
        return self.write_concurrency or WRITES_IN_FLIGHT[source]
