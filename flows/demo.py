"""The main job on embedded defaults: sandbox CRMs with seeded leads, Prefect's local engine, a
full sync of both CRMs, a criteria review of what they wrote against the leads' outcomes (and a
proposal of new rules), a rep's edit rescored from each CRM's change stream, then a
requalification pass at a later simulated time."""

from __future__ import annotations

import argparse
import os
import shutil
import threading
import time
from pathlib import Path

import pandas as pd

from connectors import SOURCES
from flows.artifacts import show_status
from flows.report import RunReport
from sandbox.run import Sandbox, SandboxConfig
from sandbox.salesforce import SalesforceSettings
from scoring.proposal import NotEnoughOutcomes, Proposal
from scoring.review import CriteriaReview

DEMO_DIR = Path(".leadsync/demo")
LISTENER_WAIT_SECONDS = 30


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m flows.demo", description=__doc__)
    parser.add_argument("--leads", type=int, default=2_000, help="leads seeded in each CRM")
    parser.add_argument(
        "--later-days",
        type=int,
        default=90,
        help="how many days later the requalification pass runs",
    )
    parser.add_argument(
        "--directory",
        type=Path,
        default=DEMO_DIR,
        help="where the demo keeps its sandbox data and ledger (wiped first)",
    )
    args = parser.parse_args(argv)

    shutil.rmtree(args.directory, ignore_errors=True)
    info_file = args.directory / "sandbox-info.json"
    os.environ["LEADSYNC_SANDBOX_INFO"] = str(info_file)
    os.environ["LEADSYNC_LEDGER_URL"] = f"sqlite:///{args.directory / 'ledger.sqlite3'}"
    from flows.jobs import requalify_leads, sync_leads  # after the environment is set
    from flows.review import review_criteria

    config = SandboxConfig(  # an idle change stream says so each second: the demo waits less
        leads=args.leads,
        data_dir=args.directory / "sandbox",
        salesforce=SalesforceSettings(pubsub_keepalive_seconds=1.0),
    )
    with Sandbox(config) as sandbox:
        sandbox.write_info(info_file)
        print(
            f"Sandbox CRMs up with {args.leads:,} leads each: Salesforce "
            f"{sandbox.salesforce.base_url}, HubSpot {sandbox.hubspot.base_url}\n"
        )
        now = pd.Timestamp.now(tz="UTC").floor("s")
        later = now + pd.Timedelta(days=args.later_days)
        rows = []
        for source in SOURCES:
            state = sync_leads(source=source, as_of=now, return_state=True)
            rows.append(_row(f"{source} sync", state))
        reviews = {
            source: review_criteria(
                source=source,
                as_of=now,
                propose=str(args.directory / f"proposed-rules-{source}.yaml"),
                return_state=True,
            )
            for source in SOURCES
        }
        edits = [_speed_to_lead(sandbox, source) for source in SOURCES]
        for source in SOURCES:
            state = requalify_leads(
                source=source, as_of=later, older_than_days=30, return_state=True
            )
            rows.append(_row(f"{source} requalify +{args.later_days}d", state))
    print(_table(rows))
    print("\nCriteria review: conversion by score band (the seed plants fit and engagement):")
    outcomes = {source: state.result() for source, state in reviews.items()}
    for source, outcome in outcomes.items():
        print(f"  {source}: {reviews[source].message.split('; proposed')[0]}")
        print(f"    {_bands(outcome.review)}")
    print("\nProposed rules, fitted on the older leads and judged on the newer:")
    for source, outcome in outcomes.items():
        print(f"  {source}: {_proposal_line(outcome.proposal)}")
    print("\nSpeed to lead: a rep edits a lead; its CRM's change stream has it rescored:")
    for line in edits:
        print(f"  {line}")
    print(f"\nStatus moves in the requalification pass, {args.later_days} days later:")
    for row in rows[len(SOURCES) :]:
        print(f"  {row['run']}: {row['moves'] or 'none'}")
    print(
        "\nEvery run published artifacts (summary, transitions, quarantine, scores, failures;\n"
        "the reviews: <source>-criteria-review and <source>-rules-proposal).\n"
        "See them in the Prefect UI: `.venv/bin/prefect server start`, then open\n"
        "http://127.0.0.1:4200/runs (the demo's runs are kept in PREFECT_HOME)."
    )


def _row(run: str, state) -> dict:
    report = state.result(raise_on_failure=False)
    if not isinstance(report, RunReport):
        raise RuntimeError(f"{run} ended without a report: {state.message}")
    moves = ", ".join(
        f"{show_status(t['from'])} -> {show_status(t['to'])}: {int(t['leads'])}"
        for t in report.transitions.sort_values("leads", ascending=False).head(4).to_dict("records")
    )
    return {
        "run": run,
        "state": state.name,
        "read": report.read,
        "sent to review": report.sent_to_review,
        "quarantined": report.quarantined,
        "written": report.written,
        "failed": report.failed,
        "moves": moves,
    }


def _speed_to_lead(sandbox: Sandbox, source: str) -> str:
    """Start a listener, edit one lead as a rep would (it turns out to be a student), and wait
    for its new score in the CRM."""
    from connectors import connector_for
    from flows.listen import Listener
    from scoring import load_rules
    from flows.settings import ListenSettings

    listener = Listener(source, ListenSettings(window_seconds=1.0, port=0))
    thread = threading.Thread(target=listener.run, name=f"listen-{source}", daemon=True)
    thread.start()
    try:
        if not listener.ready.wait(LISTENER_WAIT_SECONDS):
            return f"{source}: the listener did not start"
        connector = connector_for(source)
        leads = pd.concat(connector.read_all())
        owned = leads["crm_status"].isin(load_rules().human_owned.crm_statuses)  # stays as is
        student = leads["title"].fillna("").str.contains("Student|Intern", case=False)
        editable = leads[~owned & ~student]
        lead = editable.sort_values("status", key=lambda s: s != "Qualified", kind="stable").iloc[0]
        edited = time.monotonic()
        getattr(sandbox, source).edit_as_person(
            lead["crm_id"], {connector.mapping.read["title"]: "Student"}
        )
        while time.monotonic() - edited < LISTENER_WAIT_SECONDS:
            now = connector.read_by_ids([lead["crm_id"]]).iloc[0]
            if now["reason"] != lead["reason"]:
                lag = time.monotonic() - edited
                return (
                    f"{source}: lead {lead['crm_id']} edited (title: Student), rescored and "
                    f"written {lag:.1f} s later: {show_status(lead['status'])} "
                    f"{lead['score']:.0f} -> {show_status(now['status'])} {now['score']:.0f}"
                )
            time.sleep(0.2)
        return f"{source}: lead {lead['crm_id']} edited, not rescored in {LISTENER_WAIT_SECONDS} s"
    finally:
        listener.stop.set()
        thread.join(timeout=30)


def _proposal_line(proposal: Proposal | NotEnoughOutcomes) -> str:
    if isinstance(proposal, NotEnoughOutcomes):
        return proposal.message
    return (
        f"held-out AUC {proposal.candidate.ranking:.3f} against the current rules' "
        f"{proposal.current.ranking:.3f}; {len(proposal.changes)} changes, e.g. "
        f"{'; '.join(proposal.changes[:2])}"
    )


def _bands(review: CriteriaReview) -> str:
    return ", ".join(
        f"{band} {row.rate:.0%}" for band, row in review.by_band.iterrows() if row.leads
    )


def _table(rows: list[dict]) -> str:
    return pd.DataFrame(rows).drop(columns="moves").set_index("run").to_string()


if __name__ == "__main__":
    main()
