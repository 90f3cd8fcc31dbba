"""HubSpot's Webhooks API v3 for the sandbox's app, and the events its contact changes make.

Routes (`/webhooks/v3/{appId}/...`, authenticated as HubSpot documents them: the developer API
key in the `hapikey` query parameter; they spend no portal budget): `settings` GET / PUT /
DELETE (target URL and throttling); `subscriptions` GET / POST, `subscriptions/{id}` GET /
PATCH / DELETE and `subscriptions/batch/update`. The sandbox holds contacts only, so it takes
the `contact.creation`, `contact.propertyChange` (one subscription per property) and
`contact.deletion` types. New subscriptions are paused unless created `active`, as in HubSpot.

Every committed contact change (`publish`) makes one event per active subscription it concerns:
a creation, a deletion, a change of a subscribed property's value. A write with one of the app's
tokens is `changeSource: "INTEGRATION"` with the app's id as `sourceId`; an edit in the UI
(`HubSpotApi.edit_as_person`) is `"CRM_UI"` with `"userId:<n>"`. Settings and subscriptions are
kept with the contacts (across restarts, for a sandbox in a data directory); events waiting for
delivery are not.
"""

from __future__ import annotations

import hmac
import itertools
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlsplit

from sandbox.http import Request, Response
from sandbox.hubspot.delivery import Delivery, Target
from sandbox.hubspot.schema import (
    InvalidRequest,
    expect_known_fields,
    expect_list,
    expect_object,
    expect_string,
    iso_millis,
    render,
)
from sandbox.store import Database, Table

PREFIX = "/webhooks/v3/"
APP = r"/webhooks/v3/(?P<app>[^/]+)"
SUBSCRIPTION = APP + r"/subscriptions/(?P<id>[^/]+)"
CREATION, PROPERTY_CHANGE, DELETION = (
    "contact.creation",
    "contact.propertyChange",
    "contact.deletion",
)
EVENT_TYPES = (CREATION, PROPERTY_CHANGE, DELETION)
CONTACT_OBJECT_TYPE = "0-1"
MIN_CONCURRENT_REQUESTS = 5
THROTTLING_PERIODS = ("SECONDLY", "ROLLING_MINUTE")


@dataclass(frozen=True)
class WebhookApp:
    """What HubSpot holds of the app that receives the portal's webhooks."""

    app_id: int
    developer_api_key: str
    client_secret: str
    portal_id: int
    retry_scale: float = 1.0  # HubSpot's retry schedule (24 hours) times this
    timeout_seconds: float = 5.0  # HubSpot's: 5


@dataclass(frozen=True)
class ChangeSource:
    """Who made a change, as events name it."""

    change_source: str
    source_id: str


@dataclass(frozen=True)
class ContactChange:
    """One committed change of a contact: its stored row before (None: it was created) and
    after, and whether the change archived it."""

    contact_id: int
    before: Mapping[str, Any] | None
    after: Mapping[str, Any]
    occurred_at: int  # epoch milliseconds
    deleted: bool = False


@dataclass(frozen=True)
class Subscription:
    id: int
    event_type: str
    property_name: str | None
    active: bool
    created_at: int
    updated_at: int

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "id": str(self.id),
            "eventType": self.event_type,
            "active": self.active,
            "createdAt": iso_millis(self.created_at),
            "updatedAt": iso_millis(self.updated_at),
        }
        if self.property_name is not None:
            body["propertyName"] = self.property_name
        return body


Handler = Callable[[Request, re.Match], Response]


