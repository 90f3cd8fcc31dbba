"""The next rules, proposed by the outcomes: the rules file stays explicit and shared, and the
review proposes a change to it that a person reviews. Pure: leads with their outcome and the
rules file's text in; the candidate file's text, and how both files do on newer leads, out.

How. A logistic model of conversion is fitted on the rules' own terms as the scoring module
computes them: each industry, band, level, window and signal the rules give points for. A ridge
penalty pulls it toward the current points, by as much as cross-validation says predicts best:
few outcomes leave the current rules standing. It is fitted on the older leads (by when the CRM
created them) and judged on the newer ones, as the market moves. Its log-odds become points
on the current rules' scale (the same spread of scores). A term's points change only where the
outcomes contradict them (the 95% interval of its fitted effect excludes its current points);
every other term keeps its points, so a term the data cannot tell from zero is kept, not
zeroed, and listed. The Qualified
and Nurture lines move to the candidate scores that convert as often as the current lines do.
Nothing is applied: the candidate is a file for a person to replay and apply.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import expit, logit

from scoring.engine import score
from scoring.factors import Factor, compute_factors
from scoring.review import conversion_by, ranking_interval, ranking_quality, score_bands
from scoring.rules import (
    Authority,
    Banded,
    EngagementSignal,
    Lookup,
    Rules,
    RulesPath,
    Seniority,
    Timeline,
    parse_rules,
    rewrite_rules,
)

HELD_OUT_SHARE = 0.3  # the newest leads, kept out of the fit to judge it
MIN_FITTED_OUTCOMES = 200  # converters, and leads that did not convert, among the older leads
MIN_HELD_OUT_OUTCOMES = 50  # the same among the newer leads
LIGHT_PENALTY = 1.0  # the first fit, which only sets the scale of points to log-odds
PENALTIES = (1.0, 10.0, 100.0, 1000.0)  # ridge penalties pulling the fit toward the current rules
FOLDS = 3
Z95 = 1.96
SPREAD = (0.05, 0.95)  # the quantiles whose distance is a set of scores' spread
CALIBRATION_SCORES = (30, 50, 70, 90)


@dataclass(frozen=True)
class Term:
    """One thing the rules give points for, as a column of the model."""

    label: str  # in words, as reasons name it ("ICP industry: SaaS")
    path: RulesPath  # where its points are in the rules file
    current: float  # its points now; for an engagement signal, its scale now (1)
    group: str  # the factor it belongs to
    shifts: bool  # every value of its factor has points: the factor's points may shift together
    column: np.ndarray  # per lead: 0/1, or for an engagement signal the points it scores now


@dataclass(frozen=True)
class HeldOut:
    """How one rules file does on the newer leads the fit never saw."""

    line: int  # its Qualified line
    ranking: float  # ranking_quality (AUC) of its scores
    ranking_low: float
    ranking_high: float
    by_band: pd.DataFrame  # conversion_by score band, with `expected`: what its calibration says
    converts_at: dict[int, float]  # a score of 70 converts about this often (its calibration)
    qualified: int  # leads at or above its Qualified line
    converters_caught: int  # converters among them
    converters: int


@dataclass(frozen=True)
class Proposal:
    text: str  # the candidate rules file
    rules: Rules
    changes: list[str]  # in words: "ICP industry: SaaS: +20 → +26"
    terms: pd.DataFrame  # every term: current, proposed, fitted effect and interval, verdict
    current: HeldOut
    candidate: HeldOut
    fitted: int  # older leads the model was fitted on
    held_out: int
    split_at: pd.Timestamp  # the newer leads were created at or after this

    @property
    def shrinks_pipeline(self) -> bool:
        return self.candidate.qualified < self.current.qualified

    @property
    def kept_without_clear_effect(self) -> list[str]:
        return self.terms.index[self.terms["verdict"] == KEPT_UNCLEAR].tolist()


@dataclass(frozen=True)
class NotEnoughOutcomes:
    message: str


CHANGED = "changed: the outcomes contradict its points"
KEPT_AGREES = "kept: the outcomes agree with its points"
KEPT_UNCLEAR = "kept: its effect is not distinguishable from zero"
KEPT_NO_LEADS = "kept: no lead to judge it by"
KEPT_NOT_IN_FILE = "kept: not in the rules file (its default applies)"


def propose(leads: pd.DataFrame, rules_text: str, now) -> Proposal | NotEnoughOutcomes:
    """`leads`: canonical rows that met the lead contract, with `converted` and `created_at`;
    `rules_text`: the current rules file. The same leads and file give the same proposal."""
    rules = parse_rules(rules_text)
    now = pd.Timestamp(now).tz_convert("UTC")
    leads = _oldest_first(leads)
    converted = leads["converted"].fillna(False).astype(bool).to_numpy()
    fitted = np.arange(len(leads)) < round(len(leads) * (1 - HELD_OUT_SHARE))
    shortfall = _shortfall(converted, fitted)
    if shortfall:
        return NotEnoughOutcomes(shortfall)

    factors = compute_factors(leads, rules, now, np.zeros(len(leads), dtype=bool))
    every = list(_terms(factors, rules))
    terms = [term for term in every if term.column[fitted].any()]
    design = np.column_stack([term.column for term in terms])
    x, y = design[fitted], converted[fitted]
    first, _ = _fit(x, y, np.zeros(len(terms)), LIGHT_PENALTY)
    current_raw = np.sum([factor.points for factor in factors], axis=0)
    scale = _spread(current_raw[fitted]) / _spread(x @ first[1:])  # points per log-odds
    prior = np.array([term.current for term in terms]) / scale  # the current rules
    penalty = _best_penalty(x, y, prior)
    coefficients, covariance = _fit(x, y, prior, penalty)
    table = _judge(terms, coefficients[1:] * scale, covariance[1:, 1:] * scale**2, fitted)
    idle = [term for term in every if not term.column[fitted].any()]
    table = pd.concat([table, _terms_without_leads(idle)])

    values = _proposed_values(table, rules)
    text, absent = rewrite_rules(rules_text, values)
    table.loc[table["path"].isin(absent), ["proposed", "verdict"]] = [np.nan, KEPT_NOT_IN_FILE]
    with_points = parse_rules(text)
    older = leads[fitted]  # the lines move no score: with_points scores as the candidate
    calibrations = {
        name: _calibration(score(older, rules_, now)["score"], converted[fitted])
        for name, rules_ in (("current", rules), ("candidate", with_points))
    }
    text, _ = rewrite_rules(text, _lines(rules, calibrations["current"], calibrations["candidate"]))
    candidate = parse_rules(text)

    held_out = leads[~fitted]
    judged = {
        name: _held_out(held_out, converted[~fitted], rules_, calibrations[name], now)
        for name, rules_ in (("current", rules), ("candidate", candidate))
    }
    return Proposal(
        text=text,
        rules=candidate,
        changes=_changes(table, rules, candidate),
        terms=table.drop(columns="path"),
        current=judged["current"],
        candidate=judged["candidate"],
        fitted=int(fitted.sum()),
        held_out=int((~fitted).sum()),
        split_at=pd.Timestamp(held_out["created_at"].iloc[0]),
    )


def _oldest_first(leads: pd.DataFrame) -> pd.DataFrame:
    """Leads by creation (a lead the CRM gives no date counts as oldest), ties by id."""
    ordered = leads.sort_values(["created_at", "crm_id"], na_position="first", kind="stable")
    return ordered.reset_index(drop=True)


def _shortfall(converted: np.ndarray, fitted: np.ndarray) -> str:
    counts = {
        "older": (int(converted[fitted].sum()), int((~converted[fitted]).sum())),
        "newer": (int(converted[~fitted].sum()), int((~converted[~fitted]).sum())),
    }
    needed = {"older": MIN_FITTED_OUTCOMES, "newer": MIN_HELD_OUT_OUTCOMES}
    if all(min(counts[part]) >= needed[part] for part in counts):
        return ""
    older, newer = f"{1 - HELD_OUT_SHARE:.0%}", f"{HELD_OUT_SHARE:.0%}"
    return (
        f"Not enough outcomes to propose rules: the older {older} of leads hold "
        f"{counts['older'][0]:,} converters and {counts['older'][1]:,} others (at least "
        f"{MIN_FITTED_OUTCOMES} of each needed), the newer {newer} {counts['newer'][0]:,} and "
        f"{counts['newer'][1]:,} (at least {MIN_HELD_OUT_OUTCOMES} of each)"
    )


def _terms(factors: list[Factor], rules: Rules) -> Iterator[Term]:
    """The model's terms, factor by factor (the scoring module's order). A value that earns no
    configurable points (an unknown seniority, a timeline over or passed) is the factor's base."""
    for factor in factors:
        rule = getattr(getattr(rules, factor.group), factor.name)
        path = (factor.group, factor.name)
        if isinstance(rule, EngagementSignal):
            yield Term(rule.label, path, 1.0, factor.name, False, factor.points.astype(float))
            continue
        if factor.fired is not None:
            if factor.name != "bad_data":  # the contract's verdict on the record, not a fit
                yield Term(
                    factor.texts[0], (*path, "points"), float(rule.points), factor.name, False,
                    factor.fired.astype(float),
                )  # fmt: skip
            continue
        shifts = not isinstance(rule, Seniority | Timeline)
        for detail, place in enumerate(_places(rule)):
            if place is not None:
                yield Term(
                    _label(factor, detail), (*path, *place), float(_value(rule, place)),
                    factor.name, shifts, (factor.detail == detail).astype(float),
                )  # fmt: skip


