"""Property tests: the vectorized scorer agrees with the row-by-row reference and keeps its
promises."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from expectations.frame import conform
from scoring import OUTPUT_COLUMNS, load_rules, score
from tests.reference import score_row

RULES = load_rules()
NOW = pd.Timestamp("2026-11-24T10:15:00Z")
STATUSES = [None, "Qualified", "Nurture", "Disqualified", "Needs review", "Bogus"]
CRM_STATUSES = [
    None,
    "Open - Not Contacted",
    "Working - Contacted",
    "Closed - Converted",
    "NEW",
    "IN_PROGRESS",
    "UNQUALIFIED",
]

text = st.text(max_size=30)
maybe = lambda strategy: st.none() | strategy  # noqa: E731
numbers = st.floats(min_value=-1e16, max_value=1e16) | st.just(float("nan"))
banded_numbers = maybe(
    st.sampled_from(
        [
            -1.0,
            0.0,
            49.0,
            50.0,
            199.5,
            200.0,
            999.0,
            1000.0,
            9999.0,
            10000.0,
            1e6,
            9.99e6,
            1e7,
            1e8,
            1e13,
        ]
    )
    | numbers
)
counts = maybe(st.floats(min_value=-5, max_value=500) | st.just(float("nan")) | st.integers(0, 40))
stamps = maybe(
    st.integers(-400 * 24 * 60, 400 * 24 * 60).map(
        lambda minutes: NOW + pd.Timedelta(minutes=minutes)
    )
)
emails = maybe(
    st.sampled_from(
        [
            "ana@acme.com",
            "bob@GMAIL.com",
            "x@rivalcrm.com",
            "not an email",
            "a@b",
            "z@leadscorer.io",
            "ü@straße.de",
            "Q@Yahoo.COM",
            "ok@x.co.uk\n",
        ]
    )
    | st.emails().map(str)
    | text
)
titles = maybe(
    st.sampled_from(
        [
            "CEO",
            "VP of Sales",
            "Director, IT",
            "Sales Manager",
            "Student",
            "Marketing Intern",
            "Software Engineer",
            "head of growth",
            "Chief Student Officer",
        ]
    )
    | text
)
names = maybe(st.sampled_from(["Ana", "Test", " asdf ", "N/A", "Li"]) | text)
companies = maybe(st.sampled_from(["Acme", "RivalCRM", " rivalcrm ", "", "  ", "unknown"]) | text)


def lead_strategy():
    return st.fixed_dictionaries(
        {
            "crm_id": st.uuids().map(str),
            "email": emails,
            "first_name": names,
            "last_name": names,
            "company": companies,
            "title": titles,
            "industry": maybe(
                st.sampled_from(["SaaS", "saas ", "Software", "Government", "Mining"]) | text
            ),
            "employees": banded_numbers,
            "annual_revenue": banded_numbers,
            "country": maybe(st.sampled_from(["US", "us", "Germany", "BR"]) | text),
            "budget": banded_numbers,
            "authority": maybe(st.booleans()),
            "need": maybe(st.sampled_from(["high", "Medium", "low", "urgent"])),
            "timeline": stamps,
            "page_views": counts,
            "email_opens": counts,
            "form_submissions": counts,
            "last_engaged_at": stamps,
            "status": st.sampled_from(STATUSES),
            "qualified_at": stamps,
            "crm_status": st.sampled_from(CRM_STATUSES),
            "status_locked": maybe(st.booleans()),
        }
    )


frames = st.lists(lead_strategy(), min_size=1, max_size=40).map(
    lambda rows: conform(pd.DataFrame(rows))
)
PROPERTY_SETTINGS = settings(
    max_examples=80,  # frames of up to 40 leads each: thousands of leads per property
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


fixes = maybe(
    st.sampled_from(
        ["Fix the record: employees -3 is not a company size", "Fix the record: " + "x" * 250]
    )
    | st.text(min_size=1, max_size=30)
)


def reference_scores(
    frame: pd.DataFrame, now: pd.Timestamp = NOW, problems: list[str | None] | None = None
) -> pd.DataFrame:
    problems = problems or [None] * len(frame)
    rows = [
        score_row(_as_dict(row), RULES, now, problem)
        for row, problem in zip(frame.to_dict("records"), problems, strict=True)
    ]
    return pd.DataFrame(rows, index=frame.index, columns=list(OUTPUT_COLUMNS))


def _as_dict(row: dict) -> dict:
    return {
        key: (
            None
            if value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)
            else value
        )
        for key, value in row.items()
    }


@PROPERTY_SETTINGS
@given(frames, st.data())
def test_vectorized_agrees_with_reference(frame, data):
    problems = data.draw(st.lists(fixes, min_size=len(frame), max_size=len(frame)))
    fast = score(frame, RULES, NOW, pd.Series(problems, index=frame.index, dtype="str"))
    slow = reference_scores(frame, problems=problems)
    for column in ("score", "fit", "intent", "engagement", "negative", "human_owned"):
        assert fast[column].tolist() == slow[column].tolist(), column
    assert fast["reason"].astype(object).tolist() == slow["reason"].tolist()
    assert _nullable(fast["status"]) == _nullable(slow["status"])
    assert _nullable(fast["qualified_at"]) == _nullable(slow["qualified_at"])


@PROPERTY_SETTINGS
@given(
    frames, st.sampled_from(["page_views", "email_opens", "form_submissions"]), st.integers(1, 50)
)
def test_more_engagement_never_lowers_the_score(frame, column, extra):
    more = frame.copy()
    more[column] = more[column].fillna(0).clip(lower=0) + extra
    assert (score(more, RULES, NOW)["score"] >= score(frame, RULES, NOW)["score"]).all()


@PROPERTY_SETTINGS
@given(frames)
def test_human_owned_status_is_never_changed(frame):
    result = score(frame, RULES, NOW)
    owned = frame["crm_status"].isin(RULES.human_owned.crm_statuses) | frame[
        "status_locked"
    ].fillna(False)
    assert result["human_owned"].tolist() == owned.tolist()
    assert _nullable(result.loc[owned, "status"]) == _nullable(frame.loc[owned, "status"])
    assert result.loc[owned, "reason"].str.contains("status stands").all()


@PROPERTY_SETTINGS
@given(frames)
def test_reasons_are_never_empty_nor_too_long(frame):
    lengths = score(frame, RULES, NOW)["reason"].astype(object).str.len()
    assert lengths.between(1, 255).all()


@PROPERTY_SETTINGS
@given(frames)
def test_scoring_is_deterministic_and_bounded(frame):
    first, second = score(frame, RULES, NOW), score(frame.copy(), RULES, NOW)
    pd.testing.assert_frame_equal(first, second)
    assert first["score"].between(0, 100).all()


@PROPERTY_SETTINGS
@given(frames, st.integers(1, 400))
def test_scoring_later_without_new_engagement_never_scores_higher(frame, days):
    frame = frame.assign(timeline=pd.NaT)  # a future timeline getting closer may add points
    now, later = score(frame, RULES, NOW), score(frame, RULES, NOW + pd.Timedelta(days=days))
    assert (later["engagement"] <= now["engagement"]).all()
    assert (later["score"] <= now["score"]).all()


@pytest.mark.parametrize("size", [0, 1, 2_500])
def test_agrees_with_reference_on_generated_leads(size):
    from sandbox.seed import generate_leads

    frame = generate_leads(size, seed=7, now=NOW)
    fast = score(frame, RULES, NOW)
    slow = reference_scores(frame)
    assert fast["score"].tolist() == slow["score"].tolist()
    assert fast["reason"].astype(object).tolist() == slow["reason"].tolist()
    assert _nullable(fast["status"]) == _nullable(slow["status"])


def _nullable(series: pd.Series) -> list:
    return [None if pd.isna(value) else value for value in series]
