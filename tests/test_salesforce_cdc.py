"""Change Data Capture for Lead over the Pub/Sub API: leadsync's client (connectors.salesforce
.cdc) against the sandbox's gRPC server, with real writes through the REST API."""

from __future__ import annotations

import io
import json
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import fastavro
import grpc
import pandas as pd
import pytest
from grpc_tools import protoc

from connectors import connector_for
from connectors.base import AuthenticationFailed, ConnectorError
from connectors.events import LeadEvent
from connectors.salesforce import SalesforceConnector
from connectors.salesforce.cdc import LeadChangeStream, ReplayExpired, fields_in
from connectors.salesforce.pubsub_proto import messages, services
from connectors.settings import ConnectorSettings
from flows.listen import ChangeWindows
from sandbox.run import Sandbox, SandboxConfig
from sandbox.salesforce import SalesforceSettings
from sandbox.salesforce import changes
from sandbox.salesforce.api import ORG_ID, USER_ID

KEEPALIVE = 0.3  # seconds; Salesforce's is 270
WAIT = 10.0  # the longest any test waits for a batch
SANDBOX_SERVER_THREADS = "salesforce-pubsub"  # sandbox/salesforce/pubsub.py's gRPC server pool


@pytest.fixture
def org(start_sandbox, tmp_path, monkeypatch) -> Callable[..., Sandbox]:
    """A sandbox the connectors find through LEADSYNC_SANDBOX_INFO, with short keepalives."""
    for name in ("SALESFORCE_SESSION_ID", "SALESFORCE_USERNAME", "SALESFORCE_CONSUMER_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SALESFORCE_PUBSUB_ENDPOINT", raising=False)
    monkeypatch.setenv("LEADSYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")

    def start(**settings) -> Sandbox:
        salesforce = SalesforceSettings(**{"pubsub_keepalive_seconds": KEEPALIVE, **settings})
        sandbox = start_sandbox(leads=20, seed=3, salesforce=salesforce)
        sandbox.write_info(tmp_path / "info.json")
        monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "info.json"))
        return sandbox

    return start


class Listener:
    """Reads a stream's batches on a thread, so a test can wait for them with a timeout."""

    def __init__(self, stream: LeadChangeStream, replay_id: bytes | None = None):
        self.received: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, args=(stream, replay_id), daemon=True)
        self.thread.start()

    def _run(self, stream: LeadChangeStream, replay_id: bytes | None) -> None:
        try:
            for batch in stream.batches(replay_id):
                self.received.put(batch)
        except Exception as error:  # noqa: BLE001 - handed to the test
            self.received.put(error)

    def next_batch(self) -> tuple[list[LeadEvent], bytes]:
        batch = self.received.get(timeout=WAIT)
        if isinstance(batch, Exception):
            raise batch
        return batch

    def subscribed(self) -> bytes:
        """Wait for the first keepalive (the subscription is open); its replay id."""
        events, replay_id = self.next_batch()
        assert events == []
        return replay_id

    def events(self, count: int) -> list[LeadEvent]:
        """The next `count` events, keepalives skipped; fails if more arrive in one batch."""
        taken: list[LeadEvent] = []
        while len(taken) < count:
            taken += self.next_batch()[0]
        assert len(taken) == count
        return taken


def salesforce() -> SalesforceConnector:
    connector = connector_for("salesforce")
    assert isinstance(connector, SalesforceConnector)
    return connector


def lead_ids(sandbox: Sandbox, count: int) -> list[str]:
    return [row["Id"] for row in sandbox.salesforce.table.select(["Id"], order_by='"Id"')][:count]


