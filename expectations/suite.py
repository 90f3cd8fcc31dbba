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
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from itertools import count

import pandas as pd

from expectations.frame import EMAIL_PATTERN, QUALIFICATION_STATUSES, UNREADABLE, conform
from expectations.quality import DataQuality

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # nothing phones home

import great_expectations as gx  # noqa: E402
from great_expectations import expectations as gxe  # noqa: E402
from great_expectations.core import ExpectationSuiteValidationResult  # noqa: E402
from great_expectations.core.run_identifier import RunIdentifier  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from great_expectations.data_context.types.resource_identifiers import (  # noqa: E402
    ExpectationSuiteIdentifier,
    ValidationResultIdentifier,
)

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
# What each run asks of GX: every failing row (COMPLETE), but neither the pandas query that
# would select them again nor the counts of the first few values, which nothing here reads.
RESULT_FORMAT = {
    "result_format": "COMPLETE",
    "return_unexpected_index_query": False,
    "partial_unexpected_count": 0,
}
_suite_numbers = count()
_run_numbers = count()


@dataclass(frozen=True)
class Validation:
    valid: pd.DataFrame
    review: pd.DataFrame  # fixable rows, failed scoring inputs set missing, plus `fix_reason`
    quarantined: pd.DataFrame  # rows leadsync cannot address, plus `quarantine_reason`


Explain = Callable[[object], str]  # one failing value to the reason a person reads


@dataclass(frozen=True)
class _Check:
    expectation: gxe.Expectation
    explain: Explain
    fixable: bool = True  # False: the row is quarantined


class LeadContract:
    """The suite and its validation definition, built once; `validate` runs it per chunk, on
    any number of threads at once.

    GX's cost per run grows with the expectations in the suite, hardly with the rows, so the
    suite holds one expectation per column and rule: where one expectation covers two of the
    contract's rules (a lower and an upper bound, a missing or a placeholder company), the
    failing value tells which one it broke.
    """

    def __init__(self, quality: DataQuality, now: pd.Timestamp | None = None):
        self.quality = quality
        self._now = now
        self._context = gx.get_context(mode="ephemeral")
        self._context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no noise
        batches = (
            self._context.data_sources.add_pandas("leads")
            .add_dataframe_asset("chunk")
            .add_batch_definition_whole_dataframe("whole chunk")
        )
        self._checks = _checks(quality, self._latest_allowed())
        name = f"lead_contract_{next(_suite_numbers)}"
        self.suite = self._context.suites.add(
            gx.ExpectationSuite(name, expectations=[check.expectation for check in self._checks])
        )
        self._definition = self._context.validation_definitions.add(
            gx.ValidationDefinition(name=name, data=batches, suite=self.suite)
        )
        self._columns = list(dict.fromkeys(check.expectation.column for check in self._checks))
        # Every chunk is a batch of the same id on the data source's one execution engine, so
        # two runs at once would each compute metrics on whichever chunk was loaded last.
        self._one_run_at_a_time = threading.Lock()

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
        result = self._run(_as_checked(frame[self._columns]))
        checks = {check.expectation.id: check for check in self._checks}
        failures = []
        for outcome in result.results:
            check = checks[outcome.expectation_config.id]
            if outcome.exception_info.get("raised_exception"):
                raise RuntimeError(
                    f"lead contract check failed to run: {type(check.expectation).__name__} "
                    f"on {check.expectation.column}: "
                    f"{outcome.exception_info.get('exception_message')}"
                )
            rows = outcome.result.get("unexpected_index_list") or []
            if rows:
                failures.append((check, rows))
        return failures

    def _run(self, checked: pd.DataFrame) -> ExpectationSuiteValidationResult:
        """One run of the validation definition. GX keeps every result in the context's store,
        which nothing here reads: it is removed, so a long sync's memory stays flat."""
        with self._one_run_at_a_time:
            result = self._definition.run(
                batch_parameters={"dataframe": checked},
                result_format=RESULT_FORMAT,
                run_id=RunIdentifier(run_name=f"chunk {next(_run_numbers)}"),
            )
        self._context.validation_results_store.remove_key(
            ValidationResultIdentifier(
                expectation_suite_identifier=ExpectationSuiteIdentifier(name=self.suite.name),
                run_id=result.meta["run_id"],
                batch_identifier=result.batch_id,
            )
        )
        return result

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
        _Check(
            gxe.ExpectColumnValuesToNotBeNull(column="crm_id"),
            _saying("missing CRM id"),
            fixable=False,
        ),
        _Check(gxe.ExpectColumnValuesToBeNull(column=UNREADABLE), str, fixable=False),
        _Check(  # the CRM's own stamp: when the record changed cannot be told
            gxe.ExpectColumnValuesToBeBetween(column="modified_at", max_value=latest),
            _saying("modified at {value} is in the future"),
            fixable=False,
        ),
    ]


