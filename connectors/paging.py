"""Paging that refuses to loop forever, as pure iterators over a `fetch` callable.

- `linked_pages`: pages that each name the next one (Salesforce's `nextRecordsUrl`); the same
  next page named twice stops with a ConnectorError instead of reading it again and again.
- `keyset_pages`: every match of a search read by id, by two cursors at once (HubSpot); a cursor
  that does not move stops with a ConnectorError, and an empty page where the `total` said more
  remain ends the read with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from connectors.base import ConnectorError

log = logging.getLogger(__name__)

# fetch(low, high, direction): the matches with ids strictly between low and high (None: no
# bound), sorted by id in direction ("ASCENDING" or "DESCENDING"), at most a page of them, as
# {"total": matches in that range, "results": [{"id": ...}, ...]}.
KeysetFetch = Callable[[str | None, str | None, str], dict]


def linked_pages(
    first: Callable[[], dict], more: Callable[[str], dict], source: str = "Salesforce"
) -> Iterator[dict]:
    """The first page, then each page its predecessor names in `nextRecordsUrl` (until one is
    `done` or names none), read with `more(url)`."""
    page = first()
    seen: set[str] = set()
    while True:
        yield page
        next_url = page.get("nextRecordsUrl")
        if page.get("done", True) or not next_url:
            return
        if next_url in seen:
            raise ConnectorError(
                f"{source} paging went round in a loop: it named the page {next_url} a second "
                "time; the read stops rather than reading the same pages forever"
            )
        seen.add(next_url)
        page = more(next_url)


Bounds = tuple[str | None, str | None]  # every match at or below the first, or at or above
# the second, is read (None: no bound yet)


def keyset_pages(
    fetch: KeysetFetch, page_size: int, source: str = "HubSpot", start: Bounds = (None, None)
) -> Iterator[tuple[list, Bounds]]:
    """Every match, read by two cursors at once: one up from the lowest id, one down from the
    highest, each asking only for ids between what the two have read so far; yields non-empty
    pages of results, each with the bounds read once it is (a later read given them as `start`
    goes on from there).

    No request carries an offset, so matches that leave the search meanwhile shift nothing, and
    a cap on how deep a search may page never applies. Two requests in flight keep a search
    budget busy through each round trip, and the next two are sent before the pages are handed
    over, so what the caller does with a page never holds the searches back; each response's
    `total` says how many matches remain, so the second cursor starts only when more than a
    page remains, and neither makes an empty last call.
    """
    low, high = start  # every match at or below `low`, or at or above `high`, is read
    with ThreadPoolExecutor(2, thread_name_prefix="keyset-search") as fetcher:
        up = fetcher.submit(fetch, low, high, "ASCENDING")
        down: Future | None = None  # until the first page tells how many there are
        while True:
            page = up.result()
            rising = page["results"]
            remaining = page["total"] - len(rising)
            falling = []
            if down is not None:
                top = int(rising[-1]["id"]) if rising else -1
                falling = [c for c in down.result()["results"] if int(c["id"]) > top]
                remaining -= len(falling)
            next_low, next_high = low, high
            if remaining > 0 and rising:  # the next requests go before these pages are handed
                next_low = _advanced(low, rising[-1]["id"], "ASCENDING", source)
                if falling:
                    next_high = _advanced(high, falling[-1]["id"], "DESCENDING", source)
                up = fetcher.submit(fetch, next_low, next_high, "ASCENDING")
                down = None
                if remaining > page_size:
                    down = fetcher.submit(fetch, next_low, next_high, "DESCENDING")
            if rising:
                yield rising, (str(rising[-1]["id"]), high)
            if falling:
                yield falling, (str(rising[-1]["id"]) if rising else low, str(falling[-1]["id"]))
            if remaining <= 0:
                return
            if not rising:
                log.warning(
                    "%s search answered an empty page above id %s though its total said %d "
                    "more match; taking it as the end of the matches",
                    source,
                    low,
                    remaining,
                )
                return
            low, high = next_low, next_high


def _advanced(previous: str | None, latest: str, direction: str, source: str) -> str:
    """`latest`, the new bound of a cursor, if it moved past `previous` in its direction."""
    if previous is not None:
        step = int(latest) - int(previous)
        if (step <= 0) if direction == "ASCENDING" else (step >= 0):
            raise ConnectorError(
                f"{source} search paging did not advance: the {direction.lower()} cursor at id "
                f"{previous} got back id {latest}; the read stops rather than loop forever"
            )
    return str(latest)
