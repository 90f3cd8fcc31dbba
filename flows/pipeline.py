"""Leads through the job: read, validate, score, plan, guard, write, record.

Sync, backfill and requalify stream a CRM's pages through `Pipeline.process_all`, which
combines them into chunks (`chunks_of`); the tasks are chunk-sized, never one per lead. The
stages overlap, as the CRM's limits, not the CPU, bound the job: the next chunks are read while
one is scored, the next chunk's scoring is submitted before the previous one's is awaited (one
chunk per worker of the task runner), and a chunk's writes go on while the next ones are read
and scored. Results are taken in the order the chunks were read, so planning, writing and the
report see the chunks in that order whichever worker finished first. Scoring runs on the flow's
task runner (threads, or Dask); writes stay in the flow's process, where the connector paces
them. `RunReport.timeline` shows when each chunk was read, scored (and by which worker) and
written.
Every write is in the audit ledger before it is sent and confirmed as its batch returns
(flows/audit.py); `RunReport` (flows/report.py) accumulates what on-call and RevOps read.
"""

from __future__ import annotations

import contextvars
import os
import queue
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from connectors import Connector
from connectors.base import WriteInterrupted, WritingStopped
from expectations.suite import FIX_COLUMN, LeadContract, Validation
from flows.ledger import Ledger
from flows.plan import Plan, plan_updates
from flows.report import RunReport
from flows.settings import JobSettings
from scoring import Rules, score

T = TypeVar("T")
_END = object()


@dataclass(frozen=True)
class ChunkResult:
    validation: Validation
    leads: pd.DataFrame  # the rows scored: the valid ones and those sent to review
    scored: pd.DataFrame
    plan: Plan
    seconds: dict[str, float]  # validate, score, plan
    worker: str  # who scored it: the Dask worker, or the process and thread
    started_at: float  # wall-clock time (time.time()), comparable across the host's processes
    finished_at: float


@task(name="validate-and-score", cache_policy=NO_CACHE, task_run_name="score-{label}")
def score_chunk(
    chunk: pd.DataFrame, rules: Rules, contract: LeadContract, as_of: datetime, label: str
) -> ChunkResult:
    started_at = time.time()
    started = time.perf_counter()
    validation = contract.validate(chunk)
    leads, problems = to_score(validation)
    validated = time.perf_counter()
    scored = score(leads, rules, as_of, problems)
    scored_at = time.perf_counter()
    plan = plan_updates(leads, scored)
    seconds = {
        "validate": validated - started,
        "score": scored_at - validated,
        "plan": time.perf_counter() - scored_at,
    }
    return ChunkResult(
        validation, leads, scored, plan, seconds, scoring_worker(), started_at, time.time()
    )


def scoring_worker() -> str:
    """The Dask worker running this, by name, or else this process and thread. A Dask worker
    has `distributed` imported already; the thread runner need not pay for importing it."""
    distributed = sys.modules.get("distributed")
    if distributed is not None:
        try:
            return f"dask worker {distributed.get_worker().name}"
        except ValueError:  # not on a Dask worker
            pass
    return f"pid {os.getpid()} {threading.current_thread().name}"


def to_score(validation: Validation) -> tuple[pd.DataFrame, pd.Series]:
    """The rows to score, valid and sent to review alike, with each one's fix reason (missing
    for the valid rows); quarantined rows are neither scored nor written."""
    review = validation.review
    leads = pd.concat([validation.valid, review.drop(columns=FIX_COLUMN)]).sort_index()
    problems = review[FIX_COLUMN].reindex(leads.index)
    return leads, problems


@task(name="write-updates", cache_policy=NO_CACHE, task_run_name="write-{label}")
def write_updates(
    connector: Connector,
    updates: pd.DataFrame,
    read: pd.DataFrame,
    label: str,
    recheck: bool,
    on_batch: Callable[[pd.DataFrame], None],
) -> pd.DataFrame:
    """Write `updates`, handing each batch's report to `on_batch` as it returns. With
    `recheck` (the chunk was read a while ago), first re-read the leads and skip those modified
    since `read`, so a rep's edit while the chunk waited is not overwritten; leads gone from the
    CRM since (deleted, merged) are not written either.
    Returns the skipped leads with why."""
    if not recheck:
        connector.write(updates, on_batch)
        return _no_skips()
    current = connector.read_by_ids(updates["crm_id"].tolist())
    before = read.set_index("crm_id")["modified_at"]
    now = current.set_index("crm_id")["modified_at"]
    touched = now.index[now.ne(before.reindex(now.index))].tolist()
    skipped = pd.DataFrame(
        {
            "crm_id": touched,
            "reason": ["changed in the CRM since it was read; rescored next run"] * len(touched),
        }
    )
    to_write = updates[updates["crm_id"].isin(now.index) & ~updates["crm_id"].isin(touched)]
    if len(to_write):
        connector.write(to_write, on_batch)
    return skipped


