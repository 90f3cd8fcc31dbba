"""HubSpot webhooks end to end: the app subscribed through hubspot-api-client against the sandbox,
the receiver (connectors/hubspot/webhooks.py) served by uvicorn on a free port, and contact
changes made through the connector's write path or as a person in the UI would."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pandas as pd
import pytest
import requests
import uvicorn
from hubspot import HubSpot
from hubspot.utils.signature import Signature
from hubspot.webhooks.exceptions import ApiException as WebhooksApiException

from connectors.credentials import HubSpotCredentials
from connectors.events import LeadEvent
from connectors.hubspot import HubSpotConnector, HubSpotLimits, connect
from connectors.hubspot.connector import DEFAULT_MAPPING
from connectors.hubspot.webhooks import subscribe, subscribed_properties, webhook_app
from connectors.mapping import load_mapping
from expectations.frame import QUALIFICATION_STATUSES
from sandbox.hubspot import HubSpotSettings
from sandbox.hubspot.delivery import signature_headers
from sandbox.run import Sandbox, SandboxConfig

MAPPING = load_mapping(DEFAULT_MAPPING)
PATH = "/hubspot/webhooks"
# Retries within a fraction of a second (HubSpot's first comes after up to 84 s).
FAST = HubSpotSettings(webhook_retry_scale=0.004, webhook_timeout_seconds=0.5)


class Collected:
    """An EventSink that keeps what it is handed, batch by batch, taking `seconds` for each."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.batches: list[list[LeadEvent]] = []
        self.seconds = seconds
        self._condition = threading.Condition()

    def __call__(self, events: list[LeadEvent]) -> None:
        time.sleep(self.seconds)
        with self._condition:
            self.batches.append(events)
            self._condition.notify_all()

    @property
    def events(self) -> list[LeadEvent]:
        with self._condition:
            return [event for batch in self.batches for event in batch]

    def wait_for(self, count: int, timeout: float = 5.0) -> list[LeadEvent]:
        with self._condition:
            self._condition.wait_for(lambda: sum(map(len, self.batches)) >= count, timeout)
        return self.events


class Wire:
    """ASGI middleware: records the deliveries that reach the receiver, and holds back the
    answers to the first `slow_answers` of them by `delay` seconds (a slow network)."""

    def __init__(self, app, slow_answers: int = 0, delay: float = 0.0):
        self.app, self.slow_answers, self.delay = app, slow_answers, delay
        self.deliveries: list[list[dict]] = []
        self.raw: list[tuple[dict[str, str], bytes]] = []  # each delivery's headers and body
        self.in_flight = self.peak_in_flight = 0  # requests being answered at once

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks: list[bytes] = []
        slow = len(self.deliveries) < self.slow_answers

        async def recording_receive():
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):  # recorded before the receiver hands events on
                raw = b"".join(chunks)
                headers = {name.decode(): value.decode() for name, value in scope["headers"]}
                self.raw.append((headers, raw))
                body = json.loads(raw or b"null")
                self.deliveries.append(body if isinstance(body, list) else [])
            return message

        async def held_send(message) -> None:
            if slow and message["type"] == "http.response.start":
                await asyncio.sleep(self.delay)
            await send(message)

        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await self.app(scope, recording_receive, held_send)
        finally:
            self.in_flight -= 1


@dataclass
class Hooked:
    sandbox: Sandbox
    sink: Collected
    wire: Wire
    url: str

    def settle(self, timeout: float = 5.0) -> None:
        """Waits until the sandbox has nothing left to deliver."""
        deadline = time.monotonic() + timeout
        while not self.sandbox.hubspot.webhooks.delivery.idle() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.1)  # the last batch on its way from the receiver to the sink


