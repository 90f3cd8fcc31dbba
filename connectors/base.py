"""The one interface the flows use for either CRM, and the errors it raises.

Every read yields chunks of the canonical lead frame (expectations/frame.py); every write takes
canonical write-back columns and reports success or the error for each record, in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol, runtime_checkable

import pandas as pd


class ConnectorError(RuntimeError):
    """A CRM problem that retrying will not fix: the run must stop and say why."""


class AuthenticationFailed(ConnectorError):
    pass


class DailyLimitReached(ConnectorError):
    pass


class WriteInterrupted(ConnectorError):
    """A fatal error stopped a write part way: `report` says which records were written (the
    rest are failed), so they can be recorded before the run stops."""

    def __init__(self, report: pd.DataFrame, cause: ConnectorError):
        super().__init__(str(cause))
        self.report, self.cause = report, cause


class MissingFields(ConnectorError):
    """Mapped fields the CRM does not have; the message says how to create them."""

    def __init__(self, source: str, fields: Sequence[str], how_to_fix: str):
        self.source, self.fields = source, list(fields)
        super().__init__(f"{source} is missing mapped field(s) {', '.join(fields)}. {how_to_fix}")


@dataclass(frozen=True)
class ApiUsage:
    """Calls this connector made, and what the CRM says is left of its budget (None: unknown)."""

    reads: int
    writes: int
    remaining: int | None
    limit: int | None

    @property
    def calls(self) -> int:
        return self.reads + self.writes


@runtime_checkable
class Connector(Protocol):
    source: str  # "salesforce" or "hubspot"
    page_size: int  # records per read call, the largest the API allows
    write_batch_size: int  # records per write call, the largest the API allows

    def check_fields(self) -> None:
        """Raise MissingFields unless every mapped field exists in the CRM."""

    def read_modified(self, since: datetime, until: datetime) -> Iterator[pd.DataFrame]:
        """Leads with since <= modified_at < until, each exactly once."""

    def read_all(self) -> Iterator[pd.DataFrame]:
        """Every lead, through the API's cheapest bulk or list path (backfills)."""

    def read_by_ids(self, crm_ids: Sequence[str]) -> pd.DataFrame:
        """The current state of these leads (missing ids are absent from the result)."""

    def read_stale(
        self, qualified_before: datetime, cold_before: datetime | None = None
    ) -> Iterator[pd.DataFrame]:
        """Open leads whose qualification is older than `qualified_before` or never made, and
        (with `cold_before`) Qualified leads with no engagement since `cold_before`."""

    def write(self, updates: pd.DataFrame) -> pd.DataFrame:
        """Write canonical write-back columns for `crm_id`s; columns crm_id, success, error."""

    def usage(self) -> ApiUsage: ...


def write_results(crm_ids: Sequence[str], errors: Sequence[str | None]) -> pd.DataFrame:
    """The write report: one row per record, success where there is no error."""
    return pd.DataFrame(
        {
            "crm_id": pd.Series(list(crm_ids), dtype="str"),
            "success": pd.Series([error is None for error in errors], dtype=bool),
            "error": pd.Series(list(errors), dtype="str"),
        }
    )


def write_in_batches(
    updates: pd.DataFrame,
    size: int,
    send: Callable[[pd.DataFrame], list[str | None]],
    batch_failures: tuple[type[Exception], ...],
    describe: Callable[[Exception], str] = str,
) -> pd.DataFrame:
    """Write `size` records at a time with `send`, which returns an error (or None) per record.

    A batch whose call fails with one of `batch_failures` fails every one of its records and the
    next batch goes on; a fatal ConnectorError stops at once with WriteInterrupted, reporting
    what was written before it.
    """
    reports = []
    for start in range(0, len(updates), size):
        batch = updates.iloc[start : start + size]
        ids = batch["crm_id"].astype(str).tolist()
        try:
            errors = send(batch)
        except ConnectorError as error:
            rest = updates["crm_id"].iloc[start:].astype(str).tolist()
            failed = write_results(rest, [f"not written: {error}"[:500]] * len(rest))
            raise WriteInterrupted(
                pd.concat([*reports, failed], ignore_index=True), error
            ) from error
        except batch_failures as error:
            errors = [f"batch failed: {describe(error)}"[:500]] * len(ids)
        reports.append(write_results(ids, errors))
    return pd.concat(reports, ignore_index=True) if reports else write_results([], [])
