"""The rules proposal as RevOps reads it in the Prefect UI: what would change, how the current and
the proposed rules do on the newer leads the fit never saw, and a chart of conversion by score
band and of calibration. The figures are in scoring/proposal.py."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")  # draws to files only; the flow may run where there is no display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402

from scoring.proposal import HeldOut, NotEnoughOutcomes, Proposal  # noqa: E402

COLOURS = {"current": "#7a869a", "proposed": "#2f6fde"}


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
            f"⚠ **The proposal shrinks the pipeline**: {current.qualified - candidate.qualified:,}"
            f" fewer Qualified leads on the newer leads, "
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
    figure, (by_band, calibration) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=80)
    judged = {"current": proposal.current, "proposed": proposal.candidate}
    width = 0.4
    for offset, (name, held_out) in zip((-width / 2, width / 2), judged.items(), strict=True):
        table = held_out.by_band
        positions = [i + offset for i in range(len(table))]
        errors = [table["rate"] - table["low"], table["high"] - table["rate"]]
        by_band.bar(positions, table["rate"], width, yerr=errors, color=COLOURS[name], label=name)
        shown = table[table["leads"] > 0]
        calibration.errorbar(
            shown["expected"],
            shown["rate"],
            yerr=[shown["rate"] - shown["low"], shown["high"] - shown["rate"]],
            fmt="o",
            color=COLOURS[name],
            label=name,
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
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(image.getvalue()).decode()


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