@pytest.fixture
def hooked(start_sandbox) -> Iterator[Callable[..., Hooked]]:
    """A sandbox whose app is subscribed to the leads' properties, delivering to the receiver."""
    servers = []

    def start(
        leads: int = 3, slow_answers: int = 0, delay: float = 0.0, sink_seconds: float = 0.0
    ) -> Hooked:
        sandbox = start_sandbox(leads=leads, hubspot=FAST)
        hubspot = sandbox.info["hubspot"]
        sink = Collected(sink_seconds)
        listener = socket.socket()  # a free port, known before the app is built
        listener.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{listener.getsockname()[1]}{PATH}"
        receiver = webhook_app(
            hubspot["client_secret"],
            str(hubspot["app_id"]),
            set(MAPPING.write.values()),
            sink,
            target_url=url,
        )
        wire = Wire(receiver, slow_answers, delay)
        servers.append(served(wire, listener))
        subscribe(
            hubspot["app_id"],
            hubspot["developer_api_key"],
            url,
            subscribed_properties(MAPPING),
            host=hubspot["base_url"],
            ca_bundle=sandbox.info["ca_cert"],
            max_concurrent_requests=5,
        )
        return Hooked(sandbox, sink, wire, url)

    yield start
    for server in servers:
        server.stop()


def served(app, listener: socket.socket) -> Stopper:
    """`app` under uvicorn in a thread, on `listener` (bound already)."""
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    return Stopper(server, thread)


@dataclass
class Stopper:
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)


def connector_for(sandbox: Sandbox) -> HubSpotConnector:
    info = sandbox.info
    credentials = HubSpotCredentials(
        access_token=info["hubspot"]["access_token"],
        base_url=info["hubspot"]["base_url"],
        ca_bundle=info["ca_cert"],
    )
    limits = HubSpotLimits(per_ten_seconds=1_000_000, search_per_second=100_000)
    return HubSpotConnector(connect(credentials), limits=limits)


def contact_ids(sandbox: Sandbox) -> list[str]:
    return [str(row["hs_object_id"]) for row in sandbox.hubspot.table.select(order_by="1")]


def edit_status(sandbox: Sandbox, crm_id: str) -> None:
    """A person sets another qualification status on the contact."""
    sandbox.hubspot.edit_as_person(crm_id, {"leadsync_status": another_status(sandbox, crm_id)})


def another_status(sandbox: Sandbox, crm_id: str) -> str:
    """A qualification status the contact does not have now."""
    current = sandbox.hubspot.table.get(crm_id)["leadsync_status"]
    return next(status for status in QUALIFICATION_STATUSES if status != current)


def test_subscribe_sets_the_target_and_one_subscription_per_property(start_sandbox):
    sandbox = start_sandbox()
    hubspot = sandbox.info["hubspot"]
    properties = subscribed_properties(MAPPING)
    assert "leadsync_status" in properties and "lastmodifieddate" not in properties
    arguments = (hubspot["app_id"], hubspot["developer_api_key"], "https://leadsync.example/hook")
    place = {"host": hubspot["base_url"], "ca_bundle": sandbox.info["ca_cert"]}
    first = subscribe(*arguments, properties, **place)
    again = subscribe(*arguments, properties, **place)  # nothing is subscribed twice

    client = HubSpot(
        api_key=hubspot["developer_api_key"],
        host=hubspot["base_url"],
        ssl_ca_cert=sandbox.info["ca_cert"],
    )
    settings = client.webhooks.settings_api.get_all(hubspot["app_id"])
    assert settings.target_url == "https://leadsync.example/hook"
    subscriptions = client.webhooks.subscriptions_api.get_all(hubspot["app_id"]).results
    assert len(subscriptions) == len(properties) + 2 == len(first) == len(again)
    assert all(s.active for s in subscriptions)
    changed = sorted(s.property_name for s in subscriptions if s.property_name)
    assert changed == sorted(properties)
    assert {s.event_type for s in subscriptions} == {
        "contact.creation",
        "contact.deletion",
        "contact.propertyChange",
    }


