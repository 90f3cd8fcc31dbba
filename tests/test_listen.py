"""How change events become windows of leads to rescore (flows/listen.py), without a CRM: the
end-to-end listeners against the sandboxes are in tests/test_speed_to_lead.py."""

from __future__ import annotations

import threading
import time

import pandas as pd

from connectors.events import LeadEvent
from flows.listen import ChangeWindows, Window, listen

T0 = pd.Timestamp("2026-12-01 09:00", tz="UTC")


def event(crm_id: str, number: int, kind: str = "changed", echo: bool = False) -> LeadEvent:
    return LeadEvent("hubspot", crm_id, kind, T0 + pd.Timedelta(seconds=number), f"e{number}", echo)


def test_a_window_closes_after_its_seconds_and_reads_a_lead_changed_twice_once():
    windows = ChangeWindows(window_seconds=0.3, window_leads=100)
    windows.add([event("1", 1), event("2", 2), event("1", 3)])
    started = time.monotonic()
    window = windows.next(threading.Event())
    assert 0.25 <= time.monotonic() - started < 2
    assert window.changed == {"1": T0 + pd.Timedelta(seconds=1), "2": T0 + pd.Timedelta(seconds=2)}
    assert window.oldest_change == T0 + pd.Timedelta(seconds=1) and window.last_event_id == "e3"


def test_echoes_open_no_window_and_a_deletion_wins_over_an_earlier_change():
    windows = ChangeWindows(window_seconds=0.1)
    windows.add([event("1", 1, echo=True), event("2", 2, echo=True)])
    stop = threading.Event()
    threading.Timer(0.5, stop.set).start()
    assert windows.next(stop) is None  # leadsync's own writes coming back: nothing to do

    windows.add([event("3", 3), event("3", 4, kind="deleted"), event("4", 5, echo=True)])
    window = windows.next(threading.Event())
    assert window.changed == {} and window.deleted == {"3"} and window.echoes == 1


def test_a_burst_drains_in_few_large_windows():
    windows = ChangeWindows(window_seconds=10, window_leads=100, max_window_leads=400)
    windows.add([event(str(n), n) for n in range(1_000)])
    started = time.monotonic()
    sizes = [windows.next(threading.Event()).leads for _ in range(3)]
    assert sizes == [400, 400, 200]  # whatever waits joins, without waiting out the seconds
    assert time.monotonic() - started < 2


def test_a_burst_delivered_in_many_requests_joins_one_window_closed_once_quiet():
    windows = ChangeWindows(window_seconds=10, window_leads=100, quiet_seconds=0.3)

    def deliver() -> None:  # a CRM's deliveries of one burst, 100 events each, close together
        for first in range(0, 500, 100):
            windows.add([event(str(n), n) for n in range(first, first + 100)])
            time.sleep(0.05)

    threading.Thread(target=deliver).start()
    started = time.monotonic()
    window = windows.next(threading.Event())
    assert window.leads == 500
    assert time.monotonic() - started < 5  # closed once quiet, not after its 10 seconds


def test_listen_runs_each_window_and_reports_only_the_completed_ones():
    windows = ChangeWindows(window_seconds=0.05, window_leads=2)
    stop = threading.Event()
    ran: list[set[str]] = []
    done: list[str | None] = []

    def rescore(window: Window) -> bool:
        ran.append(set(window.changed))
        if len(ran) == 1:
            windows.add([event("3", 3), event("4", 4)])
            return False
        stop.set()
        return True

    windows.add([event("1", 1), event("2", 2)])
    assert listen(windows, rescore, stop, lambda window: done.append(window.last_event_id)) == 2
    assert ran == [{"1", "2"}, {"3", "4"}] and done == ["e4"]
