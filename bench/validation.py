"""Lead contract validation against the API time it sits beside.

`.venv/bin/python -m bench.validation [--rows N] [--latency S]`: validates N generated leads with
the Great Expectations suite, then reads the same number of leads from the Salesforce sandbox
(at S seconds of latency per call, like a real round trip) through the connector, and compares.
It also measures what the contract costs a sync: the fixed cost of one run (the median over
many runs on a 100-lead chunk), 100,000 leads in one run, and 100,000 leads in the chunks a
HubSpot sync validates (what arrives within one chunk's time at the search rate limit).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import pandas as pd

from connectors.credentials import SalesforceCredentials
from connectors.hubspot import HubSpotConnector
from connectors.retry import RetryPolicy
from connectors.salesforce import SalesforceConnector, connect
from connectors.settings import ConnectorSettings
from expectations.suite import LeadContract
from flows.settings import JobSettings
from scoring import load_rules
from sandbox.http import FaultPlan
from sandbox.hubspot import HubSpotSettings
from sandbox.run import Sandbox, SandboxConfig
from sandbox.seed import generate_leads

SMALL_CHUNK = 100
FIXED_COST_RUNS = 30
LARGE_RUN = 100_000


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
    costs = contract_costs(contract)
    print(
        f"one contract run costs {costs['fixed_cost_s'] * 1000:.0f} ms before its rows "
        f"(median of {FIXED_COST_RUNS} runs on {SMALL_CHUNK} leads); {LARGE_RUN:,} leads take "
        f"{costs['validate_100k_s']:.2f}s in one run, "
        f"{costs['validate_100k_in_sync_chunks_s']:.2f}s in chunks of "
        f"{costs['sync_chunk_leads']:,} (a HubSpot sync's)"
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
                **costs,
            }
        )
    )


def contract_costs(contract: LeadContract) -> dict[str, float]:
    """The fixed cost of one contract run, and 100,000 leads in one run and in a sync's chunks."""
    small = generate_leads(SMALL_CHUNK, seed=2)
    contract.validate(small)  # the first run warms what GX builds lazily
    fixed = statistics.median(_seconds(contract, small) for _ in range(FIXED_COST_RUNS))
    large = generate_leads(LARGE_RUN, seed=3)
    chunk = sync_chunk_leads()
    in_chunks = sum(
        _seconds(contract, large.iloc[start : start + chunk])
        for start in range(0, LARGE_RUN, chunk)
    )
    return {
        "fixed_cost_s": round(fixed, 4),
        "validate_100k_s": round(_seconds(contract, large), 3),
        "sync_chunk_leads": chunk,
        "validate_100k_in_sync_chunks_s": round(in_chunks, 3),
    }


def sync_chunk_leads() -> int:
    """The leads a HubSpot sync gathers into one chunk: what its reads return within the
    chunk's time at the search rate limit (HubSpot reads are the slow ones)."""
    per_second = HubSpotSettings().search_per_second * HubSpotConnector.page_size
    return min(JobSettings().chunk_leads, math.ceil(JobSettings().chunk_seconds * per_second))


def _seconds(contract: LeadContract, chunk: pd.DataFrame) -> float:
    started = time.perf_counter()
    contract.validate(chunk)
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