def test_the_connectors_own_write_comes_back_as_an_echo(hooked):
    hook = hooked(leads=3)
    ids = contact_ids(hook.sandbox)
    updates = pd.DataFrame({"crm_id": ids, "score": [97, 98, 99], "reason": ["a", "b", "c"]})
    report = connector_for(hook.sandbox).write(updates)
    assert report["error"].isna().all()

    events = hook.sink.wait_for(6)
    assert sorted(e.crm_id for e in events) == sorted(ids * 2)  # score and reason of each
    assert all(e.echo and e.kind == "changed" and e.source == "hubspot" for e in events)

    # The same app writing a property leadsync only reads is no echo.
    connector_for(hook.sandbox).client.crm.contacts.basic_api.update(
        ids[0], {"properties": {"jobtitle": "Head of Echoes"}}
    )
    [*_, other] = hook.sink.wait_for(7)
    assert (other.crm_id, other.kind, other.echo) == (ids[0], "changed", False)


def test_a_person_setting_the_status_is_a_change_not_an_echo(hooked):
    hook = hooked(leads=1)
    [crm_id] = contact_ids(hook.sandbox)
    status = another_status(hook.sandbox, crm_id)
    hook.sandbox.hubspot.edit_as_person(crm_id, {"leadsync_status": status})

    [event] = hook.sink.wait_for(1)
    assert (event.crm_id, event.kind, event.echo) == (crm_id, "changed", False)
    [[payload]] = hook.wire.deliveries
    assert payload["changeSource"] == "CRM_UI" and payload["sourceId"].startswith("userId:")
    assert payload["propertyValue"] == status
    [(headers, body)] = hook.wire.raw
    secret, text = hook.sandbox.info["hubspot"]["client_secret"], body.decode()
    timestamp = headers["x-hubspot-request-timestamp"]
    v3 = headers["x-hubspot-signature-v3"]
    assert Signature.is_valid(v3, secret, text, hook.url, "POST", "v3", timestamp)
    assert headers["x-hubspot-signature-version"] == "v1"
    assert Signature.is_valid(headers["x-hubspot-signature"], secret, text, signature_version="v1")
    assert headers["content-type"] == "application/json"
    assert abs(event.occurred_at - pd.Timestamp.now(tz="UTC")) < pd.Timedelta(seconds=10)


def test_a_person_deleting_a_contact_is_a_deletion(hooked):
    hook = hooked(leads=2)
    crm_id = contact_ids(hook.sandbox)[0]
    hook.sandbox.hubspot.delete_as_person(crm_id)

    [event] = hook.sink.wait_for(1)
    assert (event.crm_id, event.kind, event.echo) == (crm_id, "deleted", False)


def test_forged_unsigned_and_stale_deliveries_are_refused_and_logged(hooked, caplog):
    hook = hooked(leads=0)
    secret = hook.sandbox.info["hubspot"]["client_secret"]
    now = time.time_ns() // 1_000_000
    body = json.dumps(
        [
            {
                "eventId": 7,
                "subscriptionId": 1,
                "portalId": 1,
                "appId": hook.sandbox.info["hubspot"]["app_id"],
                "occurredAt": now,
                "subscriptionType": "contact.deletion",
                "attemptNumber": 0,
                "objectId": 42,
            }
        ]
    ).encode()
    signed = {
        "forged": signature_headers("not-the-client-secret", hook.url, body, now),
        "stale": signature_headers(secret, hook.url, body, now - 301_000),
        "unsigned": {"Content-Type": "application/json"},
    }
    with caplog.at_level(logging.WARNING, logger="connectors.hubspot.webhooks"):
        answers = {
            name: requests.post(hook.url, data=body, headers=headers, timeout=5).status_code
            for name, headers in signed.items()
        }
    assert answers == {"forged": 401, "stale": 401, "unsigned": 401}
    assert "does not match" in caplog.text and "stale" in caplog.text
    assert "unsigned" in caplog.text and secret not in caplog.text

    genuine = signature_headers(secret, hook.url, body, now)
    assert requests.post(hook.url, data=body, headers=genuine, timeout=5).status_code == 200
    assert [e.crm_id for e in hook.sink.wait_for(1)] == ["42"]


