"""Prefect artifacts for on-call and RevOps: one per concern, each with a stable key so runs can
be compared in the UI, and a summary that links to the others."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pandas as pd
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from flows.report import RunReport
from scoring import Rules
from scoring.review import CriteriaReview, Replay, Threshold

BAR_WIDTH = 20
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


def publish_review(
    result: CriteriaReview,
    candidate: Replay | None,
    source: str,
    candidate_path: str | None,
    rules: Rules,
    candidate_rules: Rules | None = None,
) -> str:
    """The criteria review as one markdown artifact, its tables drawn with bars, ending with a
    link that downloads every rate and count of its tables as CSV; returns the markdown."""
    csv = review_csv(result).to_csv(index=False)
    link = "data:text/csv;base64," + base64.b64encode(csv.encode()).decode()
    qualified_at = rules.status.qualified_at_or_above
    lines = [
        f"# {source} criteria review",
        "",
        f"**{result.leads:,} leads** the job scored, **{result.converted:,} converted** "
        f"({_percent(result.converted, result.leads)}). The written score ranks a converter above "
        f"a lead that did not convert **{_share(result.ranking)}** of the time (50% is chance).",
        "",
        _best_line(result.best, qualified_at),
        f"- Current threshold, {qualified_at}. " + _threshold_text(result.current),
        f"- **Qualified leads sales never worked: {result.unworked_qualified:,}** of "
        f"{result.qualified:,} Qualified "
        f"({_percent(result.unworked_qualified, result.qualified)}).",
        "",
        "Rates come with their 95% interval; ⚠ marks groups too small to judge.",
        "",
        "## Conversion by score band",
        "",
        *_rate_table("score", result.by_band),
        "## Conversion by status the job wrote",
        "",
        *_rate_table("status", result.by_status),
        "## Rules factors: leads with each factor against leads without",
        "",
        "*With*: the leads whose score the factor raised (+) or lowered (-), by the typical "
        "points shown; *without*: all the others.",
        "",
        "| factor | points | with: leads | converted | without: leads | converted | difference "
        "(95%) | verdict |",
        "|---|---:|---:|---:|---:|---:|---|---|",
        *(
            f"| {name} | {row.points:+d} | {row.leads_with:,} | {_rate(row.rate_with)} | "
            f"{row.leads_without:,} | {_rate(row.rate_without)} | "
            f"{_points(row.difference)} ({_points(row.difference_low)} to "
            f"{_points(row.difference_high)}) | "
            f"{'⚠ ' if row.small else ''}{row.verdict} |"
            for name, row in result.factors.iterrows()
        ),
        "",
        "## Mean sub-scores",
        "",
        "| | " + " | ".join(result.subscores.columns) + " |",
        "|---|" + "---:|" * len(result.subscores.columns),
        *(
            f"| {name} | " + " | ".join(f"{value:g}" for value in row) + " |"
            for name, row in result.subscores.iterrows()
        ),
        "",
    ]
    if candidate is not None:
        lines += _replay_lines(
            candidate, candidate_path, qualified_at, candidate_rules.status.qualified_at_or_above
        )
    lines += [f"[Download every rate and count as CSV]({link})", ""]
    markdown = "\n".join(lines)
    create_markdown_artifact(
        key=f"{source}-criteria-review",
        markdown=markdown,
        description=f"{source}: does the score predict conversion"
        + (", and what the candidate rules would change" if candidate else ""),
    )
    return markdown


def review_csv(result: CriteriaReview) -> pd.DataFrame:
    """The rates of the review's tables in one tidy table: section, group, counts, rate, its
    interval; for factors also the leads without it and the difference with its interval."""
    columns = ["leads", "converted", "rate", "low", "high", "small"]
    factors = result.factors.rename(
        columns={"leads_with": "leads", "converted_with": "converted", "rate_with": "rate"}
    )
    return (
        pd.concat(
            [
                result.by_band[columns].assign(section="score band"),
                result.by_status[columns].assign(section="status"),
                factors.assign(section="factor")[
                    [
                        *columns[:3],
                        "leads_without",
                        "converted_without",
                        "rate_without",
                        "difference",
                        "difference_low",
                        "difference_high",
                        "small",
                        "points",
                        "verdict",
                        "section",
                    ]
                ],
            ]
        )
        .rename_axis("group")
        .reset_index()
        .set_index("section")
        .reset_index()
    )


def _replay_lines(
    candidate: Replay, path: str | None, qualified_at: int, candidate_at: int
) -> list[str]:
    matrix = candidate.transitions
    total = int(matrix.to_numpy().sum())
    moved = total - int(matrix.to_numpy().trace())  # same statuses in rows and columns
    return [
        f"## Candidate rules `{path}`: a replay, nothing written",
        "",
        "Both files score the same leads at the same time, so only the rules differ.",
        "",
        f"- **{moved:,} of {total:,} leads would change status.**",
        f"- Ranks converters first {_share(candidate.ranking)} of the time "
        f"(the current rules: {_share(candidate.ranking_now)}).",
        f"- Converters scoring Qualified (at or above {candidate_at}): "
        f"**{candidate.converters_qualified_candidate:,}** of {candidate.converters:,} "
        f"(the current rules, at or above {qualified_at}: {candidate.converters_qualified_now:,}).",
        _best_line(candidate.best, candidate_at).replace("Best", "Its best"),
        "",
        "Statuses under the current rules (rows) and under the candidate (columns); leads sales "
        "owns keep theirs:",
        "",
        "| now \\ candidate | " + " | ".join(matrix.columns) + " |",
        "|---|" + "---:|" * len(matrix.columns),
        *(
            f"| {status} | " + " | ".join(f"{int(count):,}" for count in row) + " |"
            for status, row in matrix.iterrows()
        ),
        "",
    ]


def _rate_table(label: str, table: pd.DataFrame) -> list[str]:
    top = table.loc[~table["small"], "rate"].max()  # one tiny group must not shrink every bar
    return [
        f"| {label} | leads | converted | rate | 95% interval | |",
        "|---|---:|---:|---:|---|---|",
        *(
            f"| {group} | {row.leads:,} | {row.converted:,} | {_rate(row.rate)} | "
            f"{_rate(row.low)} to {_rate(row.high)} | "
            + ("⚠ too few leads" if row.small else _bar(row.rate, top))
            + " |"
            for group, row in table.iterrows()
            if row.leads
        ),
        "",
    ]


def _bar(rate: float, top: float) -> str:
    return "█" * round(BAR_WIDTH * rate / top) if top > 0 else ""


def _best_line(best: Threshold | None, qualified_at: int) -> str:
    if best is None:
        return "- **Best threshold: n/a**: it takes both converters and leads that did not."
    return (
        f"- **Best threshold: {best.score}** (Qualified now starts at {qualified_at}). "
        + _threshold_text(best)
    )


def _share(chance: float) -> str:
    return "n/a" if pd.isna(chance) else f"{chance:.0%}"


def _threshold_text(threshold: Threshold) -> str:
    return (
        f"At or above it: {threshold.converters_above:,} of {threshold.converters:,} converters "
        f"({_percent(threshold.converters_above, threshold.converters)}) and "
        f"{threshold.others_above:,} of {threshold.others:,} others "
        f"({_percent(threshold.others_above, threshold.others)}); "
        f"{_rate(threshold.rate_above)} of them converted."
    )


def _percent(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "n/a"


def _rate(rate: float) -> str:
    return "n/a" if pd.isna(rate) else f"{rate:.1%}"


def _points(difference: float) -> str:
    """A difference of two rates, in percentage points."""
    return "n/a" if pd.isna(difference) else f"{100 * difference:+.1f} pts"
