"""The one interface the flows use for either CRM, and the errors it raises.

Every read yields chunks of the canonical lead frame (expectations/frame.py); every write takes
canonical write-back columns and reports success or the error for each record, in input order.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

import pandas as pd

from connectors.mapping import FieldMapping


class ConnectorError(RuntimeError):
    """A CRM problem that retrying will not fix: the run must stop and say why."""


class AuthenticationFailed(ConnectorError):
    pass


class DailyLimitReached(ConnectorError):
    pass


class WritingStopped(ConnectorError):
    """The caller withdrew its permission to write (e.g. its write lease lapsed)."""


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


class FieldsNotAccessible(ConnectorError):
    """Mapped fields that exist, but that the integration user may not read or write; each
    problem says which permission is missing and how to grant it."""

    def __init__(self, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__("; ".join(self.problems))


CallKind = Literal["read", "write", "metadata"]


@dataclass(frozen=True)
class ApiUsage:
    """Calls this connector made (reads and writes of leads, and metadata such as describing
    the fields), and what the CRM says is left of its budget (None: unknown)."""

    reads: int
    writes: int
    metadata: int
    remaining: int | None
    limit: int | None

    @property
    def calls(self) -> int:
        return self.reads + self.writes + self.metadata


class CallCounter:
    """Calls made, by kind; safe to count from concurrent writes."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def add(self, kind: CallKind) -> None:
        with self._lock:
            self._counts[kind] += 1

    def usage(self, remaining: int | None, limit: int | None) -> ApiUsage:
        with self._lock:
            counts = dict(self._counts)
        return ApiUsage(
            counts.get("read", 0),
            counts.get("write", 0),
            counts.get("metadata", 0),
            remaining,
            limit,
        )


@runtime_checkable
class Connector(Protocol):
    source: str  # "salesforce" or "hubspot"
    page_size: int  # records per read call, the largest the API allows
    write_batch_size: int  # records per write call, the largest the API allows
    mapping: FieldMapping  # which CRM field holds each canonical column

    def check_fields(self) -> None:
        """Raise MissingFields unless every mapped field exists in the CRM."""

    def read_modified(
        self, since: datetime, until: datetime, skip_own_writes: bool = False
    ) -> Iterator[pd.DataFrame]:
        """Leads with since <= modified_at < until, each exactly once. With `skip_own_writes`
        (a sync), a CRM that can tell who made a lead's last change (Salesforce) leaves out the
        leads whose last change is leadsync's own write: they hold nothing new to score."""

    def read_all(self) -> Iterator[pd.DataFrame]:
        """Every lead, through the API's cheapest bulk or list path (backfills)."""

    def read_all_from(self, position: str | None) -> Iterator[tuple[pd.DataFrame, str]]:
        """`read_all`, each page with the position after it: a read given that position goes
        on with the leads not read yet (None: from the start)."""

    def read_by_ids(self, crm_ids: Sequence[str]) -> pd.DataFrame:
        """The current state of these leads (missing ids are absent from the result)."""

    def read_stale(
        self, qualified_before: datetime, cold_before: datetime | None = None
    ) -> Iterator[pd.DataFrame]:
        """Open leads whose qualification is older than `qualified_before` or never made, and
        (with `cold_before`) Qualified leads with no engagement since `cold_before`."""

    def write(
        self, updates: pd.DataFrame, on_batch: Callable[[pd.DataFrame], None] | None = None
    ) -> pd.DataFrame:
        """Write canonical write-back columns for `crm_id`s; columns crm_id, success, error.
        `on_batch` gets each batch's report as it returns (see `write_in_batches`)."""

    def usage(self) -> ApiUsage: ...

    def record_url(self, crm_id: str) -> str:
        """Where a person opens the record: its page in the CRM (artifacts link to it instead
        of copying the lead's personal fields)."""


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
    *,
    describe: Callable[[Exception], str] = str,
    failure_prefix: str = "batch failed",
    concurrency: int = 1,
    on_batch: Callable[[pd.DataFrame], None] | None = None,
) -> pd.DataFrame:
    """Write `size` records at a time with `send`, which returns an error (or None) per record,
    with up to `concurrency` calls in flight; the report keeps the input order.

    `on_batch` gets each batch's report as the batch returns, before another batch is sent, so
    the caller can record it at once, and stop the writing by raising a ConnectorError (e.g.
    WritingStopped).
    A batch whose call fails with one of `batch_failures` fails every one of its records and the
    next batch goes on; a fatal ConnectorError sends no further batch, waits for those in flight
    (still reporting them), and raises WriteInterrupted reporting what was written.
    """
    batches = [updates.iloc[start : start + size] for start in range(0, len(updates), size)]
    reports: list[pd.DataFrame | None] = [None] * len(batches)
    fatal: ConnectorError | None = None

    def write(batch: pd.DataFrame) -> pd.DataFrame:
        ids = batch["crm_id"].astype(str).tolist()
        try:
            errors = send(batch)
        except ConnectorError:
            raise
        except batch_failures as error:
            errors = [f"{failure_prefix}: {describe(error)}"[:500]] * len(ids)
        return write_results(ids, errors)

    def returned(index: int, future: Future) -> None:
        reports[index] = future.result()
        if on_batch is not None:
            on_batch(reports[index])

    queued = iter(enumerate(batches))
    with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="crm-write") as pool:
        in_flight: dict[Future, int] = {}

        def submit_next() -> None:
            queued_batch = next(queued, None)
            if queued_batch is not None:
                in_flight[pool.submit(write, queued_batch[1])] = queued_batch[0]

        for _ in range(max(1, concurrency)):
            submit_next()
        while in_flight:
            finished, _ = wait(in_flight, return_when=FIRST_COMPLETED)
            for future in finished:
                try:
                    returned(in_flight.pop(future), future)
                except ConnectorError as error:
                    fatal = fatal or error
                if fatal is None:
                    submit_next()
    if fatal is not None:
        for index, batch in enumerate(batches):
            if reports[index] is None:
                ids = batch["crm_id"].astype(str).tolist()
                reports[index] = write_results(ids, [f"not written: {fatal}"[:500]] * len(ids))
        raise WriteInterrupted(pd.concat(reports, ignore_index=True), fatal)
    return pd.concat(reports, ignore_index=True) if reports else write_results([], [])