@dataclass(frozen=True)
class Pending:
    """Planned writes not yet sent: the updates, the leads as read, and the field changes."""

    updates: pd.DataFrame
    read: pd.DataFrame  # with `read_at`, the wall-clock time each lead was read
    changes: pd.DataFrame

    @property
    def read_at(self) -> float:
        """When the oldest of them was read."""
        return float(self.read["read_at"].min())

    def __add__(self, later: Pending) -> Pending:
        """These and `later`'s; a lead in both keeps only its later plan."""
        kept = self._only(~self.updates["crm_id"].isin(later.updates["crm_id"]))
        return Pending(
            pd.concat([kept.updates, later.updates], ignore_index=True),
            pd.concat([kept.read, later.read], ignore_index=True),
            pd.concat([kept.changes, later.changes], ignore_index=True),
        )

    def split(self, count: int) -> tuple[Pending, Pending]:
        """The first `count` updates, and the rest."""
        first = pd.Series(False, index=self.updates.index)
        first.iloc[:count] = True
        return self._only(first), self._only(~first)

    def _only(self, chosen: pd.Series) -> Pending:
        """The plans of the updates `chosen` marks."""
        ids = self.updates["crm_id"][chosen]
        return Pending(
            *(
                frame[frame["crm_id"].isin(ids)].reset_index(drop=True)
                for frame in (self.updates, self.read, self.changes)
            )
        )


@dataclass(frozen=True)
class _Scoring:
    """A chunk submitted to the task runner: its scoring, and what its planning needs."""

    future: PrefectFuture
    ids: pd.Series  # every lead of the chunk, quarantined ones too
    read_at: float
    label: str
    asked_at: float  # when its pages were asked for, and when the last arrived (wall-clock)
    arrived_at: float


@dataclass
class _Writing:
    """Writes in flight, and the leads whose outcome is already recorded."""

    future: Future
    pending: Pending
    label: str
    recorded: set[str] = field(default_factory=set)


