"""The criteria review and the rules proposal as RevOps reads them in the Prefect UI. The review:
its tables drawn with bars, a replay of a candidate file, every rate as CSV. The proposal: what
would change, how the current and the proposed rules do on the newer leads the fit never saw,
and a chart of conversion by score band and of calibration. The figures are in
scoring/review.py and scoring/proposal.py."""

from __future__ import annotations

import base64
import io

import pandas as pd
from matplotlib.figure import Figure
from prefect.artifacts import create_markdown_artifact

from scoring import Rules
from scoring.proposal import HeldOut, NotEnoughOutcomes, Proposal
from scoring.review import CriteriaReview, Replay, Threshold

BAR_WIDTH = 20  # characters of the longest bar in a rate table
COLOURS = {"current": "#7a869a", "proposed": "#2f6fde"}  # of the proposal chart


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


def publish_proposal(proposal: Proposal | NotEnoughOutcomes, source: str, path: str) -> str:
    """The proposal as one markdown artifact, its chart inline; returns the markdown."""
    if isinstance(proposal, NotEnoughOutcomes):
        markdown = f"# {source} rules proposal\n\n{proposal.message}.\n"
    else:
        markdown = proposal_markdown(proposal, source, path)
    create_markdown_artifact(
        key=f"{source}-rules-proposal",
        markdown=markdown,
        description=f"{source}: new points and thresholds fitted to the outcomes, to review",
    )
    return markdown


def proposal_markdown(proposal: Proposal, source: str, path: str) -> str:
    current, candidate = proposal.current, proposal.candidate
    download = "data:text/yaml;base64," + base64.b64encode(proposal.text.encode()).decode()
    lines = [
        f"# {source} rules proposal",
        "",
        f"Fitted on the **{proposal.fitted:,} older leads**, judged on the **{proposal.held_out:,}"
        f" newer** ones (created since {proposal.split_at:%Y-%m-%d}), which the fit never saw. "
        f"Written to `{path}`; nothing is applied until a person replaces the rules file.",
        "",
        "| rules | ranks a converter first (95%) | Qualified | converters caught |",
        "|---|---|---:|---:|",
        _judged_row("current", current),
        _judged_row("proposed", candidate),
        "",
        "Calibration, fitted on the older leads: a lead with this score converts about",
        "",
        "| rules | " + " | ".join(f"score {at}" for at in current.converts_at) + " |",
        "|---|" + "---:|" * len(current.converts_at),
        *(
            f"| {name} | " + " | ".join(f"{rate:.0%}" for rate in held.converts_at.values()) + " |"
            for name, held in (("current", current), ("proposed", candidate))
        ),
        "",
    ]
    if proposal.shrinks_pipeline:
        lines += [
            "⚠ **The proposal shrinks the pipeline**: "
            f"{current.qualified - candidate.qualified:,} fewer Qualified leads among the newer, "
            f"{current.converters_caught - candidate.converters_caught:,} fewer converters caught.",
            "",
        ]
    lines += [
        f"![Conversion by score band and calibration, current and proposed rules]"
        f"({proposal_chart(proposal)})",
        "",
        f"## What would change ({len(proposal.changes)})",
        "",
        *(f"- {change}" for change in proposal.changes),
        "",
        "## Kept: effect not distinguishable from zero",
        "",
        "Too little evidence to move these, so they keep their points (not zeroed): "
        + (", ".join(proposal.kept_without_clear_effect) or "none")
        + ".",
        "",
        "## Conversion by score band on the newer leads",
        "",
        "*Expected*: what each file's calibration (fitted on the older leads) predicts.",
        "",
        "| band | current: leads | converted | expected | proposed: leads | converted | expected |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *_band_rows(current.by_band, candidate.by_band),
        "",
        f"[Download the proposed rules file]({download})",
        "",
    ]
    return "\n".join(lines)


def proposal_chart(proposal: Proposal) -> str:
    """Conversion by score band of both files on the newer leads, and their calibration
    (observed against expected conversion), as a PNG data URL."""
    figure = Figure(figsize=(10, 3.6), dpi=80)  # drawn off screen, no global pyplot state
    by_band, calibration = figure.subplots(1, 2)
    judged = {"current": proposal.current, "proposed": proposal.candidate}
    width = 0.4
    for offset, (name, held_out) in zip((-width / 2, width / 2), judged.items(), strict=True):
        table = held_out.by_band[held_out.by_band["leads"] > 0]
        positions = [held_out.by_band.index.get_loc(band) + offset for band in table.index]
        errors = _error_bars(table)
        by_band.bar(positions, table["rate"], width, yerr=errors, color=COLOURS[name], label=name)
        calibration.errorbar(
            table["expected"], table["rate"], yerr=errors, fmt="o", color=COLOURS[name], label=name
        )
    labels = proposal.current.by_band.index.astype(str)
    by_band.set_xticks(range(len(labels)), labels, rotation=45, fontsize=8)
    by_band.set(title="Conversion by score band (newer leads)", ylabel="converted")
    by_band.legend()
    top = max(proposal.current.by_band["high"].max(), proposal.candidate.by_band["high"].max())
    calibration.plot([0, top], [0, top], color="#bbbbbb", linestyle="--", label="exact")
    calibration.set(
        title="Calibration by band", xlabel="expected conversion", ylabel="observed conversion"
    )
    calibration.legend()
    figure.tight_layout()
    image = io.BytesIO()
    figure.savefig(image, format="png")
    return "data:image/png;base64," + base64.b64encode(image.getvalue()).decode()


def _error_bars(table: pd.DataFrame) -> list[pd.Series]:
    """Distances from each rate to its interval's ends (never below zero: at a rate of 0 or 1
    rounding can put an end a hair past the rate)."""
    return [
        (table["rate"] - table["low"]).clip(lower=0),
        (table["high"] - table["rate"]).clip(lower=0),
    ]


def _judged_row(name: str, held_out: HeldOut) -> str:
    return (
        f"| {name} (Qualified at {held_out.line}) | {held_out.ranking:.1%} "
        f"({held_out.ranking_low:.1%} to {held_out.ranking_high:.1%}) | {held_out.qualified:,} | "
        f"{held_out.converters_caught:,} of {held_out.converters:,} |"
    )


def _band_rows(current: pd.DataFrame, candidate: pd.DataFrame) -> list[str]:
    def cells(row) -> str:
        rate = "–" if not row.leads else f"{row.rate:.0%}"
        expected = "–" if pd.isna(row.expected) else f"{row.expected:.0%}"
        return f"{row.leads:,} | {rate} | {expected}"

    return [
        f"| {band} | {cells(now)} | {cells(then)} |"
        for (band, now), (_, then) in zip(current.iterrows(), candidate.iterrows(), strict=True)
    ]