def _label(factor: Factor, detail: int) -> str:
    """A value's words as reasons show them, named after its factor where they are not."""
    text = factor.texts[detail]
    return text if ":" in text else f"{factor.name.replace('_', ' ').capitalize()}: {text}"


def _places(rule) -> list[RulesPath | None]:
    """Where each detail code of a factor (scoring/factors.py) takes its points from."""
    if isinstance(rule, Lookup):
        return [("points", key) for key in rule.points] + [("other_points",), ("missing_points",)]
    if isinstance(rule, Banded):
        return [("bands", i, "points") for i in range(len(rule.bands))] + [("missing_points",)]
    if isinstance(rule, Seniority):
        return [("levels", i, "points") for i in range(len(rule.levels))] + [None]
    if isinstance(rule, Authority):
        return [("decision_maker_points",), ("not_decision_maker_points",)]
    if isinstance(rule, Timeline):
        windows = [("windows", i, "points") for i in range(len(rule.windows))]
        return windows + [None, None, ("missing_points",)]
    raise TypeError(f"no points table in {type(rule).__name__}")


def _value(rule, place: RulesPath):
    value = rule
    for part in place:
        value = value[part] if isinstance(part, int) or isinstance(value, dict) else getattr(
            value, part
        )
    return value


def _fit(design: np.ndarray, converted: np.ndarray, prior: np.ndarray, penalty: float):
    """Logistic regression by Newton's method, each coefficient but the intercept pulled toward
    its `prior` by a ridge penalty: the coefficients (intercept first) and their covariance
    (the inverse of the penalised information)."""
    x = np.column_stack([np.ones(len(design)), design])
    ridge = np.full(x.shape[1], float(penalty))
    ridge[0] = 0.0
    centre = np.concatenate([[0.0], prior])
    y = converted.astype(float)

    def loss(w):
        z = x @ w
        value = np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(ridge * (w - centre) ** 2)
        return value, x.T @ (expit(z) - y) + ridge * (w - centre)

    def information(w):
        p = expit(x @ w)
        return (x * (p * (1 - p))[:, None]).T @ x + np.diag(ridge)

    start = centre.copy()
    start[0] = logit(np.clip(y.mean(), 1e-6, 1 - 1e-6))
    result = minimize(loss, start, jac=True, hess=information, method="trust-exact")
    return result.x, np.linalg.inv(information(result.x))


