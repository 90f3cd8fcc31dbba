"""One interface over each CRM; `connector_for` builds the right one from its settings."""

from __future__ import annotations

from pathlib import Path

from connectors.base import (
    ApiUsage,
    AuthenticationFailed,
    Connector,
    ConnectorError,
    DailyLimitReached,
    MissingFields,
)

SOURCES = ("salesforce", "hubspot")


def connector_for(
    source: str, block: str | None = None, mapping_path: str | Path | None = None
) -> Connector:
    """The connector for `source`, signed in with a block, the environment, or the sandbox."""
    if source == "salesforce":
        from connectors.salesforce import SalesforceConnector

        return SalesforceConnector.from_settings(block, mapping_path)
    if source == "hubspot":
        from connectors.hubspot import HubSpotConnector

        return HubSpotConnector.from_settings(block, mapping_path)
    raise ValueError(f"unknown source {source!r}; expected one of {', '.join(SOURCES)}")


__all__ = [
    "SOURCES",
    "ApiUsage",
    "AuthenticationFailed",
    "Connector",
    "ConnectorError",
    "DailyLimitReached",
    "MissingFields",
    "connector_for",
]
