"""Speed to lead: rescore a lead seconds after it changes, from the CRM's own change stream.

A listener takes the change events of one CRM (HubSpot webhooks, Salesforce Change Data
Capture: connectors/), drops leadsync's own writes coming back (echoes), and gathers the rest
into windows: a window opens with its first change and closes `window_seconds` later, or at
`window_leads` leads when no more are waiting. Under a burst every change already waiting joins
the window (up to `max_window_leads`), so a backlog drains in few, large runs. Each window is one
`rescore-leads` run (flows/rescore.py): a lead changed twice in a window is read once. The
scheduled sync stays as the safety net for anything a listener missed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

from connectors.events import LeadEvent

logger = logging.getLogger("leadsync.listen")


@dataclass
class Window:
    """The changes of one window: the leads to rescore, those deleted, when each first changed."""

    changed: dict[str, pd.Timestamp] = field(default_factory=dict)  # crm_id -> first change
    deleted: set[str] = field(default_factory=set)
    echoes: int = 0
    last_event_id: str | None = None  # of the last event taken, echoes included
    opened_at: float = 0.0  # time.monotonic() of its first change

    def take(self, event: LeadEvent) -> None:
        self.last_event_id = event.event_id
        if event.echo:
            self.echoes += 1
            return
        if not self.changed and not self.deleted:
            self.opened_at = time.monotonic()
        if event.kind == "deleted":
            self.deleted.add(event.crm_id)
            self.changed.pop(event.crm_id, None)
            return
        self.deleted.discard(event.crm_id)
        first = self.changed.get(event.crm_id)
        if first is None or event.occurred_at < first:
            self.changed[event.crm_id] = event.occurred_at

    @property
    def leads(self) -> int:
        return len(self.changed) + len(self.deleted)

    @property
    def oldest_change(self) -> pd.Timestamp | None:
        return min(self.changed.values()) if self.changed else None


class ChangeWindows:
    """Change events in, windows of leads out. `add` is the event sink (any thread); `next`
    blocks until a window is due."""

    def __init__(
        self, window_seconds: float = 2.0, window_leads: int = 100, max_window_leads: int = 5_000
    ):
        self.window_seconds, self.window_leads = window_seconds, window_leads
        self.max_window_leads = max_window_leads
        self._events: queue.Queue[LeadEvent] = queue.Queue()

    def add(self, events: list[LeadEvent]) -> None:
        for event in events:
            self._events.put(event)

    def next(self, stop: threading.Event, poll_seconds: float = 0.2) -> Window | None:
        """The next window with a lead in it; None once `stop` is set (a window being gathered
        then is returned first)."""
        window = Window()
        while not stop.is_set() or window.leads:
            timeout = self._wait(window, poll_seconds)
            if timeout == 0.0:
                return window
            try:
                window.take(self._events.get(timeout=timeout))
            except queue.Empty:
                if stop.is_set() and window.leads:
                    return window
                continue
            if window.leads >= self.max_window_leads:
                return window
            if window.leads >= self.window_leads and self._events.empty():
                return window
        return None

    def _wait(self, window: Window, poll_seconds: float) -> float:
        """How long to wait for the next event: 0 when the window is due."""
        if not window.leads:
            return poll_seconds
        if not self._events.empty():
            return poll_seconds  # take what is waiting first
        left = window.opened_at + self.window_seconds - time.monotonic()
        return max(0.0, min(left, poll_seconds))


RescoreWindow = Callable[[Window], bool]  # runs the window; True when it completed


def listen(
    windows: ChangeWindows,
    rescore: RescoreWindow,
    stop: threading.Event,
    on_done: Callable[[Window], None] = lambda window: None,
) -> int:
    """Run a window at a time until `stop`; `on_done` gets each window that completed (e.g. to
    store the replay id it reached). Returns the windows run."""
    runs = 0
    while (window := windows.next(stop)) is not None:
        runs += 1
        if rescore(window):
            on_done(window)
        else:
            logger.warning(
                "A rescore of %d leads did not complete: they are owed, and the next run or "
                "the scheduled sync retries them",
                window.leads,
            )
    return runs