def _best_penalty(design: np.ndarray, converted: np.ndarray, prior: np.ndarray) -> float:
    """The penalty under which the model best predicts leads it was not fitted on, by
    FOLDS-fold cross-validation over PENALTIES (the folds are fixed: the same leads give the
    same choice). Little data keeps the current rules; much data overrules them."""
    fold = np.arange(len(design)) % FOLDS
    scores = []
    for penalty in PENALTIES:
        loss = 0.0
        for k in range(FOLDS):
            w, _ = _fit(design[fold != k], converted[fold != k], prior, penalty)
            z = w[0] + design[fold == k] @ w[1:]
            loss += float(np.sum(np.logaddexp(0.0, z) - converted[fold == k] * z))
        scores.append(loss)
    return PENALTIES[int(np.argmin(scores))]


def _spread(values: np.ndarray) -> float:
    low, high = np.quantile(values, SPREAD)
    return float(high - low)


def _judge(
    terms: list[Term], effects: np.ndarray, covariance: np.ndarray, fitted: np.ndarray
) -> pd.DataFrame:
    """Each term's fitted effect in points against its current points. A factor whose values
    all have points may shift them together without changing any ranking, so its values are
    compared relative to its average lead (weighted by leads); the others as they stand."""
    leads = np.array([term.column[fitted].astype(bool).sum() for term in terms], dtype=float)
    groups = np.array([term.group for term in terms])
    contrast = np.eye(len(terms))
    for group in {term.group for term in terms if term.shifts}:
        members = groups == group
        weights = leads * members / leads[members].sum()
        contrast[members] -= weights
    current = np.array([term.current for term in terms])
    effect, current_effect = contrast @ effects, contrast @ current
    error = np.sqrt(np.einsum("ij,jk,ik->i", contrast, covariance, contrast))
    offset = current - current_effect - (effects - effect)  # shift to the current points' level
    agrees = np.abs(current_effect - effect) <= Z95 * error
    unclear = np.abs(effect) <= Z95 * error
    verdict = np.where(agrees, np.where(unclear, KEPT_UNCLEAR, KEPT_AGREES), CHANGED)
    return pd.DataFrame(
        {
            "path": [term.path for term in terms],
            "leads": leads.astype(int),
            "current": current,
            "proposed": np.where(agrees, current, effects + offset),
            "effect": effect,
            "effect_low": effect - Z95 * error,
            "effect_high": effect + Z95 * error,
            "verdict": verdict,
        },
        index=pd.Index([term.label for term in terms], name="term"),
    )