class Pipeline:
    """Leads through the job. Every write is in the audit ledger before it is sent (an
    intent) and confirmed as its batch returns; `check_lease` is asked before each batch, and
    stops the writing by raising WritingStopped when this run may no longer write."""

    def __init__(
        self,
        connector: Connector,
        ledger: Ledger,
        rules: Rules,
        contract: LeadContract,
        as_of: datetime,
        run_id: str,
        dry_run: bool,
        settings: JobSettings | None = None,
        check_lease: Callable[[], None] = lambda: None,
    ):
        self.connector, self.ledger, self.rules, self.contract = connector, ledger, rules, contract
        self.as_of, self.run_id, self.dry_run = as_of, run_id, dry_run
        self.settings = settings or JobSettings()
        self.check_lease = check_lease
        self.report = RunReport()
        self._recording = threading.Lock()  # batches return on the write threads

    def process_all(self, pages: Iterable[pd.DataFrame], label: str = "") -> RunReport:
        """Every page of leads through the job, combined into chunks so that each call of the
        lead contract (a fixed cost per call) covers many leads.

        Writes go out in whole batches only: the few updates short of a full batch wait for the
        next chunk's, so a run makes the fewest write calls its changes allow.
        """
        prefix = f"{self.connector.source}{'-' + label if label else ''}"
        settings, batch = self.settings, self.connector.write_batch_size
        chunks = chunks_of(pages, settings.chunk_leads, settings.chunk_seconds, self._count_read)
        writing: deque[_Writing] = deque()
        waiting: Pending | None = None
        started = time.perf_counter()
        with ThreadPoolExecutor(settings.chunks_in_flight, thread_name_prefix="crm-write") as pool:
            try:
                submitted = (
                    self._submit(chunk, read_at, asked_at, arrived_at, f"{prefix}-{number}")
                    for number, ((chunk, read_at), asked_at, arrived_at) in enumerate(
                        timed(chunks), 1
                    )
                )
                # Each chunk is submitted by the reader as it arrives, so its scoring starts
                # while earlier chunks are still scored or planned: one more than the workers
                # is submitted at most (the one awaited here, those waiting, the reader's), so
                # no worker idles and memory stays bounded. On a stop, reading stops first.
                queued = max(1, settings.chunks_scoring - 1)
                with closing(read_ahead(submitted, queued)) as scorings:
                    for scoring in scorings:
                        planned = self._planned(scoring)
                        if planned is None:
                            continue
                        waiting = planned if waiting is None else waiting + planned
                        ready, waiting = waiting.split(len(waiting.updates) // batch * batch)
                        if len(ready.updates):
                            self._start_write(pool, writing, ready, scoring.label)
                if waiting is not None and len(waiting.updates):
                    self._start_write(pool, writing, waiting, f"{prefix}-last")
                while writing:
                    self._finish_write(writing.popleft())
            finally:
                self._finish_all(writing)  # after a stop: what was written is still recorded
                self.report.elapsed += time.perf_counter() - started
        return self.report

    def _count_read(self, seconds: float) -> None:
        self.report.add_seconds("read", seconds)

    def _submit(
        self, chunk: pd.DataFrame, read_at: float, asked_at: float, arrived_at: float, label: str
    ) -> _Scoring:
        """Submit a chunk's validation, scoring and planning to the flow's task runner (on the
        reader's thread: the report is the flow's thread's, in `_planned`)."""
        chunk = chunk.drop_duplicates("crm_id", keep="last")
        future = score_chunk.submit(chunk, self.rules, self.contract, self.as_of, label)
        return _Scoring(future, chunk["crm_id"], read_at, label, asked_at, arrived_at)

    def _planned(self, scoring: _Scoring) -> Pending | None:
        """Wait for a chunk's scoring and account for it; returns its planned writes. Leads
        with nothing to write are settled at once."""
        report = self.report
        report.read += len(scoring.ids)
        report.add_span("read", scoring.label, scoring.asked_at, scoring.arrived_at)
        result: ChunkResult = scoring.future.result()
        report.add_scored_chunk(
            scoring.label, result.worker, result.started_at, result.finished_at, result.seconds
        )
        report.add_validation(result.validation, result.scored["status"])
        report.add_plan(result.leads, result.scored, result.plan)
        if self.dry_run:
            return None
        updates, ids = result.plan.updates, scoring.ids
        self.ledger.settle(self.connector.source, ids[~ids.isin(updates["crm_id"])])
        if updates.empty:
            return None
        read = result.leads[result.leads["crm_id"].isin(updates["crm_id"])]
        return Pending(updates, read.assign(read_at=scoring.read_at), result.plan.changes)

    def _start_write(
        self, pool: ThreadPoolExecutor, writing: deque[_Writing], pending: Pending, label: str
    ) -> None:
        while len(writing) >= self.settings.chunks_in_flight:
            self._finish_write(writing.popleft())
        self.check_lease()
        self.ledger.audit.intend(self.run_id, self.connector.source, pending.changes)
        recheck = time.time() - pending.read_at >= self.settings.recheck_after_seconds
        self.report.rechecked += recheck
        recorded: set[str] = set()
        future = pool.submit(
            contextvars.copy_context().run,  # the task runs as a child of this flow run
            self._timed_write,
            pending,
            label,
            recheck,
            lambda batch: self._record_batch(batch, recorded),
        )
        writing.append(_Writing(future, pending, label, recorded))

    def _timed_write(
        self,
        pending: Pending,
        label: str,
        recheck: bool,
        on_batch: Callable[[pd.DataFrame], None],
    ) -> tuple[pd.DataFrame, float, float]:
        """The leads skipped, and when the writing started and ended (wall-clock)."""
        started_at = time.time()
        skipped = write_updates(
            self.connector, pending.updates, pending.read, label, recheck, on_batch
        )
        return skipped, started_at, time.time()

    def _record_batch(self, written: pd.DataFrame, recorded: set[str]) -> None:
        """A batch returned: confirm its writes in the ledger, owe its failures; then make sure
        this run may still write before the next batch goes."""
        source, ledger = self.connector.source, self.ledger
        accepted = written["success"].astype(bool)
        succeeded, failed = written.loc[accepted, "crm_id"], written.loc[~accepted]
        ledger.audit.confirm(self.run_id, source, succeeded, failed["crm_id"])
        ledger.settle(source, succeeded)
        ledger.owe(source, failed.rename(columns={"error": "reason"}), self.run_id)
        with self._recording:
            recorded.update(written["crm_id"])
            self.report.add_written(len(succeeded), failed[["crm_id", "error"]])
        self.check_lease()

    def _finish_write(self, writing: _Writing) -> None:
        """Wait for a chunk's writes and settle every lead whose batch did not report: leads
        a person changed since the read are owed, leads gone from the CRM are settled."""
        try:
            skipped, started_at, finished_at = writing.future.result()
        except WriteInterrupted as stop:  # record what was written, then stop the run
            unrecorded = stop.report[~stop.report["crm_id"].isin(writing.recorded)]
            self._record_batch_quietly(unrecorded, writing.recorded)
            raise stop.cause from stop
        self.report.add_seconds("write", finished_at - started_at)
        self.report.add_span("write", writing.label, started_at, finished_at)
        source, ids = self.connector.source, writing.pending.updates["crm_id"]
        unsent = ids[~ids.isin(writing.recorded)]
        self.ledger.audit.confirm(self.run_id, source, [], unsent)
        self.ledger.settle(source, unsent[~unsent.isin(skipped["crm_id"])])
        self.ledger.owe(source, skipped, self.run_id)
        self.report.skipped += len(skipped)

    def _record_batch_quietly(self, written: pd.DataFrame, recorded: set[str]) -> None:
        try:
            self._record_batch(written, recorded)
        except WritingStopped:  # recorded; the run is stopping anyway
            pass

    def _finish_all(self, writing: deque[_Writing]) -> None:
        """After a stop: wait for the writes still in flight, recording what they wrote.
        An intent left open (the ledger itself failed) is reconciled by the next run."""
        while writing:
            try:
                self._finish_write(writing.popleft())
            except Exception:  # noqa: BLE001 - the run already stops with the first error
                continue


def chunks_of(
    pages: Iterable[pd.DataFrame],
    max_leads: int,
    max_seconds: float,
    on_read: Callable[[float], None],
) -> Iterator[tuple[pd.DataFrame, float]]:
    """Pages combined into chunks of at least `max_leads`, or of what arrived within
    `max_seconds`, each with the wall-clock time its first page arrived. `on_read` gets the
    seconds spent waiting for each page."""
    parts: list[pd.DataFrame] = []
    leads, first_at = 0, 0.0
    iterator = iter(pages)
    while True:
        started = time.perf_counter()
        page = next(iterator, None)
        on_read(time.perf_counter() - started)
        if page is None:
            break
        if page.empty:
            continue
        if not parts:
            first_at = time.time()
        parts.append(page)
        leads += len(page)
        if leads >= max_leads or time.time() - first_at >= max_seconds:
            yield pd.concat(parts, ignore_index=True), first_at
            parts, leads = [], 0
    if parts:
        yield pd.concat(parts, ignore_index=True), first_at


def timed(items: Iterable[T]) -> Iterator[tuple[T, float, float]]:
    """Each of `items` with the wall-clock times it was asked for and it arrived."""
    iterator = iter(items)
    try:
        while True:
            asked_at = time.time()
            item = next(iterator, _END)
            if item is _END:
                return
            yield item, asked_at, time.time()
    finally:
        getattr(iterator, "close", lambda: None)()


def read_ahead(items: Iterable[T], depth: int) -> Iterator[T]:
    """`items`, produced up to `depth` ahead in a background thread, so the CRM's next page
    is on its way while this one is processed. An error producing them is raised here."""
    ready: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    finished = object()

    def put(item: object) -> None:
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if stop.is_set():
                    break
                put(item)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put(error)
        finally:
            getattr(iterator, "close", lambda: None)()
            put(finished)

    producer = threading.Thread(
        target=contextvars.copy_context().run, args=(produce,), name="crm-read", daemon=True
    )
    producer.start()
    try:
        while (item := ready.get()) is not finished:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        producer.join()


def _no_skips() -> pd.DataFrame:
    return pd.DataFrame(columns=["crm_id", "reason"])
