"""Routes of the Salesforce REST API for Lead records: OAuth token, limits, SOQL query and
queryAll with server-side cursors, describe, single-record CRUD, sObject Collections, and Bulk
API 2.0 jobs (sandbox/salesforce/bulk.py)."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from sandbox.http import Faults, Request, Response
from sandbox.limits import DailyCounter
from sandbox.salesforce import catalog, oauth, schema, soql
from sandbox.salesforce.bulk import BulkJobs
from sandbox.salesforce.changes import Author, ChangeLog
from sandbox.salesforce.metadata import OrgMetadata
from sandbox.salesforce.schema import FIELDS, Field, FieldError, WriteResult
from sandbox.store import Database, Table

PAGE_SIZE = 2_000  # records per query page, fixed by Salesforce
COLLECTION_LIMIT = 200  # records per sObject Collections call
BULK_JOBS_DIR = "salesforce-bulk-jobs"  # next to the org's database; in memory: a temp dir
COLLECTION_FIELDS = ("allOrNone", "records")  # an sObject Collections body's own fields
OPEN_CURSORS = 10  # open query cursors per user, as in Salesforce; one more closes the oldest
ORG_ID = "00D5g00000SBXORGAA"
USER_ID = schema.DEFAULT_OWNER_ID  # the integration user, whose session every API call has
PERSON_ID = "0055g00000SBXREPAA"  # a sales rep, who edits leads in the UI
API_AUTHOR = Author(USER_ID, "com/salesforce/api/rest")
API_PATH = re.compile(r"^/services/data/v(?P<version>\d+\.\d+)(?P<resource>/.*)?$")
LEAD_RECORD = re.compile(r"/sobjects/Lead/(?P<id>[^/]+)", re.IGNORECASE)
QUERY_MORE = re.compile(r"/query(?:All)?/(?P<locator>[^/]+)")
ROLLED_BACK = FieldError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request "
    "was using AllOrNone header",
)


@dataclass(frozen=True)
class SalesforceSettings:
    session_id: str = ""
    daily_limit: int = 15_000
    bulk_job_seconds: float = 0.0  # how long a Bulk API 2.0 job stays InProgress
    client_id: str = "leadsync-sandbox"
    client_secret: str = "leadsync-sandbox-secret"
    username: str = "leadsync@sandbox.example"
    password: str = "leadsync-sandbox"
    security_token: str = "leadsync-sandbox-token"
    refresh_token: str = ""
    session_ttl: float = 7_200.0  # seconds an issued session lives (Salesforce's default: 2 h)
    connected_app_cert: Path | None = None  # the JWT bearer flow's certificate (PEM)
    bare: bool = False  # an org where leadsync's setup never ran: no custom fields, no grants
    cdc_retention_hours: float = 72.0  # how long change events are kept for replay
    pubsub_keepalive_seconds: float = 270.0  # an idle Subscribe stream gets an empty batch


@dataclass(frozen=True)
class Cursor:
    """A query's matching rows (SQLite rowids, compact), in order, taken when it ran: paging
    never skips or repeats a record, whatever is written meanwhile."""

    rowids: array
    fields: list[Field]
    version: str
    identity: str = ""  # the fault key of the query that opened it


class _RollBack(Exception):
    pass


class _BadBody(Exception):
    pass


Handler = Callable[[Request, str, re.Match], Response]


class SalesforceApi:
    name = "salesforce"

    def __init__(self, db: Database, faults: Faults, settings: SalesforceSettings):
        self.db, self.faults, self.settings = db, faults, settings
        self.base_url = ""
        self.table = Table(db, "Lead", "Id", schema.COLUMNS)
        _add_missing_columns(db)
        self.table.index("SystemModstamp", "Id")
        self.table.index("LastModifiedDate")
        self.daily = DailyCounter(settings.daily_limit)
        self.sign_in = oauth.sign_in_for(settings, lambda: self.base_url, _identity)
        self.metadata = OrgMetadata(db, self.table, USER_ID, settings.bare, ORG_ID)
        self.changes = ChangeLog(db, settings.cdc_retention_hours)
        self._cursors: OrderedDict[str, Cursor] = OrderedDict()
        self._cursor_count = 0
        self._lock = threading.Lock()
        self._last_stamp = self._latest_stamp()
        self.bulk = BulkJobs(
            self.changes.transaction,
            self.table,
            self._matching_rowids,
            {"update": self._update_record, "insert": self._create_record},
            settings.bulk_job_seconds,
            db.path.parent / BULK_JOBS_DIR if db.path else None,
            lambda text: self.metadata.hidden_field_error(text),
        )
        self._routes: list[tuple[str, re.Pattern, Handler]] = [
            ("GET", re.compile(r"/limits"), self._limits),
            ("GET", re.compile(r"/query"), self._query),
            ("GET", re.compile(r"/queryAll"), self._query),
            ("GET", QUERY_MORE, self._query_more),
            ("GET", re.compile(r"/sobjects"), self._describe_global),
            ("GET", re.compile(r"/sobjects/Lead/describe", re.IGNORECASE), self._describe),
            ("POST", re.compile(r"/sobjects/Lead", re.IGNORECASE), self._create),
            ("GET", LEAD_RECORD, self._get),
            ("PATCH", LEAD_RECORD, self._update),
            ("DELETE", LEAD_RECORD, self._delete),
            ("PATCH", re.compile(r"/composite/sobjects"), self._update_collection),
            ("POST", re.compile(r"/composite/sobjects"), self._create_collection),
            *self.bulk.routes(),
            *self.metadata.routes(),
        ]

    # --- the sandbox's interface -------------------------------------------------------------

    def lead_count(self) -> int:
        return self.table.count()

    def seed(self, frame: pd.DataFrame) -> None:
        self.table.insert_frame(schema.lead_records(frame, self._next_number()))
        with self._lock:
            self._last_stamp = max(self._last_stamp, self._latest_stamp())

    def edit_as_person(
        self, crm_id: str, fields: dict[str, Any], user_id: str = PERSON_ID
    ) -> None:
        """Change a lead as a person in the UI would (another user): the same validation and
        store path as an API write (not the integration user's field-level security: a person
        has their own), and a change event with that person as commitUser."""
        row, missing = self._existing(crm_id)
        if missing:
            raise LookupError(f"no lead {crm_id} to edit")
        with self.changes.transaction() as connection:
            result = self._write_update(connection, row["Id"], fields, Author(user_id, ""))
        if not result.success:
            raise ValueError(f"edit of {crm_id} refused: {result.as_json()['errors']}")

    def delete_as_person(self, crm_id: str, user_id: str = PERSON_ID) -> None:
        row, missing = self._existing(crm_id)
        if missing:
            raise LookupError(f"no lead {crm_id} to delete")
        self._delete_record(row["Id"], Author(user_id, ""))

    def fault_response(self, kind: str) -> Response:
        if kind == "rate_limited":
            return _error(
                429,
                "REQUEST_LIMIT_EXCEEDED",
                "Too many requests: the request rate limit was exceeded. Try again later.",
            )
        return _error(
            503,
            "SERVER_UNAVAILABLE",
            "The server is temporarily unable to service your request. Try again later.",
        )

    def fault_key(self, request: Request) -> str:
        """A request's identity for fault draws: method and path, and what names its records
        rather than what moves from run to run: a query's SOQL without its date and time
        literals; for a cursor's next page, the query that opened it and the offset, not its
        locator; for a collection, its records' ids; for a bulk job, the job's own identity."""
        path = request.path.rstrip("/")
        match = API_PATH.match(path)
        resource = (match["resource"] or "") if match else ""
        key = f"{request.method} {path}"
        if request.param("q") is not None:
            return f"{key} {soql.without_times(request.param('q') or '')}"
        more = QUERY_MORE.fullmatch(resource)
        if more:
            locator, _, start = more["locator"].rpartition("-")
            with self._lock:
                cursor = self._cursors.get(locator)
            return f"{key.rpartition('/')[0]}/{cursor.identity if cursor else locator} {start}"
        if resource == "/composite/sobjects":
            records = request.json().get("records") or []
            return f"{key} {','.join(str(r.get('id')) for r in records if isinstance(r, dict))}"
        if resource.startswith("/jobs/"):
            return self.bulk.fault_key(request, resource)
        return key

    def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        if path == oauth.TOKEN_PATH:
            return self.sign_in.token(request)
        soap_login = oauth.SOAP_LOGIN.match(path)
        if soap_login and request.method == "POST":
            return self.sign_in.soap_login(request, soap_login["version"])
        match = API_PATH.match(path)
        if match is None:
            return _not_found()
        if not self.sign_in.is_valid(request.bearer_token or ""):
            return _error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        if self.daily.take().allowed:
            response = self._route(request, match["version"], match["resource"] or "")
        else:
            response = _error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded.")
        response.headers["Sforce-Limit-Info"] = f"api-usage={self.daily.used}/{self.daily.limit}"
        return response

    def _route(self, request: Request, version: str, resource: str) -> Response:
        allowed = []
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(resource)
            if match and method == request.method:
                try:
                    return handler(request, version, match)
                except _BadBody as error:
                    return _error(400, "JSON_PARSER_ERROR", str(error))
            if match:
                allowed.append(method)
        return _not_allowed(",".join(allowed)) if allowed else _not_found()

    # --- limits --------------------------------------------------------------------

    def _limits(self, request: Request, version: str, match: re.Match) -> Response:
        remaining = max(self.daily.limit - self.daily.used, 0)
        return Response(
            200, {"DailyApiRequests": {"Max": self.daily.limit, "Remaining": remaining}}
        )

    def _describe_global(self, request: Request, version: str, match: re.Match) -> Response:
        return Response(200, catalog.describe_global(version, [schema.describe()]))

    def _describe(self, request: Request, version: str, match: re.Match) -> Response:
        return Response(200, self.metadata.describe(schema.describe()))

    # --- queries -----------------------------------------------------------------------------

    def _query(self, request: Request, version: str, match: re.Match) -> Response:
        text = request.param("q")
        if not text:
            return _error(400, "MALFORMED_QUERY", "A query string has to be specified")
        owned = self.metadata.query_response(text, version)
        if owned is not None:
            return owned
        try:
            query = soql.parse(text)
        except soql.SoqlError as error:
            return _error(400, error.error_code, error.message)
        rowids = self._matching_rowids(query, match.group().startswith("/queryAll"))
        if query.count_only:
            return Response(200, {"totalSize": len(rowids), "done": True, "records": []})
        return self._page(Cursor(rowids, query.fields, version, self.fault_key(request)), 0)

    def _matching_rowids(self, query: soql.Query, include_deleted: bool) -> array:
        """The rowids of the rows a query matches, in its order."""
        where = query.where if include_deleted else f'"IsDeleted" = 0 AND ({query.where})'
        limit = query.limit if query.limit is not None else (-1 if query.offset else None)
        rows = self.table.select(
            ["rowid"], where, query.params, query.order_by, limit, query.offset
        )
        return array("q", (row["rowid"] for row in rows))

    def _query_more(self, request: Request, version: str, match: re.Match) -> Response:
        locator, _, start = match["locator"].rpartition("-")
        with self._lock:
            cursor = self._cursors.get(locator)
        if cursor is None or not start.isdigit() or int(start) > len(cursor.rowids):
            return _error(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return self._page(cursor, int(start), locator)

    def _page(self, cursor: Cursor, start: int, locator: str | None = None) -> Response:
        end = start + PAGE_SIZE
        page = cursor.rowids[start:end]
        columns = ["rowid", "Id", *(field.name for field in cursor.fields)]
        marks = ", ".join("?" for _ in page) or "NULL"
        selected = self.table.select(columns, f"rowid IN ({marks})", page)
        rows = {row["rowid"]: row for row in selected}
        records = [
            _record(rows[rowid], cursor.fields, cursor.version) for rowid in page if rowid in rows
        ]
        body: dict[str, Any] = {"totalSize": len(cursor.rowids), "done": end >= len(cursor.rowids)}
        if not body["done"]:
            locator = locator or self._keep(cursor)
            body["nextRecordsUrl"] = f"/services/data/v{cursor.version}/query/{locator}-{end}"
        body["records"] = records
        return Response(200, body)

    def _keep(self, cursor: Cursor) -> str:
        with self._lock:
            self._cursor_count += 1
            locator = f"01gSANDBOX{self._cursor_count:08d}"
            self._cursors[locator] = cursor
            while len(self._cursors) > OPEN_CURSORS:
                self._cursors.popitem(last=False)
        return locator

    # --- single records ----------------------------------------------------------------------

    def _get(self, request: Request, version: str, match: re.Match) -> Response:
        row, missing = self._existing(match["id"])
        if missing:
            return missing
        fields = self.metadata.readable_fields()
        if request.param("fields"):
            names = [name.strip() for name in request.param("fields", "").split(",")]
            unknown = [name for name in names if schema.field_named(name) not in fields]
            if unknown:
                return _error(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{unknown[0]}' on entity 'Lead'. If you are "
                    "attempting to use a custom field, be sure to append the '__c' "
                    "after the custom field name.",
                )
            fields = list(dict.fromkeys(schema.field_named(name) for name in names))
        return Response(200, _record(row, fields, version))

    def _update(self, request: Request, version: str, match: re.Match) -> Response:
        values = _body_object(request)
        row, missing = self._existing(match["id"])
        if missing:
            return missing
        with self.changes.transaction() as connection:
            result = self._write_update(connection, row["Id"], values)
        return Response(204) if result.success else _errors(400, result.errors)

    def _create(self, request: Request, version: str, match: re.Match) -> Response:
        values = _body_object(request)
        with self.changes.transaction() as connection:
            result = self._write_create(connection, values)
        if not result.success:
            return _errors(400, result.errors)
        return Response(201, result.as_json())

    def _delete(self, request: Request, version: str, match: re.Match) -> Response:
        row, missing = self._existing(match["id"])
        if missing:
            return missing
        if self.faults.write_fails(row["Id"]):
            return _errors(400, [_lock_error(row["Id"])])
        self._delete_record(row["Id"], API_AUTHOR)
        return Response(204)

    def _delete_record(self, record_id: str, author: Author) -> None:
        stamp = self._next_stamp()
        with self.changes.transaction() as connection:
            self.table.update(
                connection, record_id, {"IsDeleted": 1, **_modified(stamp, author)}
            )
            self.changes.deleted(connection, record_id, stamp, author)

    def _existing(self, raw_id: str) -> tuple[dict[str, Any], Response | None]:
        record_id = schema.canonical_id(raw_id)
        row = self.table.get(record_id) if record_id else None
        if row is None:
            return {}, _not_found()
        if row["IsDeleted"]:
            return row, _error(404, "ENTITY_IS_DELETED", "entity is deleted")
        return row, None

    # --- sObject Collections -----------------------------------------------------------------

    def _update_collection(self, request: Request, version: str, match: re.Match) -> Response:
        return self._collection(request, self._update_record)

    def _create_collection(self, request: Request, version: str, match: re.Match) -> Response:
        return self._collection(request, self._create_record)

    def _collection(
        self, request: Request, write: Callable[[sqlite3.Connection, dict[str, Any]], WriteResult]
    ) -> Response:
        body = _body_object(request)
        unknown = next((key for key in body if key not in COLLECTION_FIELDS), None)
        if unknown is not None:
            return _error(400, "JSON_PARSER_ERROR", _unrecognized(request.body, unknown))
        records = body.get("records")
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            return _error(400, "JSON_PARSER_ERROR", "Expected a 'records' list of objects.")
        no_such = next((name for r in records for name in r if _no_such_field(name)), None)
        if no_such is not None:  # the whole request fails, as Salesforce reads every record first
            return _errors(400, [schema.no_such_column(no_such)])
        if len(records) > COLLECTION_LIMIT:
            return _error(
                400,
                "EXCEEDED_ID_LIMIT",
                "record limit reached. cannot submit more "
                f"than {COLLECTION_LIMIT} records into this call",
            )
        wrong_type = next((r for r in records if _record_type(r) != "Lead"), None)
        if wrong_type is not None:
            return _error(400, "INVALID_TYPE", _type_message(_record_type(wrong_type)))
        results: list[WriteResult] = []
        try:
            with self.changes.transaction() as connection:
                results = [write(connection, record) for record in records]
                if body.get("allOrNone") and not all(result.success for result in results):
                    raise _RollBack
        except _RollBack:
            results = [
                result if not result.success else WriteResult(None, (ROLLED_BACK,))
                for result in results
            ]
        return Response(200, [result.as_json() for result in results])

    def _update_record(self, connection: sqlite3.Connection, record: dict[str, Any]) -> WriteResult:
        values = {name: value for name, value in record.items() if name != "attributes"}
        raw_id = next((values.pop(name) for name in list(values) if name.lower() == "id"), None)
        if not raw_id:
            return WriteResult(
                None, (FieldError("MISSING_ARGUMENT", "Id not specified in an update call"),)
            )
        record_id = schema.canonical_id(str(raw_id))
        if record_id is None:
            return WriteResult(
                None,
                (
                    FieldError(
                        "MALFORMED_ID", f"Lead ID: id value of incorrect type: {raw_id}", ("Id",)
                    ),
                ),
            )
        row = self.table.get(record_id, connection)
        if row is None:
            return WriteResult(
                None, (FieldError("INVALID_CROSS_REFERENCE_KEY", "invalid cross reference id"),)
            )
        if row["IsDeleted"]:
            return WriteResult(None, (FieldError("ENTITY_IS_DELETED", "entity is deleted"),))
        return self._write_update(connection, record_id, values)

    def _create_record(self, connection: sqlite3.Connection, record: dict[str, Any]) -> WriteResult:
        values = {name: value for name, value in record.items() if name != "attributes"}
        if any(name.lower() == "id" for name in values):
            return WriteResult(
                None, (FieldError("INVALID_FIELD", "cannot specify Id in an insert call", ("Id",)),)
            )
        return self._write_create(connection, values)

    # --- writes ------------------------------------------------------------------------------

    def _write_update(
        self,
        connection: sqlite3.Connection,
        record_id: str,
        values: dict[str, Any],
        author: Author = API_AUTHOR,
    ) -> WriteResult:
        stored, errors = schema.validate_values(values, creating=False)
        if author.user_id == USER_ID:  # the sandbox models field-level security for it alone
            errors = self.metadata.write_errors(values) or errors
        if errors:
            return WriteResult(None, tuple(errors))
        if self.faults.write_fails(record_id):
            return WriteResult(None, (_lock_error(record_id),))
        modified = _modified(self._next_stamp(), author)
        old = self.table.get(record_id, connection) or {"Id": record_id}
        self.table.update(connection, record_id, {**stored, **modified})
        self.changes.updated(connection, old, {**stored, **modified}, author)
        return WriteResult(record_id)

    def _write_create(self, connection: sqlite3.Connection, values: dict[str, Any]) -> WriteResult:
        stored, errors = schema.validate_values(values, creating=True)
        errors = self.metadata.write_errors(values) or errors
        missing = [name for name in schema.REQUIRED_ON_CREATE if not stored.get(name)]
        if missing and not errors:
            errors = [
                FieldError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    tuple(missing),
                )
            ]
        if errors:
            return WriteResult(None, tuple(errors))
        record_id = schema.lead_id(self._next_number(connection))
        if self.faults.write_fails(record_id):
            return WriteResult(None, (_lock_error(record_id),))
        stamp = self._next_stamp()
        row = {
            **_defaults(),
            **stored,
            "Id": record_id,
            "CreatedDate": stamp,
            **_modified(stamp, API_AUTHOR),
        }
        self.table.insert(connection, row)
        self.changes.created(connection, row, API_AUTHOR)
        return WriteResult(record_id)

    def _next_number(self, connection: sqlite3.Connection | None = None) -> int:
        sql = 'SELECT MAX("Id") FROM "Lead"'
        rows = connection.execute(sql).fetchall() if connection else self.db.execute(sql)
        return schema.lead_number(rows[0][0]) + 1 if rows[0][0] else 1

    def _next_stamp(self) -> int:
        """Now in epoch ms, never before a stamp handed out earlier (many writes share one)."""
        with self._lock:
            self._last_stamp = max(int(time.time() * 1000), self._last_stamp)
            return self._last_stamp

    def _latest_stamp(self) -> int:
        return self.db.execute('SELECT MAX("SystemModstamp") FROM "Lead"')[0][0] or 0


def _add_missing_columns(db: Database) -> None:
    """Bring an org database kept from an older sandbox up to the Lead fields: a field it
    lacks is added (LastModifiedById as the data import's, what seeded leads carry)."""
    present = {row["name"] for row in db.execute('PRAGMA table_info("Lead")')}
    for name, kind in schema.COLUMNS.items():
        if name not in present:
            db.execute(f'ALTER TABLE "Lead" ADD COLUMN "{name}" {kind}')
    if "LastModifiedById" not in present:
        db.execute('UPDATE "Lead" SET "LastModifiedById" = ?', [schema.IMPORT_USER_ID])


def _identity(base_url: str) -> str:
    """The signed-in user's identity URL, as token responses give it."""
    return f"{base_url}/id/{ORG_ID}/{USER_ID}"


def _record(row: dict[str, Any], fields: list[Field], version: str) -> dict[str, Any]:
    attributes = {"type": "Lead", "url": f"/services/data/v{version}/sobjects/Lead/{row['Id']}"}
    return {
        "attributes": attributes,
        **{field.name: schema.to_api(field, row[field.name]) for field in fields},
    }


def _modified(stamp: int, author: Author) -> dict[str, Any]:
    """What every write sets: when, and by whom (the API's user, or a person in the UI)."""
    return {"LastModifiedDate": stamp, "SystemModstamp": stamp, "LastModifiedById": author.user_id}


def _defaults() -> dict[str, Any]:
    booleans = {field.name: 0 for field in FIELDS if field.type == "boolean"}
    return {**booleans, "Status": schema.OPEN_STATUS, "OwnerId": schema.DEFAULT_OWNER_ID}


def _body_object(request: Request) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        raise _BadBody("The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise _BadBody("Expected a JSON object.")
    return body


def _no_such_field(name: str) -> bool:
    return name != "attributes" and name.lower() != "id" and schema.field_named(name) is None


def _unrecognized(body: bytes, key: str) -> str:
    """Salesforce's JSON parser message for an unknown request field, with where it ends."""
    text = body.decode(errors="replace")
    end = text.find(f'"{key}"') + len(key) + 2
    line = text.count("\n", 0, end) + 1
    column = end - (text.rfind("\n", 0, end) + 1) + 1
    return f'Unrecognized field "{key}" at [line:{line}, column:{column}]'


def _record_type(record: dict[str, Any]) -> str | None:
    attributes = record.get("attributes")
    return attributes.get("type") if isinstance(attributes, dict) else None


def _type_message(type_name: str | None) -> str:
    if not type_name:
        return "Must send a concrete entity type."
    return f"sObject type '{type_name}' is not supported."


def _lock_error(record_id: str) -> FieldError:
    return FieldError(
        "UNABLE_TO_LOCK_ROW",
        f"unable to obtain exclusive access to this record or 1 records: {record_id}",
    )


def _error(status: int, error_code: str, message: str) -> Response:
    return Response(status, [{"message": message, "errorCode": error_code}])


def _errors(status: int, errors: list[FieldError] | tuple[FieldError, ...]) -> Response:
    return Response(status, [error.as_api_error() for error in errors])


def _not_found() -> Response:
    return _error(404, "NOT_FOUND", "The requested resource does not exist")


def _not_allowed(allowed: str) -> Response:
    response = _error(405, "METHOD_NOT_ALLOWED", f"HTTP Method not allowed. Allowed are {allowed}")
    response.headers["Allow"] = allowed
    return response
