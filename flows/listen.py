"""Speed to lead: rescore a lead seconds after it changes, from the CRM's own change stream.

A listener takes the change events of one CRM (HubSpot webhooks, Salesforce Change Data
Capture: connectors/), drops leadsync's own writes coming back (echoes), and gathers the rest
into windows: a window opens with its first change and closes `window_seconds` later, or at
`window_leads` leads once no change came for `quiet_seconds`. Under a burst every change already
waiting or still arriving joins the window (up to `max_window_leads`): a CRM delivers a burst in
many requests close together, which become one run, not a small one and then the rest. Each
window is one `rescore-leads` run (flows/rescore.py): a lead changed twice in a window is read
once. The scheduled sync stays as the safety net for anything a listener missed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pandas as pd
from prefect.states import State

from connectors import connector_for
from connectors.events import LeadEvent
from flows.ledger import Ledger, Progress
from flows.rescore import rescore_leads
from flows.settings import ListenSettings

logger = logging.getLogger("leadsync.listen")
REPLAY_KEY = "listen:salesforce:replay-id"  # ledger progress: the last event a window completed
RECONNECT_SECONDS = 2.0


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
        self,
        window_seconds: float = 2.0,
        window_leads: int = 100,
        max_window_leads: int = 5_000,
        quiet_seconds: float = 0.25,
    ):
        self.window_seconds, self.window_leads = window_seconds, window_leads
        self.max_window_leads, self.quiet_seconds = max_window_leads, quiet_seconds
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
                if window.leads >= self.window_leads or (stop.is_set() and window.leads):
                    return window  # quiet for quiet_seconds, or stopping
                continue
            if window.leads >= self.max_window_leads:
                return window
        return None

    def _wait(self, window: Window, poll_seconds: float) -> float:
        """How long to wait for the next event: 0 when the window is due."""
        if not window.leads:
            return poll_seconds
        if not self._events.empty():
            return poll_seconds  # take what is waiting first
        left = window.opened_at + self.window_seconds - time.monotonic()
        if left <= 0:
            return 0.0
        if window.leads >= self.window_leads:
            return min(left, self.quiet_seconds)
        return min(left, poll_seconds)


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


class Listener:
    """One CRM's change stream through windows into rescore runs, until `stop` is set.

    Salesforce: a Change Data Capture subscription, resumed from the replay id of the last
    window that completed (kept in the ledger), so events that came while the listener was down
    are caught up on restart; past Salesforce's 72 hours the scheduled sync catches up.
    HubSpot: the webhook receiver on `settings.host`:`settings.port` (HubSpot retries a delivery
    the listener could not take); with the app's developer API key known (the sandbox's, or
    HUBSPOT_DEVELOPER_API_KEY), the app is subscribed to it first.
    """

    def __init__(
        self,
        source: str,
        settings: ListenSettings | None = None,
        credentials_block: str | None = None,
        rules_path: str | None = None,
    ):
        self.source, self.settings = source, settings or ListenSettings()
        self.credentials_block, self.rules_path = credentials_block, rules_path
        self.windows = ChangeWindows(
            self.settings.window_seconds,
            self.settings.window_leads,
            self.settings.max_window_leads,
            self.settings.quiet_seconds,
        )
        self.stop = threading.Event()
        self.ready = threading.Event()  # the stream is open, or the receiver answers
        self.states: list[State] = []  # of the rescore runs, in order
        self.ledger = Ledger()
        self._port = self.settings.port  # HubSpot: the receiver's, once bound (0: any free one)

    def run(self) -> int:
        """Listen until `stop`; returns the rescore runs made."""
        connector = connector_for(self.source, self.credentials_block)
        connector.check_fields()  # once: the rescore runs do not repeat it
        events = self._salesforce if self.source == "salesforce" else self._hubspot
        with events(connector):
            return listen(self.windows, self._rescore, self.stop, self._completed)

    @property
    def receiver_url(self) -> str:
        return self.settings.public_url or f"http://{self.settings.host}:{self._port}/"

    def _rescore(self, window: Window) -> bool:
        state = rescore_leads(
            source=self.source,
            crm_ids=sorted(window.changed),
            deleted_ids=sorted(window.deleted),
            changed_since=window.oldest_change,
            rules_path=self.rules_path,
            credentials_block=self.credentials_block,
            return_state=True,
        )
        self.states.append(state)
        return state.is_completed()

    def _completed(self, window: Window) -> None:
        if self.source == "salesforce" and window.last_event_id:
            self._save_replay_id(window.last_event_id)

    def _save_replay_id(self, replay_id: str) -> None:
        """Where a restarted listener resumes: after the last event of a completed window."""
        self.ledger.save_progress(REPLAY_KEY, Progress(position=replay_id), None)

    @contextmanager
    def _salesforce(self, connector) -> Iterator[None]:
        from connectors.salesforce.cdc import LeadChangeStream

        stream = LeadChangeStream(connector)
        pump = threading.Thread(target=self._pump, args=(stream,), name="cdc", daemon=True)
        pump.start()
        try:
            yield
        finally:
            self.stop.set()
            stream.close()
            pump.join(timeout=10)

    def _pump(self, stream) -> None:
        """Events of the subscription into the windows; after a dropped stream it subscribes
        again from the last event it took."""
        from connectors.salesforce.cdc import ReplayExpired

        saved = self.ledger.progress(REPLAY_KEY)
        replay = bytes.fromhex(saved.position) if saved and saved.position else None
        while not self.stop.is_set():
            try:
                for events, latest in stream.batches(replay):
                    if replay is None and not events:  # first start: resume from here on
                        self._save_replay_id(latest.hex())
                    self.ready.set()
                    self.windows.add(events)
                    replay = bytes.fromhex(events[-1].event_id) if events else replay or latest
                    if self.stop.is_set():
                        return
                return  # closed
            except ReplayExpired as error:
                logger.warning("%s", error)
                replay = None
            except Exception as error:  # noqa: BLE001 - a dropped stream is reopened
                if self.stop.is_set():
                    return
                logger.warning("Change Data Capture stream dropped (%s); reopening", error)
                self.stop.wait(RECONNECT_SECONDS)

    @contextmanager
    def _hubspot(self, connector) -> Iterator[None]:
        import uvicorn

        from connectors.hubspot.webhooks import (
            WebhookApp,
            subscribe,
            subscribed_properties,
            webhook_app,
        )

        app = WebhookApp.from_environment()
        receiver = webhook_app(
            app.client_secret,
            app.app_id,
            set(connector.mapping.write.values()),
            self.windows.add,
            target_url=self.settings.public_url,
        )
        config = uvicorn.Config(
            receiver, host=self.settings.host, port=self.settings.port, log_level="warning"
        )
        try:
            listening = config.bind_socket()
        except SystemExit:  # uvicorn has logged why
            raise RuntimeError(f"the receiver cannot listen on {self.receiver_url}") from None
        self._port = listening.getsockname()[1]
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [listening]}, name="webhooks", daemon=True
        )
        thread.start()
        try:
            while not server.started:
                if not thread.is_alive():
                    raise RuntimeError(f"the webhook receiver did not start on {self.receiver_url}")
                time.sleep(0.05)
            if app.developer_api_key:
                subscribe(
                    app.app_id,
                    app.developer_api_key,
                    self.receiver_url,
                    subscribed_properties(connector.mapping),
                    host=app.host,
                    ca_bundle=app.ca_bundle,
                )
            self.ready.set()
            yield
        finally:
            server.should_exit = True
            thread.join(timeout=10)
            listening.close()  # uvicorn closed it, unless its server never started
