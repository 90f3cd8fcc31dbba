"""Lead changes from Salesforce Change Data Capture, over the Pub/Sub API (gRPC).

`LeadChangeStream` subscribes to /data/LeadChangeEvent with the Salesforce connector's session
(its access token and instance URL, and the org's id as the tenant) and yields, per
FetchResponse, the LeadEvents it carries and the latest replay id: a keepalive yields no events,
and its replay id is still the place to resume from. It asks for events in batches and asks for
the next batch only once the last was consumed, so it never holds more than one batch. A
stream silent for `idle_timeout` (Salesforce sends a keepalive at least every 270 s) is dropped
with a ConnectorError, so a dead connection never hangs a listener.

An event is an echo of leadsync's own write when the integration user made it (commitUser; the
user's id comes from Chatter's current user, as setup reads it) and every field it changed is
one of the mapping's write fields. Changed fields are decoded from the header's bitmaps with the
event's schema (GetSchema, cached by schema id).

Salesforce keeps change events 72 hours: resuming from an older replay id raises ReplayExpired,
and what changed meanwhile is left to the scheduled sync, which reads from its watermark.
"""

from __future__ import annotations

import io
import json
import os
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import fastavro
import grpc
import pandas as pd

from connectors.base import AuthenticationFailed, ConnectorError
from connectors.credentials import DEFAULT_SANDBOX_INFO
from connectors.events import ChangeKind, EventSink, LeadEvent
from connectors.salesforce.connector import SalesforceConnector
from connectors.salesforce.pubsub_proto import messages, services

DEFAULT_ENDPOINT = "api.pubsub.salesforce.com:7443"
TOPIC = "/data/LeadChangeEvent"
BATCH_SIZE = 100  # events asked for at a time: the most one FetchRequest can ask for
CALL_TIMEOUT = 30.0  # seconds, for GetTopic and GetSchema
# Salesforce sends a keepalive at least every 270 s: a stream silent for longer is dead.
IDLE_TIMEOUT = 300.0
# Fields Salesforce changes itself along with any change: they do not make a change a person's.
SYSTEM_FIELDS = frozenset({"LastModifiedDate", "LastModifiedById", "SystemModstamp"})
KINDS: dict[str, ChangeKind] = {
    "CREATE": "created",
    "UPDATE": "changed",
    "UNDELETE": "changed",
    "DELETE": "deleted",
    "GAP_CREATE": "created",
    "GAP_UPDATE": "changed",
    "GAP_UNDELETE": "changed",
    "GAP_DELETE": "deleted",
}
REPLAY_ID_CORRUPTED = "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"


class ReplayExpired(ConnectorError):
    """Salesforce no longer holds the events after this replay id (kept 72 hours)."""

    def __init__(self, replay_id: bytes, detail: str):
        super().__init__(
            f"Salesforce refused to resume Change Data Capture after replay id {replay_id.hex()}: "
            f"it is past the 72-hour retention window or unknown ({detail}). Subscribe again "
            "from the latest event (replay_id=None); the scheduled sync catches up on what "
            "changed meanwhile from its watermark."
        )
        self.replay_id = replay_id


