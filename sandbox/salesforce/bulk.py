"""Bulk API 2.0 for Lead records, as simple-salesforce's `sf.bulk2` client uses it.

Query jobs evaluate their SOQL with the same engine as `/query` and keep only the matching rowids
(a snapshot, as the REST cursors do): results pages are rendered as CSV on demand, so writes made
while a job is paged never shift its pages. Ingest jobs are processed the moment their upload is
marked complete, record by record through the same validation and write code as the sObject
Collections route, in transactions of `INGEST_CHUNK` records; so a client's first poll already
finds them finished, unless `job_seconds` is set: then each job reports InProgress for that long
(its work is done at once all the same). Jobs are kept until deleted, or for `JOB_RETENTION_MS`
(a week, as Salesforce keeps them); what they hold (matched rowids, uploads, result CSVs) lives on
disk (sandbox/salesforce/bulk_files.py), so any number of them stays pollable.
"""

from __future__ import annotations

import base64
import binascii
import csv
import hashlib
import io
import re
import sqlite3
import threading
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sandbox.http import Request, Response
from sandbox.salesforce import schema, soql
from sandbox.salesforce.bulk_files import JobFiles
from sandbox.salesforce.schema import Field, FieldError, WriteResult
from sandbox.store import Table

DEFAULT_MAX_RECORDS = 50_000  # Salesforce sizes pages itself when maxRecords is absent
FETCH_CHUNK = 2_000  # rowids per SELECT while rendering a page (SQLite caps bound variables)
INGEST_CHUNK = 10_000  # records per transaction, like Salesforce's internal ingest batches
JOB_RETENTION_MS = 7 * 86_400_000  # a job older than this is forgotten
UNPROCESSED = "unprocessedrecords"  # JobFiles kinds are the results routes' names, lower-cased
NULL = "#N/A"  # in an ingest CSV: set the field to null (an empty value leaves it unchanged)
DELIMITERS = {
    "COMMA": ",",
    "TAB": "\t",
    "PIPE": "|",
    "SEMICOLON": ";",
    "CARET": "^",
    "BACKQUOTE": "`",
}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
JOB = r"/jobs/{kind}/(?P<job_id>[^/]+)"
JOB_PATH = re.compile(r"/jobs/(?P<kind>query|ingest)/(?P<job_id>[^/]+)(?P<rest>/.*)?")

Writer = Callable[[sqlite3.Connection, dict[str, Any]], WriteResult]


@dataclass
class Job:
    id: str
    operation: str
    version: str
    delimiter: str  # the names Salesforce uses: "COMMA", "LF", ...
    line_ending: str
    created: int  # epoch ms
    state: str
    modified: int = 0
    processed: int = 0
    failed: int = 0
    processing_ms: int = 0
    error_message: str | None = None
    identity: str = ""  # for fault draws: a query job's SOQL, an ingest job's uploaded ids
    finishes_at: float = 0.0  # monotonic time until which a finished job reports InProgress
    final_state: str = ""

    def csv_writer(self, buffer: io.StringIO) -> Any:
        return csv.writer(
            buffer,
            delimiter=DELIMITERS[self.delimiter],
            lineterminator=LINE_ENDINGS[self.line_ending],
            quoting=csv.QUOTE_ALL,
        )

    def info(self, object_name: str = "Lead") -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": object_name,
            "createdById": schema.DEFAULT_OWNER_ID,
            "createdDate": schema.render_datetime(self.created),
            "systemModstamp": schema.render_datetime(self.modified or self.created),
            "state": self.state,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(self.version),
            "lineEnding": self.line_ending,
            "columnDelimiter": self.delimiter,
        }
        if self.error_message:
            body["errorMessage"] = self.error_message
        return body


@dataclass
class QueryJob(Job):
    """Its matched rowids are on disk (`JobFiles`); `processed` counts them."""

    fields: list[Field] = field(default_factory=list)


@dataclass
class IngestJob(Job):
    """Its upload (until processed) and result CSVs are on disk (`JobFiles`)."""