def test_leadsyncs_own_writes_come_back_as_echoes_and_a_persons_edit_does_not(org):
    sandbox = org()
    connector = salesforce()
    first, second = lead_ids(sandbox, 2)
    with LeadChangeStream(connector) as stream:
        listener = Listener(stream)
        listener.subscribed()
        connector.write(pd.DataFrame({"crm_id": [first, second], "score": 61.0, "reason": "fit"}))
        echoes = listener.events(2)
        sandbox.salesforce.edit_as_person(first, {"Qualification_Status__c": "Disqualified"})
        (edit,) = listener.events(1)
        sandbox.salesforce.edit_as_person(second, {"Status": "Working - Contacted"})
        (status,) = listener.events(1)
    assert [(e.crm_id, e.kind, e.echo) for e in echoes] == [
        (first, "changed", True),
        (second, "changed", True),
    ]
    assert (edit.crm_id, edit.kind, edit.echo) == (first, "changed", False)  # a write field
    assert (status.crm_id, status.kind, status.echo) == (second, "changed", False)
    assert edit.source == "salesforce" and edit.occurred_at.tz is not None
    assert len({e.event_id for e in [*echoes, edit, status]}) == 4


def test_one_collection_write_is_one_transaction_with_its_fields_in_the_bitmaps(org):
    sandbox = org()
    first, second = lead_ids(sandbox, 2)
    salesforce().write(pd.DataFrame({"crm_id": [first, second], "reason": "fit", "score": 5.0}))
    sandbox.salesforce.edit_as_person(first, {"Lead_Score__c": None})
    schema = json.loads(changes.SCHEMA_JSON)
    names = [field["name"] for field in schema["fields"]]
    headers = [
        fastavro.schemaless_reader(io.BytesIO(payload), changes.PARSED_SCHEMA)["ChangeEventHeader"]
        for _, payload in sandbox.salesforce.changes.after(0, 10)
    ]
    write, edit = headers[:2], headers[2]
    assert [(h["recordIds"], h["sequenceNumber"]) for h in write] == [([first], 1), ([second], 2)]
    assert write[0]["transactionKey"] == write[1]["transactionKey"] != edit["transactionKey"]
    assert (write[0]["commitUser"], write[0]["nulledFields"]) == (USER_ID, [])
    # Who modified the lead changes too: the seed's import user, then the API's, then a person.
    modified = {"LastModifiedDate", "LastModifiedById"}
    written = {"Qualification_Reason__c", "Lead_Score__c", *modified}
    assert fields_in(write[0]["changedFields"], names) == written
    assert fields_in(edit["changedFields"], names) == {"Lead_Score__c", *modified}
    assert fields_in(edit["nulledFields"], names) == {"Lead_Score__c"}


def test_change_events_leave_out_fields_the_subscriber_cannot_read(org):
    sandbox = org()
    client = salesforce().client
    (grant,) = client.query(
        "SELECT Id FROM FieldPermissions WHERE Field = 'Lead.Page_Views__c'"
    )["records"]
    hidden = {"PermissionsRead": False, "PermissionsEdit": False}
    client.FieldPermissions.update(grant["Id"], hidden)
    (crm_id,) = lead_ids(sandbox, 1)
    call, responses = _raw_subscribe(sandbox, replay_preset=messages.ReplayPreset.EARLIEST)
    sandbox.salesforce.edit_as_person(crm_id, {"Rating": "Hot", "Page_Views__c": 1234})
    while not (response := next(responses)).events:
        pass
    call.cancel()
    event = fastavro.schemaless_reader(
        io.BytesIO(response.events[0].event.payload), changes.PARSED_SCHEMA
    )
    names = [field["name"] for field in json.loads(changes.SCHEMA_JSON)["fields"]]
    changed = fields_in(event["ChangeEventHeader"]["changedFields"], names)
    assert changed == {"Rating", "LastModifiedDate", "LastModifiedById"}
    assert (event["Rating"], event["Page_Views__c"]) == ("Hot", None)


