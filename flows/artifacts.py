"""Prefect artifacts for on-call and RevOps: one per concern, each with a stable key so runs can
be compared in the UI, and a summary that links to the others."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.report import RunReport

AFTER_A_STOP = {  # what a stopped run of each kind leaves behind
    "sync": "Writes made before the stop are in the audit ledger, and records the run could not "
    "finish are retried by the next run.",
    "rollback": "Restores made before the stop are in the audit ledger; a rerun restores the "
    "rest (leads already restored are left alone, as changed since).",
    "review": "A review writes nothing: there is nothing to undo.",
}


def publish(
    report: RunReport,
    source: str,
    kind: str,
    dry_run: bool,
    record_url: Callable[[str], str],
    note: str = "",
) -> str:
    """Create the run's artifacts; returns the summary markdown. Leads appear by CRM id, reason
    and figures, with `record_url`'s link to the record: never their personal fields, which
    would be copied into Prefect's database."""
    prefix = f"{source}-{kind}"
    keys = {
        name: f"{prefix}-{name}" for name in ("transitions", "quarantine", "scores", "failures")
    }
    create_table_artifact(
        key=keys["transitions"],
        table=_records(report.transitions.sort_values("leads", ascending=False)),
        description=f"{source} {kind}: status transitions"
        + (" that this dry run would make" if dry_run else ""),
    )
    create_table_artifact(
        key=keys["quarantine"],
        table=_linked(report.quarantine, record_url) or [{"crm_id": "none"}],
        description=f"{source} {kind}: leads failing the lead contract (first 200): sent to "
        "Needs review in the CRM with what to fix, or quarantined (not written); fix them in the "
        "CRM",
    )
    create_table_artifact(
        key=keys["scores"],
        table=[{"score": band, "leads": int(count)} for band, count in report.scores.items()],
        description=f"{source} {kind}: score distribution",
    )
    create_table_artifact(
        key=keys["failures"],
        table=_linked(report.failures, record_url) or [{"crm_id": "none"}],
        description=f"{source} {kind}: records the CRM refused (first 200); retried next run",
    )
    summary = _summary(report, source, kind, dry_run, keys, note, record_url)
    create_markdown_artifact(
        key=f"{prefix}-summary", markdown=summary, description=f"{source} {kind}: what this run did"
    )
    return summary


def publish_failure(source: str, kind: str, message: str) -> None:
    """What on-call sees first on a run that stopped: why, what was kept, where to go next."""
    create_markdown_artifact(
        key=f"{source}-{kind}-failure",
        markdown="\n".join(
            [
                f"# {source} {kind} stopped",
                "",
                f"**{message}**",
                "",
                AFTER_A_STOP.get(kind, AFTER_A_STOP["sync"]),
                "",
                "Fix the cause, then rerun (the run's page > Retry, or Run > Quick run on the "
                "deployment). See the on-call runbook in the README.",
            ]
        ),
        description=f"{source} {kind}: why this run stopped",
    )


def _summary(
    report: RunReport,
    source: str,
    kind: str,
    dry_run: bool,
    keys: dict[str, str],
    note: str,
    record_url: Callable[[str], str],
) -> str:
    usage = report.usage
    left = "unknown" if usage.remaining is None else f"{usage.remaining:,} of {usage.limit:,}"
    rows = [
        ("read", report.read),
        ("valid", report.valid),
        ("sent to review for bad data", report.sent_to_review),
        ("quarantined", report.quarantined),
        ("scored", report.scored),
        ("changed", report.changed),
        ("written", "0 (dry run)" if dry_run else report.written),
        ("failed", report.failed),
        ("skipped (edited during the run)", report.skipped),
        (
            "API calls used",
            f"{usage.calls:,} ({usage.reads:,} reads, {usage.writes:,} writes, "
            f"{usage.metadata:,} metadata)",
        ),
        ("API calls left today", left),
    ]
    lines = [f"# {source} {kind}{' (dry run: nothing written)' if dry_run else ''}", ""]
    if note:
        lines += [note, ""]
    lines += ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows), ""]
    if dry_run and report.examples:
        lines += [
            "## Examples of planned status changes",
            "",
            "| lead | from | to | reason |",
            "|---|---|---|---|",
        ]
        lines += [
            f"| [{e['crm_id']}]({record_url(e['crm_id'])}) | {show_status(e['from'])} | "
            f"{show_status(e['to'])} | {e['reason']} |"
            for e in report.examples
        ]
        lines.append("")
    lines += [
        "See also: " + ", ".join(f"[{name}](/artifacts/key/{key})" for name, key in keys.items())
    ]
    return "\n".join(lines)


def _linked(rows: list[dict], record_url: Callable[[str], str]) -> list[dict]:
    """Each row with the link to its record in the CRM."""
    return [{**row, "record": record_url(row["crm_id"])} for row in rows]


def _records(frame: pd.DataFrame) -> list[dict]:
    if frame.empty:
        return [{"from": "none", "to": "none", "leads": 0}]
    return [
        {"from": show_status(row["from"]), "to": show_status(row["to"]), "leads": int(row["leads"])}
        for row in frame.to_dict("records")
    ]


def show_status(status) -> str:
    """A qualification status for people to read; no status reads as (none)."""
    return (
        "(none)" if status is None or (not isinstance(status, str) and pd.isna(status)) else status
    )
