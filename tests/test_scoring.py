"""Examples of the scoring rules at work: each names a promise RevOps relies on."""

from __future__ import annotations

import textwrap

import pandas as pd
import pytest

from scoring import RulesError, explain, load_rules, score

RULES = load_rules()
NOW = pd.Timestamp("2026-11-24T10:15:00Z")

STRONG = {
    "crm_id": "L1",
    "email": "maria.lopez@acme-analytics.com",
    "first_name": "Maria",
    "last_name": "Lopez",
    "company": "Acme Analytics",
    "title": "VP of Sales",
    "industry": "SaaS",
    "employees": 1200,
    "annual_revenue": 250e6,
    "country": "US",
    "budget": 60000,
    "need": "high",
    "timeline": NOW + pd.Timedelta(days=20),
    "page_views": 12,
    "email_opens": 4,
    "form_submissions": 3,
    "last_engaged_at": NOW - pd.Timedelta(days=3),
    "crm_status": "Open - Not Contacted",
}


def scored(now=NOW, **changes) -> pd.Series:
    return score(pd.DataFrame([{**STRONG, **changes}]), RULES, now).iloc[0]


def test_strong_icp_lead_is_qualified_with_its_top_factors_in_words():
    result = scored()
    assert result["status"] == "Qualified"
    assert result["score"] == 100
    assert result["reason"] == (
        "ICP industry: SaaS (+20); Company size: 1,000-9,999 employees (+15); 3 form fills "
        "(last 7 days) (+14)"
    )
    assert result["qualified_at"] == NOW


def test_reason_names_red_flags_first():
    result = scored(email="maria@gmail.com", title="Student", budget=None)
    assert result["status"] == "Disqualified"
    assert result["reason"].startswith("student or job seeker (-40); free-mail address (-10)")


FIX = "Fix the record: employees -3 is not a company size"


def with_problem(problem: str = FIX, **changes) -> pd.Series:
    leads = pd.DataFrame([{**STRONG, **changes}])
    return score(leads, RULES, NOW, pd.Series([problem], index=leads.index)).iloc[0]


def test_a_record_to_fix_goes_to_needs_review_with_the_fix_first():
    result = with_problem(employees=None)
    assert result["status"] == "Needs review"
    assert result["reason"].startswith(f"{FIX}; bad data (-20); ")
    assert result["negative"] == RULES.negative.bad_data.points
    assert scored(employees=None)["status"] == "Qualified"  # the verdict, not a re-check


def test_a_human_owned_record_to_fix_keeps_its_status_and_names_both():
    result = with_problem(status="Nurture", crm_status="Working - Contacted")
    assert result["status"] == "Nurture"
    assert result["reason"].startswith(f"Human status stands: Working - Contacted; {FIX}; ")


def test_a_competitor_to_fix_stays_disqualified():
    result = with_problem(company="RivalCRM")
    assert result["status"] == "Disqualified"
    assert result["reason"].startswith(f"{FIX}; competitor (-100); bad data (-20)")


def test_a_long_fix_keeps_the_reason_within_the_crm_field():
    fix = "Fix the record: " + "; ".join(f"unknown country 'x{n}'" for n in range(20))
    result = with_problem(fix, crm_status="Closed - Not Converted")
    assert len(result["reason"]) == 255
    assert result["reason"].startswith("Human status stands: Closed - Not Converted; Fix the ")


def test_problems_must_share_the_leads_index():
    with pytest.raises(ValueError, match="index"):
        score(pd.DataFrame([STRONG], index=[7]), RULES, NOW, pd.Series([FIX]))


def test_free_mail_with_strong_fit_is_a_conflict_for_a_person():
    result = scored(
        email="maria@gmail.com",
        page_views=0,
        email_opens=0,
        form_submissions=0,
        budget=None,
        need=None,
        timeline=None,
        industry="Retail",
    )
    assert result["fit"] >= RULES.status.review_when_conflict_with_fit_at_least
    assert result["status"] == "Needs review"


def middling(**changes) -> dict:
    """A lead scoring exactly 55 plus its engagement (engaged today, so nothing decays)."""
    return {
        **STRONG,
        "industry": "Retail",
        "budget": None,
        "need": None,
        "timeline": None,
        "page_views": 0,
        "email_opens": 0,
        "form_submissions": 0,
        "last_engaged_at": NOW,
        **changes,
    }


@pytest.mark.parametrize(
    ("page_views", "previous", "expected"),
    [
        (0, "Qualified", "Qualified"),  # two points under the Qualified line
        (0, "Nurture", "Nurture"),
        (0, None, "Nurture"),
        (8, "Nurture", "Nurture"),  # two points over it
        (8, None, "Qualified"),
        (8, "Qualified", "Qualified"),
    ],
)
def test_hysteresis_keeps_a_lead_near_a_threshold_from_flapping(page_views, previous, expected):
    lead = middling(email_opens=3, page_views=page_views, status=previous)
    result = score(pd.DataFrame([lead]), RULES, NOW).iloc[0]
    assert abs(result["score"] - RULES.status.qualified_at_or_above) == 2
    assert result["status"] == expected


