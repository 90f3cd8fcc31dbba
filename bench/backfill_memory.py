"""Backfill memory: does a full backfill stream its leads, or hold them?

`.venv/bin/python -m bench.backfill_memory [--sizes 100000 1000000] [--source salesforce]`

Each size runs in a fresh child process (a process's peak RSS never goes down): it starts the
sandbox CRMs in their own process, seeded with that many leads (not counted), and a local
Prefect API server (its own process, not counted), then runs `backfill_leads` with no start
(every lead through `read_all`: Bulk API 2.0 query and ingest jobs for Salesforce at this
size) as a real flow run, against a fresh ledger. Peak RSS is the child's own high-water mark
(`getrusage(RUSAGE_SELF).ru_maxrss`): reading, parsing, validation, scoring, the ledger and
the writes, and what importing Prefect, Great Expectations and pandas costs (reported apart).

Targets: peak RSS at 1,000,000 leads at or under 1 GiB, and within 20% of the peak at 100,000.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from bench.support import (
    machine,
    point_at,
    prefect_server,
    report_of,
    sandbox_process,
    scratch_directory,
)

TARGET_RSS_MIB, TARGET_RATIO = 1024, 1.2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--source", choices=("salesforce", "hubspot"), default="salesforce")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # the child's own size
    args = parser.parse_args()
    if args.one:
        print(json.dumps(backfill(args.one, args.source)))
        return
    runs = [child(size, args.source) for size in args.sizes]
    for run in runs:
        print(
            f"{run['leads']:>9,} leads: read {run['read']:,}, wrote {run['written']:,} in "
            f"{run['wall_s']:.0f}s ({run['leads_per_s']:,.0f}/s), {run['calls']} API calls, "
            f"peak RSS {run['peak_rss_mib']:,.0f} MiB ({run['imports_rss_mib']:,.0f} after imports)"
        )
    largest, smallest = runs[-1], runs[0]
    ratio = largest["peak_rss_mib"] / smallest["peak_rss_mib"]
    summary = {
        "source": args.source,
        "runs": runs,
        "peak_rss_largest_mib": largest["peak_rss_mib"],
        "ratio_largest_to_smallest": round(ratio, 3),
        "target_rss_ok": largest["peak_rss_mib"] <= TARGET_RSS_MIB,
        "target_ratio_ok": ratio <= TARGET_RATIO,
        "machine": machine(),
    }
    print(json.dumps(summary))


def child(size: int, source: str) -> dict:
    command = [sys.executable, "-m", "bench.backfill_memory", "--one", str(size)]
    command += ["--source", source]
    finished = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(finished.stdout.strip().splitlines()[-1])


def backfill(size: int, source: str) -> dict:
    scratch = scratch_directory("memory")
    from flows.backfill import backfill_leads

    imports_mib = peak_rss_mib()
    with sandbox_process(scratch / "crm", size) as info, prefect_server():
        point_at(info, scratch / "ledger.sqlite3")
        started = time.perf_counter()
        state = backfill_leads(source=source, return_state=True)
        wall = time.perf_counter() - started
    report = report_of(state)
    return {
        "leads": size,
        "state": state.type.value,
        "read": report.read,
        "written": report.written,
        "wall_s": round(wall, 1),
        "leads_per_s": round(report.read / wall),
        "calls": report.usage.calls,
        "rechecked_chunks": report.rechecked,
        "busy_s": {stage: round(seconds, 1) for stage, seconds in report.seconds.items()},
        "imports_rss_mib": round(imports_mib),
        "peak_rss_mib": round(peak_rss_mib()),
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


if __name__ == "__main__":
    main()