class Webhooks:
    """The app's webhook settings and subscriptions, and the events they make."""

    def __init__(
        self,
        app: WebhookApp,
        properties: Callable[[], Mapping[str, Mapping[str, Any]]],
        db: Database,
    ):
        self.app, self._properties, self._db = app, properties, db
        self._state = Table(db, "webhook_state", "name", {"name": "TEXT", "value": "TEXT"})
        self._settings, self._subscriptions = self._load()
        self._lock = threading.Lock()
        self._subscription_ids = itertools.count(max(self._subscriptions, default=1_000_000) + 1)
        self._event_ids = itertools.count(_millis() * 1000)  # unique across restarts
        self.delivery = Delivery(
            app.client_secret, self.target, app.retry_scale, app.timeout_seconds, app.app_id
        )
        self._routes: list[tuple[str, re.Pattern, Handler]] = [
            ("GET", re.compile(APP + "/settings"), self._get_settings),
            ("PUT", re.compile(APP + "/settings"), self._put_settings),
            ("DELETE", re.compile(APP + "/settings"), self._clear_settings),
            ("GET", re.compile(APP + "/subscriptions"), self._list),
            ("POST", re.compile(APP + "/subscriptions"), self._create),
            ("POST", re.compile(APP + "/subscriptions/batch/update"), self._batch_update),
            ("GET", re.compile(SUBSCRIPTION), self._get),
            ("PATCH", re.compile(SUBSCRIPTION), self._patch),
            ("DELETE", re.compile(SUBSCRIPTION), self._delete),
        ]

    # --- the sandbox's interface -------------------------------------------------------------

    def target(self) -> Target | None:
        with self._lock:
            settings = self._settings
        if settings is None:
            return None
        limit = settings["throttling"]["maxConcurrentRequests"]
        return Target(settings["targetUrl"], limit)

    def publish(self, changes: Sequence[ContactChange], source: ChangeSource) -> None:
        """Events for committed `changes`, queued for delivery (none without a target URL)."""
        with self._lock:
            active = [s for s in self._subscriptions.values() if s.active]
        if not changes or not active or self.target() is None:
            return
        properties = self._properties()
        events = [
            event
            for change in changes
            for event in self._events(change, active, source, properties)
        ]
        if events:
            self.delivery.enqueue(events)

    # --- routing -----------------------------------------------------------------------------

    def handle(self, request: Request) -> Response:
        path = request.path.rstrip("/")
        allowed = []
        for method, pattern, handler in self._routes:
            match = pattern.fullmatch(path)
            if match and method == request.method:
                return self._call(request, match, handler)
            if match:
                allowed.append(method)
        if allowed:
            return _error(405, "VALIDATION_ERROR", f"{request.method} is not allowed here.")
        return _error(404, "OBJECT_NOT_FOUND", f"No API route for {request.method} {path}.")

    def _call(self, request: Request, match: re.Match, handler: Handler) -> Response:
        if not _same(request.param("hapikey"), self.app.developer_api_key):
            return _error(
                401,
                "INVALID_AUTHENTICATION",
                "The API key provided is invalid. View or manage your API key here: "
                "https://app.hubspot.com/l/api-key/",
            )
        if match["app"] != str(self.app.app_id):
            return _error(404, "OBJECT_NOT_FOUND", f"App {match['app']} was not found.")
        try:
            return handler(request, match)
        except InvalidRequest as error:
            return _error(400, "VALIDATION_ERROR", str(error))

    # --- settings ----------------------------------------------------------------------------

    def _get_settings(self, request: Request, match: re.Match) -> Response:
        with self._lock:
            settings = self._settings
        if settings is None:
            return _error(404, "OBJECT_NOT_FOUND", "No webhook settings for this app.")
        return Response(200, settings)

    def _put_settings(self, request: Request, match: re.Match) -> Response:
        body = expect_known_fields(
            _json(request), ("targetUrl", "throttling"), "SettingsChangeRequest"
        )
        target_url = _target_url(body.get("targetUrl"))
        throttling = _throttling(body.get("throttling"))
        now = _millis()
        with self._lock:
            created = self._settings["createdAt"] if self._settings else iso_millis(now)
            self._settings = {
                "targetUrl": target_url,
                "throttling": throttling,
                "createdAt": created,
                "updatedAt": iso_millis(now),
            }
            settings = self._settings
            self._save()
        self.delivery.enqueue([])  # wakes deliveries waiting for a target or a free slot
        return Response(200, settings)

    def _clear_settings(self, request: Request, match: re.Match) -> Response:
        with self._lock:
            self._settings = None
            self._save()
        return Response(204)

    # --- subscriptions -----------------------------------------------------------------------

    def _list(self, request: Request, match: re.Match) -> Response:
        with self._lock:
            subscriptions = list(self._subscriptions.values())
        return Response(200, {"results": [s.body() for s in subscriptions]})

    def _create(self, request: Request, match: re.Match) -> Response:
        body = expect_known_fields(
            _json(request),
            ("eventType", "propertyName", "active", "objectTypeId"),
            "SubscriptionCreateRequest",
        )
        event_type, property_name = self._subscribed_to(body)
        active = _optional_bool(body.get("active"), "active")
        now = _millis()
        with self._lock:
            if any(
                (s.event_type, s.property_name) == (event_type, property_name)
                for s in self._subscriptions.values()
            ):
                subscribed = " ".join(filter(None, (event_type, property_name)))
                return _error(409, "CONFLICT", f"A subscription for {subscribed} already exists.")
            subscription = Subscription(
                next(self._subscription_ids), event_type, property_name, active, now, now
            )
            self._subscriptions[subscription.id] = subscription
            self._save()
        return Response(201, subscription.body())

    def _subscribed_to(self, body: dict[str, Any]) -> tuple[str, str | None]:
        event_type = expect_string(body.get("eventType"), "eventType")
        if event_type not in EVENT_TYPES:
            raise InvalidRequest(
                f"eventType {event_type!r} is not one the sandbox can send; it holds contacts "
                f"only: {', '.join(EVENT_TYPES)}."
            )
        object_type = body.get("objectTypeId", CONTACT_OBJECT_TYPE)
        if object_type != CONTACT_OBJECT_TYPE:
            raise InvalidRequest(f"objectTypeId {object_type!r} does not match {event_type}.")
        property_name = body.get("propertyName")
        if event_type != PROPERTY_CHANGE:
            if property_name is not None:
                raise InvalidRequest(f"propertyName is only for {PROPERTY_CHANGE} subscriptions.")
            return event_type, None
        property_name = expect_string(property_name, "propertyName")
        if property_name not in self._properties():
            raise InvalidRequest(f"propertyName {property_name!r} is not a contact property.")
        return event_type, property_name

    def _get(self, request: Request, match: re.Match) -> Response:
        subscription = self._find(match["id"])
        if subscription is None:
            return _not_found(match["id"])
        return Response(200, subscription.body())

    def _patch(self, request: Request, match: re.Match) -> Response:
        body = expect_known_fields(_json(request), ("active",), "SubscriptionPatchRequest")
        active = _optional_bool(body.get("active"), "active")
        updated = self._set_active({match["id"]: active})
        if not updated:
            return _not_found(match["id"])
        return Response(200, updated[0].body())

    def _delete(self, request: Request, match: re.Match) -> Response:
        with self._lock:
            removed = self._subscriptions.pop(_subscription_id(match["id"]), None)
            self._save()
        return Response(204) if removed else _not_found(match["id"])

    def _batch_update(self, request: Request, match: re.Match) -> Response:
        started = iso_millis(_millis())
        body = expect_known_fields(
            _json(request), ("inputs",), "BatchInputSubscriptionBatchUpdateRequest"
        )
        inputs = [
            expect_known_fields(item, ("id", "active"), "inputs[]")
            for item in expect_list(body.get("inputs"), "inputs")
        ]
        wanted = {
            str(_integer(item.get("id"), "inputs[].id")): _optional_bool(
                item.get("active"), "inputs[].active"
            )
            for item in inputs
        }
        missing = [key for key in wanted if self._find(key) is None]
        if missing:
            raise InvalidRequest(f"Subscriptions {', '.join(missing)} were not found.")
        updated = self._set_active(wanted)
        return Response(
            200,
            {
                "status": "COMPLETE",
                "results": [s.body() for s in updated],
                "startedAt": started,
                "completedAt": iso_millis(_millis()),
            },
        )

    def _find(self, key: str) -> Subscription | None:
        with self._lock:
            return self._subscriptions.get(_subscription_id(key))

    def _set_active(self, wanted: Mapping[str, bool]) -> list[Subscription]:
        now = _millis()
        updated = []
        with self._lock:
            for key, active in wanted.items():
                current = self._subscriptions.get(_subscription_id(key))
                if current is None:
                    continue
                changed = Subscription(
                    current.id,
                    current.event_type,
                    current.property_name,
                    active,
                    current.created_at,
                    now,
                )
                self._subscriptions[current.id] = changed
                updated.append(changed)
            self._save()
        return updated

    # --- storage -----------------------------------------------------------------------------

    def _load(self) -> tuple[dict[str, Any] | None, dict[int, Subscription]]:
        row = self._state.get("state")
        state = json.loads(row["value"]) if row else {"settings": None, "subscriptions": []}
        subscriptions = [Subscription(**fields) for fields in state["subscriptions"]]
        return state["settings"], {s.id: s for s in subscriptions}

    def _save(self) -> None:
        """Holding the lock: settings and subscriptions as they are now."""
        state = {
            "settings": self._settings,
            "subscriptions": [asdict(s) for s in self._subscriptions.values()],
        }
        value = json.dumps(state)
        with self._db.transaction() as connection:
            if not self._state.update(connection, "state", {"value": value}):
                self._state.insert(connection, {"name": "state", "value": value})

    # --- events ------------------------------------------------------------------------------

    def _events(
        self,
        change: ContactChange,
        subscriptions: Sequence[Subscription],
        source: ChangeSource,
        properties: Mapping[str, Mapping[str, Any]],
    ) -> list[dict[str, Any]]:
        events = []
        for subscription in subscriptions:
            if subscription.event_type == CREATION and change.before is None:
                events.append(self._event(subscription, change, source, changeFlag="CREATED"))
            elif subscription.event_type == DELETION and change.deleted:
                events.append(self._event(subscription, change, source, changeFlag="DELETED"))
            elif subscription.event_type == PROPERTY_CHANGE and not change.deleted:
                name = subscription.property_name
                definition = properties.get(name)
                if definition is None:
                    continue
                old = render(definition, change.before.get(name)) if change.before else None
                new = render(definition, change.after.get(name))
                if old != new:
                    events.append(
                        self._event(
                            subscription,
                            change,
                            source,
                            propertyName=name,
                            propertyValue=new if new is not None else "",
                        )
                    )
        return events

    def _event(
        self,
        subscription: Subscription,
        change: ContactChange,
        source: ChangeSource,
        **specific: Any,
    ) -> dict[str, Any]:
        return {
            "eventId": next(self._event_ids),
            "subscriptionId": subscription.id,
            "portalId": self.app.portal_id,
            "appId": self.app.app_id,
            "occurredAt": change.occurred_at,
            "subscriptionType": subscription.event_type,
            "attemptNumber": 0,
            "objectId": change.contact_id,
            **specific,
            "changeSource": source.change_source,
            "sourceId": source.source_id,
        }


