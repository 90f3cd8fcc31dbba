"""Routes of the HubSpot CRM v3 API for contacts: list, search, single-record CRUD, batch read,
update and create, and the contact properties API; with HubSpot's rate limits and error shapes.
The app's Webhooks API v3 and the events contact changes make: sandbox/hubspot/webhooks.py.

Budgets: every authenticated request counts against the daily limit; search requests against
the per-second search limit (they are exempt from the ten-second budget and, as in HubSpot, carry
no per-ten-second headers); every other request against the rolling ten-second budget.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import unquote, urlencode

import pandas as pd

from sandbox.http import Faults, Request, Response
from sandbox.hubspot import discovery, oauth, schema, webhooks
from sandbox.hubspot.schema import (
    CREATED,
    ID_PROPERTY,
    MODIFIED,
    InvalidRequest,
    InvalidValues,
    expect_known_fields,
    expect_list,
    expect_object,
    expect_string,
    expect_strings,
)
from sandbox.hubspot.search import RESULT_CAP, compile_search
from sandbox.limits import DailyCounter, RollingWindow, Verdict
from sandbox.store import Database, Table

BATCH_LIMIT = 100
# The request fields each body may have (HubSpot's OpenAPI documents); any other is refused.
BATCH_READ_FIELDS = ("inputs", "properties", "propertiesWithHistory", "idProperty")
BATCH_UPDATE_INPUT_FIELDS = ("id", "idProperty", "objectWriteTraceId", "properties")
CREATE_FIELDS = ("properties", "associations", "objectWriteTraceId")
LIST_PAGE_MAX, LIST_PAGE_DEFAULT = 100, 10
OBJECT_TYPES = ("contacts", "contact", "0-1")
ALWAYS_RETURNED = (CREATED, ID_PROPERTY, MODIFIED)
CONTACT_ID = re.compile(r"\d{1,18}")
CONTACTS = r"/crm/v3/objects/(?:contacts|contact|0-1)"
CONTACT = CONTACTS + r"/(?P<id>[^/]+)"
PROPERTIES = r"/crm/v3/properties/(?P<type>[^/]+)"
NOT_FOUND = (
    "Could not get some CONTACT objects, they may be deleted or not exist. Check that "
    "ids are valid."
)
WRITE_FAULT = "The contact could not be updated because of a conflicting change; try again."
PERSON = int(schema.OWNER_IDS[0])  # the user a person's edits in the UI are made by, by default
POLICY_TEXT = {
    "TEN_SECONDLY_ROLLING": "ten_secondly_rolling",
    "SECONDLY": "secondly",
    "DAILY": "daily",
}


@dataclass(frozen=True)
class HubSpotSettings:
    access_token: str = ""
    ten_second_limit: int = 190
    search_per_second: int = 5
    daily_limit: int = 1_000_000
    create_custom_properties: bool = True  # False: the leadsync_* properties must be created
    portal_id: int = 20_250_101
    # The installed public app (sandbox/hubspot/oauth.py); its OAuth access tokens expire.
    client_id: str = "leadsync-sandbox-app"
    client_secret: str = "leadsync-sandbox-app-secret"
    redirect_uri: str = "https://localhost/leadsync/oauth-callback"
    refresh_token: str = ""
    authorization_code: str = ""
    access_token_ttl: float = 1_800.0  # seconds (HubSpot's: 30 minutes)
    # The app's webhooks (sandbox/hubspot/webhooks.py): its id, the developer API key that
    # manages its subscriptions, and how fast failed deliveries are retried.
    app_id: int = 4_020_001
    developer_api_key: str = ""
    webhook_retry_scale: float = 1.0  # HubSpot's schedule (10 retries over 24 hours) times this
    webhook_timeout_seconds: float = 5.0  # HubSpot's: 5


@dataclass(frozen=True)
class Failure:
    """One record a batch could not process."""

    category: str
    message: str
    contact_id: str | None = None


Handler = Callable[[Request, re.Match], Response]


class HubSpotApi:
    name = "hubspot"

    def __init__(self, db: Database, faults: Faults, settings: HubSpotSettings):
        self.db, self.faults, self.settings = db, faults, settings
        self.base_url = ""
        self._definitions = Table(
            db,
            "contact_properties",
            "name",
            {"name": "TEXT", "position": "INTEGER", "definition": "TEXT"},
        )
        self.properties = self._load_properties()
        columns = {
            name: schema.sql_type(definition) for name, definition in self.properties.items()
        }
        self.table = Table(
            db,
            "contacts",
            ID_PROPERTY,
            {**columns, "_archived": "INTEGER", "_archived_at": "INTEGER"},
        )
        # Matches the ORDER BY of a search sorted on lastmodifieddate (nulls last, then id).
        db.execute(
            f"CREATE INDEX IF NOT EXISTS contacts_by_modified ON contacts "
            f'(("{MODIFIED}" IS NULL), "{MODIFIED}", "{ID_PROPERTY}")'
        )
        self.ten_seconds = RollingWindow(settings.ten_second_limit, 10.0)
        self.search_budget = RollingWindow(settings.search_per_second, 1.0)
        self.daily = DailyCounter(settings.daily_limit)
        self.oauth = oauth.for_settings(settings)
        self.webhooks = webhooks.Webhooks(
            webhooks.WebhookApp(
                app_id=settings.app_id,
                developer_api_key=settings.developer_api_key,
                client_secret=settings.client_secret,
                portal_id=settings.portal_id,
                retry_scale=settings.webhook_retry_scale,
                timeout_seconds=settings.webhook_timeout_seconds,
            ),
            lambda: self.properties,
            db,
        )
        self._integration = webhooks.ChangeSource("INTEGRATION", str(settings.app_id))
        # 429s sent, by policy: TEN_SECONDLY_ROLLING, SECONDLY, DAILY, and "injected" (faults).
        self.rate_limited: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._last_stamp = self._latest_stamp()
        self._routes: list[tuple[str, re.Pattern, Handler]] = [
            ("GET", re.compile(CONTACTS), self._list),
            ("POST", re.compile(CONTACTS), self._create),
            ("POST", re.compile(CONTACTS + "/search"), self._search),
            ("POST", re.compile(CONTACTS + "/batch/read"), self._batch_read),
            ("POST", re.compile(CONTACTS + "/batch/update"), self._batch_update),
            ("POST", re.compile(CONTACTS + "/batch/create"), self._batch_create),
            ("GET", re.compile(CONTACT), self._get),
            ("PATCH", re.compile(CONTACT), self._update),
            ("DELETE", re.compile(CONTACT), self._archive),
            ("GET", re.compile(PROPERTIES), self._list_properties),
            ("POST", re.compile(PROPERTIES), self._create_property),
            ("GET", re.compile(PROPERTIES + r"/(?P<name>[^/]+)"), self._get_property),
            ("PATCH", re.compile(PROPERTIES + r"/(?P<name>[^/]+)"), self._update_property),
            ("GET", re.compile(discovery.LEGACY_CONTACT_PROPERTIES), self._legacy_properties),
            ("GET", re.compile(discovery.SCHEMAS), self._schemas),
            ("POST", re.compile(discovery.CONTACT_ASSOCIATIONS), self._associations),
        ]

    # --- the sandbox's interface -------------------------------------------------------------

    def contact_count(self) -> int:
        return self.table.count()

    def seed(self, frame: pd.DataFrame) -> None:
        self.table.insert_frame(schema.contact_rows(frame, self._max_id() + 1))
        with self._lock:
            self._last_stamp = max(self._last_stamp, self._latest_stamp())

    def edit_as_person(
        self, crm_id: str, properties: dict[str, str], user_id: int = PERSON
    ) -> dict[str, Any]:
        """A person edits the contact in HubSpot's UI: validated and stored as an API update is,
        and announced to webhooks as `CRM_UI` by `userId:<user_id>`. Raises KeyError for a
        contact that does not exist, InvalidValues for values HubSpot would refuse."""
        values = schema.storage_values(properties, self.properties)
        changes: list[webhooks.ContactChange] = []
        with self.db.transaction() as connection:
            row = self._existing(crm_id)
            updated = self._write(connection, row, values, changes)
        self.webhooks.publish(changes, _person(user_id))
        return self._contact(updated, self._written(values))

    def edit_many_as_person(
        self, edits: dict[str, dict[str, str]], user_id: int = PERSON
    ) -> None:
        """A person changes many contacts at once (an import, a bulk edit in the UI): each
        contact's properties as `edit_as_person` would, in one transaction, announced together."""
        changes: list[webhooks.ContactChange] = []
        with self.db.transaction() as connection:
            for crm_id, properties in edits.items():
                values = schema.storage_values(properties, self.properties)
                self._write(connection, self._existing(crm_id), values, changes)
        self.webhooks.publish(changes, _person(user_id))

    def delete_as_person(self, crm_id: str, user_id: int = PERSON) -> None:
        """A person deletes the contact in HubSpot's UI (it is archived, as by the API)."""
        changes: list[webhooks.ContactChange] = []
        with self.db.transaction() as connection:
            self._archive_row(connection, self._existing(crm_id), changes)
        self.webhooks.publish(changes, _person(user_id))

    def _existing(self, crm_id: str) -> dict[str, Any]:
        row = self._find(str(crm_id), None, False)
        if row is None:
            raise KeyError(f"no contact {crm_id}")
        return row

    @property
    def rate_limited_responses(self) -> int:
        """The 429s the portal's budgets refused requests with (injected faults apart)."""
        with self._lock:
            return sum(n for policy, n in self.rate_limited.items() if policy != "injected")

    def fault_response(self, kind: str) -> Response:
        if kind == "rate_limited":
            self._count_rate_limited("injected")
            refused = Verdict(False, self.ten_seconds.limit, 0, 1.0)
            return self._rate_limited("TEN_SECONDLY_ROLLING", refused, self._rate_headers(refused))
        return _error(
            503, "SERVICE_UNAVAILABLE", "The service is temporarily unavailable. Try again later."
        )

    def fault_key(self, request: Request) -> str:
        """A request's identity for fault draws: method and path, and what names its records
        rather than what moves from run to run (a search window's times, written values): a
        batch's ids; a search's id bounds, sort, paging and the filters it applies (not their
        values); a list page's cursor."""
        key = f"{request.method} {request.path.rstrip('/')}"
        if request.param("after") is not None:
            key += f" after={request.param('after')}"
        body = request.json() if request.body else None
        if not isinstance(body, dict):
            return key
        inputs = body.get("inputs")
        if isinstance(inputs, list):
            ids = [str(i.get("id")) for i in inputs if isinstance(i, dict) and "id" in i]
            return f"{key} {','.join(ids)}" if ids else f"{key} {len(inputs)} inputs"
        if "filterGroups" in body or "filters" in body or "sorts" in body:
            groups = [*(body.get("filterGroups") or []), {"filters": body.get("filters") or []}]
            filters = [
                f"{f.get('propertyName')} {f.get('operator')}"
                + (f" {f.get('value')}" if f.get("propertyName") == ID_PROPERTY else "")
                for group in groups
                if isinstance(group, dict)
                for f in group.get("filters") or []
                if isinstance(f, dict)
            ]
            shape = json.dumps([filters, body.get("sorts"), body.get("after"), body.get("limit")])
            return f"{key} {shape}"
        return key

    def handle(self, request: Request) -> Response:
        """Routing comes first, as in HubSpot: an unknown path is a 404 with or without a token;
        a known one without a valid token a 401, before any budget is spent."""
        if request.path.rstrip("/") == oauth.TOKEN_PATH:
            return self.oauth.token(request)
        if request.path.startswith(webhooks.PREFIX):
            return self.webhooks.handle(request)
        handler, allowed = self._handler(request)
        if handler is None and not allowed:
            path = request.path.rstrip("/")
            return _error(404, "OBJECT_NOT_FOUND", f"No API route for {request.method} {path}.")
        refused = self.oauth.refusal(request.bearer_token)
        if refused is not None:
            return refused
        is_search = request.method == "POST" and request.path.rstrip("/").endswith("/search")
        burst = (self.search_budget if is_search else self.ten_seconds).take()
        daily = self.daily.take() if burst.allowed else None
        headers = self._rate_headers(None if is_search else burst)
        if not burst.allowed:
            policy = "SECONDLY" if is_search else "TEN_SECONDLY_ROLLING"
            self._count_rate_limited(policy)
            return self._rate_limited(policy, burst, headers)
        if not daily.allowed:
            self._count_rate_limited("DAILY")
            return self._rate_limited("DAILY", daily, headers)
        response = self._call(request, handler) if handler else _not_allowed(request, allowed)
        response.headers.update(headers)
        return response

    # --- budgets and routing -----------------------------------------------------------------

    def _count_rate_limited(self, policy: str) -> None:
        with self._lock:
            self.rate_limited[policy] += 1

    def _rate_headers(self, burst: Verdict | None) -> dict[str, str]:
        headers = {
            "X-HubSpot-RateLimit-Daily": str(self.daily.limit),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(self.daily.limit - self.daily.used, 0)),
        }
        if burst is not None:
            headers.update(
                {
                    "X-HubSpot-RateLimit-Max": str(burst.limit),
                    "X-HubSpot-RateLimit-Remaining": str(burst.remaining),
                    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                }
            )
        return headers

    def _rate_limited(self, policy: str, verdict: Verdict, headers: dict[str, str]) -> Response:
        body = {
            "status": "error",
            "message": f"You have reached your {POLICY_TEXT[policy]} limit.",
            "errorType": "RATE_LIMIT",
            "correlationId": str(uuid.uuid4()),
            "policyName": policy,
            "groupName": f"publicapi:private-app:{self.settings.portal_id}",
            "category": "RATE_LIMITS",
        }
        if policy == "DAILY":  # a Retry-After until midnight would park urllib3's retries for hours
            return Response(429, body, headers)
        retry_after = str(max(1, math.ceil(verdict.retry_after_seconds)))
        return Response(429, body, {**headers, "Retry-After": retry_after})

    def _handler(
        self, request: Request
    ) -> tuple[Callable[[Request], Response] | None, list[str]]:
        """The route's handler bound to its match, or None and the methods the path allows."""
        path = request.path.rstrip("/")
        allowed = []
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match and method == request.method:
                return partial(handler, match=match), []
            if match:
                allowed.append(method)
        return None, allowed

    def _call(self, request: Request, handler: Callable[[Request], Response]) -> Response:
        try:
            return handler(request)
        except InvalidRequest as error:
            return _error(400, "VALIDATION_ERROR", str(error))
        except InvalidValues as error:
            return _error(
                400,
                "VALIDATION_ERROR",
                str(error),
                errors=[
                    {"message": message, "code": code, "context": {"propertyName": [name]}}
                    for name, code, message in error.problems
                ],
            )

    # --- reading -----------------------------------------------------------------------------

    def _list(self, request: Request, match: re.Match) -> Response:
        limit = _int_param(request, "limit", LIST_PAGE_DEFAULT, LIST_PAGE_MAX)
        after = request.param("after") or "0"
        if not CONTACT_ID.fullmatch(after):
            raise InvalidRequest(
                f"after must be a paging cursor from a previous page, not {after!r}."
            )
        names = self._requested(_list_param(request, "properties"))
        rows = self.table.select(
            where=f'"_archived" = ? AND "{ID_PROPERTY}" >= ?',
            params=[int(_bool_param(request, "archived")), int(after)],
            order_by=f'"{ID_PROPERTY}"',
            limit=limit + 1,
        )
        body: dict[str, Any] = {"results": [self._contact(row, names) for row in rows[:limit]]}
        if len(rows) > limit:
            next_after = str(rows[limit - 1][ID_PROPERTY] + 1)
            body["paging"] = {
                "next": {"after": next_after, "link": self._link(request, next_after)}
            }
        return Response(200, body)

    def _link(self, request: Request, after: str) -> str:
        query = [
            (name, value)
            for name, values in request.query.items()
            if name != "after"
            for value in values
        ]
        return f"{self.base_url}{request.path}?{urlencode([*query, ('after', after)])}"

    def _get(self, request: Request, match: re.Match) -> Response:
        row = self._find(
            unquote(match["id"]), request.param("idProperty"), _bool_param(request, "archived")
        )
        if row is None:
            return _error(404, "OBJECT_NOT_FOUND", "resource not found")
        names = self._requested(_list_param(request, "properties"))
        return Response(200, self._contact(row, names))

    def _search(self, request: Request, match: re.Match) -> Response:
        body = _json(request)
        query = compile_search(body, self.properties)
        names = self._requested(expect_strings(body.get("properties", []), "properties"))
        total = self.table.count(query.where, query.params)
        rows = self.table.select(
            where=query.where,
            params=query.params,
            order_by=query.order_by,
            limit=min(query.limit, RESULT_CAP - query.offset),
            offset=query.offset,
        )
        result: dict[str, Any] = {
            "total": total,
            "results": [self._contact(row, names) for row in rows],
        }
        end = query.offset + len(rows)
        if rows and end < total:
            result["paging"] = {"next": {"after": str(end)}}
        return Response(200, result)

    def _batch_read(self, request: Request, match: re.Match) -> Response:
        started = _now_iso()
        body, inputs = _batch(request, BATCH_READ_FIELDS, ("id",))
        if body.get("propertiesWithHistory"):
            raise InvalidRequest("propertiesWithHistory is not supported by the sandbox.")
        ids = [expect_string(item.get("id"), "inputs[].id") for item in inputs]
        names = self._requested(expect_strings(body.get("properties", []), "properties"))
        id_property = _optional_string(body.get("idProperty"), "idProperty")
        archived = _bool_param(request, "archived")
        results, failures = [], []
        for contact_id in dict.fromkeys(ids):
            row = self._find(contact_id, id_property, archived)
            if row is None:
                failures.append(Failure("OBJECT_NOT_FOUND", NOT_FOUND, contact_id))
            else:
                results.append(self._contact(row, names))
        return _batch_response(200, started, results, failures)

    # --- writing -----------------------------------------------------------------------------

    def _update(self, request: Request, match: re.Match) -> Response:
        body = expect_known_fields(_json(request), ("properties",), "SimplePublicObjectInput")
        values = schema.storage_values(body.get("properties"), self.properties)
        changes: list[webhooks.ContactChange] = []
        with self.db.transaction() as connection:
            row = self._find(unquote(match["id"]), request.param("idProperty"), False)
            if row is None:
                return _error(404, "OBJECT_NOT_FOUND", "resource not found")
            if self.faults.write_fails(str(row[ID_PROPERTY])):
                return _error(409, "CONFLICT", WRITE_FAULT)
            updated = self._write(connection, row, values, changes)
        self.webhooks.publish(changes, self._integration)
        return Response(200, self._contact(updated, self._written(values)))

    def _create(self, request: Request, match: re.Match) -> Response:
        body = _no_associations(
            expect_known_fields(
                _json(request), ("properties", "associations"), "SimplePublicObjectInputForCreate"
            )
        )
        values = schema.storage_values(body.get("properties"), self.properties)
        changes: list[webhooks.ContactChange] = []
        with self.db.transaction() as connection:
            if self.faults.write_fails():
                return _error(409, "CONFLICT", WRITE_FAULT)
            created = self._insert(connection, values, changes)
        self.webhooks.publish(changes, self._integration)
        return Response(201, self._contact(created, self._written(values)))

    def _archive(self, request: Request, match: re.Match) -> Response:
        """HubSpot answers 204 whether or not the contact existed."""
        changes: list[webhooks.ContactChange] = []
        with self.db.transaction() as connection:
            row = self._find(unquote(match["id"]), None, False)
            if row is not None:
                self._archive_row(connection, row, changes)
        self.webhooks.publish(changes, self._integration)
        return Response(204)

    def _batch_update(self, request: Request, match: re.Match) -> Response:
        started = _now_iso()
        _, inputs = _batch(request, ("inputs",), BATCH_UPDATE_INPUT_FIELDS)
        items = [
            (
                expect_string(item.get("id"), "inputs[].id"),
                item.get("properties"),
                _optional_string(item.get("idProperty"), "inputs[].idProperty"),
            )
            for item in inputs
        ]
        keys = [key for key, _, _ in items]
        duplicates = sorted({key for key in keys if keys.count(key) > 1})
        if duplicates:
            raise InvalidRequest(
                f"Duplicate IDs found in batch input: {duplicates}. IDs must be unique"
            )
        results, failures = [], []
        changes: list[webhooks.ContactChange] = []
        with self.db.transaction() as connection:
            for contact_id, properties, id_property in items:
                try:
                    values = schema.storage_values(properties, self.properties)
                except InvalidValues as error:
                    failures.append(Failure("VALIDATION_ERROR", str(error), contact_id))
                    continue
                row = self._find(contact_id, id_property, False)
                if row is None:
                    failures.append(Failure("OBJECT_NOT_FOUND", NOT_FOUND, contact_id))
                elif self.faults.write_fails(str(row[ID_PROPERTY])):
                    failures.append(Failure("CONFLICT", WRITE_FAULT, contact_id))
                else:
                    updated = self._write(connection, row, values, changes)
                    results.append(self._contact(updated, self._written(values)))
        self.webhooks.publish(changes, self._integration)
        return _batch_response(200, started, results, failures)

    def _batch_create(self, request: Request, match: re.Match) -> Response:
        started = _now_iso()
        _, inputs = _batch(request, ("inputs",), CREATE_FIELDS)
        results, failures = [], []
        changes: list[webhooks.ContactChange] = []
        with self.db.transaction() as connection:
            for item in inputs:
                _no_associations(item)
                try:
                    values = schema.storage_values(item.get("properties"), self.properties)
                except InvalidValues as error:
                    failures.append(Failure("VALIDATION_ERROR", str(error)))
                    continue
                if self.faults.write_fails():
                    failures.append(Failure("CONFLICT", WRITE_FAULT))
                    continue
                created = self._insert(connection, values, changes)
                results.append(self._contact(created, self._written(values)))
        self.webhooks.publish(changes, self._integration)
        return _batch_response(201, started, results, failures)

    def _write(
        self,
        connection: sqlite3.Connection,
        row: dict[str, Any],
        values: dict[str, Any],
        changes: list[webhooks.ContactChange],
    ) -> dict[str, Any]:
        """Every write of a contact goes through here, `_insert` or `_archive_row`, each adding
        what it changed to `changes`, for webhooks once the transaction commits."""
        contact_id, stamp = row[ID_PROPERTY], self._next_stamp()
        self.table.update(connection, contact_id, {**values, MODIFIED: stamp})
        updated = self.table.get(contact_id, connection)
        changes.append(webhooks.ContactChange(contact_id, row, updated, stamp))
        return updated

    def _archive_row(
        self,
        connection: sqlite3.Connection,
        row: dict[str, Any],
        changes: list[webhooks.ContactChange],
    ) -> None:
        contact_id, stamp = row[ID_PROPERTY], self._next_stamp()
        archived = {"_archived": 1, "_archived_at": stamp, MODIFIED: stamp}
        self.table.update(connection, contact_id, archived)
        changes.append(webhooks.ContactChange(contact_id, row, {**row, **archived}, stamp, True))

    def _insert(
        self,
        connection: sqlite3.Connection,
        values: dict[str, Any],
        changes: list[webhooks.ContactChange],
    ) -> dict[str, Any]:
        contact_id = connection.execute(
            f'SELECT COALESCE(MAX("{ID_PROPERTY}"), 0) + 1 FROM contacts'
        ).fetchone()[0]
        stamp = self._next_stamp()
        self.table.insert(
            connection,
            {**values, ID_PROPERTY: contact_id, CREATED: stamp, MODIFIED: stamp, "_archived": 0},
        )
        created = self.table.get(contact_id, connection)
        changes.append(webhooks.ContactChange(contact_id, None, created, stamp))
        return created

    def _next_stamp(self) -> int:
        """Epoch milliseconds for a write: now, never before an earlier write (ties are common)."""
        with self._lock:
            self._last_stamp = max(time.time_ns() // 1_000_000, self._last_stamp)
            return self._last_stamp

    # --- properties API ----------------------------------------------------------------------

    def _list_properties(self, request: Request, match: re.Match) -> Response:
        _object_type(match)
        archived = _bool_param(request, "archived")
        return Response(200, {"results": [] if archived else list(self.properties.values())})

    def _get_property(self, request: Request, match: re.Match) -> Response:
        _object_type(match)
        name = unquote(match["name"])
        if name not in self.properties or _bool_param(request, "archived"):
            return _error(
                404, "OBJECT_NOT_FOUND", f"Unable to find property {name} on object type contacts"
            )
        return Response(200, self.properties[name])

    def _create_property(self, request: Request, match: re.Match) -> Response:
        _object_type(match)
        definition = schema.created_definition(
            expect_object(_json(request), "the request body"), schema.iso_millis(self._next_stamp())
        )
        name = definition["name"]
        with self._lock:
            if name in self.properties:
                return _error(
                    409, "OBJECT_ALREADY_EXISTS", f"A property named '{name}' already exists."
                )
            self._save_property(definition, len(self.properties))
            self.table.add_column(name, schema.sql_type(definition))
            self.properties = {**self.properties, name: definition}
        location = f"{self.base_url}/crm/v3/properties/contacts/{name}"
        return Response(201, definition, {"Location": location})

    def _update_property(self, request: Request, match: re.Match) -> Response:
        _object_type(match)
        name = unquote(match["name"])
        body = expect_object(_json(request), "the request body")
        stamp = schema.iso_millis(self._next_stamp())
        with self._lock:
            if name not in self.properties:
                return _error(
                    404,
                    "OBJECT_NOT_FOUND",
                    f"Unable to find property {name} on object type contacts",
                )
            definition = schema.updated_definition(self.properties[name], body, stamp)
            with self.db.transaction() as connection:
                self._definitions.update(
                    connection, name, {"definition": json.dumps(definition)}
                )
            self.properties = {**self.properties, name: definition}
        return Response(200, definition)

    # --- what clients ask first (sandbox/hubspot/discovery.py) --------------------------------

    def _legacy_properties(self, request: Request, match: re.Match) -> Response:
        return Response(200, [discovery.legacy_property(d) for d in self.properties.values()])

    def _schemas(self, request: Request, match: re.Match) -> Response:
        return Response(200, discovery.no_custom_schemas())

    def _associations(self, request: Request, match: re.Match) -> Response:
        started = _now_iso()
        return Response(200, discovery.no_associations(_json(request), started, _now_iso()))

    def _load_properties(self) -> dict[str, dict[str, Any]]:
        if self._definitions.count() == 0:
            custom = schema.custom_definitions() if self.settings.create_custom_properties else []
            for position, definition in enumerate([*schema.standard_definitions(), *custom]):
                self._save_property(definition, position)
        rows = self._definitions.select(order_by='"position"')
        return {row["name"]: json.loads(row["definition"]) for row in rows}

    def _save_property(self, definition: dict[str, Any], position: int) -> None:
        with self.db.transaction() as connection:
            self._definitions.insert(
                connection,
                {
                    "name": definition["name"],
                    "position": position,
                    "definition": json.dumps(definition),
                },
            )

    # --- records -----------------------------------------------------------------------------

    def _find(self, key: str, id_property: str | None, archived: bool) -> dict[str, Any] | None:
        """The contact `key` identifies (its id, or a unique value of `id_property`)."""
        if id_property in (None, "", ID_PROPERTY):
            row = self.table.get(key) if CONTACT_ID.fullmatch(key) else None
        else:
            if id_property not in self.properties:
                raise InvalidRequest(f"idProperty {id_property!r} is not a contact property.")
            rows = self.table.select(
                where=f'lower("{id_property}") = lower(?) AND "_archived" = ?',
                params=[key, int(archived)],
                order_by=f'"{ID_PROPERTY}"',
                limit=1,
            )
            row = rows[0] if rows else None
        return row if row is not None and bool(row["_archived"]) == archived else None

    def _contact(self, row: dict[str, Any], names: Iterable[str]) -> dict[str, Any]:
        contact = {
            "id": str(row[ID_PROPERTY]),
            "properties": {
                name: schema.render(self.properties[name], row.get(name)) for name in names
            },
            "createdAt": schema.iso_millis(row[CREATED]),
            "updatedAt": schema.iso_millis(row[MODIFIED]),
            "archived": bool(row["_archived"]),
        }
        if row["_archived"]:
            contact["archivedAt"] = schema.iso_millis(row["_archived_at"])
        return contact

    def _requested(self, names: list[str]) -> list[str]:
        """The properties a read returns: those asked for that exist, or HubSpot's default set."""
        if not names:
            return list(schema.DEFAULT_PROPERTIES)
        known = [name for name in names if name in self.properties]
        return list(dict.fromkeys([*known, *ALWAYS_RETURNED]))

    def _written(self, values: dict[str, Any]) -> list[str]:
        return list(dict.fromkeys([*schema.DEFAULT_PROPERTIES, *values]))

    def _max_id(self) -> int:
        return self.db.execute(f'SELECT COALESCE(MAX("{ID_PROPERTY}"), 0) FROM contacts')[0][0]

    def _latest_stamp(self) -> int:
        return self.db.execute(f'SELECT COALESCE(MAX("{MODIFIED}"), 0) FROM contacts')[0][0]


def _error(status: int, category: str, message: str, **extra: Any) -> Response:
    return Response(
        status,
        {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
            **extra,
        },
    )


def _person(user_id: int) -> webhooks.ChangeSource:
    return webhooks.ChangeSource("CRM_UI", f"userId:{user_id}")


def _not_allowed(request: Request, allowed: list[str]) -> Response:
    response = _error(
        405, "VALIDATION_ERROR", f"{request.method} is not allowed here; use {', '.join(allowed)}."
    )
    response.headers["Allow"] = ", ".join(allowed)
    return response


def _batch_response(
    status: int, started: str, results: list[dict[str, Any]], failures: list[Failure]
) -> Response:
    body: dict[str, Any] = {
        "status": "COMPLETE",
        "results": results,
        "startedAt": started,
        "completedAt": _now_iso(),
    }
    if not failures:
        return Response(status, body)
    grouped: dict[tuple[str, str], list[str | None]] = {}
    for failure in failures:
        grouped.setdefault((failure.category, failure.message), []).append(failure.contact_id)
    errors = [
        {
            "status": "error",
            "category": category,
            "message": message,
            "context": {"ids": [i for i in ids if i is not None]} if any(ids) else {},
            "errors": [],
            "links": {},
        }
        for (category, message), ids in grouped.items()
    ]
    return Response(207, {**body, "numErrors": len(errors), "errors": errors})


def _batch(
    request: Request, fields: tuple[str, ...], input_fields: tuple[str, ...]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A batch body with only `fields`, and its inputs, each with only `input_fields`."""
    body = expect_known_fields(_json(request), fields, "the request body")
    inputs = [
        expect_known_fields(item, input_fields, "inputs[]")
        for item in expect_list(body.get("inputs"), "inputs")
    ]
    if len(inputs) > BATCH_LIMIT:
        raise InvalidRequest(
            f"Batch input limit exceeded: {len(inputs)} inputs, at most {BATCH_LIMIT} are allowed."
        )
    return body, inputs


def _no_associations(item: dict[str, Any]) -> dict[str, Any]:
    """A create input: the sandbox holds no other objects, so it can take no associations."""
    if expect_list(item.get("associations", []), "associations"):
        raise InvalidRequest("The sandbox holds no objects to associate a contact with.")
    return item


def _json(request: Request) -> Any:
    try:
        return request.json()
    except ValueError as error:
        raise InvalidRequest(f"Invalid input JSON: {error}") from None


def _object_type(match: re.Match) -> None:
    object_type = unquote(match["type"])
    if object_type not in OBJECT_TYPES:
        raise InvalidRequest(f"Unable to infer object type from: {object_type}")


def _optional_string(value: Any, where: str) -> str | None:
    return None if value is None else expect_string(value, where)


def _bool_param(request: Request, name: str) -> bool:
    text = (request.param(name) or "false").lower()
    if text not in ("true", "false"):
        raise InvalidRequest(f"{name} must be true or false, not {text!r}.")
    return text == "true"


def _int_param(request: Request, name: str, default: int, maximum: int) -> int:
    text = request.param(name)
    if text is None:
        return default
    if not re.fullmatch(r"\d{1,9}", text) or not 1 <= int(text) <= maximum:
        raise InvalidRequest(f"{name} must be an integer from 1 to {maximum}, not {text!r}.")
    return int(text)


def _list_param(request: Request, name: str) -> list[str]:
    """A list query parameter, repeated (`a=1&a=2`) or comma-separated (`a=1,2`)."""
    return [item for value in request.query.get(name, []) for item in value.split(",") if item]


def _now_iso() -> str:
    return schema.iso_millis(time.time_ns() // 1_000_000)
