"""Salesforce Bulk API 2.0 through simple-salesforce's `bulk2` client: reads as query jobs
(one canonical frame per results page), write-back as one ingest job.

Every request goes through the client's `requests` session. HTTP calls per job:
- query of N records, pages of P: 1 create + polls (at least 1) + max(1, ceil(N / P)) pages;
- update: 1 create + 1 upload + 1 close + polls (at least 1) + 1 job info, plus 1 for the
  failed results if any row failed, plus 1 for the successful results if Salesforce left rows
  unprocessed.
simple-salesforce sleeps `wait` seconds before the first poll, then backs off towards ~2 s.
"""

from __future__ import annotations

import csv
import io
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pandas as pd
from simple_salesforce import Salesforce
from simple_salesforce.bulk2 import SFBulk2Type
from simple_salesforce.exceptions import SalesforceOperationError

from connectors.base import ConnectorError
from connectors.mapping import FieldMapping
from connectors.salesforce.records import json_value
from expectations.frame import COLUMNS, conform

POLL_SECONDS = 1.0  # before the first job status check
NULL = "#N/A"  # an ingest CSV value that clears the field (an empty value leaves it as it is)
BOOLEANS = {"true": True, "false": False}
NOT_PROCESSED = "Salesforce did not process this record (the job stopped before it)"

Key = tuple[str, ...]  # an uploaded row's values, as the result CSVs echo them


def query_frames(
    client: Salesforce,
    soql: str,
    mapping: FieldMapping,
    max_records: int,
    *,
    wait: float = POLL_SECONDS,
    job_timeout: float | None = None,
) -> Iterator[pd.DataFrame]:
    """Run `soql` as a query job; yield each results page (at most `max_records` leads) as
    canonical rows, the same frame `records.to_frame` makes of the REST API's records.
    A job not finished within `job_timeout` seconds raises BulkJobTimeout."""
    bulk = _bounded(getattr(client.bulk2, mapping.object), job_timeout)
    with _job_timeout(job_timeout):
        for page in bulk.query(soql, max_records=max_records, wait=wait):
            yield page_frame(page, mapping)


def page_frame(page: str, mapping: FieldMapping) -> pd.DataFrame:
    """A query job's CSV page as canonical rows (an empty value is a null)."""
    by_field = {field.lower(): column for column, field in mapping.read.items()}
    raw = (
        pd.read_csv(io.StringIO(page), dtype=str, keep_default_na=False, na_values=[""])
        if page.strip()
        else pd.DataFrame(columns=list(mapping.read.values()))
    )
    frame = raw.rename(columns=lambda name: by_field.get(name.lower(), name))
    for column in frame.columns:
        if COLUMNS.get(column) == "boolean":
            frame[column] = frame[column].map(BOOLEANS)
    return conform(frame.assign(source="salesforce"))


def update(
    client: Salesforce,
    updates: pd.DataFrame,
    mapping: FieldMapping,
    *,
    wait: float = POLL_SECONDS,
    job_timeout: float | None = None,
) -> list[str | None]:
    """Write canonical write-back rows (crm_id and mapped write columns) in one ingest job;
    return None or an error message per row, in input order. Nulls clear their field.
    A job not finished within `job_timeout` seconds is aborted and raises BulkJobTimeout."""
    if updates.empty:
        return []
    header, rows = _csv_rows(updates, mapping)
    bulk = _bounded(getattr(client.bulk2, mapping.object), job_timeout)
    keys = [_key(row, header) for row in rows]
    messages: list[str | None] = []
    # simple-salesforce splits only uploads near 100 MB, in order, into one job per part.
    with _job_timeout(job_timeout):
        jobs = bulk.update(records=rows, wait=wait)
    for job in jobs:
        part, keys = keys[: job["numberRecordsTotal"]], keys[job["numberRecordsTotal"] :]
        messages += _job_messages(bulk, job, header, part)
    return messages


class BulkJobTimeout(ConnectorError):
    """A Bulk API 2.0 job did not finish within the allowed time."""


def _bounded(bulk: SFBulk2Type, job_timeout: float | None) -> SFBulk2Type:
    """simple-salesforce polls a job for up to its client's DEFAULT_WAIT_TIMEOUT_SECONDS (24 h)
    and takes no argument for it: set on this object's own client, it bounds only its jobs."""
    if job_timeout is not None:
        bulk._client.DEFAULT_WAIT_TIMEOUT_SECONDS = job_timeout
    return bulk


@contextmanager
def _job_timeout(job_timeout: float | None) -> Iterator[None]:
    try:
        yield
    except SalesforceOperationError as error:
        if not str(error).startswith("Job timeout"):  # simple-salesforce's wait_for_job
            raise
        allowed = f"{job_timeout:g} s" if job_timeout is not None else "the allowed time"
        raise BulkJobTimeout(
            f"Salesforce's Bulk API 2.0 job did not finish within {allowed} "
            f"(LEADSYNC_BULK_JOB_TIMEOUT_SECONDS): {error}; the run stops, rerun it later"
        ) from error


def _csv_rows(updates: pd.DataFrame, mapping: FieldMapping) -> tuple[list[str], list[dict]]:
    columns = [column for column in mapping.write if column in updates.columns]
    header = ["Id", *(mapping.write[column] for column in columns)]
    rows = []
    for row in updates[["crm_id", *columns]].itertuples(index=False):
        crm_id = json_value(row[0])
        values = [_csv_value(value) for value in row[1:]]
        rows.append(
            dict(zip(header, ["" if crm_id is None else str(crm_id), *values], strict=True))
        )
    return header, rows


def _csv_value(value) -> str:
    value = json_value(value)
    if value is None or value == "":
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _job_messages(
    bulk: SFBulk2Type, job: dict, header: list[str], keys: list[Key]
) -> list[str | None]:
    """Match a finished job's results to its rows by their echoed values: result CSVs come in
    no particular order, and failed rows may carry no id."""
    job_id = job["job_id"]
    failed: defaultdict[Key, deque[str]] = defaultdict(deque)
    if job["numberRecordsFailed"]:
        for row in _result_rows(bulk.get_failed_records, job_id):
            failed[_key(row, header)].append(row["sf__Error"] or "failed without an error")
    everything_processed = job["numberRecordsProcessed"] >= job["numberRecordsTotal"]
    succeeded: Counter[Key] = Counter()
    if not everything_processed:
        succeeded.update(
            _key(row, header) for row in _result_rows(bulk.get_successful_records, job_id)
        )
    messages: list[str | None] = []
    for key in keys:
        if failed[key]:
            messages.append(failed[key].popleft()[:500])
        elif everything_processed:
            messages.append(None)
        elif succeeded[key] > 0:
            succeeded[key] -= 1
            messages.append(None)
        else:
            messages.append(NOT_PROCESSED)
    return messages


def _result_rows(fetch: Callable[[str], str], job_id: str) -> Iterator[dict[str, str]]:
    return csv.DictReader(io.StringIO(fetch(job_id)))


def _key(row: dict[str, str], header: list[str]) -> Key:
    return tuple(row[name] for name in header)
