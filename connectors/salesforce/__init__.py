"""Salesforce connector (simple-salesforce)."""

from connectors.salesforce.connector import SalesforceConnector, classify, connect

__all__ = ["SalesforceConnector", "classify", "connect"]