class BulkJobs:
    """Bulk API 2.0 query and ingest jobs; `routes()` plugs them into the REST API's router."""

    def __init__(
        self,
        transaction: Callable[[], AbstractContextManager[sqlite3.Connection]],
        table: Table,
        select: Callable[[soql.Query, bool], array],
        writers: dict[str, Writer],
        job_seconds: float = 0.0,
        directory: Path | None = None,
        refuse: Callable[[str], Response | None] = lambda text: None,
    ):
        """`transaction`: a write transaction of the org's database; `directory`: where jobs
        keep their data (None: a temporary directory); `refuse`:
        the org's answer to a query the user may not run (a field it cannot read), or None."""
        self.transaction, self.table = transaction, table
        self.select, self.writers = select, writers
        self.refuse = refuse
        self.job_seconds = job_seconds  # how long each job takes, as its polls see it
        self.files = JobFiles(directory)
        self._jobs: dict[str, Job] = {}
        self._count = 0
        self._lock = threading.Lock()

    def routes(self) -> list[tuple[str, re.Pattern, Callable[[Request, str, re.Match], Response]]]:
        query_job, ingest_job = JOB.format(kind="query"), JOB.format(kind="ingest")
        return [
            ("POST", re.compile(r"/jobs/query"), self._create_query),
            ("GET", re.compile(query_job), self._query_info),
            ("PATCH", re.compile(query_job), self._set_state),
            ("DELETE", re.compile(query_job), self._delete),
            ("GET", re.compile(query_job + "/results"), self._query_results),
            ("POST", re.compile(r"/jobs/ingest"), self._create_ingest),
            ("GET", re.compile(ingest_job), self._ingest_info),
            ("PATCH", re.compile(ingest_job), self._set_state),
            ("DELETE", re.compile(ingest_job), self._delete),
            ("PUT", re.compile(ingest_job + "/batches"), self._upload),
            (
                "GET",
                re.compile(
                    ingest_job + r"/(?P<kind>successfulResults|failedResults|unprocessedRecords)",
                    re.IGNORECASE,
                ),
                self._ingest_results,
            ),
        ]

    def fault_key(self, request: Request, resource: str) -> str:
        """A bulk request's identity for fault draws: a job's id is replaced by the job's own
        identity (its SOQL, or the ids of its upload), which does not depend on how many jobs
        were created before it."""
        match = JOB_PATH.fullmatch(resource)
        if match is None:  # creating a job
            body = request.json() if request.body else {}
            body = body if isinstance(body, dict) else {}
            what = soql.without_times(str(body.get("query") or "")) or body.get("object")
            return f"{request.method} {resource} {body.get('operation')} {what}"
        with self._lock:
            job = self._jobs.get(match["job_id"])
        identity = job.identity if job is not None and job.identity else match["job_id"]
        if isinstance(job, IngestJob) and match["rest"] == "/batches":
            identity = _upload_identity(job, request.body)
        return f"{request.method} /jobs/{match['kind']}/{identity}{match['rest']}"

    # --- query jobs --------------------------------------------------------------------------

    def _create_query(self, request: Request, version: str, match: re.Match) -> Response:
        body, bad = _json_object(request)
        if bad:
            return bad
        operation, text = body.get("operation"), body.get("query")
        if operation not in ("query", "queryAll") or not isinstance(text, str):
            return _error(
                400, "INVALIDJOB", "A query job needs operation 'query' or 'queryAll' and a query."
            )
        settings, bad = _csv_settings(body)
        if bad:
            return bad
        refused = self.refuse(text)
        if refused is not None:
            return refused
        try:
            query = soql.parse(text)
        except soql.SoqlError as error:
            return _error(400, error.error_code, error.message)
        if query.count_only or query.offset:
            return _error(
                400, "INVALIDJOB", "Bulk API 2.0 does not support aggregate functions or OFFSET."
            )
        job = QueryJob(
            self._next_id(),
            operation,
            version,
            *settings,
            created=_now(),
            state="UploadComplete",
            fields=query.fields,
            identity=f"{operation} {soql.without_times(text)}",
        )
        rowids = self.select(query, operation == "queryAll")
        self.files.write_rowids(job.id, rowids)
        response = Response(200, job.info())
        job.state, job.processed = "JobComplete", len(rowids)
        self._take_time(job)
        self._keep(job)
        return response

    def _query_info(self, request: Request, version: str, match: re.Match) -> Response:
        job, missing = self._job(match, QueryJob)
        if missing:
            return missing
        return Response(
            200,
            {
                **job.info(),
                "numberRecordsProcessed": job.processed,
                "retries": 0,
                "totalProcessingTime": job.processing_ms,
                "jobType": "V2Query",
                "isPkChunkingSupported": True,
            },
        )

    def _query_results(self, request: Request, version: str, match: re.Match) -> Response:
        job, missing = self._job(match, QueryJob)
        if missing:
            return missing
        if job.state != "JobComplete":
            return _error(400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}, not JobComplete.")
        max_records = request.param("maxRecords") or str(DEFAULT_MAX_RECORDS)
        if not max_records.isdigit() or int(max_records) < 1:
            return _error(400, "INVALIDJOB", "maxRecords must be a positive integer.")
        start = _offset(request.param("locator"), job.processed)
        if start is None:
            return _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        end = start + int(max_records)
        page = self.files.read_rowids(job.id, start, int(max_records))
        text, count = self._render_page(job, page)
        return Response(
            200,
            text,
            headers={
                "Sforce-NumberOfRecords": str(count),
                "Sforce-Locator": _locator(end) if end < job.processed else "null",
            },
            content_type="text/csv",
        )

    def _render_page(self, job: QueryJob, rowids: array) -> tuple[str, int]:
        buffer = io.StringIO()
        writer = job.csv_writer(buffer)
        writer.writerow([field.name for field in job.fields])
        count = 0
        for row in self._rows(rowids, job.fields):
            writer.writerow([_csv_value(field, row[field.name]) for field in job.fields])
            count += 1
        return buffer.getvalue(), count

    def _rows(self, rowids: array, fields: list[Field]) -> Iterator[dict[str, Any]]:
        """The rows of `rowids`, in that order, as they are now."""
        columns = ["rowid", *(field.name for field in fields)]
        for start in range(0, len(rowids), FETCH_CHUNK):
            chunk = rowids[start : start + FETCH_CHUNK]
            marks = ", ".join("?" for _ in chunk)
            found = {
                row["rowid"]: row
                for row in self.table.select(columns, f"rowid IN ({marks})", chunk)
            }
            yield from (found[rowid] for rowid in chunk if rowid in found)

    # --- ingest jobs -------------------------------------------------------------------------

    def _create_ingest(self, request: Request, version: str, match: re.Match) -> Response:
        body, bad = _json_object(request)
        if bad:
            return bad
        if body.get("object") != "Lead":
            return _error(
                400, "INVALIDJOB", f"sObject type '{body.get('object')}' is not supported."
            )
        if body.get("operation") not in self.writers:
            return _error(
                400,
                "INVALIDJOB",
                f"The sandbox supports the operations {sorted(self.writers)}, "
                f"not '{body.get('operation')}'.",
            )
        if body.get("contentType", "CSV") != "CSV":
            return _error(400, "INVALIDJOB", "contentType must be CSV.")
        settings, bad = _csv_settings(body)
        if bad:
            return bad
        job = IngestJob(self._next_id(), body["operation"], version, *settings, _now(), "Open")
        self._keep(job)
        info = job.info()
        info["contentUrl"] = f"services/data/v{version}/jobs/ingest/{job.id}/batches"
        return Response(200, info)

    def _ingest_info(self, request: Request, version: str, match: re.Match) -> Response:
        job, missing = self._job(match, IngestJob)
        if missing:
            return missing
        return Response(
            200,
            {
                **job.info(),
                "jobType": "V2Ingest",
                "numberRecordsProcessed": job.processed,
                "numberRecordsFailed": job.failed,
                "retries": 0,
                "totalProcessingTime": job.processing_ms,
                "apiActiveProcessingTime": job.processing_ms,
                "apexProcessingTime": 0,
            },
        )

    def _upload(self, request: Request, version: str, match: re.Match) -> Response:
        job, missing = self._job(match, IngestJob)
        if missing:
            return missing
        with self._lock:
            if job.state != "Open":
                return _error(400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}, not Open.")
            if self.files.has(job.id, "upload"):
                return _error(
                    400,
                    "INVALIDJOBSTATE",
                    f"Found multiple contents for job: <{job.id}>, please 'Close' / 'Abort' / "
                    "'Delete' the current Job then create a new Job and make sure you only do "
                    "'PUT' once on a given Job.",
                )
            self.files.write(job.id, "upload", request.body)
            job.identity = _upload_identity(job, request.body)
        return Response(201)

    def _ingest_results(self, request: Request, version: str, match: re.Match) -> Response:
        job, missing = self._job(match, IngestJob)
        if missing:
            return missing
        if job.state not in ("JobComplete", "Failed", "Aborted"):
            return _error(400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}, not finished.")
        results = self.files.read(job.id, match["kind"].lower())
        return Response(200, results, content_type="text/csv")

    def _process(self, job: IngestJob) -> None:
        started, job.state = time.monotonic(), "InProgress"
        upload = self.files.take(job.id, "upload")
        try:
            header, rows = _parse_upload(job, upload)
        except _InvalidUpload as error:
            job.state, job.error_message = "Failed", str(error)
            self.files.write(job.id, UNPROCESSED, upload)
            return
        self._write_records(job, header, rows)
        self.files.write(job.id, UNPROCESSED, _header_only(job, header))
        job.processing_ms = round((time.monotonic() - started) * 1000)
        job.state = "JobComplete"

    def _write_records(self, job: IngestJob, header: list[str], rows: Iterator[list[str]]) -> None:
        """Write every uploaded record, counting and rendering the results as it goes."""
        successful, failed = io.StringIO(), io.StringIO()
        to_successful, to_failed = job.csv_writer(successful), job.csv_writer(failed)
        to_successful.writerow(["sf__Id", "sf__Created", *header])
        to_failed.writerow(["sf__Id", "sf__Error", *header])
        created = "true" if job.operation == "insert" else "false"
        write = self.writers[job.operation]
        for chunk in _chunks(rows, INGEST_CHUNK):
            with self.transaction() as connection:
                for row in chunk:
                    result = _write_row(write, connection, header, row)
                    if result.success:
                        to_successful.writerow([result.id, created, *row])
                    else:
                        to_failed.writerow([result.id or "", _bulk_error(result.errors), *row])
                        job.failed += 1
                    job.processed += 1
        self.files.write(job.id, "successfulresults", successful.getvalue().encode())
        self.files.write(job.id, "failedresults", failed.getvalue().encode())

    # --- both kinds --------------------------------------------------------------------------

    def _set_state(self, request: Request, version: str, match: re.Match) -> Response:
        kind = IngestJob if "/ingest/" in match.group() else QueryJob
        job, missing = self._job(match, kind)
        if missing:
            return missing
        body, bad = _json_object(request)
        if bad:
            return bad
        wanted = body.get("state")
        with self._lock:
            response = self._transition(job, wanted)
        if isinstance(job, IngestJob) and job.state == "UploadComplete":
            self._process(job)  # now, so the client's first poll finds the job finished
            self._take_time(job)
        return response

    def _transition(self, job: Job, wanted: Any) -> Response:
        if wanted == "Aborted" and job.state in ("Open", "UploadComplete", "InProgress"):
            job.state = "Aborted"
            if isinstance(job, IngestJob):
                self.files.write(job.id, UNPROCESSED, self.files.take(job.id, "upload"))
        elif wanted == "UploadComplete" and isinstance(job, IngestJob) and job.state == "Open":
            job.state = "UploadComplete"
        elif wanted in ("Aborted", "UploadComplete"):
            return _error(
                400, "INVALIDJOBSTATE", f"Job {job.id} is {job.state}: it cannot become {wanted}."
            )
        else:
            return _error(400, "INVALIDJOB", "state must be 'UploadComplete' or 'Aborted'.")
        job.modified = _now()
        return Response(200, job.info())

    def _delete(self, request: Request, version: str, match: re.Match) -> Response:
        kind = IngestJob if "/ingest/" in match.group() else QueryJob
        job, missing = self._job(match, kind)
        if missing:
            return missing
        with self._lock:
            if job.state == "Open":
                return _error(400, "INVALIDJOBSTATE", f"Job {job.id} is Open: close or abort it.")
            self._jobs.pop(job.id, None)
            self.files.delete(job.id)
        return Response(204)

    def _take_time(self, job: Job) -> None:
        if self.job_seconds > 0:
            job.final_state, job.state = job.state, "InProgress"
            job.finishes_at = time.monotonic() + self.job_seconds

    def _job(self, match: re.Match, kind: type[Job]) -> tuple[Any, Response | None]:
        with self._lock:
            job = self._jobs.get(match["job_id"])
            if job is not None:
                if job.state == "InProgress" and 0 < job.finishes_at <= time.monotonic():
                    job.state = job.final_state
        if not isinstance(job, kind):
            return None, _error(404, "NOT_FOUND", "The requested resource does not exist")
        return job, None

    def _keep(self, job: Job) -> None:
        """Remember `job`, and forget the jobs past their retention."""
        with self._lock:
            self._jobs[job.id] = job
            oldest_kept = job.created - JOB_RETENTION_MS
            expired = [old.id for old in self._jobs.values() if old.created < oldest_kept]
            for job_id in expired:
                del self._jobs[job_id]
                self.files.delete(job_id)

    def _next_id(self) -> str:
        with self._lock:
            self._count += 1
            return schema.with_checksum(f"7505g{self._count:010d}")


