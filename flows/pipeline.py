"""Chunks of leads through the job: read, validate, score, plan, guard, write, record.

Every flow streams chunks (an API page, or a Bulk API results page) through
`Pipeline.process_all`; the tasks are chunk-sized, never one per lead. The stages overlap, as
the CRM's limits, not the CPU, bound the job: the next chunk is read while one is scored, and
a chunk's writes go on while the next ones are read and scored. Scoring runs on the flow's task
runner (threads, or Dask); writes stay in the flow's process, where the connector paces them.
`RunReport` accumulates what on-call and RevOps read afterwards.
"""

from __future__ import annotations

import contextvars
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors import Connector
from connectors.base import ApiUsage, WriteInterrupted, write_results
from expectations.suite import REASON_COLUMN, LeadContract
from flows.ledger import Ledger
from flows.plan import Plan, plan_updates
from flows.settings import JobSettings
from scoring import Rules, score

QUARANTINE_SAMPLE = 200
EXAMPLES_PER_TRANSITION = 3
SCORE_BANDS = [-1, 19, 39, 59, 79, 100]
SCORE_LABELS = ["0-19", "20-39", "40-59", "60-79", "80-100"]
STAGES = ("read", "validate", "score", "plan", "write")
READ_AHEAD = 2  # chunks read before they are needed


@dataclass
class RunReport:
    read: int = 0
    valid: int = 0
    quarantined: int = 0
    scored: int = 0
    changed: int = 0
    written: int = 0
    failed: int = 0
    skipped: int = 0  # a person changed the lead after it was read: retried next run
    transitions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["from", "to", "leads"])
    )
    examples: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    scores: pd.Series = field(default_factory=lambda: pd.Series(0, index=SCORE_LABELS))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    rechecked: int = 0  # chunks re-read before writing, as they waited long
    usage: ApiUsage | None = None  # the connector's calls, when the run ends

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    def add_plan(self, chunk: pd.DataFrame, scored: pd.DataFrame, plan: Plan) -> None:
        self.scored += len(scored)
        self.changed += len(plan.updates)
        moves = plan.transitions
        if not moves.empty:
            merged = pd.concat([self.transitions, moves]).groupby(["from", "to"], dropna=False)
            self.transitions = merged["leads"].sum().reset_index()
        status_changes = plan.changes[plan.changes["field"] == "status"]
        for (old, new), rows in status_changes.groupby(["old", "new"], dropna=False):
            have = sum(1 for e in self.examples if (e["from"], e["to"]) == (old, new))
            for crm_id in rows["crm_id"].head(max(0, EXAMPLES_PER_TRANSITION - have)):
                reason = scored.loc[chunk["crm_id"] == crm_id, "reason"].astype(str).iloc[0]
                self.examples.append({"crm_id": crm_id, "from": old, "to": new, "reason": reason})
        banded = pd.cut(scored["score"], SCORE_BANDS, labels=SCORE_LABELS).value_counts()
        self.scores = self.scores.add(banded.reindex(SCORE_LABELS, fill_value=0), fill_value=0)

    @property
    def has_failures(self) -> bool:
        return self.failed > 0


@dataclass(frozen=True)
class ChunkResult:
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    scored: pd.DataFrame
    plan: Plan
    seconds: dict[str, float]  # validate, score, plan


@task(name="validate-and-score", cache_policy=NO_CACHE, task_run_name="score-{label}")
def score_chunk(
    chunk: pd.DataFrame, rules: Rules, contract: LeadContract, as_of: datetime, label: str
) -> ChunkResult:
    started = time.perf_counter()
    validation = contract.validate(chunk)
    valid = validation.valid
    validated = time.perf_counter()
    scored = score(valid, rules, as_of)
    scored_at = time.perf_counter()
    plan = plan_updates(valid, scored)
    seconds = {
        "validate": validated - started,
        "score": scored_at - validated,
        "plan": time.perf_counter() - scored_at,
    }
    return ChunkResult(valid, validation.quarantined, scored, plan, seconds)


