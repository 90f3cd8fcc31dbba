"""The lead data contract as a Great Expectations suite, and what becomes of each row.

`LeadContract(quality).validate(chunk)` runs the suite over a chunk of the canonical frame and
sorts its rows three ways, each with its reason in words:
- valid: on to scoring;
- review: a person can fix the record (a placeholder name, a malformed email, an absurd count).
  The row is scored with the inputs that failed set missing, and goes to Needs review with
  `fix_reason` ("Fix the record: ...") in the CRM, where the people who can fix it work;
- quarantined: leadsync cannot address the row at all (no CRM id, a value it cannot read, a
  modification stamp in the future): not scored, not written, listed with `quarantine_reason`.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from itertools import count

import pandas as pd

from expectations.frame import EMAIL_PATTERN, QUALIFICATION_STATUSES, UNREADABLE, conform
from expectations.quality import DataQuality

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # nothing phones home

import great_expectations as gx  # noqa: E402
from great_expectations import expectations as gxe  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

REASON_COLUMN = "quarantine_reason"
FIX_COLUMN = "fix_reason"
FIX_PREFIX = "Fix the record: "
SEPARATOR = "; "
# The scoring inputs a failed check sets missing in a review row, so scoring treats them as
# unknown. Write-back columns, crm_id and modified_at are never changed.
SCORING_INPUTS = (
    "employees",
    "annual_revenue",
    "email",
    "company",
    "industry",
    "country",
    "last_engaged_at",
)
FUTURE_TOLERANCE = timedelta(minutes=5)
SHOWN_TEXT = 60  # characters of a text value shown in a reason
CONTRACTS_KEPT = 4
_suite_numbers = count()


@dataclass(frozen=True)
class Validation:
    valid: pd.DataFrame
    review: pd.DataFrame  # fixable rows, failed scoring inputs set missing, plus `fix_reason`
    quarantined: pd.DataFrame  # rows leadsync cannot address, plus `quarantine_reason`


@dataclass(frozen=True)
class _Check:
    expectation: gxe.Expectation
    reason: str  # may use {value}
    fixable: bool = True  # False: the row is quarantined
    shown_as_is: bool = False  # the value is already words (the unreadable descriptions)


class LeadContract:
    """The suite, built once; `validate` runs it per chunk."""

    def __init__(self, quality: DataQuality, now: pd.Timestamp | None = None):
        self.quality = quality
        self._now = now
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no console noise
        source = context.data_sources.add_pandas("leads")
        self._batches = source.add_dataframe_asset("chunk").add_batch_definition_whole_dataframe(
            "whole chunk"
        )
        self._checks = _checks(quality, self._latest_allowed())
        self.suite = context.suites.add(
            gx.ExpectationSuite(
                f"lead_contract_{next(_suite_numbers)}",
                expectations=[check.expectation for check in self._checks],
            )
        )

    def __reduce__(self):
        # GX's context does not pickle: a distributed worker rebuilds the suite, once.
        return (contract_for, (self.quality, self._now))

    def validate(self, chunk: pd.DataFrame) -> Validation:
        frame = conform(chunk).reset_index(drop=True)
        if frame.empty:
            return Validation(
                frame,
                frame.assign(**{FIX_COLUMN: pd.Series(dtype="str")}),
                frame.assign(**{REASON_COLUMN: pd.Series(dtype="str")}),
            )
        unaddressable = _no_reasons(frame.index)
        fixable = _no_reasons(frame.index)
        masked: dict[str, pd.Index] = {}
        for check, rows in self._failures(frame):
            column = check.expectation.column
            reasons = _reasons(check, frame.loc[rows, column])
            if check.fixable:
                fixable = _joined(fixable, reasons)
                if column in SCORING_INPUTS:
                    masked[column] = masked.get(column, pd.Index([])).union(rows)
            else:
                unaddressable = _joined(unaddressable, reasons)
        quarantine = unaddressable.notna()
        review = ~quarantine & fixable.notna()
        return Validation(
            frame[~quarantine & ~review],
            _masked(frame[review], masked).assign(**{FIX_COLUMN: FIX_PREFIX + fixable[review]}),
            frame[quarantine].assign(
                **{REASON_COLUMN: _joined(unaddressable, fixable)[quarantine]}
            ),
        )

    def _failures(self, frame: pd.DataFrame) -> list[tuple[_Check, list[int]]]:
        """Each check that some rows broke, with those rows."""
        result = self._batches.get_batch(batch_parameters={"dataframe": frame}).validate(
            self.suite, result_format={"result_format": "COMPLETE"}
        )
        checks = {check.expectation.id: check for check in self._checks}
        failures = []
        for outcome in result.results:
            check = checks[outcome.expectation_config.id]
            if outcome.exception_info.get("raised_exception"):
                raise RuntimeError(
                    f"lead contract check failed to run: {check.reason}: "
                    f"{outcome.exception_info.get('exception_message')}"
                )
            rows = outcome.result.get("unexpected_index_list") or []
            if rows:
                failures.append((check, rows))
        return failures

    def _latest_allowed(self) -> pd.Timestamp:
        now = self._now if self._now is not None else pd.Timestamp.now(tz="UTC")
        return now + FUTURE_TOLERANCE


_built: OrderedDict[str, LeadContract] = OrderedDict()


def contract_for(quality: DataQuality, now: pd.Timestamp | None) -> LeadContract:
    """The contract for these thresholds, built once per process (the last few are kept)."""
    key = repr((quality, now))
    if key not in _built:
        _built[key] = LeadContract(quality, now)
        while len(_built) > CONTRACTS_KEPT:
            _built.popitem(last=False)
    return _built[key]


def _checks(quality: DataQuality, latest: pd.Timestamp) -> list[_Check]:
    return _unaddressable_checks(latest) + _fixable_checks(quality, latest)


def _unaddressable_checks(latest: pd.Timestamp) -> list[_Check]:
    """What leadsync cannot address: it could not write the row, or cannot read it."""
    return [
        _Check(gxe.ExpectColumnValuesToNotBeNull(column="crm_id"), "missing CRM id", False),
        _Check(gxe.ExpectColumnValuesToBeNull(column=UNREADABLE), "{value}", False, True),
        _Check(  # the CRM's own stamp: when the record changed cannot be told
            gxe.ExpectColumnValuesToBeBetween(column="modified_at", max_value=latest),
            "modified at {value} is in the future",
            False,
        ),
    ]


def _fixable_checks(quality: DataQuality, latest: pd.Timestamp) -> list[_Check]:
    """What a person can fix in the CRM; the row is scored and goes to Needs review."""
    placeholders = "|".join(re.escape(value.strip()) for value in quality.placeholder_values)
    checks = [
        _Check(
            gxe.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL_PATTERN),
            "email is not a valid address",  # never the address: reasons reach artifacts
        ),
        _Check(gxe.ExpectColumnValuesToNotBeNull(column="company"), "company is missing"),
        _Check(
            gxe.ExpectColumnValuesToNotMatchRegex(column="company", regex=r"^\s*$"),
            "company is missing",
        ),
    ]
    checks += [
        _Check(
            gxe.ExpectColumnValuesToNotMatchRegex(
                column=column, regex=rf"(?i)^\s*(?:{placeholders})\s*$"
            ),
            f"{column.replace('_', ' ')} is a placeholder",  # its value may be a real name
        )
        for column in ("first_name", "last_name", "company")
    ]
    checks += [
        _Check(
            gxe.ExpectColumnValuesToBeBetween(column="employees", min_value=0),
            "employees {value} is not a company size",
        ),
        _Check(
            gxe.ExpectColumnValuesToBeBetween(column="employees", max_value=quality.max_employees),
            f"employees {{value}} is over {quality.max_employees:,.0f}",
        ),
        _Check(
            gxe.ExpectColumnValuesToBeBetween(column="annual_revenue", min_value=0),
            "annual revenue {value} is negative",
        ),
        _Check(
            gxe.ExpectColumnValuesToBeBetween(
                column="annual_revenue", max_value=quality.max_annual_revenue
            ),
            f"annual revenue {{value}} is not plausible (over {quality.max_annual_revenue:,.0f})",
        ),
    ]
    checks += [
        _Check(
            gxe.ExpectColumnValuesToBeBetween(column=column, max_value=latest),
            f"{column.replace('_', ' ')} {{value}} is in the future",
        )
        for column in ("last_engaged_at", "qualified_at")
    ]
    statuses = list(QUALIFICATION_STATUSES)
    checks.append(
        _Check(
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=statuses),
            "qualification status {value} is not one of " + ", ".join(statuses),
        )
    )
    for column, allowed in (("country", quality.countries), ("industry", quality.industries)):
        if allowed:
            checks.append(
                _Check(
                    gxe.ExpectColumnValuesToBeInSet(column=column, value_set=sorted(allowed)),
                    f"unknown {column} {{value}}",
                )
            )
    return checks


def _no_reasons(index: pd.Index) -> pd.Series:
    return pd.Series(pd.NA, index=index, dtype="str")


def _reasons(check: _Check, values: pd.Series) -> pd.Series:
    """The check's reason for each failing row, its value shown (once per distinct value)."""
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=False)
    show = str if check.shown_as_is else _show
    texts = [check.reason.format(value=show(value)) for value in uniques]
    return pd.Series(texts, dtype="str").iloc[codes].set_axis(values.index)


def _joined(earlier: pd.Series, later: pd.Series) -> pd.Series:
    """Both reasons where both rows have one, else the one present; aligned on the index."""
    later = later.reindex(earlier.index)
    both = earlier.notna() & later.notna()
    return earlier.fillna(later).where(~both, earlier + SEPARATOR + later)


def _masked(rows: pd.DataFrame, masked: dict[str, pd.Index]) -> pd.DataFrame:
    """`rows` with the scoring inputs that failed set missing where they failed."""
    out = rows.copy()
    for column, failed in masked.items():
        out.loc[out.index.intersection(failed), column] = pd.NA
    return out


def _show(value: object) -> str:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, int | float):
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"
    text = repr(str(value))
    return text if len(text) <= SHOWN_TEXT else text[: SHOWN_TEXT - 4] + "...'"
