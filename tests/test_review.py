"""The criteria review's figures: exact on small hand-made cases, and on generated leads whose
outcomes depend on fit and engagement (sandbox/seed.py), it finds that relationship and calls a
factor that plays no part in it what it is."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from expectations.suite import LeadContract
from sandbox.seed import CONVERTED_STATUS, OPEN_STATUS, generate_leads
from scoring import load_rules, score
from scoring.review import (
    best_threshold,
    conversion_by,
    factor_effects,
    ranking_quality,
    replay,
    review,
    score_bands,
    transition_matrix,
    unworked_qualified,
)

NOW = pd.Timestamp("2026-11-24 08:00", tz="UTC")


def test_rates_carry_their_counts_an_interval_and_a_small_flag():
    groups = pd.Series(["a"] * 40 + ["b"] * 5)
    converted = pd.Series([True] * 10 + [False] * 30 + [True] * 5)
    table = conversion_by(groups, converted, min_group=30)
    assert table.loc["a", ["leads", "converted"]].tolist() == [40, 10]
    assert table.loc["a", "rate"] == 0.25
    assert table.loc["a", "low"] < 0.25 < table.loc["a", "high"]
    assert table["small"].tolist() == [False, True]
    assert table.loc["b", "high"] == pytest.approx(1.0) and table.loc["b", "low"] > 0.5


def test_score_bands_cover_0_to_100():
    bands = score_bands(pd.Series([0, 9, 10, 89, 90, 100]))
    assert bands.astype(str).tolist() == ["0-9", "0-9", "10-19", "80-89", "90-100", "90-100"]


def test_a_perfect_score_separates_exactly_and_ranks_every_converter_first():
    scores = pd.Series([10, 20, 30, 70, 80, 90])
    converted = pd.Series([False, False, False, True, True, True])
    best = best_threshold(scores, converted)
    assert 31 <= best.score <= 70 and best.separation == 1.0
    assert (best.converters_above, best.others_above, best.rate_above) == (3, 0, 1.0)
    assert ranking_quality(scores, converted) == 1.0
    assert ranking_quality(100 - scores, converted) == 0.0
    assert ranking_quality(pd.Series([50] * 6), converted) == 0.5


def test_factor_effects_call_a_difference_only_when_the_interval_excludes_zero():
    rng = np.random.default_rng(1)
    has = rng.random(4000) < 0.5
    converted = pd.Series(rng.random(4000) < np.where(has, 0.3, 0.1))
    points = pd.DataFrame(
        {"helps": np.where(has, 10, 0), "noise": np.where(rng.random(4000) < 0.5, 5, 0)}
    )
    points["rare"] = 0
    points.loc[:9, "rare"] = 3
    effects = factor_effects(points, converted, min_group=30)
    assert effects["verdict"].to_dict() == {
        "helps (+)": "raises conversion",
        "noise (+)": "no clear effect",
        "rare (+)": "too few leads",
    }
    assert effects.loc["helps (+)", "difference_low"] > 0.15
    assert effects.loc["helps (+)", "points"] == 10
    assert effects.loc["rare (+)", ["leads_with", "leads_without"]].tolist() == [10, 3990]


def test_a_factor_is_judged_by_the_sign_of_its_points_and_a_rate_of_zero_is_not_certain():
    # budget: -5 when missing, +10 when large; 0/30 converters among the large budgets is too
    # little to call against 50/1000 (a Wald interval would call it)
    points = pd.Series([-5] * 1000 + [10] * 30, name="intent: budget").to_frame()
    converted = pd.Series([True] * 50 + [False] * 950 + [False] * 30)
    effects = factor_effects(points, converted, min_group=30)
    assert effects.index.tolist() == ["intent: budget (+)", "intent: budget (-)"]
    assert effects.loc["intent: budget (+)", ["leads_with", "points"]].tolist() == [30, 10]
    assert effects.loc["intent: budget (+)", "verdict"] == "no clear effect"
    assert effects.loc["intent: budget (+)", "difference_high"] > 0


def test_no_converters_gives_no_threshold_and_no_ranking():
    scores, converted = pd.Series([10, 50, 90]), pd.Series([False, False, False])
    assert best_threshold(scores, converted) is None
    assert np.isnan(ranking_quality(scores, converted))
    table = conversion_by(score_bands(scores), converted, min_group=1)
    assert table["rate"].fillna(0).eq(0).all() and (table["low"].dropna() >= 0).all()


def test_transitions_and_unworked_qualified_leads():
    current = pd.Series(["Qualified", "Qualified", None, "Nurture"])
    candidate = pd.Series(["Qualified", "Nurture", "Nurture", "Nurture"])
    matrix = transition_matrix(current, candidate)
    assert matrix.loc["Qualified", "Nurture"] == 1 and matrix.loc["(none)", "Nurture"] == 1
    assert int(matrix.to_numpy().sum()) == 4
    crm_status = pd.Series([OPEN_STATUS, "Working - Contacted", None, None])
    assert unworked_qualified(current, crm_status, [OPEN_STATUS]) == 1


@pytest.fixture(scope="module")
def scored_leads() -> pd.DataFrame:
    """Generated leads as the CRM holds them after the job scored them, with their outcome."""
    contract = LeadContract(load_rules().data_quality, now=NOW)
    leads = contract.validate(generate_leads(20_000, seed=8, now=NOW)).valid
    written = score(leads, load_rules(), NOW)
    return leads.assign(
        score=written["score"].astype(float),
        status=written["status"],
        converted=leads["crm_status"] == CONVERTED_STATUS,
    )


def test_the_review_recovers_the_planted_relationship_and_flags_a_factor_with_none(scored_leads):
    result = review(scored_leads, load_rules(), NOW, [OPEN_STATUS])
    assert result.leads == len(scored_leads) and 0.05 < result.converted / result.leads < 0.4

    judged = result.by_band[~result.by_band["small"]]
    assert judged["rate"].is_monotonic_increasing or (
        pd.Series(range(len(judged))).corr(judged["rate"].reset_index(drop=True), "spearman") > 0.9
    )
    assert judged["rate"].iloc[-1] > 3 * judged["rate"].iloc[0]
    assert result.ranking > 0.7  # chance is 0.5
    assert result.best.separation > 0.3

    verdicts = result.factors["verdict"]
    assert verdicts["fit: industry (+)"] == "raises conversion"  # fit is planted
    assert verdicts["engagement: form_submissions (+)"] == "raises conversion"  # engagement too
    assert verdicts["intent: need (+)"] == "no clear effect"  # need plays no part in the outcome
    assert (result.factors["leads_with"] + result.factors["leads_without"] == result.leads).all()
    assert result.subscores.loc["converted", "fit"] > result.subscores.loc["others", "fit"]
    assert 0 < result.unworked_qualified <= result.qualified


def test_replay_of_the_same_rules_moves_nothing_and_worse_rules_rank_worse(scored_leads):
    rules = load_rules()
    same = replay(scored_leads, rules, rules, NOW)
    off_diagonal = same.transitions.to_numpy().sum() - np.trace(same.transitions.to_numpy())
    assert off_diagonal == 0
    assert same.converters_qualified_candidate == same.converters_qualified_now

    no_fit = rules.model_copy(
        update={
            "fit": rules.fit.model_copy(
                update={
                    "industry": rules.fit.industry.model_copy(
                        update={"points": {}, "other_points": 0}
                    )
                }
            )
        }
    )
    worse = replay(scored_leads, rules, no_fit, NOW)
    assert worse.ranking < same.ranking == worse.ranking_now
    assert worse.transitions.to_numpy().sum() == len(scored_leads)

    stricter = rules.model_copy(
        update={
            "status": rules.status.model_copy(
                update={"qualified_at_or_above": 90, "nurture_at_or_above": 30}
            )
        }
    )
    fewer = replay(scored_leads, rules, stricter, NOW)
    assert fewer.converters_qualified_candidate < fewer.converters_qualified_now
    assert fewer.transitions.loc["Qualified", "Nurture"] > 0
