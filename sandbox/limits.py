"""Request budgets as the CRMs enforce them: a rolling window (HubSpot's per-10-second and
per-second limits) and a daily counter (Salesforce's and HubSpot's daily API limits)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int  # after this request
    retry_after_seconds: float  # when refused: how long until a request would be allowed


class RollingWindow:
    """At most `limit` requests in any `seconds`-long window."""

    def __init__(self, limit: int, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.limit, self.seconds, self._clock = limit, seconds, clock
        self._times: deque[float] = deque()
        self._lock = threading.Lock()

    def take(self) -> Verdict:
        with self._lock:
            now = self._clock()
            while self._times and self._times[0] <= now - self.seconds:
                self._times.popleft()
            if len(self._times) >= self.limit:
                wait = self._times[0] + self.seconds - now
                return Verdict(False, self.limit, 0, max(wait, 0.0))
            self._times.append(now)
            return Verdict(True, self.limit, self.limit - len(self._times), 0.0)


class DailyCounter:
    """A daily request count that resets at midnight UTC; `used` can be set (tests, demos)."""

    def __init__(self, limit: int, clock: Callable[[], float] = time.time):
        self.limit, self._clock = limit, clock
        self.used = 0
        self._day = self._today()
        self._lock = threading.Lock()

    def take(self) -> Verdict:
        with self._lock:
            if self._today() != self._day:
                self._day, self.used = self._today(), 0
            if self.used >= self.limit:
                seconds_to_midnight = 86_400 - self._clock() % 86_400
                return Verdict(False, self.limit, 0, seconds_to_midnight)
            self.used += 1
            return Verdict(True, self.limit, self.limit - self.used, 0.0)

    def _today(self) -> int:
        return math.floor(self._clock() / 86_400)
