"""A local stand-in for the Salesforce REST API (Lead records), close enough that
simple-salesforce cannot tell the difference."""

from sandbox.salesforce.api import SalesforceApi, SalesforceSettings

__all__ = ["SalesforceApi", "SalesforceSettings"]