def test_writes_through_a_bulk_api_ingest_job_come_back_as_echoes(org):
    sandbox = org()
    bulk = SalesforceConnector(
        salesforce().client, settings=ConnectorSettings(salesforce_bulk_threshold=2)
    )
    ids = lead_ids(sandbox, 3)
    with LeadChangeStream(bulk) as stream:
        listener = Listener(stream)
        listener.subscribed()
        report = bulk.write(pd.DataFrame({"crm_id": ids, "score": 12.0}))
        echoes = listener.events(3)
    assert bulk.usage().writes >= 3  # an ingest job: create, upload, close
    assert report["error"].isna().all()
    assert sorted((e.crm_id, e.kind, e.echo) for e in echoes) == [(i, "changed", True) for i in ids]


def test_run_hands_a_persons_changes_to_the_listeners_windows_until_closed(org):
    sandbox = org()
    first, second = lead_ids(sandbox, 2)
    start = _tip(sandbox)
    sandbox.salesforce.edit_as_person(first, {"Rating": "Warm"})
    sandbox.salesforce.delete_as_person(second)
    windows = ChangeWindows(window_seconds=WAIT, window_leads=2)
    stream = LeadChangeStream(salesforce())
    running = threading.Thread(target=stream.run, args=(windows.add, start))
    running.start()
    stop = threading.Event()
    give_up = threading.Timer(WAIT, stop.set)
    give_up.start()
    window = windows.next(stop)
    give_up.cancel()
    stream.close()
    running.join(timeout=WAIT)
    assert not running.is_alive()
    assert window is not None
    assert (set(window.changed), window.deleted) == ({first}, {second})


def test_a_persons_create_and_delete_arrive_as_created_and_deleted(org):
    sandbox = org()
    connector = salesforce()
    with LeadChangeStream(connector) as stream:
        listener = Listener(stream)
        listener.subscribed()
        created = connector.client.Lead.create({"LastName": "Rivera", "Company": "Acme"})["id"]
        (create,) = listener.events(1)
        sandbox.salesforce.delete_as_person(created)
        (delete,) = listener.events(1)
    assert (create.crm_id, create.kind, create.echo) == (created, "created", False)
    assert (delete.crm_id, delete.kind, delete.echo) == (created, "deleted", False)


def test_the_server_never_sends_more_than_requested(org):
    sandbox = org()
    connector = salesforce()
    ids = lead_ids(sandbox, 7)
    start = _tip(sandbox)
    for crm_id in ids:
        sandbox.salesforce.edit_as_person(crm_id, {"Rating": "Hot"})
    with LeadChangeStream(connector, batch_size=3) as stream:
        listener = Listener(stream, start)
        sizes = [len(listener.next_batch()[0]) for _ in range(3)]
    assert sizes == [3, 3, 1]  # each batch asked for only once the last was consumed


def test_the_server_holds_events_back_until_more_are_requested(org):
    sandbox = org()
    call, responses = _raw_subscribe(
        sandbox, num_requested=2, replay_preset=messages.ReplayPreset.EARLIEST
    )
    for crm_id in lead_ids(sandbox, 5):
        sandbox.salesforce.edit_as_person(crm_id, {"Rating": "Cold"})
    delivered = []
    while len(delivered) < 2:
        delivered += next(responses).events
    quiet = next(responses)  # only a keepalive: two were asked for and both sent
    call.cancel()
    assert len(delivered) == 2
    assert (len(quiet.events), quiet.pending_num_requested) == (0, 0)
    assert quiet.latest_replay_id == delivered[-1].replay_id


def test_keepalives_arrive_on_an_idle_stream_with_the_latest_replay_id(org):
    org()
    with LeadChangeStream(salesforce()) as stream:
        listener = Listener(stream)
        started = time.monotonic()
        replay_ids = [listener.subscribed() for _ in range(3)]
        elapsed = time.monotonic() - started
    assert len(set(replay_ids)) == 1 and len(replay_ids[0]) == 8
    assert 2 * KEEPALIVE <= elapsed < 3 * KEEPALIVE + 2