def _fixable_checks(quality: DataQuality, latest: pd.Timestamp) -> list[_Check]:
    """What a person can fix in the CRM; the row is scored and goes to Needs review."""
    placeholders = "|".join(re.escape(value.strip()) for value in quality.placeholder_values)
    checks = [
        _Check(
            gxe.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL_PATTERN),
            _saying("email is not a valid address"),  # never the address: reasons reach artifacts
        ),
        _Check(  # GX sees a missing company as an empty one (`_as_checked`)
            gxe.ExpectColumnValuesToNotMatchRegex(
                column="company", regex=rf"(?i)^\s*(?:{placeholders})?\s*$"
            ),
            _missing_or("company is missing", "company is a placeholder"),
        ),
    ]
    checks += [
        _Check(
            gxe.ExpectColumnValuesToNotMatchRegex(
                column=column, regex=rf"(?i)^\s*(?:{placeholders})\s*$"
            ),
            _saying(f"{column.replace('_', ' ')} is a placeholder"),  # the value may be a name
        )
        for column in ("first_name", "last_name")
    ]
    checks += [
        _Check(
            gxe.ExpectColumnValuesToBeBetween(
                column="employees", min_value=0, max_value=quality.max_employees
            ),
            _below_or_above(
                0,
                "employees {value} is not a company size",
                f"employees {{value}} is over {quality.max_employees:,.0f}",
            ),
        ),
        _Check(
            gxe.ExpectColumnValuesToBeBetween(
                column="annual_revenue", min_value=0, max_value=quality.max_annual_revenue
            ),
            _below_or_above(
                0,
                "annual revenue {value} is negative",
                "annual revenue {value} is not plausible "
                f"(over {quality.max_annual_revenue:,.0f})",
            ),
        ),
    ]
    checks += [
        _Check(
            gxe.ExpectColumnValuesToBeBetween(column=column, max_value=latest),
            _saying(f"{column.replace('_', ' ')} {{value}} is in the future"),
        )
        for column in ("last_engaged_at", "qualified_at")
    ]
    statuses = list(QUALIFICATION_STATUSES)
    checks.append(
        _Check(
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=statuses),
            _saying("qualification status {value} is not one of " + ", ".join(statuses)),
        )
    )
    for column, allowed in (("country", quality.countries), ("industry", quality.industries)):
        if allowed:
            checks.append(
                _Check(
                    gxe.ExpectColumnValuesToBeInSet(column=column, value_set=sorted(allowed)),
                    _saying(f"unknown {column} {{value}}"),
                )
            )
    return checks


def _saying(reason: str) -> Explain:
    """The reason, with the failing value shown where it says {value}."""
    return lambda value: reason.format(value=_show(value))


def _below_or_above(minimum: float, below: str, above: str) -> Explain:
    """For a check of both bounds: the reason for the bound the value broke."""
    return lambda value: _saying(below if value < minimum else above)(value)


def _missing_or(missing: str, otherwise: str) -> Explain:
    """For a check that a missing or blank value also fails: which of the two it is."""
    return lambda value: missing if pd.isna(value) or not str(value).strip() else otherwise


def _as_checked(columns: pd.DataFrame) -> pd.DataFrame:
    """The checked columns as GX reads them fastest: numbers as plain floats (GX compares
    nullable ones value by value) and a missing company as an empty one, so one expectation
    finds it missing, blank or a placeholder. Reasons show the values of the frame itself."""
    numbers = columns.select_dtypes("Float64").columns
    return columns.astype(dict.fromkeys(numbers, "float64")).fillna({"company": ""})


def _no_reasons(index: pd.Index) -> pd.Series:
    return pd.Series(pd.NA, index=index, dtype="str")


def _reasons(check: _Check, values: pd.Series) -> pd.Series:
    """The check's reason for each failing row (explained once per distinct value)."""
    codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=False)
    texts = [check.explain(value) for value in uniques]
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
