"""`score` and `explain`: the shared scoring module's public functions.

Pure: a canonical lead frame and the rules in, scores out. No I/O, no CRM names, no per-lead
Python loop; the same lead with the same `now` always gets the same result.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from expectations.frame import QUALIFICATION_STATUSES, conform
from scoring.factors import Distinct, Factor, compute_factors
from scoring.reasons import build_reasons, combine_prefixes, factor_phrase
from scoring.rules import Rules

QUALIFIED, NURTURE, DISQUALIFIED, NEEDS_REVIEW = QUALIFICATION_STATUSES
BANDS = (DISQUALIFIED, NURTURE, QUALIFIED)  # ascending; Needs review stands outside the bands
GROUPS = ("fit", "intent", "engagement", "negative")
LOCKED_PREFIX = "Human-locked status stands"

OUTPUT_COLUMNS = (
    "score",
    "fit",
    "intent",
    "engagement",
    "negative",
    "status",
    "reason",
    "qualified_at",
    "human_owned",
)


@dataclass(frozen=True)
class Explanation:
    factor: str
    group: str
    text: str
    points: int


def score(
    leads: pd.DataFrame,
    rules: Rules,
    now: datetime | pd.Timestamp,
    problems: pd.Series | None = None,
) -> pd.DataFrame:
    """Score every lead of a canonical frame; returns one row per lead, same index.

    `problems`: per lead (same index), what the lead contract asks a person to fix ("Fix the
    record: ..."), missing where nothing; scoring reads this verdict and never re-checks. A lead
    with a problem earns the bad-data points, goes to Needs review, and its reason begins with
    the fix.

    Columns: `score` (0-100), the group sub-scores `fit`, `intent`, `engagement`, `negative`,
    the new `status`, the `reason` text, `qualified_at` (now when the status changes, else as
    before), and `human_owned` (a person owns the status, so it was kept).
    """
    now = _utc(now)
    leads = conform(leads)
    problems = _problems(problems, leads.index)
    factors = compute_factors(leads, rules, now, problems.notna().to_numpy(bool))
    subscores = {group: _group_sum(factors, group) for group in GROUPS}
    total = np.clip(sum(subscores.values()), 0, 100)
    previous = leads["status"]
    human_owned, human_prefix, human_texts = _human_ownership(leads, rules)
    prefix, prefix_texts = combine_prefixes(human_prefix, human_texts, problems)
    status = _new_status(total, subscores["fit"], factors, previous, rules)
    status = status.where(~human_owned, previous)
    changed = (status != previous).fillna(True).to_numpy(bool) & ~human_owned
    qualified_at = leads["qualified_at"].where(~changed, now)
    return pd.DataFrame(
        {
            "score": total,
            **subscores,
            "status": status,
            "reason": build_reasons(factors, prefix, prefix_texts, rules.reasons.max_factors),
            "qualified_at": qualified_at,
            "human_owned": human_owned,
        },
        index=leads.index,
    )


def explain(
    lead: pd.Series | dict,
    rules: Rules,
    now: datetime | pd.Timestamp,
    problem: str | None = None,
) -> list[Explanation]:
    """Every factor for one lead, with its points: what a rep sees when asking "why this score?".
    `problem`: what the lead contract asks a person to fix in the record, if anything."""
    frame = pd.DataFrame([dict(lead)])
    factors = compute_factors(conform(frame), rules, _utc(now), np.array([problem is not None]))
    return [
        Explanation(
            factor.name,
            factor.group,
            factor_phrase(factor, int(factor.detail[0]), int(factor.points[0])),
            int(factor.points[0]),
        )
        for factor in factors
    ]


def _problems(problems: pd.Series | None, index: pd.Index) -> pd.Series:
    if problems is None:
        return pd.Series(pd.NA, index=index, dtype="str")
    if not problems.index.equals(index):
        raise ValueError("problems must have the leads' index")
    return problems.astype("str")


def _group_sum(factors: list[Factor], group: str) -> np.ndarray:
    return np.sum([factor.points for factor in factors if factor.group == group], axis=0)


def _human_ownership(leads: pd.DataFrame, rules: Rules) -> tuple[np.ndarray, np.ndarray, tuple]:
    """Who owns the status, and the reason prefix that says the human status stands."""
    owned_statuses = rules.human_owned.crm_statuses
    position = {status: index for index, status in enumerate(owned_statuses)}
    by_status = Distinct(leads).map("crm_status", lambda status: position.get(status, -1), -1)
    locked = leads["status_locked"].to_numpy(dtype=bool, na_value=False)
    prefix = np.where(by_status >= 0, by_status + 1, np.where(locked, len(owned_statuses) + 1, 0))
    texts = ("",) + tuple(f"Human status stands: {s}" for s in owned_statuses) + (LOCKED_PREFIX,)
    return prefix > 0, prefix, texts


def _new_status(
    total: np.ndarray, fit: np.ndarray, factors: list[Factor], previous: pd.Series, rules: Rules
) -> pd.Series:
    band = _band_with_hysteresis(total, previous, rules)
    fired = {factor.name: factor.fired for factor in factors if factor.fired is not None}
    negative = rules.negative
    hard = np.zeros(len(total), dtype=bool)
    for name in ("competitor", "student_or_job_seeker"):
        if getattr(negative, name).disqualifies:
            hard |= fired[name]
    qualified_rank = BANDS.index(QUALIFIED)
    conflict = (
        fired["free_mail"]
        & (fit >= rules.status.review_when_conflict_with_fit_at_least)
        & (band < qualified_rank)
    )
    review = ~hard & (fired["bad_data"] | conflict)
    labels = np.array(BANDS + (NEEDS_REVIEW,), dtype=object)
    code = np.where(hard, BANDS.index(DISQUALIFIED), np.where(review, len(BANDS), band))
    return pd.Series(labels[code], index=previous.index, dtype="str")


def _band_with_hysteresis(total: np.ndarray, previous: pd.Series, rules: Rules) -> np.ndarray:
    """Band index per lead. To cross a threshold a lead must clear it by the hysteresis margin
    in the direction it moves, measured from its previous band; a lead with no previous band
    (new, or Needs review) is measured against the plain thresholds."""
    rank = Distinct(previous.to_frame()).map(
        "status", lambda status: BANDS.index(status) if status in BANDS else -1, -1
    )
    margin = rules.status.hysteresis
    band = np.zeros(len(total), dtype=np.int64)
    thresholds = (rules.status.nurture_at_or_above, rules.status.qualified_at_or_above)
    for upper_band, threshold in enumerate(thresholds, start=1):
        shift = np.where(rank < 0, 0, np.where(rank >= upper_band, -margin, margin))
        band += total >= threshold + shift
    return band


def _utc(now: datetime | pd.Timestamp) -> pd.Timestamp:
    stamp = pd.Timestamp(now)
    if stamp.tzinfo is None:
        raise ValueError("now must be timezone-aware (e.g. UTC); got a naive datetime")
    return stamp.tz_convert("UTC")