def test_an_event_delivered_again_reaches_the_sink_once(hooked):
    """The answer to the first delivery comes later than the sandbox waits (0.5 s here, HubSpot's
    5 s), so it delivers again; the receiver already handed the event on."""
    hook = hooked(leads=1, slow_answers=1, delay=1.0)
    [crm_id] = contact_ids(hook.sandbox)
    edit_status(hook.sandbox, crm_id)
    hook.sink.wait_for(1)
    deadline = time.monotonic() + 5
    while len(hook.wire.deliveries) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    hook.settle()

    attempts = [[p["attemptNumber"] for p in delivery] for delivery in hook.wire.deliveries]
    assert attempts == [[0], [1]]
    assert hook.wire.deliveries[0][0]["eventId"] == hook.wire.deliveries[1][0]["eventId"]
    assert len(hook.sink.events) == 1


def test_a_slow_sink_does_not_slow_the_answer(hooked):
    hook = hooked(leads=1, sink_seconds=1.0)  # twice as long as the sandbox waits for an answer
    [crm_id] = contact_ids(hook.sandbox)
    edit_status(hook.sandbox, crm_id)
    assert len(hook.sink.wait_for(1)) == 1
    delivery = hook.sandbox.hubspot.webhooks.delivery
    assert (delivery.deliveries, delivery.failures) == (1, 0)


def test_more_than_a_hundred_changes_arrive_in_batches_of_at_most_a_hundred(hooked):
    hook = hooked(leads=150)
    ids = contact_ids(hook.sandbox)
    updates = pd.DataFrame({"crm_id": ids, "reason": [f"reason {i}" for i in range(150)]})
    connector_for(hook.sandbox).write(updates)

    events = hook.sink.wait_for(150)
    hook.settle()
    assert sorted(e.crm_id for e in hook.sink.events) == sorted(ids)
    sizes = [len(delivery) for delivery in hook.wire.deliveries]
    assert sum(sizes) == 150 and max(sizes) <= 100 and len(sizes) >= 2
    assert all(e.echo for e in events)


def developer_client(sandbox: Sandbox, api_key: str | None = None) -> HubSpot:
    hubspot = sandbox.info["hubspot"]
    return HubSpot(
        api_key=api_key or hubspot["developer_api_key"],
        host=hubspot["base_url"],
        ssl_ca_cert=sandbox.info["ca_cert"],
    )


def test_the_webhooks_api_wants_the_developer_key_and_only_fields_it_knows(
    start_sandbox, trusted_session
):
    sandbox = start_sandbox()
    hubspot = sandbox.info["hubspot"]
    app_id = hubspot["app_id"]
    with pytest.raises(WebhooksApiException) as refused:
        developer_client(sandbox, "not-the-key").webhooks.subscriptions_api.get_all(app_id)
    assert refused.value.status == 401
    assert json.loads(refused.value.body)["category"] == "INVALID_AUTHENTICATION"

    url = f"{hubspot['base_url']}/webhooks/v3/{app_id}/subscriptions"
    key = {"hapikey": hubspot["developer_api_key"]}
    session = trusted_session(sandbox)
    bodies = {
        "unknown field": {"eventType": "contact.creation", "active": True, "filter": "x"},
        "unknown property": {"eventType": "contact.propertyChange", "propertyName": "nope"},
        "property on a creation": {"eventType": "contact.creation", "propertyName": "email"},
        "no property": {"eventType": "contact.propertyChange"},
        "another object": {"eventType": "deal.creation"},
    }
    answers = {name: session.post(url, params=key, json=body) for name, body in bodies.items()}
    assert {name: a.status_code for name, a in answers.items()} == dict.fromkeys(bodies, 400)
    assert all(a.json()["category"] == "VALIDATION_ERROR" for a in answers.values())
    assert developer_client(sandbox).webhooks.subscriptions_api.get_all(app_id).results == []


