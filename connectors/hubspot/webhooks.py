"""HubSpot webhooks as the app receives them, and the subscriptions that make HubSpot send them.

`webhook_app` is an ASGI app (Starlette) for the app's target URL. It accepts a delivery only
with a valid `X-HubSpot-Signature-v3` (HMAC-SHA256 of method, URI, body and timestamp with the
app's client secret) and a timestamp at most `max_age_seconds` old; anything else gets 401 and a
log line saying why. It answers a valid delivery at once and hands its events to the sink from a
thread of its own, so a slow sink never makes HubSpot time out and deliver again. HubSpot
delivers at least once: an event seen before (by eventId, among the most recent ones) is dropped.

`subscribe` points the app at a target URL and subscribes it, through hubspot-api-client, to
contact creations, deletions and changes of the properties leadsync reads.
"""

from __future__ import annotations

import hmac
import json
import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
from hubspot import HubSpot
from hubspot.utils.signature import Signature
from hubspot.webhooks import (
    SettingsChangeRequest,
    SubscriptionCreateRequest,
    SubscriptionPatchRequest,
    SubscriptionResponse,
    ThrottlingSettings,
)
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from connectors.credentials import sandbox_info
from connectors.events import ChangeKind, EventSink, LeadEvent
from connectors.mapping import FieldMapping

KINDS: dict[str, ChangeKind] = {
    "contact.creation": "created",
    "contact.propertyChange": "changed",
    "contact.deletion": "deleted",
}
INTEGRATION = "INTEGRATION"
SIGNATURE_HEADER, TIMESTAMP_HEADER = "X-HubSpot-Signature-v3", "X-HubSpot-Request-Timestamp"
REMEMBERED_EVENTS = 100_000
# Read properties not worth a subscription: the id and creation date never change, and the
# modification date changes with every write, leadsync's own too (each would look like a
# change by someone else).
UNSUBSCRIBED = {"hs_object_id", "createdate", "lastmodifieddate"}
HUBSPOT_API = "https://api.hubapi.com"
log = logging.getLogger(__name__)


class RecentIds:
    """The last `capacity` ids seen; `first_time` tells whether an id is new (and remembers it)."""

    def __init__(self, capacity: int = REMEMBERED_EVENTS):
        self._capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._lock = threading.Lock()

    def first_time(self, key: str) -> bool:
        with self._lock:
            if key in self._seen:
                self._seen.move_to_end(key)
                return False
            self._seen[key] = None
            if len(self._seen) > self._capacity:
                self._seen.popitem(last=False)
            return True


def lead_event(payload: dict[str, Any], app_id: str, write_properties: set[str]) -> LeadEvent:
    """A HubSpot contact event as a LeadEvent; `echo` when leadsync's own app wrote one of the
    properties it writes."""
    echo = (
        payload.get("changeSource") == INTEGRATION
        and str(payload.get("sourceId")) == app_id
        and payload.get("propertyName") in write_properties
    )
    return LeadEvent(
        source="hubspot",
        crm_id=str(payload["objectId"]),
        kind=KINDS[payload["subscriptionType"]],
        occurred_at=pd.Timestamp(int(payload["occurredAt"]), unit="ms", tz="UTC"),
        event_id=str(payload["eventId"]),
        echo=echo,
    )


def refusal(
    request_uri: str,
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    client_secret: str,
    max_age_seconds: int,
) -> str | None:
    """Why a delivery is not HubSpot's (None when it is): the v3 signature, checked with
    hubspot-api-client's own `Signature`, compared in constant time."""
    if not signature or not timestamp:
        return "unsigned: no X-HubSpot-Signature-v3 or X-HubSpot-Request-Timestamp header"
    if not timestamp.isdigit():
        return "the timestamp is not epoch milliseconds"
    age = time.time() - int(timestamp) / 1000
    if age > max_age_seconds:
        return f"stale: signed {age:.0f} s ago, more than {max_age_seconds} s"
    if age < -max_age_seconds:
        return "the timestamp is in the future"
    expected = Signature.get_signature(
        client_secret, body.decode("utf-8", "replace"), "v3", request_uri, "POST", timestamp
    )
    if not hmac.compare_digest(expected.encode(), signature.encode()):
        return "the signature does not match"
    return None


