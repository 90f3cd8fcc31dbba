"""Local stand-ins for the Salesforce and HubSpot APIs, and the fake leads they are seeded with."""