def _terms_without_leads(idle: list[Term]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "path": [term.path for term in idle],
            "leads": 0,
            "current": [term.current for term in idle],
            "proposed": [term.current for term in idle],
            "verdict": KEPT_NO_LEADS,
        },
        index=pd.Index([term.label for term in idle], name="term"),
    )


def _proposed_values(table: pd.DataFrame, rules: Rules) -> dict[RulesPath, int | float]:
    """The rules file's numbers for the changed terms: whole points within what the rules
    allow (negative signals never add points); an engagement signal's scale multiplies both
    its points per event and its cap."""
    values: dict[RulesPath, int | float] = {}
    for row in table[table["verdict"] == CHANGED].itertuples():
        if row.path[0] == "engagement":
            signal = getattr(rules.engagement, row.path[1])
            scale = max(row.proposed, 0.0)
            values[(*row.path, "points_each")] = max(round(signal.points_each * scale, 2), 0.01)
            values[(*row.path, "max_points")] = int(max(round(signal.max_points * scale), 1))
        else:
            ceiling = 0 if row.path[0] == "negative" else 100
            values[row.path] = int(np.clip(round(row.proposed), -100, ceiling))
    return values


def _lines(
    current: Rules, now_calibration: _Calibration, candidate_calibration: _Calibration
) -> dict[RulesPath, int]:
    """The candidate's Qualified and Nurture lines: the scores that convert as often as the
    current lines do, by each file's calibration on the same leads. Kept when that would break
    the hysteresis gap the rules require."""
    status = current.status
    lines = {}
    for key in ("qualified_at_or_above", "nurture_at_or_above"):
        rate = now_calibration(getattr(status, key))
        lines[key] = int(np.clip(round(candidate_calibration.inverse(rate)), 1, 100))
    if lines["qualified_at_or_above"] - lines["nurture_at_or_above"] <= 2 * status.hysteresis:
        lines = {key: getattr(status, key) for key in lines}
    return {("status", key): value for key, value in lines.items()}


@dataclass(frozen=True)
class _Calibration:
    """Conversion as a logistic function of the score, fitted on leads with known outcomes."""

    intercept: float
    slope: float

    def __call__(self, scores) -> np.ndarray:
        return expit(self.intercept + self.slope * np.asarray(scores, dtype=float))

    def inverse(self, rate: float) -> float:
        return (logit(rate) - self.intercept) / self.slope if self.slope > 0 else np.nan


def _calibration(scores: pd.Series, converted: np.ndarray) -> _Calibration:
    coefficients, _ = _fit(scores.to_numpy(dtype=float)[:, None], converted, np.zeros(1), 0.0)
    return _Calibration(float(coefficients[0]), float(coefficients[1]))


def _held_out(
    held_out: pd.DataFrame, converted: np.ndarray, rules: Rules, calibration: _Calibration, now
) -> HeldOut:
    scores = score(held_out, rules, now)["score"].astype(float)
    won = pd.Series(converted, index=held_out.index)
    bands = score_bands(scores)
    by_band = conversion_by(bands, won)
    by_band["expected"] = pd.Series(calibration(scores), index=held_out.index).groupby(
        bands, observed=False
    ).mean()
    ranking = ranking_quality(scores, won)
    low, high = ranking_interval(ranking, int(won.sum()), int((~won).sum()))
    line = rules.status.qualified_at_or_above
    qualified = scores >= line
    return HeldOut(
        line=line,
        ranking=ranking,
        ranking_low=low,
        ranking_high=high,
        by_band=by_band,
        converts_at={at: float(calibration(at)) for at in CALIBRATION_SCORES},
        qualified=int(qualified.sum()),
        converters_caught=int((qualified & won).sum()),
        converters=int(won.sum()),
    )


def _changes(table: pd.DataFrame, current: Rules, candidate: Rules) -> list[str]:
    """The proposal in words, in the rules file's order."""
    words = []
    for label, row in table[table["verdict"] == CHANGED].iterrows():
        if row["path"][0] == "engagement":
            before = getattr(current.engagement, row["path"][1])
            after = getattr(candidate.engagement, row["path"][1])
            words.append(
                f"{label}: {before.points_each:g} points each, at most {before.max_points} → "
                f"{after.points_each:g} each, at most {after.max_points}"
            )
        else:
            after = _value(candidate, row["path"])
            words.append(f"{label}: {int(row['current']):+d} → {after:+d}")
    for key, name in (("qualified_at_or_above", "Qualified"), ("nurture_at_or_above", "Nurture")):
        before, after = getattr(current.status, key), getattr(candidate.status, key)
        if before != after:
            words.append(f"{name} at or above: {before} → {after}")
    return words