class LeadChangeStream:
    """A subscription to Lead change events; use as a context manager, or `close()` it."""

    def __init__(
        self,
        connector: SalesforceConnector,
        endpoint: str | None = None,
        batch_size: int = BATCH_SIZE,
        idle_timeout: float = IDLE_TIMEOUT,
    ):
        """`idle_timeout`: seconds without a FetchResponse (events or keepalive) after which
        the subscription counts as dropped."""
        self.connector, self.batch_size, self.idle_timeout = connector, batch_size, idle_timeout
        self.endpoint = endpoint or pubsub_endpoint(connector)
        credentials = grpc.ssl_channel_credentials(root_certificates=_trusted_roots(connector))
        self._channel = grpc.secure_channel(self.endpoint, credentials)
        self._stub = services.PubSubStub(self._channel)
        self._write_fields = frozenset(connector.mapping.write.values())
        self._schemas: dict[str, tuple[Any, list[str]]] = {}
        self._user_id, self._org_id = "", ""
        self._calls: list[grpc.Call] = []

    def __enter__(self) -> LeadChangeStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """End every open subscription and the channel; nothing is left running."""
        for call in list(self._calls):  # a copy: each call's own thread removes it
            call.cancel()
        self._channel.close()

    def batches(self, replay_id: bytes | None = None) -> Iterator[tuple[list[LeadEvent], bytes]]:
        """The events after `replay_id` (from the latest, when None), a FetchResponse at a time,
        with the replay id to resume from after them; runs until closed."""
        metadata = self._signed_in()
        requests = _Requests(_first_request(replay_id, self.batch_size))
        call = self._stub.Subscribe(iter(requests), metadata=metadata)
        self._calls.append(call)
        watchdog = _Watchdog(call, self.idle_timeout)
        try:
            for response in call:
                watchdog.heard()
                events = [
                    event
                    for consumer in response.events
                    for event in self._lead_events(consumer, metadata)
                ]
                yield events, response.latest_replay_id
                if response.events and response.pending_num_requested == 0:
                    requests.put(messages.FetchRequest(num_requested=self.batch_size))
        except grpc.RpcError as error:
            if watchdog.expired:
                raise ConnectorError(
                    f"Salesforce's Pub/Sub API sent nothing, not even a keepalive, for "
                    f"{self.idle_timeout:g} s: the subscription is dropped; subscribe again."
                ) from None
            if error.code() != grpc.StatusCode.CANCELLED:
                raise _classified(error, replay_id) from None
        finally:
            watchdog.stop()
            requests.close()
            call.cancel()
            self._calls.remove(call)

    def run(self, sink: EventSink, replay_id: bytes | None = None) -> None:
        """Hand each batch's events to `sink` (keepalives hand nothing) until closed; a listener
        resumes from the `event_id` of the last event it handled (`bytes.fromhex`)."""
        for events, _ in self.batches(replay_id):
            if events:
                sink(events)

    # --- decoding ----------------------------------------------------------------------------

    def _lead_events(self, consumer: Any, metadata: tuple) -> list[LeadEvent]:
        schema, field_names = self._schema(consumer.event.schema_id, metadata)
        record = fastavro.schemaless_reader(io.BytesIO(consumer.event.payload), schema, schema)
        header = record["ChangeEventHeader"]
        kind = KINDS.get(header["changeType"])
        if kind is None:
            return []
        changed = fields_in(header["changedFields"], field_names) - SYSTEM_FIELDS
        echo = (
            header["changeType"] == "UPDATE"
            and header["commitUser"] == self._user_id
            and bool(changed)
            and changed <= self._write_fields
        )
        occurred_at = pd.Timestamp(header["commitTimestamp"], unit="ms", tz="UTC")
        return [
            LeadEvent("salesforce", crm_id, kind, occurred_at, consumer.replay_id.hex(), echo)
            for crm_id in header["recordIds"]
        ]

    def _schema(self, schema_id: str, metadata: tuple) -> tuple[Any, list[str]]:
        """The parsed Avro schema and its top-level field names (what bitmaps index)."""
        if schema_id not in self._schemas:
            info = self._unary(
                self._stub.GetSchema, messages.SchemaRequest(schema_id=schema_id), metadata
            )
            parsed = json.loads(info.schema_json)
            names = [field["name"] for field in parsed["fields"]]
            self._schemas[schema_id] = (fastavro.parse_schema(parsed), names)
        return self._schemas[schema_id]

    # --- calls -------------------------------------------------------------------------------

    def _signed_in(self) -> tuple[tuple[str, str], ...]:
        """The calls' metadata, checked by reading the topic and its schema; a session the
        Pub/Sub API refuses is renewed once, as the connector renews its REST session."""
        client = self.connector.client
        try:
            return self._read_topic(self._metadata())
        except AuthenticationFailed:
            if not self.connector.renew_session(client):
                raise
            return self._read_topic(self._metadata())

    def _read_topic(self, metadata: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
        topic = self._unary(self._stub.GetTopic, messages.TopicRequest(topic_name=TOPIC), metadata)
        self._schema(topic.schema_id, metadata)
        return metadata

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if not self._org_id:
            self._user_id, self._org_id = self.connector.identity()
        client = self.connector.client
        return (
            ("accesstoken", client.session_id),
            ("instanceurl", f"https://{client.sf_instance}"),
            ("tenantid", self._org_id),
        )

    def _unary(self, method: Any, request: Any, metadata: tuple) -> Any:
        try:
            return method(request, metadata=metadata, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            raise _classified(error, None) from None


def fields_in(bitmaps: list[str], field_names: list[str]) -> set[str]:
    """The field names a header's bitmaps list: "0x..." sets bit i for top-level field i;
    "p-0x..." marks fields inside the compound field at position p, which counts as changed."""
    names = set()
    for bitmap in bitmaps:
        parent, _, bits = bitmap.rpartition("-")
        if parent:
            names.add(field_names[int(parent)])
            continue
        value = int(bits, 16)
        names.update(name for index, name in enumerate(field_names) if value >> index & 1)
    return names


def pubsub_endpoint(connector: SalesforceConnector) -> str:
    """SALESFORCE_PUBSUB_ENDPOINT if set; the sandbox's, when the connector is signed in to the
    sandbox the info file describes; else Salesforce's."""
    if os.environ.get("SALESFORCE_PUBSUB_ENDPOINT"):
        return os.environ["SALESFORCE_PUBSUB_ENDPOINT"]
    path = Path(os.environ.get("LEADSYNC_SANDBOX_INFO") or DEFAULT_SANDBOX_INFO)
    if path.exists():
        sandbox = json.loads(path.read_text()).get("salesforce", {})
        if urlsplit(sandbox.get("instance_url", "")).netloc == connector.client.sf_instance:
            return sandbox["pubsub_endpoint"]
    return DEFAULT_ENDPOINT


def _trusted_roots(connector: SalesforceConnector) -> bytes | None:
    """The CA bundle the connector's REST session trusts, or None for the system's roots."""
    verify = connector.client.session.verify
    return Path(verify).read_bytes() if isinstance(verify, str) else None


def _first_request(replay_id: bytes | None, batch_size: int) -> Any:
    if replay_id is None:
        return messages.FetchRequest(
            topic_name=TOPIC, replay_preset=messages.ReplayPreset.LATEST, num_requested=batch_size
        )
    return messages.FetchRequest(
        topic_name=TOPIC,
        replay_preset=messages.ReplayPreset.CUSTOM,
        replay_id=replay_id,
        num_requested=batch_size,
    )


def _classified(error: grpc.RpcError, replay_id: bytes | None) -> Exception:
    trailers = dict(error.trailing_metadata() or ())
    if trailers.get("error-code") == REPLAY_ID_CORRUPTED and replay_id is not None:
        return ReplayExpired(replay_id, error.details())
    if error.code() == grpc.StatusCode.UNAUTHENTICATED:
        return AuthenticationFailed(
            f"Salesforce's Pub/Sub API refused the session: {error.details()}. Sign in again or "
            "update the credentials."
        )
    return ConnectorError(
        f"Salesforce's Pub/Sub API failed: {error.code().name}: {error.details()} "
        f"({trailers.get('error-code', 'no error code')})"
    )


class _Watchdog:
    """Cancels a call that sent nothing for `seconds`; `stop()` ends its thread."""

    def __init__(self, call: grpc.Call, seconds: float):
        self.call, self.seconds = call, seconds
        self.expired = False
        self._heard = time.monotonic()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="cdc-watchdog", daemon=True)
        self._thread.start()

    def heard(self) -> None:
        self._heard = time.monotonic()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stopped.wait(min(1.0, self.seconds / 4)):
            if time.monotonic() - self._heard > self.seconds:
                self.expired = True
                self.call.cancel()
                return


class _Requests:
    """The FetchRequests of one Subscribe call, sent as they are put; `close()` ends them."""

    _END = object()

    def __init__(self, first: Any):
        self._queue: queue.Queue = queue.Queue()
        self._queue.put(first)

    def put(self, request: Any) -> None:
        self._queue.put(request)

    def close(self) -> None:
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[Any]:
        while (request := self._queue.get()) is not self._END:
            yield request
