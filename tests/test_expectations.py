"""The lead contract quarantines each kind of bad row with its reason and passes every good one."""

from __future__ import annotations

import pandas as pd
import pytest

from expectations.suite import REASON_COLUMN, ContractSettings, LeadContract
from sandbox.seed import LeadMix, generate_leads

NOW = pd.Timestamp("2026-11-24T10:15:00Z")
CLEAN = LeadMix(bad=0.0)


@pytest.fixture(scope="module")
def contract() -> LeadContract:
    return LeadContract(now=NOW)


@pytest.fixture
def good() -> pd.DataFrame:
    return generate_leads(200, seed=11, now=NOW, mix=CLEAN)


def test_every_good_row_passes(contract, good):
    result = contract.validate(good)
    assert result.quarantined.empty
    assert result.valid["crm_id"].tolist() == good["crm_id"].tolist()


@pytest.mark.parametrize(
    ("column", "value", "reason"),
    [
        ("crm_id", None, "missing CRM id"),
        ("email", "ana at acme.com", "email is not a valid address"),
        ("employees", -5, "employees -5 outside 0..5,000,000"),
        (
            "annual_revenue",
            1e15,
            "annual revenue 1,000,000,000,000,000 outside 0..1,000,000,000,000",
        ),
        ("company", "x" * 256, "company longer than 255 characters"),
        ("title", "Chief " * 30, "title longer than 128 characters"),
        (
            "modified_at",
            NOW + pd.Timedelta(days=2),
            "modified at 2026-11-26T10:15:00+00:00 is in the future",
        ),
        (
            "status",
            "Hot",
            "qualification status 'Hot' is not one of Qualified, Nurture, Disqualified, "
            "Needs review",
        ),
    ],
)
def test_each_kind_of_bad_row_is_quarantined_with_its_reason(contract, good, column, value, reason):
    bad = good.copy()
    bad[column] = bad[column].astype(object)
    bad.at[bad.index[3], column] = value
    result = contract.validate(bad)
    assert len(result.quarantined) == 1
    assert result.quarantined[REASON_COLUMN].iloc[0] == reason
    assert result.quarantined.index.tolist() == [3]
    assert result.valid.index.tolist() == [row for row in range(len(good)) if row != 3]


def test_a_row_with_several_problems_gets_one_reason_naming_them_all(contract, good):
    bad = good.head(5).copy()
    bad.loc[bad.index[0], ["email", "employees"]] = ["nope", -1]
    result = contract.validate(bad)
    assert result.quarantined[REASON_COLUMN].tolist() == [
        "email is not a valid address; employees -1 outside 0..5,000,000"
    ]


def test_value_sets_apply_only_where_mapped(good):
    strict = LeadContract(ContractSettings(countries=frozenset({"US", "GB"})), now=NOW)
    result = strict.validate(good)
    assert set(result.valid["country"].dropna()) <= {"US", "GB"}
    assert result.quarantined[REASON_COLUMN].str.startswith("unknown country").all()
    assert len(result.valid) + len(result.quarantined) == len(good)


def test_generated_bad_rows_are_quarantined(contract):
    leads = generate_leads(3000, seed=5, now=NOW, mix=LeadMix(bad=0.2))
    result = contract.validate(leads)
    reasons = result.quarantined[REASON_COLUMN]
    for fragment in ("employees", "annual revenue"):
        assert reasons.str.contains(fragment).any(), fragment
    # The seed holds only what the CRMs can hold: no malformed email, no over-long company.
    for fragment in ("is not a valid address", "company longer"):
        assert not reasons.str.contains(fragment).any(), fragment
    # Placeholders pass the contract: scoring sends them to Needs review with what to fix.
    assert result.valid["company"].isin(["N/A", "test", "asdf"]).any()
    assert len(result.valid) + len(result.quarantined) == len(leads)


def test_empty_chunk(contract):
    result = contract.validate(generate_leads(0, now=NOW))
    assert result.valid.empty and result.quarantined.empty
