"""Speed to lead: from a change in the CRM to leadsync's score written, through the listener.

`.venv/bin/python -m bench.events [--source hubspot] [--leads 6000] [--latency 0.15]
[--trickle-seconds 120] [--burst 5000]`

The sandbox CRMs run in a process of their own (their CPU is not the job's; a person's edit is
a call to that process) with the latency of a real round trip on every API call; the leads are
synced once, then a listener (flows/listen.py) runs on the CRM's change stream. Measured:
- a trickle: one lead edited per second; per edit, the seconds from the edit to its score
  written (the audit ledger's confirmation time), p50 and p95;
- a burst: `--burst` leads edited at once (HubSpot: one bulk edit, as an import makes;
  Salesforce: one by one, the sandbox having no bulk edit); the seconds from the last edit to the
  last write, against what the API budget allows for the fewest calls those leads need (one
  batch read and one batch write per 100 leads, at the CRM's per-10-second limit), the calls
  made per lead against that minimum, and the responses 429 during the burst;
- echo runs: rescore runs that started after the last edit was written (leadsync's own writes
  coming back as events must start none).
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import threading
import time

import numpy as np
import pandas as pd
from prefect.states import State

from bench.support import (
    PersonAtTheCrms,
    crms_with_a_person,
    machine,
    point_at,
    prefect_server,
    scratch_directory,
)
from sandbox.salesforce import SalesforceSettings

TITLES = ("Student", "Chief Executive Officer")  # the edit: a lead's title, turned around
QUIET_SECONDS = 10  # after the last write: any run that starts now is an echo


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", choices=("hubspot", "salesforce"), default="hubspot")
    parser.add_argument("--leads", type=int, default=6_000)
    parser.add_argument("--latency", type=float, default=0.15, help="seconds added per call")
    parser.add_argument("--trickle-seconds", type=int, default=120)
    parser.add_argument("--burst", type=int, default=5_000)
    args = parser.parse_args()
    scratch = scratch_directory("events")
    keepalive = SalesforceSettings(pubsub_keepalive_seconds=1.0)
    sandbox = crms_with_a_person(scratch / "crm", args.leads, args.latency, salesforce=keepalive)
    with sandbox as (crms, info), prefect_server():
        point_at(info, scratch / "ledger.sqlite3")
        figures = measure(crms, args)
    figures.update(source=args.source, leads=args.leads, latency_s=args.latency, **machine())
    print(json.dumps(figures))


def measure(crms: PersonAtTheCrms, args) -> dict:
    from connectors import connector_for
    from flows.jobs import sync_leads
    from flows.listen import Listener
    from flows.settings import ListenSettings

    if not sync_leads(source=args.source, return_state=True).is_completed():
        raise SystemExit("the first sync failed")
    connector = connector_for(args.source)
    leads = pd.concat(connector.read_all())
    student = leads["title"].fillna("").str.contains("student|intern|seeking|graduate", case=False)
    ids = leads.loc[~student, "crm_id"].tolist()  # leads whose score each edit moves
    title_field = connector.mapping.read["title"]
    listener = Listener(args.source, ListenSettings(port=0))
    thread = threading.Thread(target=listener.run, name="listener", daemon=True)
    thread.start()
    if not listener.ready.wait(60):
        raise SystemExit("the listener did not start")
    try:
        trickle = _trickle(listener, crms, args.source, title_field, ids, args.trickle_seconds)
        print(f"trickle: {len(trickle)} edits, lag p50 {_p(trickle, 50):.1f} s, "
              f"p95 {_p(trickle, 95):.1f} s", flush=True)  # fmt: skip
        runs_before = len(listener.states)
        refused_before = crms.responses_429(args.source)
        burst_ids = ids[args.trickle_seconds : args.trickle_seconds + args.burst]
        edited, burst_seconds = _burst(listener, crms, args.source, title_field, burst_ids)
        burst_429 = crms.responses_429(args.source) - refused_before
        burst_runs = listener.states[runs_before:]
        time.sleep(QUIET_SECONDS)
        echo_runs = len(listener.states) - runs_before - len(burst_runs)
    finally:
        listener.stop.set()
        thread.join(timeout=60)
    calls = sum(state.result().usage.reads + state.result().usage.writes for state in burst_runs)
    minimum = 2 * math.ceil(len(burst_ids) / 100)
    allowed = _allowed_seconds(args.source, minimum, args.latency)
    print(f"burst: {len(burst_ids)} edits written in {burst_seconds:.1f} s by {len(burst_runs)} "
          f"runs, {calls} calls (minimum {minimum}); the budget allows {allowed:.1f} s",
          flush=True)  # fmt: skip
    stages = _stages(burst_runs, edited)
    print("burst stages, seconds after the edit: "
          + ", ".join(f"{stage} {at:.1f}" for stage, at in stages.items()), flush=True)
    return {
        "trickle_edits": len(trickle),
        "trickle_p50_s": round(_p(trickle, 50), 2),
        "trickle_p95_s": round(_p(trickle, 95), 2),
        "burst_edits": len(burst_ids),
        "burst_s": round(burst_seconds, 1),
        "burst_allowed_s": round(allowed, 1),
        "burst_ratio": round(burst_seconds / allowed, 2),
        "burst_runs": len(burst_runs),
        "burst_stages_s": stages,
        "calls_per_lead": round(calls / len(burst_ids), 4),
        "minimum_calls_per_lead": round(minimum / len(burst_ids), 4),
        "echo_runs": echo_runs,
        "responses_429": burst_429,
        "responses_429_whole_bench": crms.responses_429(args.source),
    }


def _trickle(
    listener, crms: PersonAtTheCrms, source: str, title_field: str, ids: list[str], seconds: int
) -> list[float]:
    """One edit a second; each edit's seconds until its score was written."""
    edited: dict[str, float] = {}
    runs_before, started = len(listener.states), time.time()
    for number, crm_id in enumerate(ids[:seconds]):
        time.sleep(max(0.0, started + number - time.time()))
        edited[crm_id] = time.time()
        crms.edit(source, {crm_id: {title_field: TITLES[number % 2]}})
    written = _written_at(listener, runs_before, edited, timeout=120)
    return [written[crm_id] - at for crm_id, at in edited.items() if crm_id in written]


