"""The lead data contract as a Great Expectations suite, and row-level quarantine.

`LeadContract(settings).validate(chunk)` runs the suite over a chunk of the canonical frame and
splits it: rows that meet the contract go on to scoring; the others are quarantined with one
readable reason per row (every broken expectation, in words), so RevOps can fix them in the CRM.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import timedelta
from itertools import count

import pandas as pd

from expectations.frame import EMAIL_PATTERN, QUALIFICATION_STATUSES, conform

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # nothing phones home

import great_expectations as gx  # noqa: E402
from great_expectations import expectations as gxe  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402

REASON_COLUMN = "quarantine_reason"
CONTRACTS_KEPT = 4
_suite_numbers = count()


@dataclass(frozen=True)
class ContractSettings:
    """Bounds of the contract; RevOps may tighten them. Value sets apply only where given
    (e.g. a CRM picklist in the field mapping); an empty value is never checked against them."""

    max_employees: float = 5_000_000
    max_annual_revenue: float = 1e12
    future_tolerance: timedelta = timedelta(minutes=5)
    text_lengths: dict[str, int] = field(
        default_factory=lambda: {
            "email": 80,
            "first_name": 40,
            "last_name": 80,
            "company": 255,
            "title": 128,
            "industry": 80,
            "country": 80,
        }
    )
    countries: frozenset[str] | None = None
    industries: frozenset[str] | None = None
    statuses: tuple[str, ...] = QUALIFICATION_STATUSES


@dataclass(frozen=True)
class Validation:
    valid: pd.DataFrame
    quarantined: pd.DataFrame  # the failing rows, plus `quarantine_reason`


@dataclass(frozen=True)
class _Check:
    expectation: gxe.Expectation
    reason: str  # may use {value}


class LeadContract:
    """The suite, built once; `validate` runs it per chunk."""

    def __init__(
        self, settings: ContractSettings = ContractSettings(), now: pd.Timestamp | None = None
    ):
        self.settings = settings
        self._now = now
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)  # no console noise
        source = context.data_sources.add_pandas("leads")
        self._batches = source.add_dataframe_asset("chunk").add_batch_definition_whole_dataframe(
            "whole chunk"
        )
        self._checks = _checks(settings, self._latest_allowed())
        self.suite = context.suites.add(
            gx.ExpectationSuite(
                f"lead_contract_{next(_suite_numbers)}",
                expectations=[check.expectation for check in self._checks],
            )
        )

    def __reduce__(self):
        # GX's context does not pickle: a distributed worker rebuilds the suite, once.
        return (contract_for, (self.settings, self._now))

    def validate(self, chunk: pd.DataFrame) -> Validation:
        frame = conform(chunk).reset_index(drop=True)
        if frame.empty:
            return Validation(frame, frame.assign(**{REASON_COLUMN: pd.Series(dtype="str")}))
        result = self._batches.get_batch(batch_parameters={"dataframe": frame}).validate(
            self.suite, result_format={"result_format": "COMPLETE"}
        )
        checks = {check.expectation.id: check for check in self._checks}
        reasons: dict[int, list[str]] = {}
        for outcome in result.results:
            check = checks[outcome.expectation_config.id]
            if outcome.exception_info.get("raised_exception"):
                raise RuntimeError(
                    f"lead contract check failed to run: {check.reason}: "
                    f"{outcome.exception_info.get('exception_message')}"
                )
            column = check.expectation.column
            for row in outcome.result.get("unexpected_index_list") or []:
                reasons.setdefault(row, []).append(
                    check.reason.format(value=_show(frame.at[row, column]))
                )
        bad = sorted(reasons)
        quarantined = frame.loc[bad].assign(
            **{REASON_COLUMN: ["; ".join(reasons[row]) for row in bad]}
        )
        return Validation(frame.drop(index=bad), quarantined)

    def _latest_allowed(self) -> pd.Timestamp:
        now = self._now if self._now is not None else pd.Timestamp.now(tz="UTC")
        return now + self.settings.future_tolerance


_built: OrderedDict[str, LeadContract] = OrderedDict()


def contract_for(settings: ContractSettings, now: pd.Timestamp | None) -> LeadContract:
    """The contract for these settings, built once per process (the last few are kept)."""
    key = repr((settings, now))
    if key not in _built:
        _built[key] = LeadContract(settings, now)
        while len(_built) > CONTRACTS_KEPT:
            _built.popitem(last=False)
    return _built[key]


def _checks(settings: ContractSettings, latest: pd.Timestamp) -> list[_Check]:
    checks = [
        _Check(gxe.ExpectColumnValuesToNotBeNull(column="crm_id"), "missing CRM id"),
        _Check(
            gxe.ExpectColumnValuesToMatchRegex(column="email", regex=EMAIL_PATTERN),
            "email is not a valid address",  # never the address: reasons reach artifacts
        ),
        _Check(
            gxe.ExpectColumnValuesToBeBetween(
                column="employees", min_value=0, max_value=settings.max_employees
            ),
            f"employees {{value}} outside 0..{settings.max_employees:,.0f}",
        ),
        _Check(
            gxe.ExpectColumnValuesToBeBetween(
                column="annual_revenue", min_value=0, max_value=settings.max_annual_revenue
            ),
            f"annual revenue {{value}} outside 0..{settings.max_annual_revenue:,.0f}",
        ),
    ]
    checks += [
        _Check(
            gxe.ExpectColumnValueLengthsToBeBetween(column=column, max_value=limit),
            f"{column.replace('_', ' ')} longer than {limit} characters",
        )
        for column, limit in settings.text_lengths.items()
    ]
    checks += [
        _Check(
            gxe.ExpectColumnValuesToBeBetween(column=column, max_value=latest),
            f"{column.replace('_', ' ')} {{value}} is in the future",
        )
        for column in ("modified_at", "last_engaged_at", "qualified_at")
    ]
    checks.append(
        _Check(
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(settings.statuses)),
            "qualification status {value} is not one of " + ", ".join(settings.statuses),
        )
    )
    for column, allowed in (("country", settings.countries), ("industry", settings.industries)):
        if allowed:
            checks.append(
                _Check(
                    gxe.ExpectColumnValuesToBeInSet(column=column, value_set=sorted(allowed)),
                    f"unknown {column} {{value}}",
                )
            )
    return checks


def _show(value: object) -> str:
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, int | float):
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"
    text = repr(str(value))
    return text if len(text) <= 60 else text[:56] + "...'"
