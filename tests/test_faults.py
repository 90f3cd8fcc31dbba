"""The sandbox's fault injection: draws keyed on what they are for (so the same requests get the
same faults in any arrival order, and a retry gets a fresh draw), fault keys that ignore what
moves from run to run, and the `hang` fault, which answers nothing yet never holds up a stop."""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from urllib.parse import urlsplit

import pytest
import requests
from simple_salesforce import Salesforce

from sandbox.__main__ import _parser, fault_plan
from sandbox.http import FaultPlan, Faults, Request
from sandbox.run import Sandbox, SandboxConfig

PLAN = FaultPlan(rate_limited=0.1, server_error=0.1, dropped=0.05, hang=0.05, seed=7)


def draws(faults: Faults, keys: list[str]) -> dict[tuple[str, int], str | None]:
    """The fault each request got, by (its key, how many times it had been seen before)."""
    seen: Counter[str] = Counter()
    got = {}
    for key in keys:
        got[key, seen[key]] = faults.next_request_fault(key)
        seen[key] += 1
    return got


def test_the_same_requests_get_the_same_faults_in_any_arrival_order():
    keys = [f"POST /crm/v3/objects/contacts/batch/update {n}" for n in range(300)] * 3
    in_order = draws(Faults(PLAN), keys)
    shuffled = keys.copy()
    random.Random(1).shuffle(shuffled)
    assert draws(Faults(PLAN), shuffled) == in_order
    kinds = Counter(in_order.values())
    assert {"rate_limited", "server_error", "dropped", "hang", None} <= set(kinds)
    # a retry (the same request seen again) draws afresh
    assert any(in_order[key, 0] != in_order[key, 1] for key, _ in in_order)
    assert draws(Faults(FaultPlan(**{**PLAN.__dict__, "seed": 8})), keys) != in_order


