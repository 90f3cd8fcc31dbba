"""Every scoring factor, computed for a whole chunk at once.

A factor yields, per lead, whole points and a detail code; `texts[code]` is the plain-words
phrase a sales rep reads ("ICP industry: SaaS"). String columns are factorized first, so the
Python-level work (regexes, dictionary look-ups) runs once per distinct value, not per lead.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from scoring.rules import Banded, EngagementSignal, Lookup, Rules, Timeline

MICROS_PER_DAY = 86_400_000_000
# Engagement older than this has decayed to nothing that rounds to a point; ages are clipped here.
MAX_DECAY_DAYS = 3650
RECENCY_BUCKETS = ((7, "last 7 days"), (30, "last 30 days"), (90, "last 90 days"))
RECENCY_OLDER = "over 90 days ago"
RECENCY_UNKNOWN = "no engagement date"
BAD_DATA = "bad data"


@dataclass(frozen=True)
class Factor:
    """One factor over a chunk: points and detail code per lead, and the detail phrases."""

    name: str
    group: str
    points: np.ndarray
    detail: np.ndarray
    texts: tuple[str, ...]
    fired: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Small integers keep the per-lead arrays compact and the reason tokens cheap.
        object.__setattr__(self, "points", np.asarray(self.points, dtype=np.int16))
        object.__setattr__(self, "detail", np.asarray(self.detail, dtype=np.int16))


def compute_factors(
    leads: pd.DataFrame, rules: Rules, now: pd.Timestamp, has_problem: np.ndarray
) -> list[Factor]:
    """All factors, in a fixed order (which is also the tie-break order for reasons).
    `has_problem`: the lead contract sent the lead to review (a record a person must fix)."""
    fit, intent, engagement, negative = rules.fit, rules.intent, rules.engagement, rules.negative
    distinct = Distinct(leads)
    seniority_points, seniority_detail, seniority_texts, decision_maker = _seniority(
        distinct, rules
    )
    age_days = _age_days(leads["last_engaged_at"], now)
    email = _Emails(leads["email"])
    factors = [
        _lookup("industry", "fit", distinct, fit.industry),
        _banded("company_size", "fit", leads["employees"], fit.company_size),
        _banded("revenue", "fit", leads["annual_revenue"], fit.revenue),
        _lookup("country", "fit", distinct, fit.country),
        Factor("seniority", "fit", seniority_points, seniority_detail, seniority_texts),
        _banded("budget", "intent", leads["budget"], intent.budget),
        _authority(leads["authority"], decision_maker, rules),
        _lookup("need", "intent", distinct, intent.need),
        _timeline(leads["timeline"], now, intent.timeline),
    ]
    for column in ("page_views", "email_opens", "form_submissions"):
        signal = getattr(engagement, column)
        factors.append(
            _engagement(column, leads[column], age_days, signal, engagement.half_life_days)
        )
    factors += [
        _flag(
            "free_mail",
            "free-mail address",
            email.domain_in(negative.free_mail.domains),
            negative.free_mail.points,
        ),
        _flag(
            "competitor",
            "competitor",
            _is_competitor(email, distinct, rules),
            negative.competitor.points,
        ),
        _flag(
            "student_or_job_seeker",
            "student or job seeker",
            _title_matches(distinct, negative.student_or_job_seeker.title_pattern),
            negative.student_or_job_seeker.points,
        ),
        _flag("bad_data", BAD_DATA, has_problem, negative.bad_data.points),
    ]
    return factors


def round_half_up(values: np.ndarray) -> np.ndarray:
    return np.floor(values + 0.5).astype(np.int64)


@lru_cache(maxsize=16)
def decay_table(half_life_days: float) -> np.ndarray:
    """Decay factor by whole days since last engagement: halves every `half_life_days`."""
    return np.array([0.5 ** (day / half_life_days) for day in range(MAX_DECAY_DAYS + 1)])


def _lookup(name: str, group: str, distinct: Distinct, rule: Lookup) -> Factor:
    keys = list(rule.points)
    index = {key.strip().lower(): position for position, key in enumerate(keys)}
    other, missing = len(keys), len(keys) + 1
    detail = distinct.map(name, lambda value: index.get(value.strip().lower(), other), missing)
    points = np.array(list(rule.points.values()) + [rule.other_points, rule.missing_points])
    texts = tuple(f"{rule.label}: {key}" for key in keys)
    texts += (f"{rule.label}: other", f"{rule.label}: not stated")
    return Factor(name, group, points[detail], detail, texts)


def _banded(name: str, group: str, values: pd.Series, rule: Banded) -> Factor:
    numbers = values.to_numpy(dtype=np.float64, na_value=np.nan)
    band = _count_at_least(numbers, [band.at_least for band in rule.bands]) - 1
    missing = band < 0  # NaN, or below the first band
    detail = np.where(missing, len(rule.bands), band)
    points = np.array([band.points for band in rule.bands] + [rule.missing_points], dtype=np.int64)
    texts = tuple(f"{rule.label}: {band.label}" for band in rule.bands) + (rule.missing_label,)
    return Factor(name, group, points[detail], detail, texts)


def _seniority(distinct: Distinct, rules: Rules):
    levels = rules.fit.seniority.levels
    patterns = [_compile(level.title_pattern) for level in levels]
    unknown = len(levels)
    detail = distinct.map(
        "title",
        lambda title: next((i for i, p in enumerate(patterns) if p.search(title)), unknown),
        unknown,
    )
    points = np.array([level.points for level in levels] + [0], dtype=np.int64)
    decision = np.array([level.decision_maker for level in levels] + [False])
    label = rules.fit.seniority.label
    texts = tuple(f"{label}: {level.name}" for level in levels) + (f"{label}: unknown",)
    return points[detail], detail, texts, decision[detail]


def _authority(authority: pd.Series, decision_maker_by_title: np.ndarray, rules: Rules) -> Factor:
    stated = authority.to_numpy(dtype=bool, na_value=False)
    is_decision_maker = np.where(authority.notna().to_numpy(), stated, decision_maker_by_title)
    detail = np.where(is_decision_maker, 0, 1)
    rule = rules.intent.authority
    points = np.array([rule.decision_maker_points, rule.not_decision_maker_points], dtype=np.int64)
    return Factor(
        "authority", "intent", points[detail], detail, ("decision maker", "not a decision maker")
    )


def _timeline(timeline: pd.Series, now: pd.Timestamp, rule: Timeline) -> Factor:
    days = _days_between(now, timeline)  # days until the planned purchase; negative once passed
    missing = np.isnan(days)
    # the first window the whole days fit in: windows whose limit lies below them are skipped
    window = _count_at_least(days, [w.within_days + 1 for w in rule.windows])
    passed, not_stated = len(rule.windows) + 1, len(rule.windows) + 2
    detail = np.where(missing, not_stated, np.where(days < 0, passed, window))
    points = np.array(
        [w.points for w in rule.windows] + [0, 0, rule.missing_points], dtype=np.int64
    )
    texts = tuple(f"buying within {w.within_days} days" for w in rule.windows) + (
        f"timeline over {rule.windows[-1].within_days} days",
        "timeline passed",
        "no timeline",
    )
    return Factor("timeline", "intent", points[detail], detail, texts)


def _engagement(
    name: str, counts: pd.Series, age_days: np.ndarray, signal: EngagementSignal, half_life: float
) -> Factor:
    count = np.floor(np.clip(counts.to_numpy(dtype=np.float64, na_value=0.0), 0, None))
    count = np.nan_to_num(count, nan=0.0, posinf=0.0)
    known_age = ~np.isnan(age_days)
    decay = np.where(
        known_age, decay_table(half_life)[np.where(known_age, age_days, 0).astype(np.int64)], 0.0
    )
    points = round_half_up(np.minimum(count * signal.points_each, signal.max_points) * decay)
    shown_cap = math.ceil(signal.max_points / signal.points_each)
    shown = np.minimum(count, shown_cap).astype(np.int64)
    buckets = [text for _, text in RECENCY_BUCKETS] + [RECENCY_OLDER, RECENCY_UNKNOWN]
    bucket = np.where(
        known_age,
        _count_at_least(age_days, [limit for limit, _ in RECENCY_BUCKETS]),
        len(buckets) - 1,
    )
    detail = shown * len(buckets) + bucket
    texts = tuple(
        f"{n}{'+' if n == shown_cap else ''} {_plural(signal, n)} ({when})"
        for n in range(shown_cap + 1)
        for when in buckets
    )
    return Factor(name, "engagement", points, detail, texts)


def _plural(signal: EngagementSignal, count: int) -> str:
    return signal.label_one if count == 1 else signal.label


def _flag(name: str, text: str, fired: np.ndarray | pd.Series, points: int) -> Factor:
    fired = np.asarray(fired, dtype=bool)
    return Factor(
        name, "negative", np.where(fired, points, 0), np.zeros(len(fired), np.int64), (text,), fired
    )


def _is_competitor(email: _Emails, distinct: Distinct, rules: Rules) -> np.ndarray:
    rule = rules.negative.competitor
    names = set(_lowered(rule.companies))
    by_name = distinct.map("company", lambda company: company.strip().lower() in names, False)
    return email.domain_in(rule.domains) | by_name


def _title_matches(distinct: Distinct, pattern: str) -> np.ndarray:
    compiled = _compile(pattern)
    return distinct.map("title", lambda title: bool(compiled.search(title)), False)


class Distinct:
    """A chunk's string columns, factorized once each: a classification (a regex, a look-up)
    runs once per distinct value and is spread to every lead, whatever the chunk size."""

    def __init__(self, leads: pd.DataFrame):
        self._leads = leads
        self._factorized: dict[str, tuple[np.ndarray, pd.Index]] = {}

    def map(self, column: str, classify: Callable[[str], Any], missing: Any) -> np.ndarray:
        """`classify` of each lead's value in `column`; `missing` where it has none."""
        if column not in self._factorized:
            self._factorized[column] = pd.factorize(self._leads[column])
        codes, uniques = self._factorized[column]
        table = np.array([classify(value) for value in uniques] + [missing])  # code -1: missing
        return table[codes]


