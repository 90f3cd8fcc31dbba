"""Realistic fake leads in the canonical frame, with a controllable mix of kinds.

Faker supplies small pools of names and companies once; numpy draws from them for every lead,
so a million leads take seconds. The same `seed` always gives the same leads.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from faker import Faker

from expectations.frame import conform

ICP_INDUSTRIES = ["Software", "SaaS", "Financial Services", "Information Technology", "Healthcare"]
OTHER_INDUSTRIES = ["Retail", "Education", "Government", "Non-Profit", "Agriculture", "Media"]
ICP_COUNTRIES = ["US", "United States", "CA", "GB", "DE"]
OTHER_COUNTRIES = ["BR", "IN", "MX", "ZA", "JP", "ES", "IT", "PL"]
SENIOR_TITLES = [
    "CEO",
    "CTO",
    "VP of Sales",
    "VP Marketing",
    "Head of Revenue Operations",
    "Director of Sales",
    "Director, IT",
    "Chief Revenue Officer",
]
JUNIOR_TITLES = [
    "Sales Manager",
    "Marketing Manager",
    "Data Analyst",
    "Software Engineer",
    "Marketing Coordinator",
    "Account Associate",
    "Office Assistant",
]
STUDENT_TITLES = ["Student", "Marketing Intern", "Looking for opportunities", "Graduate student"]
FREE_MAIL = ["gmail.com", "yahoo.com", "hotmail.com", "outlook.com"]
COMPETITORS = [("RivalCRM", "rivalcrm.com"), ("LeadScorer", "leadscorer.io")]
NEEDS = ["high", "medium", "low"]
WORKED_STATUSES = ["Working - Contacted", "Closed - Not Converted"]
CONVERTED_STATUS = "Closed - Converted"
OPEN_STATUS = "Open - Not Contacted"
# How the odds of converting move with what a lead's record shows (see planted_log_odds): a fit
# to the ideal customer and recent engagement raise them; competitors and students do not buy.
CONVERSION_LOG_ODDS = {
    "base": -3.2,
    "icp_industry": 0.8,  # industry one of ICP_INDUSTRIES
    "senior_title": 0.6,  # one of SENIOR_TITLES
    "company_200_plus": 0.6,  # employees
    "company_under_50": -0.6,
    "engagement": 0.8,  # engaged at all, halving every ENGAGEMENT_HALF_LIFE_DAYS since
    "form_fill": 0.45,  # per form fill, up to three, halving in the same way
    "not_a_buyer": -2.5,  # a competitor's address or a student's title
    "noise": 0.8,  # per lead, unobserved: what no model of the record can know
}
ENGAGEMENT_HALF_LIFE_DAYS = 30
COMPANY_LENGTH = 255  # Salesforce's Lead.Company; HubSpot holds longer, the seed never does
LONG_TEXT = ("Überaus langer Firmenname mit sehr vielen Wörtern " * 8)[:COMPANY_LENGTH].strip()
PLACEHOLDERS = ["N/A", "test", "asdf", "-", "unknown", "none", "xxx"]
FREE_TEXT_INDUSTRIES = ["Software, I think", "we sell to everyone", "see website", "IT/Software??"]
FREE_TEXT_LEAD_SOURCES = ["google ad", "my boss told me", "Linkedin post", "conference 2023"]
NON_LATIN = [
    "株式会社テスト商事",
    "Общество с ограниченной ответственностью Ромашка",
    "شركة البيانات",
]


@dataclass(frozen=True)
class LeadMix:
    """Fractions of each kind of lead; the rest are ordinary, middling leads."""

    strong_fit: float = 0.25
    poor_fit: float = 0.25
    hot: float = 0.2
    cold: float = 0.3
    human_owned: float = 0.1  # worked by sales without converting (converting is planted)
    bad: float = 0.05
    free_mail: float = 0.08
    competitor: float = 0.01
    student: float = 0.02


def generate_leads(
    count: int,
    seed: int = 0,
    now: pd.Timestamp | None = None,
    mix: LeadMix = LeadMix(),
    id_prefix: str = "L",
) -> pd.DataFrame:
    """`count` leads in the canonical frame, as of `now` (default: this second); ids are
    `id_prefix` plus a zero-padded number."""
    now = pd.Timestamp.now(tz="UTC").floor("s") if now is None else pd.Timestamp(now)
    rng = np.random.default_rng(seed)
    pools = _pools(seed)
    kind = rng.random(count)
    strong = kind < mix.strong_fit
    poor = (kind >= mix.strong_fit) & (kind < mix.strong_fit + mix.poor_fit)
    heat = rng.random(count)
    hot, cold = heat < mix.hot, heat >= 1 - mix.cold

    first = _pick(rng, pools["first"], count)
    last = _pick(rng, pools["last"], count)
    company_index = rng.integers(0, len(pools["company"]), count)
    company = pd.Series(np.array(pools["company"], dtype=object)[company_index], dtype="str")
    domain = pd.Series(np.array(pools["domain"], dtype=object)[company_index], dtype="str")
    number = pd.Series(np.arange(count).astype(str), dtype="str")
    frame = pd.DataFrame(
        {
            "source": "sandbox",
            "crm_id": id_prefix + pd.Series(np.arange(1, count + 1), dtype="str").str.zfill(9),
            "first_name": first,
            "last_name": last,
            "company": company,
            "industry": np.where(
                strong,
                _pick(rng, ICP_INDUSTRIES, count),
                np.where(
                    poor,
                    _pick(rng, OTHER_INDUSTRIES, count),
                    _pick(rng, ICP_INDUSTRIES + OTHER_INDUSTRIES, count),
                ),
            ),
            "title": np.where(
                strong,
                _pick(rng, SENIOR_TITLES, count),
                np.where(
                    poor,
                    _pick(rng, JUNIOR_TITLES, count),
                    _pick(rng, SENIOR_TITLES + JUNIOR_TITLES, count),
                ),
            ),
            "employees": np.where(
                strong,
                rng.integers(200, 20000, count),
                np.where(poor, rng.integers(1, 50, count), rng.integers(1, 5000, count)),
            ),
            "annual_revenue": np.round(rng.lognormal(16.5, 1.8, count), -3)
            * np.where(strong, 10, np.where(poor, 0.1, 1)),
            "country": np.where(
                strong | (rng.random(count) < 0.5),
                _pick(rng, ICP_COUNTRIES, count),
                _pick(rng, OTHER_COUNTRIES, count),
            ),
            "lead_source": _pick(
                rng, ["Web", "Webinar", "Trade Show", "Partner Referral", "Purchased List"], count
            ),
            "budget": np.where(
                rng.random(count) < np.where(strong, 0.8, 0.3),
                np.round(rng.lognormal(10.5, 1.0, count), -2),
                np.nan,
            ),
            "need": np.where(rng.random(count) < 0.7, _pick(rng, NEEDS, count), None),
            "timeline": np.where(
                rng.random(count) < 0.5,
                now + pd.to_timedelta(rng.integers(-60, 240, count), unit="D"),
                pd.NaT,
            ),
        }
    )
    frame["email"] = (
        _ascii(frame["first_name"]) + "." + _ascii(frame["last_name"]) + number + "@" + domain
    )
    _add_engagement(frame, rng, hot, cold, now)
    frame["status_locked"] = False
    frame["modified_at"] = now - pd.to_timedelta(rng.integers(0, 30 * 24 * 60, count), unit="min")
    frame["created_at"] = frame["modified_at"] - pd.to_timedelta(
        rng.integers(0, 365 * 86_400, count), unit="s"
    )
    _apply_negatives(frame, rng, mix)
    _spoil(frame, rng, mix.bad)
    frame["crm_status"] = _sales_outcomes(rng, planted_log_odds(frame, now), mix.human_owned)
    frame["status"] = _status_when_sales_took_over(rng, frame["crm_status"], strong, poor)
    return conform(frame)


def planted_log_odds(leads: pd.DataFrame, now: pd.Timestamp) -> np.ndarray:
    """The log-odds of converting the seed plants on each lead, from what its record shows
    (CONVERSION_LOG_ODDS), without the per-lead noise: the best any model of the record can
    rank leads by."""
    terms = CONVERSION_LOG_ODDS
    employees = leads["employees"].to_numpy(dtype=float, na_value=np.nan)
    days = (now - leads["last_engaged_at"]).dt.total_seconds().to_numpy(
        dtype=float, na_value=np.nan
    ) / 86_400
    decay = np.nan_to_num(0.5 ** (np.clip(days, 0, None) / ENGAGEMENT_HALF_LIFE_DAYS), nan=0.0)
    forms = np.clip(leads["form_submissions"].to_numpy(dtype=float, na_value=0.0), 0, 3)
    domain = leads["email"].str.split("@").str[-1].str.lower()
    not_a_buyer = domain.isin([domain for _, domain in COMPETITORS]) | leads["title"].isin(
        STUDENT_TITLES
    )
    return (
        terms["base"]
        + terms["icp_industry"] * leads["industry"].isin(ICP_INDUSTRIES).to_numpy()
        + terms["senior_title"] * leads["title"].isin(SENIOR_TITLES).to_numpy()
        + terms["company_200_plus"] * (employees >= 200)
        + terms["company_under_50"] * (employees < 50)
        + (terms["engagement"] + terms["form_fill"] * forms) * decay
        + terms["not_a_buyer"] * not_a_buyer.to_numpy(dtype=bool, na_value=False)
    )


def _sales_outcomes(
    rng: np.random.Generator, log_odds: np.ndarray, worked_share: float
) -> np.ndarray:
    """The status sales gave each lead. Whether a lead converted follows its planted log-odds
    plus a per-lead random term, as in a real funnel; other factors (need, budget, market...)
    play no part beyond what they share with fit. Leads that did not convert were worked by
    sales (`worked_share` of them) or never touched."""
    count = len(log_odds)
    noisy = log_odds + rng.normal(0, CONVERSION_LOG_ODDS["noise"], count)
    converted = rng.random(count) < 1 / (1 + np.exp(-noisy))
    worked = rng.random(count) < worked_share
    return np.where(
        converted,
        CONVERTED_STATUS,
        np.where(worked, _pick(rng, WORKED_STATUSES, count), OPEN_STATUS),
    )


def _status_when_sales_took_over(rng: np.random.Generator, crm_status, strong, poor) -> np.ndarray:
    """Leads sales has worked were qualified before it took them: mostly by their fit, one in
    five otherwise. Untouched leads have no qualification status yet."""
    count = len(strong)
    by_fit = np.where(strong, "Qualified", np.where(poor, "Disqualified", "Nurture"))
    anyhow = _pick(rng, ["Qualified", "Nurture", "Disqualified"], count)
    prior = np.where(rng.random(count) < 0.2, anyhow, by_fit)
    return np.where(crm_status != OPEN_STATUS, prior, None)


def _add_engagement(frame: pd.DataFrame, rng: np.random.Generator, hot, cold, now) -> None:
    count = len(frame)
    scale = np.where(hot, 4.0, np.where(cold, 0.3, 1.0))
    frame["page_views"] = rng.poisson(6 * scale)
    frame["email_opens"] = rng.poisson(3 * scale)
    frame["form_submissions"] = rng.poisson(0.8 * scale)
    days_ago = np.where(
        hot,
        rng.integers(0, 10, count),
        np.where(cold, rng.integers(90, 400, count), rng.integers(5, 90, count)),
    )
    engaged = (frame["page_views"] + frame["email_opens"] + frame["form_submissions"]) > 0
    frame["last_engaged_at"] = (now - pd.to_timedelta(days_ago, unit="D")).where(engaged, pd.NaT)


def _apply_negatives(frame: pd.DataFrame, rng: np.random.Generator, mix: LeadMix) -> None:
    count = len(frame)
    draw = rng.random(count)
    free_mail = draw < mix.free_mail
    local = frame["email"].str.split("@").str[0]
    frame.loc[free_mail, "email"] = (
        local[free_mail] + "@" + _pick(rng, FREE_MAIL, int(free_mail.sum()))
    )
    competitor = (draw >= mix.free_mail) & (draw < mix.free_mail + mix.competitor)
    chosen = rng.integers(0, len(COMPETITORS), int(competitor.sum()))
    frame.loc[competitor, "company"] = [COMPETITORS[i][0] for i in chosen]
    frame.loc[competitor, "email"] = local[competitor] + "@" + [COMPETITORS[i][1] for i in chosen]
    student = rng.random(count) < mix.student
    frame.loc[student, "title"] = _pick(rng, STUDENT_TITLES, int(student.sum()))


def _spoil(frame: pd.DataFrame, rng: np.random.Generator, fraction: float) -> None:
    """Make a `fraction` of rows bad in one of the ways real CRM data is bad, and only in ways
    both CRMs accept: a well-formed but placeholder email (each still unique: HubSpot keys
    contacts on it), a placeholder company (Salesforce requires one), negative counts, revenue
    absurd but within the currency field, free text in a picklist Salesforce does not restrict,
    text at its field's limit, names in another script."""
    spoiled = rng.random(len(frame)) < fraction
    kind = rng.integers(0, 7, len(frame))
    rows = [spoiled & (kind == k) for k in range(7)]
    placeholder = pd.Series(_pick(rng, ["test", "asdf", "na", "none"], len(frame)), frame.index)
    number = pd.Series(np.arange(len(frame)).astype(str), frame.index)
    frame.loc[rows[0], "email"] = (placeholder + number + "@" + placeholder + ".com")[rows[0]]
    frame.loc[rows[1], "company"] = _pick(rng, PLACEHOLDERS, int(rows[1].sum()))
    frame.loc[rows[2], "employees"] = -rng.integers(1, 500, int(rows[2].sum()))
    frame.loc[rows[3], "annual_revenue"] = 1e15
    frame.loc[rows[4], ["first_name", "last_name"]] = "Test"
    frame.loc[rows[5], "industry"] = _pick(rng, FREE_TEXT_INDUSTRIES, int(rows[5].sum()))
    frame.loc[rows[5], "lead_source"] = _pick(rng, FREE_TEXT_LEAD_SOURCES, int(rows[5].sum()))
    frame.loc[rows[6], "company"] = _pick(rng, NON_LATIN + [LONG_TEXT], int(rows[6].sum()))


def _pools(seed: int) -> dict[str, list[str]]:
    fake = Faker(["en_US", "de_DE", "fr_FR", "es_ES"])
    fake.seed_instance(seed)
    companies = list(dict.fromkeys(fake.company() for _ in range(600)))
    return {
        "first": list(dict.fromkeys(fake.first_name() for _ in range(400))),
        "last": list(dict.fromkeys(fake.last_name() for _ in range(400))),
        "company": companies,
        "domain": [_domain(company, index) for index, company in enumerate(companies)],
    }


def _ascii(names: pd.Series) -> pd.Series:
    """Lower-case ASCII letters of a name, as it would appear in an email address."""
    return names.str.normalize("NFKD").str.lower().str.replace(r"[^a-z]", "", regex=True)


def _domain(company: str, index: int) -> str:
    letters = "".join(ch for ch in company.lower() if ch.isascii() and ch.isalnum())[:20]
    return f"{letters or 'company'}{index}.com"


def _pick(rng: np.random.Generator, choices: list, count: int) -> np.ndarray:
    return np.array(choices, dtype=object)[rng.integers(0, len(choices), count)]
