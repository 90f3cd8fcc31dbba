"""Syncs at scale: API calls against the minimum the APIs allow, wall time by stage, peak RSS.

`.venv/bin/python -m bench.sync [--leads 100000] [--latency 0.15] [--changed 0.05]`

The sandbox CRMs run in their own process, seeded with N leads each, every call delayed by
the latency (a real round trip), HubSpot at Professional limits (190 calls per 10 s, 5
searches per second). For each CRM: a first full sync, an unchanged rerun, and a rerun after
a share of the leads changed (they moved to another industry). Salesforce's first sync runs both
ways on fresh sandboxes: REST pages and collections (LEADSYNC_SALESFORCE_BULK=false), and
Bulk API 2.0 jobs (the default at 10,000 leads and more).

The minimum for a run is ceil(leads read / largest page) reads and ceil(leads changed /
largest batch) writes, over the REST APIs; the one describe call per run is reported apart,
as metadata. The stages overlap (the next page is read while one is scored and the one
before is written), so their seconds are busy time each and add up to more than the wall.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bench.support import (
    machine,
    measured_sync,
    page_and_batch,
    point_at,
    prefect_server,
    sandbox_process,
    scratch_directory,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.15, help="seconds added per call")
    parser.add_argument(
        "--changed", type=float, default=0.05, help="share of leads changed before the last rerun"
    )
    args = parser.parse_args()
    scratch = scratch_directory("sync")
    latency = ["--latency-seconds", str(args.latency)]

    figures: dict[str, object] = {"leads": args.leads, "latency_s": args.latency}
    with prefect_server():
        figures.update(runs(scratch, args.leads, latency, args.changed))
    figures["targets"] = targets(figures)
    figures["machine"] = machine()
    print(json.dumps(figures))


def runs(scratch: Path, leads: int, latency: list[str], changed: float) -> dict[str, object]:
    figures: dict[str, object] = {}
    with sandbox_process(scratch / "crm", leads, *latency) as info:
        point_at(info, scratch / "ledger.sqlite3")
        os.environ["LEADSYNC_SALESFORCE_BULK"] = "false"
        for source in ("salesforce", "hubspot"):
            figures[source] = three_runs(source, leads, changed)
    with sandbox_process(scratch / "crm-bulk", leads, *latency) as info:
        point_at(info, scratch / "ledger-bulk.sqlite3")
        os.environ["LEADSYNC_SALESFORCE_BULK"] = "true"
        figures["salesforce_bulk_first"] = one_run("salesforce", "first sync, Bulk API 2.0")
    return figures


def three_runs(source: str, leads: int, share: float) -> dict[str, dict]:
    runs = {"first": one_run(source, "first sync"), "unchanged": one_run(source, "unchanged")}
    change_engagement(source, math.ceil(leads * share))
    runs["changed"] = one_run(source, f"after {share:.0%} changed")
    return runs


def one_run(source: str, name: str) -> dict[str, object]:
    run, report, retries = measured_sync(source, overlap_minutes=0)
    usage = report.usage
    page, batch = page_and_batch(source)
    minimum_reads = math.ceil(report.read / page)
    minimum_writes = math.ceil(report.changed / batch)
    busy = {stage: round(seconds, 2) for stage, seconds in report.seconds.items()}
    cpu = report.seconds["validate"] + report.seconds["score"] + report.seconds["plan"]
    figures = {
        "read": report.read,
        "changed": report.changed,
        "written": report.written,
        "read_calls": usage.reads,
        "minimum_read_calls": minimum_reads,
        "read_ratio": round(usage.reads / minimum_reads, 2) if minimum_reads else None,
        "write_calls": usage.writes,
        "minimum_write_calls": minimum_writes,
        "write_ratio": round(usage.writes / minimum_writes, 2) if minimum_writes else None,
        "metadata_calls": usage.metadata,
        "rechecked_chunks": report.rechecked,
        "retries": dict(retries),
        "wall_s": round(run.wall_s, 2),
        "busy_s": busy,
        "validate_score_plan_share": round(cpu / run.wall_s, 3),
        "peak_rss_mib": round(run.peak_rss_mib),
    }
    print(
        f"{source:10} {name:26} read {report.read:>7,} in {usage.reads:>4} calls "
        f"(min {minimum_reads:>4}), wrote {report.written:>7,} in {usage.writes:>4} calls "
        f"(min {minimum_writes:>4}), {run.wall_s:6.1f}s wall, validate+score+plan "
        f"{cpu:5.1f}s ({figures['validate_score_plan_share']:.1%}), busy {busy}, "
        f"peak RSS {run.peak_rss_mib:,.0f} MiB",
        flush=True,
    )
    return figures


def change_engagement(source: str, count: int) -> None:
    """Move the first `count` open leads to another industry, through the CRM's API."""
    from connectors import connector_for

    connector = connector_for(source)
    ids = pd.concat(connector.read_stale(datetime.now(UTC)))["crm_id"].head(count)
    field = connector.mapping.read["industry"]
    size = page_and_batch(source)[1]
    for start in range(0, len(ids), size):
        batch = ids.iloc[start : start + size]
        if source == "salesforce":
            connector.client.restful(
                "composite/sobjects",
                method="PATCH",
                json={
                    "allOrNone": True,
                    "records": [
                        {
                            "attributes": {"type": connector.mapping.object},
                            "id": crm_id,
                            field: "Government",
                        }
                        for crm_id in batch
                    ],
                },
            )
        else:
            connector.client.crm.contacts.batch_api.update(
                batch_input_simple_public_object_batch_input={
                    "inputs": [
                        {"id": crm_id, "properties": {field: "Government"}} for crm_id in batch
                    ]
                }
            )


def targets(figures: dict) -> dict[str, bool]:
    runs = [run for source in ("salesforce", "hubspot") for run in figures[source].values()]
    return {
        "reads_at_minimum": all(run["read_ratio"] in (1.0, None) for run in runs),
        "writes_at_minimum": all(run["write_ratio"] in (1.0, None) for run in runs),
        "no_writes_when_unchanged": all(
            figures[source]["unchanged"]["write_calls"] == 0 for source in ("salesforce", "hubspot")
        ),
        "validate_score_plan_under_10pct": all(
            run["validate_score_plan_share"] < 0.10 for run in runs
        ),
    }


if __name__ == "__main__":
    main()
