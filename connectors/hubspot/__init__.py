"""HubSpot connector (hubspot-api-client)."""

from connectors.hubspot.connector import HubSpotConnector, HubSpotLimits, classify, connect

__all__ = ["HubSpotConnector", "HubSpotLimits", "classify", "connect"]
