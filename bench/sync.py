"""Syncs at scale: API calls against the minimum the APIs allow, wall time by stage, peak RSS.

`.venv/bin/python -m bench.sync [--leads 100000] [--latency 0.15] [--changed 0.05]
[--task-runner threads|dask]`

The sandbox CRMs run in their own process, seeded with N leads each, every call delayed by
the latency (a real round trip), HubSpot at Professional limits (190 calls per 10 s, 5
searches per second). For each CRM: a first full sync, an unchanged rerun, and a rerun after
a person moved a share of the leads to another industry (in the CRM, as a user other than
leadsync's). Salesforce's first sync runs both ways on fresh sandboxes: REST pages and
collections (LEADSYNC_SALESFORCE_BULK=false), and Bulk API 2.0 jobs (the default at 10,000
leads and more).

The minimum for a run is ceil(leads read / largest page) reads and ceil(leads changed /
largest batch) writes, over the REST APIs; the one describe call per run is reported apart,
as metadata. The stages overlap (the next page is read while one is scored, the next chunk is
scored while the one before is, and written while the next ones are read and scored), so their
seconds are busy time each and add up to more than the wall. Per run: `compute_share`, the
validate+score+plan busy seconds over the wall; how long scoring ran while reads or writes were
in flight, and while two chunks were scored at once; the busy seconds of each scoring worker
(`--task-runner dask`: a local Dask cluster of two workers); and the timeline of every chunk's
read, score and write, as a CSV file in the scratch folder. At the top: `rerun_reads`, what each
CRM's unchanged rerun read against the leads changed by someone else since the first sync (none:
the bench changes nothing in between, so whatever the rerun reads, the first sync wrote), and
`responses_429`, the calls HubSpot's budgets answered 429 (retried by the connectors).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from bench.support import (
    PersonAtTheCrms,
    busy_seconds,
    crms_with_a_person,
    machine,
    measured_sync,
    page_and_batch,
    point_at,
    prefect_server,
    scratch_directory,
)

DASK_WORKERS = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--leads", type=int, default=100_000)
    parser.add_argument("--latency", type=float, default=0.15, help="seconds added per call")
    parser.add_argument(
        "--changed", type=float, default=0.05, help="share of leads changed before the last rerun"
    )
    parser.add_argument(
        "--task-runner",
        choices=["threads", "dask"],
        default="threads",
        help=f"where chunks are scored; dask: a local cluster of {DASK_WORKERS} workers",
    )
    args = parser.parse_args()
    scratch = scratch_directory("sync")
    os.environ["LEADSYNC_TASK_RUNNER"] = args.task_runner  # before the flows are imported
    os.environ["LEADSYNC_DASK_WORKERS"] = str(DASK_WORKERS)

    figures: dict[str, object] = {
        "leads": args.leads,
        "latency_s": args.latency,
        "task_runner": args.task_runner,
    }
    with prefect_server():
        figures.update(runs(scratch, args.leads, args.latency, args.changed))
    figures["rerun_reads"] = {
        source: {"read": figures[source]["unchanged"]["read"], "changed_by_others": 0}
        for source in ("salesforce", "hubspot")
    }
    figures["responses_429"] = sum(run["responses_429"] for run in all_runs(figures))
    figures["targets"] = targets(figures)
    figures["machine"] = machine()
    print(json.dumps(figures))


def runs(scratch: Path, leads: int, latency: float, changed: float) -> dict[str, object]:
    figures: dict[str, object] = {}
    with crms_with_a_person(scratch / "crm", leads, latency) as (crms, info):
        point_at(info, scratch / "ledger.sqlite3")
        os.environ["LEADSYNC_SALESFORCE_BULK"] = "false"
        for source in ("salesforce", "hubspot"):
            figures[source] = three_runs(scratch, crms, source, leads, changed)
    with crms_with_a_person(scratch / "crm-bulk", leads, latency) as (crms, info):
        point_at(info, scratch / "ledger-bulk.sqlite3")
        os.environ["LEADSYNC_SALESFORCE_BULK"] = "true"
        figures["salesforce_bulk_first"] = one_run(
            scratch, crms, "salesforce", "first sync, Bulk API 2.0"
        )
    return figures


def three_runs(
    scratch: Path, crms: PersonAtTheCrms, source: str, leads: int, share: float
) -> dict[str, dict]:
    runs = {
        "first": one_run(scratch, crms, source, "first sync"),
        "unchanged": one_run(scratch, crms, source, "unchanged"),
    }
    change_industry(crms, source, math.ceil(leads * share))
    runs["changed"] = one_run(scratch, crms, source, f"after {share:.0%} changed")
    return runs


def one_run(scratch: Path, crms: PersonAtTheCrms, source: str, name: str) -> dict[str, object]:
    answered_429 = crms.responses_429()
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
        "responses_429": crms.responses_429() - answered_429,
        "wall_s": round(run.wall_s, 2),
        "busy_s": busy,
        "compute_share": round(cpu / run.wall_s, 3),
        "overlap_s": overlap(report.timeline),
        "worker_busy_s": {worker: round(s, 2) for worker, s in report.worker_seconds.items()},
        "peak_rss_mib": round(run.peak_rss_mib),
    }
    timeline = scratch / f"timeline-{source}-{name.replace(' ', '-').replace(',', '')}.csv"
    pd.DataFrame(report.timeline).to_csv(timeline, index=False)
    print(
        f"{source:10} {name:26} read {report.read:>7,} in {usage.reads:>4} calls "
        f"(min {minimum_reads:>4}), wrote {report.written:>7,} in {usage.writes:>4} calls "
        f"(min {minimum_writes:>4}), {run.wall_s:6.1f}s wall, validate+score+plan "
        f"{cpu:5.1f}s ({figures['compute_share']:.1%}), busy {busy}, "
        f"peak RSS {run.peak_rss_mib:,.0f} MiB\n"
        f"{'':37} overlap {figures['overlap_s']}, busy per scoring worker "
        f"{figures['worker_busy_s']}, timeline {timeline}",
        flush=True,
    )
    return figures


def overlap(timeline: list) -> dict[str, float]:
    """Seconds in which chunks were scored while reads or writes were in flight, and in which
    two chunks or more were scored at once; and the seconds scoring was under way at all."""
    scoring = [(span.start, span.end) for span in timeline if span.stage == "score"]
    calls = [(span.start, span.end) for span in timeline if span.stage in ("read", "write")]
    scored = busy_seconds(scoring)
    return {
        "scoring": round(scored, 2),
        "scoring_with_reads_or_writes": round(
            scored + busy_seconds(calls) - busy_seconds(scoring + calls), 2
        ),
        "two_chunks_scoring": round(busy_seconds(scoring, at_least=2), 2),
    }


def change_industry(crms: PersonAtTheCrms, source: str, count: int) -> None:
    """A person moves the first `count` open leads to another industry, in the CRM."""
    from connectors import connector_for

    connector = connector_for(source)
    ids = pd.concat(connector.read_stale(datetime.now(UTC)))["crm_id"].head(count)
    field = connector.mapping.read["industry"]
    crms.edit(source, {crm_id: {field: "Government"} for crm_id in ids})
    time.sleep(1.0 - time.time() % 1.0)  # a sync reads up to the whole second it starts in


def all_runs(figures: dict) -> list[dict]:
    return [
        *(run for source in ("salesforce", "hubspot") for run in figures[source].values()),
        figures["salesforce_bulk_first"],
    ]


def targets(figures: dict) -> dict[str, bool]:
    runs = [run for source in ("salesforce", "hubspot") for run in figures[source].values()]
    return {
        "reads_at_minimum": all(run["read_ratio"] in (1.0, None) for run in runs),
        "writes_at_minimum": all(run["write_ratio"] in (1.0, None) for run in runs),
        "no_writes_when_unchanged": all(
            figures[source]["unchanged"]["write_calls"] == 0 for source in ("salesforce", "hubspot")
        ),
        "compute_share_under_10pct": all(run["compute_share"] < 0.10 for run in runs),
    }


if __name__ == "__main__":
    main()
