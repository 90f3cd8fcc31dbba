"""A slow, obviously-correct, row-by-row scorer: the oracle the vectorized module must agree with.

It reads the rules directly and follows the documented semantics one lead at a time, sharing no
code with `scoring` beyond the rules model.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass

import pandas as pd

from scoring.rules import Banded, Lookup, Rules

ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
MAX_DAYS = 3650


@dataclass
class Factor:
    name: str
    group: str
    text: str
    points: int
    fired: bool = False


def score_row(lead: dict, rules: Rules, now: pd.Timestamp, problem: str | None = None) -> dict:
    """`problem`: what the lead contract asks a person to fix in the record, if anything."""
    factors = factors_for(lead, rules, now, problem)
    groups = {
        g: sum(f.points for f in factors if f.group == g)
        for g in ("fit", "intent", "engagement", "negative")
    }
    total = min(100, max(0, sum(groups.values())))
    fired = {f.name: f.fired for f in factors}
    previous = _text(lead.get("status"))

    crm_status = _text(lead.get("crm_status"))
    locked = lead.get("status_locked") is True
    human_statuses = rules.human_owned.crm_statuses
    if crm_status in human_statuses:
        prefix = f"Human status stands: {crm_status}"
    elif locked:
        prefix = "Human-locked status stands"
    else:
        prefix = None
    if problem is not None:
        prefix = problem if prefix is None else f"{prefix}; {problem}"
    human_owned = crm_status in human_statuses or locked

    if human_owned:
        status = previous
    else:
        status = _status(total, groups["fit"], fired, previous, rules)
    if not human_owned and status != previous:
        qualified_at = now
    else:
        qualified_at = lead.get("qualified_at")

    return {
        "score": total,
        **groups,
        "status": status,
        "reason": _reason(factors, prefix, rules.reasons.max_factors),
        "qualified_at": qualified_at,
        "human_owned": human_owned,
    }


def factors_for(
    lead: dict, rules: Rules, now: pd.Timestamp, problem: str | None = None
) -> list[Factor]:
    fit, intent, negative = rules.fit, rules.intent, rules.negative
    title = _text(lead.get("title"))
    level = None
    if title is not None:
        for candidate in fit.seniority.levels:
            if re.search(candidate.title_pattern, title, re.IGNORECASE):
                level = candidate
                break
    seniority_text = f"{fit.seniority.label}: {level.name if level else 'unknown'}"

    factors = [
        _lookup("industry", "fit", lead.get("industry"), fit.industry),
        _band("company_size", "fit", lead.get("employees"), fit.company_size),
        _band("revenue", "fit", lead.get("annual_revenue"), fit.revenue),
        _lookup("country", "fit", lead.get("country"), fit.country),
        Factor("seniority", "fit", seniority_text, level.points if level else 0),
        _band("budget", "intent", lead.get("budget"), intent.budget),
    ]

    stated = lead.get("authority")
    decision_maker = stated if stated in (True, False) else bool(level and level.decision_maker)
    if decision_maker:
        factors.append(
            Factor("authority", "intent", "decision maker", intent.authority.decision_maker_points)
        )
    else:
        factors.append(
            Factor(
                "authority",
                "intent",
                "not a decision maker",
                intent.authority.not_decision_maker_points,
            )
        )
    factors.append(_lookup("need", "intent", lead.get("need"), intent.need))
    factors.append(_timeline(lead.get("timeline"), now, rules))

    age = _whole_days(now, lead.get("last_engaged_at"))
    for column in ("page_views", "email_opens", "form_submissions"):
        factors.append(_engagement(column, lead.get(column), age, rules))

    email = _text(lead.get("email"))
    domain = email.translate(ASCII_LOWER).rsplit("@", 1)[1] if email and "@" in email else None
    company = _text(lead.get("company"))

    free = domain in [d.lower() for d in negative.free_mail.domains]
    factors.append(
        Factor(
            "free_mail",
            "negative",
            "free-mail address",
            negative.free_mail.points if free else 0,
            free,
        )
    )
    competitor = domain in [d.lower() for d in negative.competitor.domains] or (
        company is not None
        and company.strip().lower() in [c.lower() for c in negative.competitor.companies]
    )
    factors.append(
        Factor(
            "competitor",
            "negative",
            "competitor",
            negative.competitor.points if competitor else 0,
            competitor,
        )
    )
    student = title is not None and bool(
        re.search(negative.student_or_job_seeker.title_pattern, title, re.IGNORECASE)
    )
    factors.append(
        Factor(
            "student_or_job_seeker",
            "negative",
            "student or job seeker",
            negative.student_or_job_seeker.points if student else 0,
            student,
        )
    )
    bad = problem is not None
    points = negative.bad_data.points if bad else 0
    factors.append(Factor("bad_data", "negative", "bad data", points, bad))
    return factors


def _lookup(name: str, group: str, value, rule: Lookup) -> Factor:
    value = _text(value)
    if value is None:
        return Factor(name, group, f"{rule.label}: not stated", rule.missing_points)
    for key, points in rule.points.items():
        if key.strip().lower() == value.strip().lower():
            return Factor(name, group, f"{rule.label}: {key}", points)
    return Factor(name, group, f"{rule.label}: other", rule.other_points)


def _band(name: str, group: str, value, rule: Banded) -> Factor:
    value = _number(value)
    chosen = None
    if value is not None:
        for band in rule.bands:
            if value >= band.at_least:
                chosen = band
    if chosen is None:
        return Factor(name, group, rule.missing_label, rule.missing_points)
    return Factor(name, group, f"{rule.label}: {chosen.label}", chosen.points)


def _timeline(value, now: pd.Timestamp, rules: Rules) -> Factor:
    rule = rules.intent.timeline
    days = _whole_days(value, now)  # from now until the timeline
    if days is None:
        return Factor("timeline", "intent", "no timeline", rule.missing_points)
    if days < 0:
        return Factor("timeline", "intent", "timeline passed", 0)
    for window in rule.windows:
        if days <= window.within_days:
            return Factor(
                "timeline", "intent", f"buying within {window.within_days} days", window.points
            )
    return Factor("timeline", "intent", f"timeline over {rule.windows[-1].within_days} days", 0)


def _engagement(column: str, value, age: int | None, rules: Rules) -> Factor:
    signal = getattr(rules.engagement, column)
    count = _number(value)
    count = 0.0 if count is None or math.isinf(count) or count < 0 else float(math.floor(count))
    if age is None:
        decay = 0.0
        bucket = "no engagement date"
    else:
        age = min(max(age, 0), MAX_DAYS)
        decay = 0.5 ** (age / rules.engagement.half_life_days)
        bucket = (
            "last 7 days"
            if age < 7
            else "last 30 days"
            if age < 30
            else "last 90 days"
            if age < 90
            else "over 90 days ago"
        )
    raw = min(count * signal.points_each, signal.max_points) * decay
    points = math.floor(raw + 0.5)
    cap = math.ceil(signal.max_points / signal.points_each)
    shown = int(min(count, cap))
    label = signal.label_one if shown == 1 else signal.label
    plus = "+" if shown == cap else ""
    return Factor(column, "engagement", f"{shown}{plus} {label} ({bucket})", points)


def _status(total: int, fit: int, fired: dict, previous: str | None, rules: Rules) -> str:
    bands = ["Disqualified", "Nurture", "Qualified"]
    rank = bands.index(previous) if previous in bands else None
    h = rules.status.hysteresis
    nurture, qualified = rules.status.nurture_at_or_above, rules.status.qualified_at_or_above
    if rank is None:
        nurture_line, qualified_line = nurture, qualified
    else:
        nurture_line = nurture - h if rank >= 1 else nurture + h
        qualified_line = qualified - h if rank >= 2 else qualified + h
    band = (
        "Qualified"
        if total >= qualified_line
        else "Nurture"
        if total >= nurture_line
        else "Disqualified"
    )

    negative = rules.negative
    hard = (negative.competitor.disqualifies and fired["competitor"]) or (
        negative.student_or_job_seeker.disqualifies and fired["student_or_job_seeker"]
    )
    if hard:
        return "Disqualified"
    if fired["bad_data"]:
        return "Needs review"
    if (
        fired["free_mail"]
        and fit >= rules.status.review_when_conflict_with_fit_at_least
        and band != "Qualified"
    ):
        return "Needs review"
    return band


def _reason(factors: list[Factor], prefix: str | None, max_factors: int) -> str:
    def importance(item):
        index, factor = item
        red_flag = factor.group == "negative" and factor.points != 0
        return (0 if red_flag else 1, -abs(factor.points), index)

    ranked = sorted(enumerate(factors), key=importance)
    chosen = [f for _, f in ranked[:max_factors] if f.points != 0]
    phrases = [f"{f.text} ({f.points:+d})" for f in chosen] or ["no scoring signals"]
    head = [prefix] if prefix else []
    while True:
        text = "; ".join(head + phrases)
        if len(text) <= 255 or len(phrases) == 1:
            return text[:255]
        phrases.pop()


def _whole_days(later, earlier) -> int | None:
    if later is None or earlier is None or pd.isna(later) or pd.isna(earlier):
        return None
    later, earlier = pd.Timestamp(later), pd.Timestamp(earlier)
    micros = (later - earlier) // pd.Timedelta(microseconds=1)
    return micros // 86_400_000_000


def _text(value) -> str | None:
    return None if value is None or (not isinstance(value, str) and pd.isna(value)) else value


def _number(value) -> float | None:
    if value is None or pd.isna(value):
        return None
    return float(value)
