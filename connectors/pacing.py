"""Client-side pacing: stay under a CRM's request budget instead of bouncing off it with 429s."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable


class Pacer:
    """Blocks just long enough that at most `limit` calls start in any `seconds` window."""

    def __init__(
        self,
        limit: int,
        seconds: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if limit < 1 or seconds <= 0:
            raise ValueError("a pacer needs limit >= 1 and seconds > 0")
        self.limit, self.seconds = limit, seconds
        self._clock, self._sleep = clock, sleep
        self._starts: deque[float] = deque()
        self._lock = threading.Lock()

    def wait(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                while self._starts and self._starts[0] <= now - self.seconds:
                    self._starts.popleft()
                if len(self._starts) < self.limit:
                    self._starts.append(now)
                    return
                delay = self._starts[0] + self.seconds - now
            self._sleep(delay)