class _Handoff:
    """Batches of events taken from deliveries, handed to the sink in order by one thread."""

    def __init__(self, sink: EventSink):
        self._sink = sink
        self._batches: queue.Queue[list[LeadEvent] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def put(self, events: list[LeadEvent]) -> None:
        """Called from the event loop only; the first batch starts the thread (an app mounted in
        another gets no lifespan events of its own)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="hubspot-webhook-sink", daemon=True
            )
            self._thread.start()
        self._batches.put(events)

    def stop(self) -> None:
        self._batches.put(None)
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while (events := self._batches.get()) is not None:
            try:
                self._sink(events)
            except Exception:  # noqa: BLE001 - one failed batch must not stop the receiver
                log.exception(
                    "The event sink failed on %d HubSpot events; the next sync reads them",
                    len(events),
                )


def webhook_app(
    client_secret: str,
    app_id: str,
    write_properties: set[str],
    sink: EventSink,
    target_url: str | None = None,
    max_age_seconds: int = 300,
) -> Starlette:
    """The ASGI app for the HubSpot app's target URL. `target_url`: the URL HubSpot posts to
    (it signs that URI; give it when a proxy stands in front), else the request's own URL."""
    app_id = str(app_id)
    handoff = _Handoff(sink)
    recent = RecentIds()

    async def receive(request: Request) -> Response:
        body = await request.body()
        reason = refusal(
            target_url or str(request.url),
            body,
            request.headers.get(SIGNATURE_HEADER),
            request.headers.get(TIMESTAMP_HEADER),
            client_secret,
            max_age_seconds,
        )
        if reason is not None:
            log.warning("Refused a HubSpot webhook delivery from %s: %s", _peer(request), reason)
            return Response(status_code=401)
        try:
            payloads = _payloads(body)
        except ValueError as error:
            log.warning("Refused a signed HubSpot webhook delivery: %s", error)
            return Response(status_code=400)
        events = [
            lead_event(payload, app_id, write_properties)
            for payload in payloads
            if payload.get("subscriptionType") in KINDS
            and recent.first_time(str(payload.get("eventId")))
        ]
        if events:
            handoff.put(events)
        return Response(status_code=200)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            handoff.stop()  # the events taken so far reach the sink first

    path = (urlsplit(target_url).path or "/") if target_url else "/"
    return Starlette(routes=[Route(path, receive, methods=["POST"])], lifespan=lifespan)


def _payloads(body: bytes) -> list[dict[str, Any]]:
    payloads = json.loads(body)
    if not isinstance(payloads, list) or not all(
        isinstance(p, dict) and {"eventId", "objectId", "occurredAt"} <= p.keys() for p in payloads
    ):
        raise ValueError("the body is not a JSON array of events")
    return payloads


def _peer(request: Request) -> str:
    return request.client.host if request.client else "an unknown peer"


def subscribed_properties(mapping: FieldMapping) -> list[str]:
    """The properties whose changes leadsync wants to hear of: those it reads, but those in
    UNSUBSCRIBED."""
    return [name for name in dict.fromkeys(mapping.read.values()) if name not in UNSUBSCRIBED]


def subscribe(
    app_id: int | str,
    developer_api_key: str,
    target_url: str,
    properties: Iterable[str],
    host: str = HUBSPOT_API,
    ca_bundle: str | None = None,
    max_concurrent_requests: int = 10,
    timeout: tuple[float, float] = (5.0, 30.0),
) -> list[SubscriptionResponse]:
    """Points the app's webhooks at `target_url` and makes its subscriptions active: contact
    creation and deletion, and a property change for each of `properties`. Subscriptions it
    already has are kept (a paused one is resumed); none is removed. Returns them all."""
    client = HubSpot(api_key=developer_api_key, host=host.rstrip("/"), ssl_ca_cert=ca_bundle)
    settings, subscriptions = client.webhooks.settings_api, client.webhooks.subscriptions_api
    throttling = ThrottlingSettings(max_concurrent_requests=max_concurrent_requests)
    settings.configure(
        app_id,
        SettingsChangeRequest(target_url=target_url, throttling=throttling),
        _request_timeout=timeout,
    )
    existing = {
        (s.event_type, s.property_name): s
        for s in subscriptions.get_all(app_id, _request_timeout=timeout).results
    }
    result = []
    for event_type, property_name in _wanted(properties):
        current = existing.get((event_type, property_name))
        if current is None:
            request = SubscriptionCreateRequest(
                event_type=event_type, property_name=property_name, active=True
            )
            current = subscriptions.create(app_id, request, _request_timeout=timeout)
        elif not current.active:
            patch = SubscriptionPatchRequest(active=True)
            current = subscriptions.update(current.id, app_id, patch, _request_timeout=timeout)
        result.append(current)
    return result


def _wanted(properties: Iterable[str]) -> Sequence[tuple[str, str | None]]:
    changes = [("contact.propertyChange", name) for name in dict.fromkeys(properties)]
    return [("contact.creation", None), ("contact.deletion", None), *changes]


class _AppEnvironment(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="HUBSPOT_", extra="ignore")

    app_id: str | None = None
    client_secret: SecretStr | None = None
    developer_api_key: SecretStr | None = None


@dataclass(frozen=True)
class WebhookApp:
    """The HubSpot app whose webhooks leadsync receives: its id and client secret (which signs
    the deliveries), and the developer API key that manages its subscriptions, if given."""

    app_id: str
    client_secret: str
    developer_api_key: str | None = None
    host: str = HUBSPOT_API
    ca_bundle: str | None = None

    @classmethod
    def from_environment(cls) -> WebhookApp:
        """HUBSPOT_APP_ID and HUBSPOT_CLIENT_SECRET (and HUBSPOT_DEVELOPER_API_KEY), else the
        sandbox's app (LEADSYNC_SANDBOX_INFO)."""
        environment = _AppEnvironment()
        if environment.app_id and environment.client_secret:
            key = environment.developer_api_key
            return cls(
                environment.app_id,
                environment.client_secret.get_secret_value(),
                key.get_secret_value() if key else None,
            )
        info = sandbox_info()
        hubspot = info["hubspot"]
        return cls(
            str(hubspot["app_id"]),
            hubspot["client_secret"],
            hubspot.get("developer_api_key"),
            hubspot["base_url"],
            info["ca_cert"],
        )