def test_human_owned_status_stands_but_score_and_reason_update():
    result = scored(status="Nurture", crm_status="Working - Contacted")
    assert result["status"] == "Nurture"
    assert result["human_owned"]
    assert result["reason"].startswith("Human status stands: Working - Contacted; ")
    assert result["score"] == 100

    locked = scored(status="Disqualified", status_locked=True)
    assert locked["status"] == "Disqualified"
    assert locked["reason"].startswith("Human-locked status stands; ")


def test_engagement_decays_and_a_passed_timeline_stops_counting():
    lead = middling(form_submissions=2, timeline=NOW + pd.Timedelta(days=20))
    fresh = score(pd.DataFrame([lead]), RULES, NOW).iloc[0]
    later = score(pd.DataFrame([lead]), RULES, NOW + pd.Timedelta(days=60)).iloc[0]
    assert later["engagement"] < fresh["engagement"]
    assert later["intent"] < fresh["intent"]
    assert later["score"] < fresh["score"]
    reasons = {e.factor: e for e in explain(lead, RULES, NOW + pd.Timedelta(days=60))}
    assert reasons["timeline"].text == "timeline passed (+0)"
    assert (
        reasons["form_submissions"].text == "2 form fills (last 90 days) (+3)"
    )  # 10 x 0.25, rounded


def test_requalification_moves_a_cold_qualified_lead_to_nurture():
    cold = {
        **STRONG,
        "status": "Qualified",
        "budget": None,
        "timeline": None,
        "need": None,
        "industry": "Retail",
        "title": "Sales Manager",
    }
    assert score(pd.DataFrame([cold]), RULES, NOW).iloc[0]["status"] == "Qualified"
    months_later = score(pd.DataFrame([cold]), RULES, NOW + pd.Timedelta(days=120)).iloc[0]
    assert months_later["status"] == "Nurture"
    assert months_later["qualified_at"] == NOW + pd.Timedelta(days=120)


def test_explain_lists_every_factor_and_adds_up_to_the_score():
    explanation = explain(STRONG, RULES, NOW)
    assert [e.factor for e in explanation] == [
        "industry",
        "company_size",
        "revenue",
        "country",
        "seniority",
        "budget",
        "authority",
        "need",
        "timeline",
        "page_views",
        "email_opens",
        "form_submissions",
        "free_mail",
        "competitor",
        "student_or_job_seeker",
        "bad_data",
    ]
    result = scored(email="maria@gmail.com", employees=5)
    total = sum(
        e.points
        for e in explain({**STRONG, "email": "maria@gmail.com", "employees": 5}, RULES, NOW)
    )
    assert result["score"] == max(0, min(100, total))
    assert explain(STRONG, RULES, NOW, FIX)[-1].text == "bad data (-20)"


def test_naive_now_is_refused():
    with pytest.raises(ValueError, match="timezone-aware"):
        score(pd.DataFrame([STRONG]), RULES, pd.Timestamp("2026-11-24T10:00:00"))


def test_missing_columns_score_as_unknown():
    result = score(pd.DataFrame([{"crm_id": "L9"}]), RULES, NOW).iloc[0]
    assert result["reason"] == "no budget stated (-5)"
    assert result["status"] == "Disqualified"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("  hysteresis: 5", "  hysteresis: lots"), r"line \d+, status.hysteresis = 'lots'"),
        (
            ("  half_life_days: 30", "  half_life_days: -1"),
            "engagement.half_life_days = -1: Input should be greater than 0",
        ),
        (("      SaaS: 20", "      SaaS: 200"), "fit.industry.points.SaaS = 200"),
        (("  max_factors: 3", "  max_factors: 3\n  colour: blue"), "reasons.colour = 'blue'"),
        (("\\b(student|", "(student|"), None),
        (("title_pattern: '\\b(manager", "title_pattern: '(manager["), "title_pattern"),
    ],
)
def test_bad_rules_file_names_the_key_and_value(tmp_path, change, message):
    from scoring.rules import DEFAULT_RULES_PATH

    old, new = change
    text = DEFAULT_RULES_PATH.read_text()
    assert old in text
    path = tmp_path / "rules.yaml"
    path.write_text(text.replace(old, new, 1))
    if message is None:
        load_rules(path)  # a harmless edit loads
        return
    with pytest.raises(RulesError, match=message):
        load_rules(path)


def test_unreadable_or_invalid_yaml_is_a_rules_error(tmp_path):
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text(
        textwrap.dedent("""
        version: 1
        fit: [unclosed
    """)
    )
    with pytest.raises(RulesError, match="not valid YAML"):
        load_rules(broken)


def test_rules_error_points_at_the_line_of_the_bad_value(tmp_path):
    from scoring.rules import DEFAULT_RULES_PATH

    text = DEFAULT_RULES_PATH.read_text()
    line = text[: text.index("  hysteresis: 5")].count("\n") + 1
    path = tmp_path / "rules.yaml"
    path.write_text(text.replace("  hysteresis: 5", "  hysteresis: 50"))
    with pytest.raises(RulesError) as error:
        load_rules(path)
    assert f"line {line}, status.hysteresis = 50" in str(error.value)
