"""The org's Pub/Sub API (gRPC over TLS): GetTopic, GetSchema and Subscribe for Lead's change
events (/data/LeadChangeEvent), served from the org's change log (sandbox.salesforce.changes).

As Salesforce documents it: every call authenticates with the metadata `accesstoken` (a live
session of the org), `instanceurl` and `tenantid` (the org id); Subscribe is pull-based, the
server sending at most the events requested (FetchRequest.num_requested, at most 100 a request,
added up across requests) and an empty batch with the latest replay id after
`pubsub_keepalive_seconds` without events. Events carry only the fields the integration user can
read (field-level security). Failures end the call with a gRPC status, a message
ending in the call's rpcId, and Salesforce's own error code in the `error-code` trailer.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.protobuf.message import Message
from google.protobuf.unknown_fields import UnknownFieldSet

from connectors.salesforce.pubsub_proto import messages, services
from sandbox.http import CertificateAuthority
from sandbox.salesforce.api import ORG_ID, SalesforceApi
from sandbox.salesforce.changes import SCHEMA_ID, SCHEMA_JSON, TOPIC, position_of, replay_id

MAX_REQUESTED = 100  # events one FetchRequest can ask for; a larger number counts as this
POLL_SECONDS = 0.25  # how often a quiet stream looks whether its call or the server ended
CODE_PREFIX = "sfdc.platform.eventbus.grpc."
WORKERS = 32  # calls served at once (each open Subscribe stream holds one)


class PubSubError(Exception):
    """A failure to end a call with: its gRPC status, Salesforce's error code, a message."""

    def __init__(self, status: grpc.StatusCode, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, CODE_PREFIX + code, message


class PubSubServer:
    """The Pub/Sub API of one sandbox org, on its own port; `stop()` ends every open stream."""

    def __init__(
        self, api: SalesforceApi, ca: CertificateAuthority, port: int = 0, host: str = "127.0.0.1"
    ):
        self.service = PubSubService(api)
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="salesforce-pubsub")
        )
        services.add_PubSubServicer_to_server(self.service, self._server)
        key, chain = ca.server_key_and_chain()
        credentials = grpc.ssl_server_credentials([(key, chain)])
        self.port = self._server.add_secure_port(f"{host}:{port}", credentials)
        self.endpoint = f"{host}:{self.port}"

    def start(self) -> PubSubServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self.service.stopping.set()
        self.service.api.changes.wake()
        self._server.stop(grace=1).wait(timeout=5)


class PubSubService(services.PubSubServicer):
    def __init__(self, api: SalesforceApi):
        self.api = api
        self.stopping = threading.Event()

    def GetTopic(self, request: Message, context: grpc.ServicerContext) -> Message:  # noqa: N802
        rpc_id = str(uuid.uuid4())
        try:
            self._authenticate(context)
            _refuse_unknown_fields(request)
            _check_topic(request.topic_name)
        except PubSubError as error:
            _abort(context, error, rpc_id)
        return messages.TopicInfo(
            topic_name=TOPIC,
            tenant_guid=ORG_ID,
            can_publish=False,  # change events are published by Salesforce only
            can_subscribe=True,
            schema_id=SCHEMA_ID,
            rpc_id=rpc_id,
        )

    def GetSchema(self, request: Message, context: grpc.ServicerContext) -> Message:  # noqa: N802
        rpc_id = str(uuid.uuid4())
        try:
            self._authenticate(context)
            _refuse_unknown_fields(request)
            if not request.schema_id:
                raise PubSubError(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "schema.validation.failed",
                    "The schema ID is blank or missing.",
                )
            if request.schema_id != SCHEMA_ID:
                raise PubSubError(
                    grpc.StatusCode.NOT_FOUND,
                    "schema.meta.permission",
                    f"Schema {request.schema_id} isn't available: check the schema ID and the "
                    "credentials used to fetch it.",
                )
        except PubSubError as error:
            _abort(context, error, rpc_id)
        return messages.SchemaInfo(schema_json=SCHEMA_JSON, schema_id=SCHEMA_ID, rpc_id=rpc_id)

    def Subscribe(  # noqa: N802
        self, request_iterator: Iterator[Message], context: grpc.ServicerContext
    ) -> Iterator[Message]:
        rpc_id = str(uuid.uuid4())
        try:
            self._authenticate(context)
            first = next(request_iterator, None)
            if first is None:
                return
            _check_fetch(first)
            _check_topic(first.topic_name)
            position = self._start(first)
        except PubSubError as error:
            _abort(context, error, rpc_id)
        demand = Demand(first.topic_name, first.num_requested, self.api.changes.wake)
        threading.Thread(
            target=demand.read, args=(request_iterator,), name="pubsub-fetch-requests", daemon=True
        ).start()
        context.add_callback(self.api.changes.wake)
        yield from self._deliver(demand, position, context, rpc_id)

    def _deliver(
        self, demand: Demand, position: int, context: grpc.ServicerContext, rpc_id: str
    ) -> Iterator[Message]:
        """Events after `position` as they come, never more than requested; a keepalive when
        there was nothing to send for the keepalive interval."""
        changes, keepalive = self.api.changes, self.api.settings.pubsub_keepalive_seconds
        last_sent = time.monotonic()
        while context.is_active() and not self.stopping.is_set():
            if demand.problem is not None:
                _abort(context, demand.problem, rpc_id)
            seen = changes.generation()
            wanted = demand.wanted()
            readable = self.api.metadata.access.can_read
            events = changes.after(position, min(wanted, MAX_REQUESTED), readable) if wanted else []
            if events:
                position = events[-1][0]
                yield _response(events, position, demand.take(len(events)), rpc_id)
                last_sent = time.monotonic()
            elif time.monotonic() - last_sent >= keepalive:
                yield _response([], position, wanted, rpc_id)
                last_sent = time.monotonic()
            else:
                quiet_for = keepalive - (time.monotonic() - last_sent)
                changes.wait(seen, min(quiet_for, POLL_SECONDS))

    def _start(self, first: Message) -> int:
        """The position a subscription starts after."""
        changes = self.api.changes
        if first.replay_preset == messages.ReplayPreset.EARLIEST:
            return changes.earliest()
        if first.replay_preset != messages.ReplayPreset.CUSTOM:
            return changes.tip()
        if not first.replay_id:
            raise PubSubError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "subscription.fetch.replayid.validation.failed",
                "The Replay ID validation failed: ReplayPreset is CUSTOM but no replay_id was "
                "given.",
            )
        position = position_of(first.replay_id)
        if position is None or not changes.is_resumable(position):
            hours = self.api.settings.cdc_retention_hours
            raise PubSubError(
                grpc.StatusCode.INVALID_ARGUMENT,
                "subscription.fetch.replayid.corrupted",
                f"The Replay ID {first.replay_id.hex()} is invalid or outside the retention "
                f"window ({hours:g} hours): subscribe with ReplayPreset EARLIEST or LATEST.",
            )
        return position

    def _authenticate(self, context: grpc.ServicerContext) -> None:
        headers = {key: value for key, value in context.invocation_metadata()}
        given = [headers.get(name, "") for name in ("accesstoken", "instanceurl", "tenantid")]
        if not all(isinstance(value, str) and value.strip() for value in given):
            raise PubSubError(
                grpc.StatusCode.UNAUTHENTICATED,
                "service.auth.headers.invalid",
                "The accesstoken, instanceurl and tenantid headers are required.",
            )
        token, instance_url, tenant = given
        if not (
            self.api.sign_in.is_valid(token)
            and instance_url.rstrip("/") == self.api.base_url
            and tenant in (ORG_ID, ORG_ID[:15])
        ):
            raise PubSubError(
                grpc.StatusCode.UNAUTHENTICATED,
                "service.auth.error",
                "An authentication exception occurred: the session is invalid or expired, or "
                "it is not a session of this instance and tenant.",
            )


