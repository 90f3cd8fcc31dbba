"""The criteria review: does the score predict conversion, and what would a rules change do.

Pure functions over frames of leads with the score and status the job wrote and their outcome
(`converted`). Every rate comes with the counts behind it and a 95% interval, and a group too
small to judge is flagged (`small`), never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from expectations.frame import QUALIFICATION_STATUSES
from scoring.engine import GROUPS, score
from scoring.factors import compute_factors
from scoring.rules import Rules

MIN_GROUP = 30  # fewer leads than this in a group: its rate is shown but flagged small
Z95 = 1.96
BAND_WIDTH = 10
NO_STATUS = "(none)"
QUALIFIED = QUALIFICATION_STATUSES[0]


@dataclass(frozen=True)
class CriteriaReview:
    """What the leads' outcomes say about the scoring the job wrote."""

    leads: int  # scored leads reviewed
    converted: int
    by_band: pd.DataFrame  # conversion_by score band
    by_status: pd.DataFrame  # conversion_by the status the job wrote
    factors: pd.DataFrame  # factor_effects
    subscores: pd.DataFrame  # mean sub-scores of converters and of the others
    ranking: float  # ranking_quality of the written score (NaN: no converters, or all)
    best: Threshold | None  # None when there are no converters, or only converters
    current: Threshold  # at the rules' Qualified threshold
    unworked_qualified: int
    qualified: int


@dataclass(frozen=True)
class Replay:
    """What a candidate rules file would do to the same leads, without writing anything."""

    transitions: pd.DataFrame  # transition_matrix: status under the current rules -> candidate
    ranking_now: float  # ranking_quality of the current rules' scores, at the same time
    ranking: float  # ranking_quality of the candidate's scores
    best: Threshold | None
    converters_qualified_now: int  # converters scoring at or above the current Qualified line
    converters_qualified_candidate: int  # the same under the candidate's scores and line
    converters: int


def review(
    leads: pd.DataFrame, rules: Rules, now, unworked: list[str], min_group: int = MIN_GROUP
) -> CriteriaReview:
    """`leads`: canonical rows that carry the score the job wrote and their outcome. Sub-scores
    and factors come from the shared scoring module with `rules` at `now` (the ones the job
    used, when run with the same rules file)."""
    converted = _outcome(leads)
    points = factor_points(leads, rules, now)
    # A sub-score is the sum of its group's factor points (as in scoring.engine.score).
    subscores = pd.DataFrame(
        {group: points.filter(regex=f"^{group}: ").sum(axis=1) for group in GROUPS}
    ).groupby(converted.map({True: "converted", False: "others"}))
    written = leads["score"]
    return CriteriaReview(
        leads=len(leads),
        converted=int(converted.sum()),
        by_band=conversion_by(score_bands(written), converted, min_group),
        by_status=conversion_by(_statuses(leads["status"]), converted, min_group),
        factors=factor_effects(points, converted, min_group),
        subscores=subscores.mean().round(1),
        ranking=ranking_quality(written, converted),
        best=best_threshold(written, converted),
        current=threshold_at(written, converted, rules.status.qualified_at_or_above),
        unworked_qualified=unworked_qualified(leads["status"], leads["crm_status"], unworked),
        qualified=int((leads["status"] == QUALIFIED).sum()),
    )


def replay(leads: pd.DataFrame, current: Rules, candidate: Rules, now) -> Replay:
    """Score `leads` with the current and the candidate rules at the same time, and compare:
    so engagement decay since the last write does not count as the candidate's doing.
    Converters are judged by score against each file's Qualified line, because their status
    belongs to sales (a human-owned CRM status) and never moves."""
    converted = _outcome(leads)
    now_scored, proposed = score(leads, current, now), score(leads, candidate, now)
    line_now = current.status.qualified_at_or_above
    line_candidate = candidate.status.qualified_at_or_above
    return Replay(
        transitions=transition_matrix(now_scored["status"], proposed["status"]),
        ranking_now=ranking_quality(now_scored["score"], converted),
        ranking=ranking_quality(proposed["score"], converted),
        best=best_threshold(proposed["score"], converted),
        converters_qualified_now=int((converted & (now_scored["score"] >= line_now)).sum()),
        converters_qualified_candidate=int(
            (converted & (proposed["score"] >= line_candidate)).sum()
        ),
        converters=int(converted.sum()),
    )


