"""The rules proposal on generated leads whose conversion the seed plants (sandbox/seed.py): it
keeps what the outcomes cannot judge, changes nothing in the rules file but numbers, and says
when it has too little to go on. How close it comes to the planted truth on a seeded sandbox is
in tests/test_flows.py."""

from __future__ import annotations

import base64
import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from expectations.suite import LeadContract
from flows.review_artifacts import proposal_chart, proposal_markdown
from sandbox.seed import CONVERTED_STATUS, generate_leads
from scoring import DEFAULT_RULES_PATH, load_rules
from scoring.proposal import KEPT_UNCLEAR, NotEnoughOutcomes, Proposal, propose
from scoring.review import ranking_interval
from scoring.rules import rewrite_rules

NOW = pd.Timestamp("2026-11-24 08:00", tz="UTC")
RULES_TEXT = DEFAULT_RULES_PATH.read_text(encoding="utf-8")


def leads_with_outcomes(count: int, seed: int) -> pd.DataFrame:
    rules = load_rules()
    leads = generate_leads(count, seed=seed, now=NOW)
    valid = LeadContract(rules.data_quality, now=NOW).validate(leads).valid
    return valid.assign(converted=valid["crm_status"] == CONVERTED_STATUS)


@pytest.fixture(scope="module")
def leads() -> pd.DataFrame:
    return leads_with_outcomes(20_000, seed=8)


@pytest.fixture(scope="module")
def proposal(leads) -> Proposal:
    result = propose(leads, RULES_TEXT, NOW)
    assert isinstance(result, Proposal), result
    return result


def test_terms_the_outcomes_cannot_tell_from_zero_keep_their_points_and_are_listed(proposal):
    kept = proposal.terms[proposal.terms["verdict"] == KEPT_UNCLEAR]
    assert len(kept) and kept.index.tolist() == proposal.kept_without_clear_effect
    assert (kept["proposed"] == kept["current"]).all()
    assert ((kept["effect_low"] <= 0) & (kept["effect_high"] >= 0)).all()
    assert (kept["current"] != 0).any()  # kept, not zeroed


def test_the_file_changes_only_in_numbers_loads_and_a_rerun_writes_it_again(
    leads, proposal, tmp_path
):
    def without_numbers(text: str) -> list[str]:
        return [re.sub(r"-?\d+(\.\d+)?", "#", line) for line in text.splitlines()]

    assert without_numbers(proposal.text) == without_numbers(RULES_TEXT)  # comments, order kept
    changed = [
        line
        for line, before in zip(proposal.text.splitlines(), RULES_TEXT.splitlines(), strict=True)
        if line != before
    ]
    assert any("qualified_at_or_above" in line for line in changed)  # points and lines moved
    assert any("SaaS" in line or "employees}" in line for line in changed)
    path = tmp_path / "proposed.yaml"
    path.write_text(proposal.text)
    assert load_rules(path) == proposal.rules
    assert propose(leads, RULES_TEXT, NOW).text == proposal.text


def test_few_outcomes_get_a_clear_no_with_the_counts():
    result = propose(leads_with_outcomes(800, seed=2), RULES_TEXT, NOW)
    assert isinstance(result, NotEnoughOutcomes)
    assert result.message.startswith("Not enough outcomes to propose rules")
    assert re.search(r"hold [\d,]+ converters and [\d,]+ others", result.message)


def test_the_summary_says_when_the_proposal_shrinks_the_pipeline(proposal):
    fewer = dataclasses.replace(
        proposal,
        candidate=dataclasses.replace(proposal.candidate, qualified=proposal.current.qualified - 1),
    )
    assert "shrinks the pipeline" in proposal_markdown(fewer, "hubspot", "p.yaml")
    more = dataclasses.replace(
        proposal,
        candidate=dataclasses.replace(proposal.candidate, qualified=proposal.current.qualified),
    )
    markdown = proposal_markdown(more, "hubspot", "p.yaml")
    assert "shrinks the pipeline" not in markdown
    assert "![Conversion by score band" in markdown and "data:image/png;base64," in markdown


def test_rewriting_names_what_the_file_does_not_hold():
    text, absent = rewrite_rules(
        RULES_TEXT,
        {("fit", "industry", "points", "SaaS"): 26, ("intent", "need", "no_such_key"): 1},
    )
    assert absent == [("intent", "need", "no_such_key")]
    assert "      SaaS: 26\n" in text and len(text) == len(RULES_TEXT)


def test_the_ranking_interval_holds_the_ranking_and_narrows_with_more_leads():
    small, large = ranking_interval(0.75, 50, 200), ranking_interval(0.75, 5_000, 20_000)
    assert small[0] < large[0] < 0.75 < large[1] < small[1]
    assert all(np.isnan(ranking_interval(0.75, 0, 200)))


def test_the_chart_draws_bands_without_converters_or_without_leads(proposal):
    bands = proposal.candidate.by_band.copy()
    bands.iloc[0, bands.columns.get_indexer(["converted", "rate", "low"])] = [0, 0.0, 1e-17]
    bands.iloc[1, bands.columns.get_indexer(["leads", "converted"])] = [0, 0]
    bands.iloc[1, bands.columns.get_indexer(["rate", "low", "high", "expected"])] = float("nan")
    odd = dataclasses.replace(
        proposal, candidate=dataclasses.replace(proposal.candidate, by_band=bands)
    )
    image = base64.b64decode(proposal_chart(odd).removeprefix("data:image/png;base64,"))
    assert image.startswith(b"\x89PNG")
