"""A HubSpot sync at the portal's real limits: throughput against what the limits allow.

`.venv/bin/python -m bench.hubspot_throughput [--contacts 20000] [--latency 0.15]`

The HubSpot sandbox runs in its own process at Professional limits (190 calls per 10 s, 5
searches per second) with the latency of a real round trip. A first sync reads every contact
(searches of 200) and writes status, score and reason back (batches of 100). The limits allow
no faster than max(searches / 5 per s, other calls / 19 per s), the two budgets being separate
as the sandbox models them (the connector, to be safe, also paces its searches under the
10-second budget; at 20,000 contacts that does not bind); the run's throughput is compared
with that, and every 429 is counted (the connector retries them, so they show as retries).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math

from bench.support import (
    machine,
    measured_sync,
    page_and_batch,
    point_at,
    prefect_server,
    sandbox_process,
    scratch_directory,
)
from sandbox.hubspot import HubSpotSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=20_000)
    parser.add_argument("--latency", type=float, default=0.15, help="seconds added per call")
    args = parser.parse_args()
    scratch = scratch_directory("hubspot")
    options = ("--latency-seconds", str(args.latency))
    with sandbox_process(scratch / "crm", args.contacts, *options) as info, prefect_server():
        point_at(info, scratch / "ledger.sqlite3")
        run, report, retries = measured_sync("hubspot")
    search_page, batch = page_and_batch("hubspot")
    searches = math.ceil(report.read / search_page)
    other_calls = math.ceil(report.changed / batch) + report.usage.metadata
    limits = HubSpotSettings()  # the sandbox's budgets: Professional, as the run meets them
    fastest_s = max(
        searches / limits.search_per_second, other_calls / (limits.ten_second_limit / 10)
    )
    allowed, achieved = report.read / fastest_s, report.read / run.wall_s
    streaming = report.read / report.elapsed  # from the first read to the last write
    rate_limited = sum(count for reason, count in retries.items() if "429" in reason)
    print(
        f"{report.read:,} contacts read, {report.written:,} written in {run.wall_s:.1f}s: "
        f"{achieved:,.0f}/s against {allowed:,.0f}/s the limits allow "
        f"({achieved / allowed:.2f}; {streaming / allowed:.2f} from the first read to the last "
        f"write, without the run's start-up); {report.usage.reads} reads, "
        f"{report.usage.writes} writes, {rate_limited} answered 429; busy seconds {report.seconds}"
    )
    print(
        json.dumps(
            {
                "contacts": report.read,
                "written": report.written,
                "latency_s": args.latency,
                "wall_s": round(run.wall_s, 2),
                "fastest_allowed_s": round(fastest_s, 2),
                "contacts_per_s": round(achieved),
                "allowed_contacts_per_s": round(allowed),
                "throughput_ratio": round(achieved / allowed, 3),
                "streaming_s": round(report.elapsed, 2),
                "streaming_throughput_ratio": round(streaming / allowed, 3),
                "read_calls": report.usage.reads,
                "write_calls": report.usage.writes,
                "responses_429": rate_limited,
                "other_retries": sum(retries.values()) - rate_limited,
                "target_ratio_ok": achieved / allowed >= 0.9,
                "target_no_429": rate_limited == 0,
                "machine": machine(),
            }
        )
    )


if __name__ == "__main__":
    main()
