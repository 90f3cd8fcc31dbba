"""How HubSpot delivers webhook events to an app's target URL: POSTs of up to 100 events (a JSON
array), signed with the app's client secret (`X-HubSpot-Signature-v3` over method, URI, body and
`X-HubSpot-Request-Timestamp`; and the v1 signature, for older receivers), at most
`maxConcurrentRequests` at once.

A delivery fails on a connection error, an answer other than 2xx, or no answer within the
timeout (HubSpot's: 5 seconds). Its events are then sent again, `attemptNumber` one higher, up to
10 times, after exponential delays that fit in 24 hours, each drawn at random between the
previous delay's maximum and its own (HubSpot's schedule); `retry_scale` shrinks the schedule so a
test sees retries within a second.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import itertools
import json
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

BATCH_LIMIT = 100
MAX_RETRIES = 10
RETRY_WINDOW_SECONDS = 86_400.0


@dataclass(frozen=True)
class Target:
    """Where events go now, and how many deliveries may be in flight there at once."""

    url: str
    max_concurrent_requests: int


@dataclass(order=True)
class _Pending:
    due: float  # time.monotonic()
    order: int
    event: dict[str, Any] = field(compare=False)


def retry_delay(attempt: int, draw: Callable[[float, float], float]) -> float:
    """Seconds before attempt number `attempt` (1 for the first retry): the n-th retry waits at
    most window * 2^(n-1) / (2^10 - 1), so the ten maxima add up to the 24-hour window."""
    ceiling = RETRY_WINDOW_SECONDS * 2 ** (attempt - 1) / (2**MAX_RETRIES - 1)
    return draw(ceiling / 2, ceiling)


def signature_headers(
    client_secret: str, uri: str, body: bytes, timestamp_ms: int
) -> dict[str, str]:
    """The headers HubSpot signs a webhook POST with."""
    secret = client_secret.encode()
    signed = b"POST" + uri.encode() + body + str(timestamp_ms).encode()
    v3 = base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    return {
        "Content-Type": "application/json",
        "X-HubSpot-Signature-v3": v3,
        "X-HubSpot-Request-Timestamp": str(timestamp_ms),
        "X-HubSpot-Signature": hashlib.sha256(secret + body).hexdigest(),
        "X-HubSpot-Signature-Version": "v1",
    }


class Delivery:
    """A scheduler thread that batches due events and a thread per delivery in flight."""

    def __init__(
        self,
        client_secret: str,
        target: Callable[[], Target | None],
        retry_scale: float = 1.0,
        timeout_seconds: float = 5.0,
        seed: int = 0,
    ):
        self._client_secret, self._target = client_secret, target
        self._retry_scale, self._timeout = retry_scale, timeout_seconds
        self._random = random.Random(seed)
        self._pending: list[_Pending] = []
        self._order = itertools.count()
        self._condition = threading.Condition()
        self._stopping = False
        self._in_flight: set[threading.Thread] = set()
        self._scheduler = threading.Thread(
            target=self._schedule, name="hubspot-webhooks", daemon=True
        )
        self.peak_in_flight = 0
        self.deliveries = 0  # POSTs answered 2xx in time
        self.failures = 0  # POSTs that failed and were (or would have been) retried
        self.abandoned = 0  # events dropped after their last attempt failed

    def start(self) -> None:
        self._scheduler.start()

    def stop(self) -> None:
        """Stops scheduling; deliveries in flight finish (each within the timeout)."""
        with self._condition:
            self._stopping = True
            self._condition.notify_all()
            in_flight = list(self._in_flight)
        if self._scheduler.is_alive():
            self._scheduler.join(timeout=5)
        for thread in in_flight:
            thread.join(timeout=self._timeout + 1)

    def enqueue(self, events: list[dict[str, Any]]) -> None:
        due = time.monotonic()
        with self._condition:
            for event in events:
                heapq.heappush(self._pending, _Pending(due, next(self._order), event))
            self._condition.notify_all()

    def idle(self) -> bool:
        """Nothing waiting and nothing in flight (retries waiting count as waiting)."""
        with self._condition:
            return not self._pending and not self._in_flight

    def _schedule(self) -> None:
        while True:
            with self._condition:
                batch = self._next_batch()
                if batch is None:
                    return
                target, events = batch
                thread = threading.Thread(
                    target=self._deliver,
                    args=(target, events),
                    name="hubspot-webhook-post",
                    daemon=True,
                )
                self._in_flight.add(thread)
                self.peak_in_flight = max(self.peak_in_flight, len(self._in_flight))
            thread.start()

    def _next_batch(self) -> tuple[Target, list[dict[str, Any]]] | None:
        """Waits (holding the condition) for due events and a free slot; None when stopping."""
        while not self._stopping:
            target = self._target()
            if target is None:
                self._pending.clear()  # no target URL: nothing is sent
            now = time.monotonic()
            if target and self._pending and self._pending[0].due <= now:
                if len(self._in_flight) < target.max_concurrent_requests:
                    return target, self._due_events(now)
                self._condition.wait()
            else:
                wait = self._pending[0].due - now if self._pending else None
                self._condition.wait(timeout=wait)
        return None

    def _due_events(self, now: float) -> list[dict[str, Any]]:
        events = []
        while self._pending and self._pending[0].due <= now and len(events) < BATCH_LIMIT:
            events.append(heapq.heappop(self._pending).event)
        return events

    def _deliver(self, target: Target, events: list[dict[str, Any]]) -> None:
        delivered = False
        try:
            delivered = self._post(target.url, events)
        finally:
            with self._condition:
                self._in_flight.discard(threading.current_thread())
                if delivered:
                    self.deliveries += 1
                else:
                    self.failures += 1
                    self._retry(events)
                self._condition.notify_all()

    def _post(self, url: str, events: list[dict[str, Any]]) -> bool:
        body = json.dumps(events, separators=(",", ":")).encode()
        headers = signature_headers(self._client_secret, url, body, time.time_ns() // 1_000_000)
        started = time.monotonic()
        try:
            with requests.Session() as session:
                session.trust_env = False  # a target on this host is reached directly
                response = session.post(
                    url, data=body, headers=headers, timeout=self._timeout, allow_redirects=False
                )
        except requests.RequestException:
            return False
        in_time = time.monotonic() - started <= self._timeout
        return 200 <= response.status_code < 300 and in_time

    def _retry(self, events: list[dict[str, Any]]) -> None:
        """Holding the condition: the failed events again, those of one attempt number together."""
        by_attempt: dict[int, list[dict[str, Any]]] = {}
        for event in events:
            by_attempt.setdefault(event["attemptNumber"] + 1, []).append(event)
        for attempt, retried in by_attempt.items():
            if attempt > MAX_RETRIES:
                self.abandoned += len(retried)
                continue
            due = time.monotonic() + retry_delay(attempt, self._random.uniform) * self._retry_scale
            for event in retried:
                entry = _Pending(due, next(self._order), {**event, "attemptNumber": attempt})
                heapq.heappush(self._pending, entry)