class _Emails:
    """Email checks in Arrow compute kernels: emails are mostly distinct, so factorizing them
    would not help, and a Python call per email would dominate scoring time."""

    def __init__(self, email: pd.Series):
        raw = pa.array(email, type=pa.large_string(), from_pandas=True)
        self._lowered = pc.ascii_lower(raw)

    def domain_in(self, domains: list[str]) -> np.ndarray:
        pattern = "@(" + "|".join(re.escape(domain) for domain in _lowered(domains)) + ")$"
        return _to_bool(pc.fill_null(pc.match_substring_regex(self._lowered, pattern), False))


def _to_bool(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=bool)


def _age_days(when: pd.Series, now: pd.Timestamp) -> np.ndarray:
    """Whole days from `when` to `now`, clipped to 0..MAX_DECAY_DAYS; NaN where unknown."""
    return np.clip(_whole_days(when, now, since=True), 0, MAX_DECAY_DAYS)


def _days_between(now: pd.Timestamp, when: pd.Series) -> np.ndarray:
    """Whole days from `now` until each `when` (negative once passed); NaN where unknown."""
    return _whole_days(when, now, since=False)


def _whole_days(when: pd.Series, now: pd.Timestamp, since: bool) -> np.ndarray:
    stamps = when.to_numpy(dtype="datetime64[us]", na_value=np.datetime64("NaT"))
    known = ~np.isnat(stamps)
    micros = stamps.astype(np.int64) - np.datetime64(now.tz_localize(None), "us").astype(np.int64)
    return np.where(known, (-micros if since else micros) // MICROS_PER_DAY, np.nan)


def _count_at_least(values: np.ndarray, bounds: list[float]) -> np.ndarray:
    """How many of `bounds` each value reaches (0 for NaN): a band index without a sort."""
    count = np.zeros(len(values), dtype=np.int16)
    for bound in bounds:
        count += values >= bound
    return count


def _lowered(values: list[str]) -> list[str]:
    return [value.strip().lower() for value in values]


@lru_cache(maxsize=64)
def _compile(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)