class Demand:
    """The events a subscriber asked for and was not sent yet, fed by its FetchRequests after
    the first (read on their own thread); a bad one is kept as the `problem` to end the call."""

    def __init__(self, topic: str, requested: int, wake: Callable[[], None]):
        self.topic, self._wake = topic, wake
        self._pending = min(requested, MAX_REQUESTED)
        self._lock = threading.Lock()
        self.problem: PubSubError | None = None

    def read(self, requests: Iterator[Message]) -> None:
        try:
            for request in requests:
                _check_fetch(request)
                if request.topic_name and request.topic_name != self.topic:
                    raise PubSubError(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        "subscription.fetch.topic.mismatch",
                        f"The topic {request.topic_name} differs from this subscription's "
                        f"topic {self.topic}.",
                    )
                with self._lock:
                    self._pending += min(request.num_requested, MAX_REQUESTED)
                self._wake()
        except PubSubError as problem:
            self.problem = problem
            self._wake()
        except grpc.RpcError:
            return  # the call ended

    def wanted(self) -> int:
        with self._lock:
            return self._pending

    def take(self, sent: int) -> int:
        """Count `sent` events as delivered; the number still requested."""
        with self._lock:
            self._pending -= sent
            return self._pending


def _check_fetch(request: Message) -> None:
    _refuse_unknown_fields(request)
    if request.num_requested <= 0:
        raise PubSubError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "subscription.fetch.requested.events.invalid",
            f"num_requested must be greater than 0 (was {request.num_requested}).",
        )


def _check_topic(topic_name: str) -> None:
    if not topic_name:
        raise PubSubError(
            grpc.StatusCode.INVALID_ARGUMENT, "topic.validation.empty", "The topic name is blank."
        )
    if topic_name != TOPIC:
        raise PubSubError(
            grpc.StatusCode.NOT_FOUND,
            "topic.not.found",
            f"The topic {topic_name} doesn't exist: check its name, and that Change Data "
            "Capture is on for the object.",
        )


def _refuse_unknown_fields(request: Message) -> None:
    unknown = sorted({field.field_number for field in UnknownFieldSet(request)})
    if unknown:
        raise PubSubError(
            grpc.StatusCode.INVALID_ARGUMENT,
            "service.request.invalid",
            f"{type(request).__name__} has no field number {unknown[0]}.",
        )


def _response(
    events: list[tuple[int, bytes]], position: int, pending: int, rpc_id: str
) -> Message:
    return messages.FetchResponse(
        events=[
            messages.ConsumerEvent(
                event=messages.ProducerEvent(
                    id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{TOPIC}/{at}")),
                    schema_id=SCHEMA_ID,
                    payload=payload,
                ),
                replay_id=replay_id(at),
            )
            for at, payload in events
        ],
        latest_replay_id=replay_id(position),
        rpc_id=rpc_id,
        pending_num_requested=pending,
    )


def _abort(context: grpc.ServicerContext, error: PubSubError, rpc_id: str) -> None:
    context.set_trailing_metadata((("error-code", error.code), ("rpc-id", rpc_id)))
    context.abort(error.status, f"{error.message} rpcId: {rpc_id}")
