"""Lead contract validation against the API time it sits beside.

`.venv/bin/python -m bench.validation [--rows N] [--latency S]`: validates N generated leads with
the Great Expectations suite, then reads the same number of leads from the Salesforce sandbox
(at S seconds of latency per call, like a real round trip) through the connector, and compares.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time

from connectors.credentials import SalesforceCredentials
from connectors.hubspot import HubSpotConnector
from connectors.retry import RetryPolicy
from connectors.salesforce import SalesforceConnector, connect
from connectors.settings import ConnectorSettings
from expectations.suite import LeadContract
from scoring import load_rules
from sandbox.http import FaultPlan
from sandbox.hubspot import HubSpotSettings
from sandbox.run import Sandbox, SandboxConfig
from sandbox.seed import generate_leads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.15)
    args = parser.parse_args()

    leads = generate_leads(args.rows, seed=1)
    contract = LeadContract(load_rules().data_quality)
    started = time.perf_counter()
    result = contract.validate(leads)
    validate_s = time.perf_counter() - started
    print(
        f"validated {args.rows:,} rows in {validate_s:.2f}s "
        f"({len(result.review):,} sent to review, {len(result.quarantined):,} quarantined)"
    )

    config = SandboxConfig(leads=args.rows, faults=FaultPlan(latency_seconds=args.latency))
    with Sandbox(config) as sandbox:
        info = sandbox.info
        connector = SalesforceConnector(
            connect(
                SalesforceCredentials(
                    instance_url=info["salesforce"]["instance_url"],
                    session_id=info["salesforce"]["session_id"],
                    ca_bundle=info["ca_cert"],
                )
            ),
            retry=RetryPolicy(),
            settings=ConnectorSettings(salesforce_bulk=False),  # REST pages, one call per 2,000
        )
        started = time.perf_counter()
        read = sum(len(page) for page in connector.read_all())
        read_s = time.perf_counter() - started
    calls = connector.usage().reads
    print(
        f"read {read:,} leads from the Salesforce sandbox in {read_s:.2f}s "
        f"({calls} calls at {args.latency * 1000:.0f} ms latency)"
    )
    searches_per_second = HubSpotSettings().search_per_second
    hubspot_calls = math.ceil(args.rows / HubSpotConnector.page_size)
    hubspot_s = hubspot_calls / searches_per_second
    print(
        f"HubSpot would need {hubspot_calls} searches: at least {hubspot_s:.0f}s at "
        f"{searches_per_second}/s"
    )
    print(
        json.dumps(
            {
                "rows": args.rows,
                "validate_s": round(validate_s, 3),
                "validate_rows_per_s": round(args.rows / validate_s),
                "salesforce_read_s": round(read_s, 3),
                "salesforce_read_calls": calls,
                "hubspot_computed_min_read_s": round(hubspot_s, 1),
                "validate_share_of_salesforce_read": round(validate_s / read_s, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