def factor_points(leads: pd.DataFrame, rules: Rules, now) -> pd.DataFrame:
    """Each rules factor's points for every lead, one column per factor (`fit: industry`), in
    the rules' order; a canonical frame in, same index out."""
    no_problems = np.zeros(len(leads), dtype=bool)  # leads that met the lead contract
    factors = compute_factors(leads, rules, pd.Timestamp(now).tz_convert("UTC"), no_problems)
    return pd.DataFrame(
        {f"{factor.group}: {factor.name}": factor.points for factor in factors}, index=leads.index
    )


def score_bands(scores: pd.Series) -> pd.Series:
    """Scores in bands of ten: 0-9 ... 80-89, 90-100 (a score outside 0-100 counts at the
    nearest end, as in the threshold figures)."""
    edges = list(range(0, 100, BAND_WIDTH)) + [101]
    labels = [f"{low}-{high - 1}" for low, high in zip(edges[:-2], edges[1:-1], strict=True)]
    labels.append(f"{edges[-2]}-100")
    return pd.cut(_whole(scores).astype(float), edges, right=False, labels=labels)


def conversion_by(groups: pd.Series, converted: pd.Series, min_group: int = MIN_GROUP):
    """Per group (sorted, or in a categorical's order): leads, converted, rate, its 95% Wilson
    interval, and whether the group is too small to judge."""
    counts = converted.astype(bool).groupby(groups, observed=False, sort=True).agg(["size", "sum"])
    table = pd.DataFrame(
        {"leads": counts["size"].astype(int), "converted": counts["sum"].astype(int)}
    )
    table["rate"] = _rate(table["converted"], table["leads"])
    table["low"], table["high"] = _wilson(table["converted"], table["leads"])
    table["small"] = table["leads"] < min_group
    return table


def factor_effects(
    points: pd.DataFrame, converted: pd.Series, min_group: int = MIN_GROUP
) -> pd.DataFrame:
    """For each factor and sign of its points (`fit: industry (+)`: leads it raised, `(-)`:
    leads it lowered), leads with it against all others: the conversion rate of each, the
    difference with its 95% interval (Newcombe's, from the two Wilson intervals: sound at rates
    of 0 or 1), the typical points, and a verdict: raises or lowers conversion (the interval
    excludes zero), no clear effect, or too few leads on either side."""
    raised, lowered = points.where(points > 0), points.where(points < 0)
    signed = pd.concat([raised.add_suffix(" (+)"), lowered.add_suffix(" (-)")], axis=1).loc[
        :, lambda frame: frame.notna().any()
    ]
    ordered = [f"{name} ({sign})" for name in points.columns for sign in "+-"]
    signed = signed[[name for name in ordered if name in signed.columns]]
    has = signed.notna().to_numpy()
    won = converted.astype(bool).to_numpy()[:, None]
    with_n, with_won = has.sum(axis=0), (has & won).sum(axis=0)
    without_n, without_won = (~has).sum(axis=0), (~has & won).sum(axis=0)
    rate_with, rate_without = _rate(with_won, with_n), _rate(without_won, without_n)
    low_with, high_with = _wilson(with_won, with_n)
    low_without, high_without = _wilson(without_won, without_n)
    difference = rate_with - rate_without
    low = difference - np.sqrt((rate_with - low_with) ** 2 + (high_without - rate_without) ** 2)
    high = difference + np.sqrt((high_with - rate_with) ** 2 + (rate_without - low_without) ** 2)
    small = np.minimum(with_n, without_n) < min_group
    verdict = np.select(
        [small, low > 0, high < 0],
        ["too few leads", "raises conversion", "lowers conversion"],
        "no clear effect",
    )
    return pd.DataFrame(
        {
            "points": signed.median().round().astype(int).to_numpy(),
            "leads_with": with_n,
            "converted_with": with_won,
            "rate_with": rate_with,
            "leads_without": without_n,
            "converted_without": without_won,
            "rate_without": rate_without,
            "difference": difference,
            "difference_low": low,
            "difference_high": high,
            "small": small,
            "verdict": verdict,
        },
        index=pd.Index(signed.columns, name="factor"),
    )


@dataclass(frozen=True)
class Threshold:
    """The score that best separates converters: at or above it, the most converters and the
    fewest others (Youden's J = share of converters above - share of others above)."""

    score: int
    converters_above: int
    converters: int
    others_above: int
    others: int
    separation: float  # Youden's J at this score, 0 (none) to 1 (perfect)

    @property
    def rate_above(self) -> float:
        above = self.converters_above + self.others_above
        return self.converters_above / above if above else float("nan")


def best_threshold(scores: pd.Series, converted: pd.Series) -> Threshold | None:
    """None when nothing separates: no converters, or no others."""
    best = _thresholds(scores, converted)[0]
    return best if best.converters and best.others else None