def _burst(
    listener, crms: PersonAtTheCrms, source: str, title_field: str, ids: list[str]
) -> tuple[float, float]:
    """Every lead edited at once; when the edit was made, and the seconds from it to the last
    write."""
    runs_before = len(listener.states)
    crms.edit(source, {crm_id: {title_field: TITLES[0]} for crm_id in ids})
    edited = time.time()
    written = _written_at(listener, runs_before, dict.fromkeys(ids, edited), timeout=900)
    return edited, max(written.values()) - edited


def _stages(runs: list[State], edited: float) -> dict[str, float]:
    """Where a burst's seconds went: when its runs first asked the CRM for the leads (the
    deliveries, the window and the run's start come before), and when their last reads,
    scoring and writes ended, each in seconds after the edit."""
    spans = [span for state in runs for span in state.result().timeline]
    first_read = min(span.start for span in spans if span.stage == "read")
    ends = {
        stage: max(span.end for span in spans if span.stage == stage)
        for stage in ("read", "score", "write")
    }
    return {
        "first_read": round(first_read - edited, 2),
        **{f"{stage}_done": round(end - edited, 2) for stage, end in ends.items()},
    }


def _written_at(
    listener, runs_before: int, edited: dict[str, float], timeout: float
) -> dict[str, float]:
    """When each edited lead's reason was confirmed written after its edit (the audit ledger),
    once the rescore runs since `runs_before` have read every edited lead (a lead whose reason
    did not move, say one cut at the field's 255 characters, has no write), or `timeout`."""
    from sqlalchemy import select

    from flows.audit import writes
    from flows.ledger import Ledger

    ledger, deadline = Ledger(), time.time() + timeout
    while sum(state.result().read for state in listener.states[runs_before:]) < len(edited):
        if time.time() > deadline:
            break
        time.sleep(0.5)
    query = select(writes.c.crm_id, writes.c.written_at).where(
        (writes.c.field == "reason") & (writes.c.state == "written")
    )
    with ledger.engine.connect() as connection:
        rows = pd.DataFrame(connection.execute(query).all(), columns=["crm_id", "written_at"])
    stamps = pd.to_datetime(rows["written_at"], utc=True) - pd.Timestamp(0, tz="UTC")
    latest = pd.Series(stamps.dt.total_seconds().to_numpy(), index=rows["crm_id"])
    latest = latest.groupby(level=0).max()
    return {
        crm_id: float(latest[crm_id])
        for crm_id, at in edited.items()
        if crm_id in latest.index and latest[crm_id] >= at
    }


def _allowed_seconds(source: str, calls: int, latency: float) -> float:
    """The least time the API budget allows for `calls` batch calls: HubSpot's requests per 10
    s (the connector's setting); Salesforce's calls in flight at once, each `latency` long."""
    from connectors.settings import ConnectorSettings

    settings = ConnectorSettings()
    if source == "hubspot":
        return 10.0 * calls / settings.hubspot_requests_per_ten_seconds
    return calls * latency / settings.salesforce_calls_in_flight


def _p(values: list[float], percentile: int) -> float:
    return float(np.percentile(values, percentile)) if values else float("nan")


if __name__ == "__main__":
    main()