def test_subscriptions_pause_and_resume_in_a_batch_and_a_paused_one_sends_nothing(hooked):
    hook = hooked(leads=1)
    app_id = hook.sandbox.info["hubspot"]["app_id"]
    api = developer_client(hook.sandbox).webhooks.subscriptions_api
    every = api.get_all(app_id).results
    paused = api.update_batch(
        app_id, {"inputs": [{"id": int(s.id), "active": False} for s in every]}
    )
    assert len(paused.results) == len(every) and not any(s.active for s in paused.results)
    [crm_id] = contact_ids(hook.sandbox)
    edit_status(hook.sandbox, crm_id)
    hook.settle()
    assert hook.wire.deliveries == []

    subscribe(
        app_id,
        hook.sandbox.info["hubspot"]["developer_api_key"],
        hook.url,
        subscribed_properties(MAPPING),
        host=hook.sandbox.info["hubspot"]["base_url"],
        ca_bundle=hook.sandbox.info["ca_cert"],
    )
    assert all(s.active for s in api.get_all(app_id).results)
    edit_status(hook.sandbox, crm_id)
    assert [e.kind for e in hook.sink.wait_for(1)] == ["changed"]


def test_without_a_target_url_nothing_is_sent(hooked):
    hook = hooked(leads=1)
    app_id = hook.sandbox.info["hubspot"]["app_id"]
    developer_client(hook.sandbox).webhooks.settings_api.clear(app_id)
    [crm_id] = contact_ids(hook.sandbox)
    edit_status(hook.sandbox, crm_id)
    hook.settle()
    assert hook.wire.deliveries == [] and hook.sandbox.hubspot.webhooks.delivery.idle()


def test_a_target_that_never_answers_gets_ten_retries_then_nothing(start_sandbox):
    sandbox = start_sandbox(leads=1, hubspot=HubSpotSettings(webhook_retry_scale=0.00001))
    hubspot = sandbox.info["hubspot"]
    closed = socket.socket()  # a port nothing listens on
    closed.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{closed.getsockname()[1]}{PATH}"
    closed.close()
    subscribe(
        hubspot["app_id"],
        hubspot["developer_api_key"],
        url,
        ["leadsync_status"],
        host=hubspot["base_url"],
        ca_bundle=sandbox.info["ca_cert"],
    )
    [crm_id] = contact_ids(sandbox)
    edit_status(sandbox, crm_id)
    delivery = sandbox.hubspot.webhooks.delivery
    deadline = time.monotonic() + 10
    while not delivery.idle() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert (delivery.failures, delivery.abandoned, delivery.deliveries) == (11, 1, 0)


def test_no_more_deliveries_at_once_than_the_settings_allow(hooked):
    hook = hooked(leads=20, slow_answers=1_000, delay=0.2)  # subscribed with at most 5 at once
    for crm_id in contact_ids(hook.sandbox):  # an edit every 20 ms, each answer after 200 ms
        edit_status(hook.sandbox, crm_id)
        time.sleep(0.02)
    assert len(hook.sink.wait_for(20)) == 20
    assert hook.wire.peak_in_flight == 5


def test_settings_and_subscriptions_outlive_a_restart(tmp_path):
    config = SandboxConfig(leads=0, data_dir=tmp_path)
    with Sandbox(config) as sandbox:
        hubspot = sandbox.info["hubspot"]
        subscribe(
            hubspot["app_id"],
            hubspot["developer_api_key"],
            "https://leadsync.example/hook",
            ["leadsync_status"],
            host=hubspot["base_url"],
            ca_bundle=sandbox.info["ca_cert"],
        )
        before = developer_client(sandbox).webhooks.subscriptions_api.get_all(hubspot["app_id"])
    with Sandbox(config) as sandbox:
        api = developer_client(sandbox).webhooks
        after = api.subscriptions_api.get_all(hubspot["app_id"])
        assert after.results == before.results
        target = api.settings_api.get_all(hubspot["app_id"]).target_url
        assert target == "https://leadsync.example/hook"
