"""How hard the connectors may drive each CRM: environment variables LEADSYNC_<NAME>.

The defaults are safe for any org or portal: a few write calls in flight, HubSpot's
Professional/Enterprise budgets, and Bulk API 2.0 only where it saves calls.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConnectorSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LEADSYNC_", extra="ignore")

    write_concurrency: int = Field(
        default=4,
        ge=1,
        le=16,
        description="write calls in flight at once for one chunk; with LEADSYNC_CHUNKS_IN_FLIGHT "
        "chunks written together, up to their product per CRM (HubSpot's pacing still holds)",
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
