"""A local stand-in for the HubSpot CRM v3 API (contacts and their properties), close enough that
hubspot-api-client cannot tell the difference."""

from sandbox.hubspot.api import HubSpotApi, HubSpotSettings

__all__ = ["HubSpotApi", "HubSpotSettings"]