@task(name="write-updates", cache_policy=NO_CACHE, task_run_name="write-{label}")
def write_updates(
    connector: Connector, updates: pd.DataFrame, read: pd.DataFrame, label: str, recheck: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write `updates`. With `recheck` (the chunk was read a while ago), first re-read the
    leads and skip those modified since `read`, so a rep's edit mid-run is never overwritten.
    Returns the write report and the skipped leads with why."""
    if not recheck:
        return connector.write(updates), _no_skips()
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
    # Leads gone from the CRM since (deleted, merged) are neither written nor owed.
    to_write = updates[updates["crm_id"].isin(now.index) & ~updates["crm_id"].isin(touched)]
    report = connector.write(to_write) if len(to_write) else write_results([], [])
    return report, skipped


@dataclass
class _Writing:
    """A chunk whose writes are in flight."""

    future: Future
    chunk: pd.DataFrame
    result: ChunkResult


class Pipeline:
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
    ):
        self.connector, self.ledger, self.rules, self.contract = connector, ledger, rules, contract
        self.as_of, self.run_id, self.dry_run = as_of, run_id, dry_run
        self.settings = settings or JobSettings()
        self.report = RunReport()

    def process_all(self, chunks: Iterable[pd.DataFrame], label: str = "") -> RunReport:
        prefix = f"{self.connector.source}{'-' + label if label else ''}"
        in_flight = self.settings.chunks_in_flight
        writing: deque[_Writing] = deque()
        with ThreadPoolExecutor(in_flight, thread_name_prefix="chunk-write") as writers:
            try:
                reads = read_ahead(chunks, READ_AHEAD, self._count_read)
                for number, (chunk, read_at) in enumerate(reads, start=1):
                    step = self._score(chunk, f"{prefix}-{number}", read_at)
                    if step is None:
                        continue
                    while len(writing) >= in_flight:
                        self._record(writing.popleft())
                    writing.append(step(writers))
                while writing:
                    self._record(writing.popleft())
            finally:
                self._record_all(writing)  # after a stop: what was written is still recorded
        return self.report

    def _count_read(self, seconds: float) -> None:
        self.report.add_seconds("read", seconds)

    def _score(
        self, chunk: pd.DataFrame, label: str, read_at: float
    ) -> Callable[[ThreadPoolExecutor], _Writing] | None:
        """Score a chunk and account for it; returns how to start its writes, if it has any."""
        if chunk.empty:
            return None
        chunk = chunk.drop_duplicates("crm_id", keep="last")
        report = self.report
        report.read += len(chunk)
        result = score_chunk.submit(chunk, self.rules, self.contract, self.as_of, label).result()
        for stage, seconds in result.seconds.items():
            report.add_seconds(stage, seconds)
        report.valid += len(result.valid)
        report.quarantined += len(result.quarantined)
        report.quarantine += _sample(result.quarantined, QUARANTINE_SAMPLE - len(report.quarantine))
        report.add_plan(result.valid, result.scored, result.plan)
        if self.dry_run or result.plan.updates.empty:
            if not self.dry_run:
                self.ledger.settle(self.connector.source, chunk["crm_id"])
            return None

        def start(writers: ThreadPoolExecutor) -> _Writing:
            recheck = time.time() - read_at >= self.settings.recheck_after_seconds
            report.rechecked += recheck
            future = writers.submit(
                contextvars.copy_context().run,  # the task runs as a child of this flow run
                self._timed_write,
                result.plan.updates,
                result.valid,
                label,
                recheck,
            )
            return _Writing(future, chunk, result)

        return start

    def _timed_write(
        self, updates: pd.DataFrame, read: pd.DataFrame, label: str, recheck: bool
    ) -> tuple[pd.DataFrame, pd.DataFrame, float]:
        started = time.perf_counter()
        written, skipped = write_updates(self.connector, updates, read, label, recheck)
        return written, skipped, time.perf_counter() - started

    def _record(self, writing: _Writing) -> None:
        try:
            written, skipped, seconds = writing.future.result()
        except WriteInterrupted as stop:  # record what was written, then stop the run
            self._record_chunk(writing.chunk, writing.result, stop.report, _no_skips())
            raise stop.cause from stop
        self.report.add_seconds("write", seconds)
        self._record_chunk(writing.chunk, writing.result, written, skipped)

    def _record_all(self, writing: deque[_Writing]) -> None:
        while writing:
            try:
                self._record(writing.popleft())
            except Exception:  # noqa: BLE001 - the run already stops with the first error
                continue

    def _record_chunk(
        self, chunk: pd.DataFrame, result: ChunkResult, written: pd.DataFrame, skipped: pd.DataFrame
    ) -> None:
        source, report = self.connector.source, self.report
        succeeded = written.loc[written["success"].astype(bool), "crm_id"]
        failed = written.loc[~written["success"].astype(bool), ["crm_id", "error"]]
        changes = result.plan.changes
        self.ledger.record_writes(self.run_id, source, changes[changes["crm_id"].isin(succeeded)])
        owed = pd.concat([failed.rename(columns={"error": "reason"}), skipped], ignore_index=True)
        self.ledger.settle(source, chunk["crm_id"][~chunk["crm_id"].isin(owed["crm_id"])])
        self.ledger.owe(source, owed, self.run_id)
        report.written += len(succeeded)
        report.failed += len(failed)
        report.skipped += len(skipped)
        report.failures += failed.head(QUARANTINE_SAMPLE - len(report.failures)).to_dict("records")


def read_ahead(
    chunks: Iterable[pd.DataFrame], depth: int, on_read: Callable[[float], None]
) -> Iterator[tuple[pd.DataFrame, float]]:
    """Yield (chunk, wall-clock time it arrived), reading up to `depth` chunks ahead in a
    background thread, so the CRM's next page is on its way while this one is processed.
    `on_read` gets the seconds spent waiting for each page. A read error is raised here."""
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

    def read() -> None:
        iterator = iter(chunks)
        try:
            while not stop.is_set():
                started = time.perf_counter()
                chunk = next(iterator, finished)
                on_read(time.perf_counter() - started)
                if chunk is finished:
                    break
                put((chunk, time.time()))
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, raised there
            put(error)
        finally:
            getattr(iterator, "close", lambda: None)()
            put(finished)

    reader = threading.Thread(
        target=contextvars.copy_context().run, args=(read,), name="crm-read", daemon=True
    )
    reader.start()
    try:
        while (item := ready.get()) is not finished:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        reader.join()


def _no_skips() -> pd.DataFrame:
    return pd.DataFrame(columns=["crm_id", "reason"])


def _sample(quarantined: pd.DataFrame, room: int) -> list[dict]:
    if room <= 0 or quarantined.empty:
        return []
    columns = ["crm_id", "email", "company", REASON_COLUMN]
    return (
        quarantined[columns]
        .head(room)
        .astype(object)
        .where(quarantined[columns].head(room).notna(), None)
        .to_dict("records")
    )