def threshold_at(scores: pd.Series, converted: pd.Series, score: int) -> Threshold:
    """The same figures for a given threshold (e.g. the rules' Qualified threshold)."""
    return _thresholds(scores, converted)[1][score]


def ranking_quality(scores: pd.Series, converted: pd.Series) -> float:
    """The chance that a converter scores above a lead that did not convert (ties count half):
    0.5 is no better than chance, 1.0 ranks every converter first (the ROC AUC)."""
    won = converted.astype(bool).to_numpy()
    by_score = _whole(scores).to_numpy()
    converters = np.bincount(by_score[won], minlength=101)
    others = np.bincount(by_score[~won], minlength=101)
    if not converters.sum() or not others.sum():
        return float("nan")
    others_below = np.cumsum(others) - others
    pairs = (converters * (others_below + others / 2)).sum()
    return float(pairs / (converters.sum() * others.sum()))


def ranking_interval(ranking: float, converters: int, others: int) -> tuple[float, float]:
    """The 95% interval of a ranking quality (AUC) over this many converters and others
    (Hanley and McNeil's standard error)."""
    if np.isnan(ranking) or not converters or not others:
        return float("nan"), float("nan")
    q1, q2 = ranking / (2 - ranking), 2 * ranking**2 / (1 + ranking)
    variance = (
        ranking * (1 - ranking)
        + (converters - 1) * (q1 - ranking**2)
        + (others - 1) * (q2 - ranking**2)
    ) / (converters * others)
    half = Z95 * float(np.sqrt(max(variance, 0.0)))
    return max(ranking - half, 0.0), min(ranking + half, 1.0)


def unworked_qualified(status: pd.Series, crm_status: pd.Series, unworked: list[str]) -> int:
    """Leads the job qualified that sales has not touched (no CRM status, or an unworked one)."""
    untouched = crm_status.isna() | crm_status.isin(unworked)
    return int(((status == QUALIFIED) & untouched).sum())


def _outcome(leads: pd.DataFrame) -> pd.Series:
    return leads["converted"].fillna(False).astype(bool)


def _statuses(status: pd.Series) -> pd.Series:
    """Statuses in their usual order, none last."""
    order = [*QUALIFICATION_STATUSES, NO_STATUS]
    filled = status.fillna(NO_STATUS)
    present = set(filled.unique())
    categories = [s for s in order if s in present] + sorted(present - set(order))
    return pd.Series(pd.Categorical(filled, categories=categories), index=status.index)


def _whole(scores: pd.Series) -> pd.Series:
    """Scores as whole points within 0-100."""
    return scores.astype(float).round().clip(0, 100).astype(int)


def transition_matrix(current: pd.Series, candidate: pd.Series) -> pd.DataFrame:
    """Leads by current status (rows) and the status the candidate rules give (columns)."""
    order = [*QUALIFICATION_STATUSES, NO_STATUS]
    matrix = pd.crosstab(
        current.fillna(NO_STATUS).rename("current"), candidate.fillna(NO_STATUS).rename("candidate")
    )
    present = [status for status in order if status in matrix.index or status in matrix.columns]
    return matrix.reindex(index=present, columns=present, fill_value=0)


def _thresholds(scores: pd.Series, converted: pd.Series) -> tuple[Threshold, list[Threshold]]:
    won = converted.astype(bool).to_numpy()
    by_score = _whole(scores).to_numpy()
    converters_at = np.bincount(by_score[won], minlength=101)
    others_at = np.bincount(by_score[~won], minlength=101)
    converters_above = np.cumsum(converters_at[::-1])[::-1]  # at or above each score
    others_above = np.cumsum(others_at[::-1])[::-1]
    total_converters, total_others = int(converters_above[0]), int(others_above[0])
    separation = converters_above / max(total_converters, 1) - others_above / max(total_others, 1)
    every = [
        Threshold(
            score,
            int(converters_above[score]),
            total_converters,
            int(others_above[score]),
            total_others,
            float(separation[score]),
        )
        for score in range(101)
    ]
    return every[int(np.argmax(separation))], every


def _rate(converted, leads):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.asarray(leads) > 0, np.asarray(converted) / np.asarray(leads), np.nan)


def _wilson(converted, leads) -> tuple[np.ndarray, np.ndarray]:
    """The 95% Wilson score interval of a rate: sound for small groups and rates near 0 or 1."""
    n = np.asarray(leads, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.asarray(converted) / n
        centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
        half = Z95 * np.sqrt(p * (1 - p) / n + Z95**2 / (4 * n**2)) / (1 + Z95**2 / n)
    return np.clip(centre - half, 0, 1), np.clip(centre + half, 0, 1)
