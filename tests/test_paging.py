"""Paging that refuses to loop forever (connectors/paging.py), driven by plain functions that
stand for a CRM's pages: Salesforce's linked pages, HubSpot's two keyset cursors."""

from __future__ import annotations

import logging
import math

import pytest

from connectors import ConnectorError
from connectors.paging import keyset_pages, linked_pages


def linked(pages: dict[str | None, dict]):
    """`first` and `more` over pages by the URL that names them (None: the first)."""
    asked: list[str] = []

    def more(url: str) -> dict:
        asked.append(url)
        return pages[url]

    return (lambda: pages[None]), more, asked


def test_linked_pages_follow_each_next_page_to_the_last():
    first, more, asked = linked(
        {
            None: {"done": False, "nextRecordsUrl": "/q/1-2000", "records": [1]},
            "/q/1-2000": {"done": False, "nextRecordsUrl": "/q/1-4000", "records": [2]},
            "/q/1-4000": {"done": True, "records": [3]},
        }
    )
    assert [page["records"] for page in linked_pages(first, more)] == [[1], [2], [3]]
    assert asked == ["/q/1-2000", "/q/1-4000"]


@pytest.mark.parametrize("again", ["/q/1-2000", "/q/1-4000"])
def test_a_next_page_named_twice_stops_with_a_connector_error(again):
    first, more, asked = linked(
        {
            None: {"done": False, "nextRecordsUrl": "/q/1-2000", "records": [1]},
            "/q/1-2000": {"done": False, "nextRecordsUrl": "/q/1-4000", "records": [2]},
            "/q/1-4000": {"done": False, "nextRecordsUrl": again, "records": [3]},
        }
    )
    pages = linked_pages(first, more)
    with pytest.raises(ConnectorError, match=f"named the page {again} a second time"):
        list(pages)
    assert asked == ["/q/1-2000", "/q/1-4000"]  # never the same page twice


class Search:
    """Matches with the given ids, as a search by id answers them; `honours` says which id
    bounds it applies, `extra_total` how many more matches its totals claim than there are."""

    def __init__(self, ids, page=200, honours=("GT", "LT"), extra_total=0):
        self.ids, self.page, self.honours, self.extra = sorted(ids), page, honours, extra_total
        self.calls: list[tuple[str | None, str | None, str]] = []

    def __call__(self, low, high, direction):
        self.calls.append((low, high, direction))
        matches = [
            i
            for i in self.ids
            if ("GT" not in self.honours or low is None or i > int(low))
            and ("LT" not in self.honours or high is None or i < int(high))
        ]
        ordered = matches if direction == "ASCENDING" else matches[::-1]
        results = [{"id": str(i)} for i in ordered[: self.page]]
        return {"total": len(matches) + self.extra, "results": results}


def read(search: Search) -> list[int]:
    return [int(c["id"]) for page, _ in keyset_pages(search, search.page) for c in page]


@pytest.mark.parametrize("stop_after", [1, 2, 3, 6])
def test_a_read_resumed_from_the_bounds_of_its_last_page_reads_each_match_once(stop_after):
    search = Search(range(1, 3_000, 2))
    pages = keyset_pages(search, search.page)
    first = [next(pages) for _ in range(stop_after)]
    pages.close()  # the run stopped here
    bounds = first[-1][1]
    rest = [c for page, _ in keyset_pages(search, search.page, start=bounds) for c in page]
    got = [int(c["id"]) for page, _ in first for c in page] + [int(c["id"]) for c in rest]
    assert sorted(got) == search.ids


@pytest.mark.parametrize("count", [0, 1, 200, 201, 999, 5_000])
def test_two_cursors_read_each_match_once_and_make_no_empty_last_call(count):
    search = Search(range(1, count * 3 + 1, 3))
    assert sorted(read(search)) == search.ids
    assert len(search.calls) == max(1, math.ceil(count / 200))
    assert all(low is None or high is None or int(low) < int(high) for low, high, _ in search.calls)
    directions = {direction for _, _, direction in search.calls}
    assert directions == ({"ASCENDING", "DESCENDING"} if count > 400 else {"ASCENDING"})


@pytest.mark.parametrize(("honours", "cursor"), [((), "ascending"), (("GT",), "descending")])
def test_a_cursor_that_does_not_advance_stops_with_a_connector_error(honours, cursor):
    search = Search(range(1, 1_001), honours=honours)
    with pytest.raises(ConnectorError, match=f"did not advance: the {cursor} cursor"):
        read(search)
    assert len(search.calls) <= 6  # stopped within a few rounds


def test_an_empty_page_while_the_total_says_more_remain_ends_the_read(caplog):
    search = Search(range(1, 301), extra_total=5)
    caplog.set_level(logging.WARNING)
    assert read(search) == list(range(1, 301))
    assert "empty page" in caplog.text and "taking it as the end" in caplog.text
