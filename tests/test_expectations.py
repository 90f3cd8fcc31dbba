"""The lead contract sends each record a person can fix to review with what to fix, quarantines
only what leadsync cannot address, and passes every good row."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pandas as pd
import pytest

from expectations.frame import conform
from expectations.suite import FIX_COLUMN, REASON_COLUMN, LeadContract
from sandbox.seed import LeadMix, generate_leads
from scoring import load_rules

NOW = pd.Timestamp("2026-11-24T10:15:00Z")
CLEAN = LeadMix(bad=0.0)
QUALITY = load_rules().data_quality
ROW = 3
NEVER_CHANGED = ["crm_id", "modified_at", "status", "score", "reason", "qualified_at"]


@pytest.fixture(scope="module")
def contract() -> LeadContract:
    return LeadContract(QUALITY, now=NOW)


@pytest.fixture
def good() -> pd.DataFrame:
    return generate_leads(200, seed=11, now=NOW, mix=CLEAN)


def spoiled(good: pd.DataFrame, **values) -> pd.DataFrame:
    bad = good.copy()
    for column, value in values.items():
        bad[column] = bad[column].astype(object)
        bad.at[bad.index[ROW], column] = value
    return bad


def test_every_good_row_passes(contract, good):
    result = contract.validate(good)
    assert result.quarantined.empty and result.review.empty
    assert result.valid["crm_id"].tolist() == good["crm_id"].tolist()


@pytest.mark.parametrize(
    ("column", "value", "reason", "masked"),
    [
        ("email", "ana at acme.com", "email is not a valid address", True),
        ("company", None, "company is missing", True),
        ("company", "   ", "company is missing", True),
        ("first_name", " TEST ", "first name is a placeholder", False),
        ("last_name", "n/a", "last name is a placeholder", False),
        ("company", "Asdf", "company is a placeholder", True),
        ("employees", -40, "employees -40 is not a company size", True),
        ("employees", 6e6, "employees 6,000,000 is over 5,000,000", True),
        ("annual_revenue", -1, "annual revenue -1 is negative", True),
        (
            "annual_revenue",
            9e16,
            "annual revenue 90,000,000,000,000,000 is not plausible (over 1,000,000,000,000)",
            True,
        ),
        (
            "last_engaged_at",
            NOW + pd.Timedelta(days=2),
            "last engaged at 2026-11-26T10:15:00+00:00 is in the future",
            True,
        ),
        (
            "qualified_at",
            NOW + pd.Timedelta(days=2),
            "qualified at 2026-11-26T10:15:00+00:00 is in the future",
            False,
        ),
        (
            "status",
            "Hot",
            "qualification status 'Hot' is not one of Qualified, Nurture, Disqualified, "
            "Needs review",
            False,
        ),
    ],
)
def test_each_fixable_problem_goes_to_review_with_its_fix(
    contract, good, column, value, reason, masked
):
    result = contract.validate(spoiled(good, **{column: value}))
    assert result.quarantined.empty
    assert result.review.index.tolist() == [ROW]
    assert result.review[FIX_COLUMN].iloc[0] == f"Fix the record: {reason}"
    assert result.valid.index.tolist() == [row for row in range(len(good)) if row != ROW]
    assert pd.isna(result.review.at[ROW, column]) == masked
    kept = [name for name in NEVER_CHANGED if name != column]
    pd.testing.assert_frame_equal(result.review[kept], conform(good).loc[[ROW], kept])


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("crm_id", None, "missing CRM id"),
        ("employees", "fifty", "employees 'fifty' is not a number"),
        ("last_engaged_at", "last Tuesday", "last engaged at 'last Tuesday' is not a date"),
        (
            "modified_at",
            NOW + pd.Timedelta(days=2),
            "modified at 2026-11-26T10:15:00+00:00 is in the future",
        ),
    ],
)
def test_what_leadsync_cannot_address_is_quarantined(contract, good, column, value, reason):
    result = contract.validate(spoiled(good, **{column: value}))
    assert result.review.empty
    assert result.quarantined.index.tolist() == [ROW]
    assert result.quarantined[REASON_COLUMN].iloc[0] == reason


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("employees", 0),
        ("employees", 5e6),
        ("annual_revenue", 0),
        ("annual_revenue", 1e12),
        ("company", "Test Kitchen Supply"),
        ("first_name", "Nathan"),
        ("last_engaged_at", NOW + pd.Timedelta(minutes=5)),
    ],
)
def test_values_on_a_bound_or_near_a_placeholder_are_valid(contract, good, column, value):
    result = contract.validate(spoiled(good, **{column: value}))
    assert result.review.empty and result.quarantined.empty


@pytest.mark.parametrize("conformed_first", [False, True], ids=["raw", "conformed by a connector"])
def test_every_value_that_could_not_be_read_is_named_once(contract, good, conformed_first):
    chunk = spoiled(good, employees="fifty", last_engaged_at="last Tuesday")
    result = contract.validate(conform(chunk) if conformed_first else chunk)
    assert result.quarantined[REASON_COLUMN].tolist() == [
        "employees 'fifty' is not a number; last engaged at 'last Tuesday' is not a date"
    ]


def test_dates_in_the_crms_iso_forms_and_in_others_are_read():
    """The CRMs send ISO 8601 (read fast, in one pass); a date a person typed in another form
    is still read, and only a value that is no date is described."""
    raw = pd.DataFrame(
        {
            "last_engaged_at": [
                "2026-11-30T12:00:00.123Z",  # HubSpot
                "2026-11-30T12:00:00.000+0000",  # Salesforce
                "2026-11-30",  # a date property
                "11/30/2026",
                "last Tuesday",
                None,
            ]
        }
    )
    frame = conform(raw)
    assert frame["last_engaged_at"].tolist()[:4] == [
        pd.Timestamp("2026-11-30T12:00:00.123Z"),
        pd.Timestamp("2026-11-30T12:00:00Z"),
        pd.Timestamp("2026-11-30T00:00:00Z"),
        pd.Timestamp("2026-11-30T00:00:00Z"),
    ]
    assert frame["last_engaged_at"].iloc[4:].isna().all()
    assert frame["unreadable"].tolist()[4] == "last engaged at 'last Tuesday' is not a date"
    assert frame["unreadable"].drop(4).isna().all()


def test_a_long_hubspot_company_is_valid(contract, good):
    result = contract.validate(spoiled(good, company="Acme " * 60, title="Chief " * 30))
    assert result.review.empty and result.quarantined.empty


def test_a_row_with_several_problems_gets_one_reason_naming_them_all(contract, good):
    result = contract.validate(spoiled(good, email="nope", employees=-1, company="test"))
    assert result.review[FIX_COLUMN].tolist() == [
        "Fix the record: email is not a valid address; company is a placeholder; "
        "employees -1 is not a company size"
    ]


def test_a_quarantined_row_names_what_to_fix_too(contract, good):
    result = contract.validate(spoiled(good, crm_id=None, employees=-1))
    assert result.quarantined[REASON_COLUMN].tolist() == [
        "missing CRM id; employees -1 is not a company size"
    ]


def test_value_sets_apply_only_where_given(good):
    strict = LeadContract(QUALITY.model_copy(update={"countries": frozenset({"US", "GB"})}), NOW)
    result = strict.validate(good)
    assert set(result.valid["country"].dropna()) <= {"US", "GB"}
    assert result.review[FIX_COLUMN].str.startswith("Fix the record: unknown country").all()
    assert result.review["country"].isna().all()
    assert len(result.valid) + len(result.review) == len(good)


def test_generated_bad_rows_go_to_review_not_quarantine(contract):
    leads = generate_leads(3000, seed=5, now=NOW, mix=LeadMix(bad=0.2))
    result = contract.validate(leads)
    assert result.quarantined.empty
    reasons = result.review[FIX_COLUMN]
    for fragment in ("employees", "annual revenue", "is a placeholder"):
        assert reasons.str.contains(fragment).any(), fragment
    # The seed holds only what the CRMs can hold: no malformed email.
    assert not reasons.str.contains("is not a valid address").any()
    assert len(result.valid) + len(result.review) == len(leads)


def test_chunks_validated_at_once_on_threads_get_their_own_outcomes(contract):
    """A sync scores two chunks at once with one contract (flows/pipeline.py)."""
    chunks = [generate_leads(1500, seed=seed, now=NOW, mix=LeadMix(bad=0.3)) for seed in range(6)]
    one_at_a_time = [contract.validate(chunk) for chunk in chunks]
    with ThreadPoolExecutor(2) as pool:
        at_once = list(pool.map(contract.validate, chunks))
    for alone, together in zip(one_at_a_time, at_once, strict=True):
        pd.testing.assert_frame_equal(together.valid, alone.valid)
        pd.testing.assert_frame_equal(together.review, alone.review)
        pd.testing.assert_frame_equal(together.quarantined, alone.quarantined)


def test_the_contract_survives_pickling(contract, good):
    import pickle

    copy = pickle.loads(pickle.dumps(contract))
    assert copy.validate(spoiled(good, employees=-3)).review.index.tolist() == [ROW]


def test_the_contract_keeps_no_results_between_chunks(good):
    """GX stores each run's result in its context; a sync of millions of leads must not keep
    one per chunk."""
    contract = LeadContract(QUALITY, now=NOW)
    for _ in range(3):
        assert contract.validate(spoiled(good, employees=-3)).review.index.tolist() == [ROW]
    assert contract._context.validation_results_store.list_keys() == []


def test_empty_chunk(contract):
    result = contract.validate(generate_leads(0, now=NOW))
    assert result.valid.empty and result.review.empty and result.quarantined.empty