def test_concurrent_requests_get_the_same_faults_as_sequential_ones():
    keys = [f"GET /query {n}" for n in range(200)]
    expected = draws(Faults(PLAN), keys)
    faults, got = Faults(PLAN), {}

    def request(key: str) -> None:
        got[key, 0] = faults.next_request_fault(key)

    threads = [threading.Thread(target=request, args=(key,)) for key in reversed(keys)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert got == expected


def test_write_errors_are_drawn_per_record_and_write():
    ids = [f"00Q5g{n:010d}AAA" for n in range(500)]
    plan = FaultPlan(write_error=0.2, seed=3)
    first, again = Faults(plan), Faults(plan)
    failed = {i for i in ids if first.write_fails(i)}
    assert {i for i in reversed(ids) if again.write_fails(i)} == failed
    assert 50 < len(failed) < 150
    second_writes = {i for i in ids if first.write_fails(i)}  # each record's second write
    assert second_writes != failed and second_writes == {i for i in ids if again.write_fails(i)}
    first.configure(plan)  # a new plan starts counting again
    assert {i for i in ids if first.write_fails(i)} == failed


def salesforce_client(sandbox: Sandbox, trusted_session) -> Salesforce:
    return Salesforce(
        instance_url=sandbox.info["salesforce"]["instance_url"],
        session_id=sandbox.info["salesforce"]["session_id"],
        session=trusted_session(sandbox),
    )


def get(url: str) -> Request:
    parts = urlsplit(url)
    query = {name: [value] for name, _, value in [p.partition("=") for p in parts.query.split("&")]}
    return Request("GET", parts.path, query if parts.query else {}, {}, b"")


def test_salesforce_fault_keys_name_records_not_times_or_cursor_numbers(
    start_sandbox, trusted_session
):
    sandbox = start_sandbox(leads=2_500)
    api, sf = sandbox.salesforce, salesforce_client(sandbox, trusted_session)
    path = "/services/data/v59.0/query"

    def window(start: str) -> str:
        return f"SELECT Id FROM Lead WHERE LastModifiedDate >= {start} ORDER BY Id"

    earlier, later = window("2020-01-01T00:00:00Z"), window("2024-05-06T07:08:09+00:00")
    key = api.fault_key
    assert key(get(f"{path}?q={earlier}")) == key(get(f"{path}?q={later}"))
    assert key(get(f"{path}?q={earlier}")) != key(get(f"{path}?q={earlier} LIMIT 5"))
    # two cursors of one query: different locators, the same next-page requests
    first, second = sf.query(earlier)["nextRecordsUrl"], sf.query(later)["nextRecordsUrl"]
    assert first != second
    assert key(get(first)) == key(get(second)) != key(get(first.replace("-2000", "-1000")))

    def collection(ids: list[str], score: int) -> Request:
        body = {"allOrNone": False, "records": [{"id": i, "Lead_Score__c": score} for i in ids]}
        return Request(
            "PATCH", "/services/data/v59.0/composite/sobjects", {}, {}, _json(body)
        )

    ids = [record["Id"] for record in sf.query("SELECT Id FROM Lead LIMIT 3")["records"]]
    assert key(collection(ids, 1)) == key(collection(ids, 2)) != key(collection(ids[:2], 1))


def test_hubspot_fault_keys_name_records_not_times(start_sandbox):
    api = start_sandbox().hubspot
    search = "/crm/v3/objects/contacts/search"

    def page(since: int, above: str | None, direction: str = "ASCENDING") -> Request:
        filters = [{"propertyName": "lastmodifieddate", "operator": "GTE", "value": since}]
        if above:
            filters.append({"propertyName": "hs_object_id", "operator": "GT", "value": above})
        body = {
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": "hs_object_id", "direction": direction}],
            "limit": 200,
        }
        return Request("POST", search, {}, {}, _json(body))

    key = api.fault_key
    assert key(page(1_700_000_000_000, "200")) == key(page(1_800_000_000_000, "200"))
    assert key(page(1_700_000_000_000, "200")) != key(page(1_700_000_000_000, "400"))
    assert key(page(1, None)) != key(page(1, None, "DESCENDING"))

    def batch(ids: list[str], stamp: str) -> Request:
        inputs = [{"id": i, "properties": {"leadsync_qualified_at": stamp}} for i in ids]
        return Request(
            "POST", "/crm/v3/objects/contacts/batch/update", {}, {}, _json({"inputs": inputs})
        )

    assert key(batch(["1", "2"], "2024-01-01")) == key(batch(["1", "2"], "2025-02-02"))
    assert key(batch(["1", "2"], "2024-01-01")) != key(batch(["1", "3"], "2024-01-01"))


def _json(body) -> bytes:
    return json.dumps(body).encode()


def test_a_hung_request_gets_no_answer_and_never_holds_up_a_stop(trusted_session):
    sandbox = Sandbox(
        SandboxConfig(leads=0, faults=FaultPlan(hang=1.0, hang_seconds=3_600))
    ).start()
    url = f"{sandbox.info['salesforce']['instance_url']}/services/data/v59.0/limits"
    session = trusted_session(sandbox)
    outcome: dict[str, BaseException] = {}

    def wait_long() -> None:
        try:
            session.get(url, timeout=(5, 60))
        except requests.RequestException as error:
            outcome["error"] = error

    try:
        with pytest.raises(requests.exceptions.ReadTimeout):
            session.get(url, timeout=(5, 0.5))  # read, never answered
        waiting = threading.Thread(target=wait_long)
        waiting.start()
        time.sleep(0.5)
    finally:
        started = time.monotonic()
        sandbox.stop()
    assert time.monotonic() - started < 3
    waiting.join(timeout=5)
    assert not waiting.is_alive()  # the stop closed the held connection: no answer, ever
    assert isinstance(outcome["error"], requests.exceptions.ConnectionError)


def test_serve_options_ask_for_hangs():
    args = _parser().parse_args(["serve", "--hang", "0.05", "--hang-seconds", "9"])
    assert fault_plan(args) == FaultPlan(hang=0.05, hang_seconds=9)
    assert fault_plan(_parser().parse_args(["serve"])).hang_seconds == 3_600