def _target_url(value: Any) -> str:
    url = expect_string(value, "targetUrl")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidRequest(f"targetUrl must be an absolute http(s) URL, not {url!r}.")
    return url


def _throttling(value: Any) -> dict[str, Any]:
    throttling = expect_known_fields(
        expect_object(value, "throttling"), ("maxConcurrentRequests", "period"), "throttling"
    )
    limit = _integer(throttling.get("maxConcurrentRequests"), "throttling.maxConcurrentRequests")
    if limit < MIN_CONCURRENT_REQUESTS:
        raise InvalidRequest(
            f"throttling.maxConcurrentRequests must be at least {MIN_CONCURRENT_REQUESTS}."
        )
    period = throttling.get("period")
    if period is not None and period not in THROTTLING_PERIODS:
        raise InvalidRequest(f"throttling.period must be one of {', '.join(THROTTLING_PERIODS)}.")
    return {"maxConcurrentRequests": limit, **({"period": period} if period else {})}


def _integer(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"Invalid input JSON: {where} must be an integer")
    return value


def _optional_bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise InvalidRequest(f"Invalid input JSON: {where} must be true or false")
    return value


def _subscription_id(key: str) -> int:
    return int(key) if key.isdigit() else -1


def _not_found(key: str) -> Response:
    return _error(404, "OBJECT_NOT_FOUND", f"Subscription {key} was not found.")


def _json(request: Request) -> Any:
    try:
        return request.json()
    except ValueError as error:
        raise InvalidRequest(f"Invalid input JSON: {error}") from None


def _same(given: str | None, expected: str) -> bool:
    if not expected or given is None:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _millis() -> int:
    return time.time_ns() // 1_000_000


def _error(status: int, category: str, message: str) -> Response:
    return Response(
        status,
        {
            "status": "error",
            "message": message,
            "correlationId": str(uuid.uuid4()),
            "category": category,
        },
    )