class _InvalidUpload(Exception):
    pass


def _upload_identity(job: IngestJob, upload: bytes) -> str:
    """An upload's operation and the ids it names (a digest), or its row count if it has no
    Id column: not its values, which may hold times that move from run to run."""
    text = upload.decode("utf-8-sig", errors="replace")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=DELIMITERS[job.delimiter])
    header = [name.lower() for name in next(reader, [])]
    column = header.index("id") if "id" in header else None
    rows = [row for row in reader if row]
    if column is None:
        return f"{job.operation} {len(rows)} rows"
    ids = "\n".join(row[column] if len(row) > column else "" for row in rows)
    return f"{job.operation} {hashlib.blake2b(ids.encode(), digest_size=8).hexdigest()}"


def _parse_upload(job: IngestJob, upload: bytes) -> tuple[list[str], Iterator[list[str]]]:
    """The header and the record rows of an upload, or _InvalidUpload (the whole job fails)."""
    if not upload:
        raise _InvalidUpload("InvalidBatch : No data was uploaded for this job")
    text = upload.decode("utf-8-sig", errors="replace")
    first_line_end = text.find("\n")
    crlf = first_line_end > 0 and text[first_line_end - 1] == "\r"
    if first_line_end >= 0 and crlf != (job.line_ending == "CRLF"):
        raise _InvalidUpload(
            "ClientInputError : LineEnding is invalid on user data. Current LineEnding "
            f"setting is {job.line_ending}"
        )
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=DELIMITERS[job.delimiter])
    header = next(reader, [])
    unknown = [name for name in header if schema.field_named(name) is None]
    if unknown:
        raise _InvalidUpload(f"InvalidBatch : Field name not found : {unknown[0]}")
    if len({name.lower() for name in header}) != len(header):
        raise _InvalidUpload("InvalidBatch : Duplicate field name in the header row")
    return header, (row for row in reader if row)