def test_a_stream_silent_past_the_idle_timeout_counts_as_dropped(org):
    org(pubsub_keepalive_seconds=WAIT)  # a server whose keepalives come too late
    with LeadChangeStream(salesforce(), idle_timeout=0.5) as stream:
        with pytest.raises(ConnectorError, match="not even a keepalive, for 0.5 s"):
            next(stream.batches())


def test_a_resumed_subscription_gets_exactly_the_events_after_its_replay_id(org):
    sandbox = org()
    connector = salesforce()
    ids = lead_ids(sandbox, 6)
    with LeadChangeStream(connector) as stream:
        listener = Listener(stream)
        listener.subscribed()
        for crm_id in ids[:3]:
            sandbox.salesforce.edit_as_person(crm_id, {"Rating": "Warm"})
        seen = listener.events(3)
    stored = bytes.fromhex(seen[1].event_id)  # as a listener that stopped after the second
    for crm_id in ids[3:]:
        sandbox.salesforce.edit_as_person(crm_id, {"Rating": "Warm"})
    with LeadChangeStream(connector) as stream:
        resumed = Listener(stream, stored).events(4)
    assert [e.crm_id for e in resumed] == ids[2:]
    assert resumed[0].event_id == seen[2].event_id


def test_a_replay_id_survives_a_sandbox_restart_with_a_data_dir(tmp_path, monkeypatch):
    settings = SalesforceSettings(pubsub_keepalive_seconds=1)
    config = SandboxConfig(leads=5, data_dir=tmp_path / "org", salesforce=settings)
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "info.json"))
    monkeypatch.setenv("LEADSYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    with Sandbox(config) as sandbox:
        ids = lead_ids(sandbox, 3)
        start = _tip(sandbox)
        for crm_id in ids:
            sandbox.salesforce.edit_as_person(crm_id, {"Rating": "Hot"})
        sandbox.write_info(tmp_path / "info.json")
        with LeadChangeStream(salesforce()) as stream:
            first = Listener(stream, start).events(3)
    with Sandbox(config) as sandbox:  # a new process's ports; the same database
        sandbox.write_info(tmp_path / "info.json")
        sandbox.salesforce.edit_as_person(ids[0], {"Rating": "Cold"})
        with LeadChangeStream(salesforce()) as stream:
            after = Listener(stream, bytes.fromhex(first[0].event_id)).events(3)
    assert [e.crm_id for e in after] == [ids[1], ids[2], ids[0]]
    assert after[0].event_id == first[1].event_id


def test_a_replay_id_past_retention_raises_replay_expired(org):
    sandbox = org(cdc_retention_hours=0.5 / 3600)  # half a second
    (crm_id,) = lead_ids(sandbox, 1)
    sandbox.salesforce.edit_as_person(crm_id, {"Rating": "Hot"})
    first = _tip(sandbox)  # the replay id a listener got for that event
    sandbox.salesforce.edit_as_person(crm_id, {"Rating": "Warm"})
    time.sleep(0.6)
    with LeadChangeStream(salesforce()) as stream:
        with pytest.raises(ReplayExpired, match=first.hex()) as raised:
            Listener(stream, first).next_batch()
    assert "scheduled sync" in str(raised.value)


def test_an_unknown_replay_id_is_refused_with_salesforces_error_code(org):
    sandbox = org()
    call, responses = _raw_subscribe(
        sandbox, replay_preset=messages.ReplayPreset.CUSTOM, replay_id=(10**9).to_bytes(8, "big")
    )
    with pytest.raises(grpc.RpcError) as raised:
        next(responses)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    trailers = dict(raised.value.trailing_metadata())
    assert trailers["error-code"] == (
        "sfdc.platform.eventbus.grpc.subscription.fetch.replayid.corrupted"
    )
    assert "rpcId: " + trailers["rpc-id"] in raised.value.details()


@pytest.mark.parametrize(
    ("first", "error_code"),
    [
        ({"num_requested": 0}, "subscription.fetch.requested.events.invalid"),
        ({"replay_preset": messages.ReplayPreset.CUSTOM}, "replayid.validation.failed"),
        ({"topic_name": ""}, "topic.validation.empty"),
    ],
)
def test_a_bad_first_fetch_request_is_refused(org, first, error_code):
    call, responses = _raw_subscribe(org(), **first)
    with pytest.raises(grpc.RpcError) as raised:
        next(responses)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert dict(raised.value.trailing_metadata())["error-code"].endswith(error_code)


def test_a_bad_token_is_refused(org):
    sandbox = org()
    connector = salesforce()
    with LeadChangeStream(connector) as stream:
        Listener(stream).subscribed()
        connector.client.session_id = "00Dsandbox!not-a-session"
        with pytest.raises(AuthenticationFailed, match="Pub/Sub API refused the session"):
            next(stream.batches())
    stub, metadata = _stub(sandbox)
    wrong_org = (*metadata[:2], ("tenantid", "00D000000000001AAA"))
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetTopic(messages.TopicRequest(topic_name="/data/LeadChangeEvent"), metadata=wrong_org)
    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_expired_session_is_renewed_with_the_connectors_sign_in(org, monkeypatch):
    sandbox = org()
    info = sandbox.info["salesforce"]
    jwt_bearer = {
        "SALESFORCE_CONSUMER_KEY": info["client_id"],
        "SALESFORCE_USERNAME": info["username"],
        "SALESFORCE_PRIVATE_KEY_FILE": info["private_key_file"],
        "SALESFORCE_SANDBOX_URL": info["instance_url"],
        "LEADSYNC_CA_BUNDLE": sandbox.info["ca_cert"],
    }
    for name, value in jwt_bearer.items():
        monkeypatch.setenv(name, value)
    with LeadChangeStream(salesforce()) as stream:
        Listener(stream).subscribed()
        issued = sandbox.salesforce.sign_in.issued
        sandbox.salesforce.sign_in.expire_sessions()
        assert Listener(stream).subscribed()
    assert sandbox.salesforce.sign_in.issued == issued + 1


def test_an_unknown_topic_and_unknown_request_fields_are_refused(org):
    stub, metadata = _stub(org())
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetTopic(
            messages.TopicRequest(topic_name="/data/ContactChangeEvent"), metadata=metadata
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert dict(raised.value.trailing_metadata())["error-code"].endswith("topic.not.found")
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetSchema(messages.SchemaRequest(schema_id="no-such-schema"), metadata=metadata)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    unknown_field = messages.TopicRequest.FromString(
        messages.TopicRequest(topic_name="/data/LeadChangeEvent").SerializeToString()
        + b"\x10\x01"  # field 2, a varint: no such field in TopicRequest
    )
    with pytest.raises(grpc.RpcError) as raised:
        stub.GetTopic(unknown_field, metadata=metadata)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_closing_the_stream_leaves_no_thread_behind(org):
    org()
    connector = salesforce()
    _subscribe_and_close(connector)  # the sandbox's own server threads start here
    before = set(threading.enumerate())
    _subscribe_and_close(connector)
    deadline = time.monotonic() + WAIT
    while _new_client_threads(before) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _new_client_threads(before) == set()


def _new_client_threads(before: set[threading.Thread]) -> set[threading.Thread]:
    """Threads started since `before`, but for the sandbox server's pool: it starts a worker
    when a call comes while its others are busy, and keeps it for the next calls."""
    return {
        thread
        for thread in set(threading.enumerate()) - before
        if not thread.name.startswith(SANDBOX_SERVER_THREADS)
    }


def _subscribe_and_close(connector: SalesforceConnector) -> None:
    stream = LeadChangeStream(connector)
    listener = Listener(stream)
    listener.subscribed()
    stream.close()
    listener.thread.join(timeout=WAIT)
    assert not listener.thread.is_alive()


# A client nobody on the project wrote: stubs generated from Salesforce's own published
# pubsub_api.proto (forcedotcom/pub-sub-api), run in a process of its own (its messages have the
# same full names as leadsync's, which one process cannot hold twice).
FOREIGN_CLIENT = """
import io, json, sys
import fastavro, grpc
import pubsub_api_pb2 as pb, pubsub_api_pb2_grpc as rpc

endpoint, ca, token, instance, org = sys.argv[1:]
channel = grpc.secure_channel(endpoint, grpc.ssl_channel_credentials(open(ca, "rb").read()))
stub = rpc.PubSubStub(channel)
auth = (("accesstoken", token), ("instanceurl", instance), ("tenantid", org))
topic = stub.GetTopic(pb.TopicRequest(topic_name="/data/LeadChangeEvent"), metadata=auth)
schema = fastavro.parse_schema(json.loads(
    stub.GetSchema(pb.SchemaRequest(schema_id=topic.schema_id), metadata=auth).schema_json))
first = pb.FetchRequest(topic_name=topic.topic_name, replay_preset=pb.ReplayPreset.EARLIEST,
                        num_requested=1)
for response in stub.Subscribe(iter([first]), metadata=auth):
    if response.events:
        payload = response.events[0].event.payload
        print(json.dumps(fastavro.schemaless_reader(io.BytesIO(payload), schema, schema)[
            "ChangeEventHeader"]))
        break
"""


@pytest.mark.skipif(
    not Path(os.environ.get("SALESFORCE_PUBSUB_PROTO", "/nonexistent")).is_file(),
    reason="SALESFORCE_PUBSUB_PROTO names no copy of Salesforce's pubsub_api.proto",
)
def test_a_client_generated_from_salesforces_own_proto_reads_the_sandbox(org, tmp_path):
    sandbox = org()
    (crm_id,) = lead_ids(sandbox, 1)
    sandbox.salesforce.edit_as_person(crm_id, {"Rating": "Hot"})
    proto = Path(os.environ["SALESFORCE_PUBSUB_PROTO"])
    compile_proto = ["protoc", f"-I{proto.parent}", f"--python_out={tmp_path}"]
    assert protoc.main([*compile_proto, f"--grpc_python_out={tmp_path}", str(proto)]) == 0
    info = sandbox.info
    arguments = [
        info["salesforce"]["pubsub_endpoint"],
        info["ca_cert"],
        info["salesforce"]["session_id"],
        info["salesforce"]["instance_url"],
        ORG_ID,
    ]
    ran = subprocess.run(
        [sys.executable, "-c", FOREIGN_CLIENT, *arguments],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert ran.returncode == 0, ran.stderr
    header = json.loads(ran.stdout)
    assert (header["recordIds"], header["changeType"]) == ([crm_id], "UPDATE")
    assert header["changedFields"]  # a bitmap of Rating, LastModifiedDate and LastModifiedById


# --- helpers that speak the Pub/Sub API directly ---------------------------------------------


def _stub(sandbox: Sandbox) -> tuple[services.PubSubStub, tuple[tuple[str, str], ...]]:
    info = sandbox.info
    with open(info["ca_cert"], "rb") as ca:
        credentials = grpc.ssl_channel_credentials(ca.read())
    channel = grpc.secure_channel(info["salesforce"]["pubsub_endpoint"], credentials)
    metadata = (
        ("accesstoken", info["salesforce"]["session_id"]),
        ("instanceurl", info["salesforce"]["instance_url"]),
        ("tenantid", ORG_ID),
    )
    return services.PubSubStub(channel), metadata


def _raw_subscribe(sandbox: Sandbox, **first):
    stub, metadata = _stub(sandbox)
    hold_open = threading.Event()

    def requests():
        yield messages.FetchRequest(
            **{"topic_name": "/data/LeadChangeEvent", "num_requested": 1, **first}
        )
        hold_open.wait(WAIT)

    call = stub.Subscribe(requests(), metadata=metadata, timeout=WAIT)
    return call, iter(call)


def _tip(sandbox: Sandbox) -> bytes:
    return sandbox.salesforce.changes.tip().to_bytes(8, "big")