def _write_row(
    write: Writer, connection: sqlite3.Connection, header: list[str], row: list[str]
) -> WriteResult:
    if len(row) != len(header):
        error = FieldError(
            "INVALID_FIELD", f"The row has {len(row)} values for {len(header)} columns"
        )
        return WriteResult(None, (error,))
    # Bulk API 2.0: an empty value leaves the field as it is; #N/A sets it to null.
    values = {
        name: None if text == NULL else text
        for name, text in zip(header, row, strict=False)
        if text
    }
    return write(connection, values)


def _bulk_error(errors: tuple[FieldError, ...]) -> str:
    """Errors as Bulk API results give them: `STATUS_CODE:message:Field1,Field2 --`."""
    return " ".join(f"{e.status_code}:{e.message}:{','.join(e.fields)} --" for e in errors)


def _header_only(job: Job, header: list[str]) -> bytes:
    buffer = io.StringIO()
    job.csv_writer(buffer).writerow(header)
    return buffer.getvalue().encode()


def _chunks(rows: Iterator[list[str]], size: int) -> Iterator[list[list[str]]]:
    chunk: list[list[str]] = []
    for row in rows:
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _csv_value(field: Field, stored: Any) -> str:
    value = schema.to_api(field, stored)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _locator(offset: int) -> str:
    """Like Salesforce's locators (`MTAwMDA` is base64 for 10000), opaque to the client."""
    return base64.b64encode(str(offset).encode()).decode().rstrip("=")


def _offset(locator: str | None, size: int) -> int | None:
    if not locator:
        return 0
    try:
        text = base64.b64decode(locator + "=" * (-len(locator) % 4), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() and int(text) <= size else None


def _csv_settings(body: dict[str, Any]) -> tuple[tuple[str, str], Response | None]:
    delimiter, line_ending = body.get("columnDelimiter", "COMMA"), body.get("lineEnding", "LF")
    if delimiter not in DELIMITERS or line_ending not in LINE_ENDINGS:
        return ("", ""), _error(
            400,
            "INVALIDJOB",
            f"columnDelimiter must be one of {sorted(DELIMITERS)} and lineEnding LF or CRLF.",
        )
    return (delimiter, line_ending), None


def _json_object(request: Request) -> tuple[dict[str, Any], Response | None]:
    try:
        body = request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return {}, _error(400, "JSON_PARSER_ERROR", "Expected a JSON object.")
    return body, None


def _now() -> int:
    return int(time.time() * 1000)


def _error(status: int, error_code: str, message: str) -> Response:
    return Response(status, [{"errorCode": error_code, "message": message}])
