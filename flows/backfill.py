"""The backfill flow admins start after an outage or a rules change: every lead modified in a
date range, window by window, resumable. Progress is kept under what the admin asked for (the
parameters as given, not as resolved), so the UI's Retry of a stopped backfill, or the same
command run again, resumes where it stopped, with the end its first attempt resolved."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pandas as pd

from prefect import flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.states import State

from flows.ledger import Ledger, Progress
from flows.pipeline import Pipeline
from flows.report import RunReport
from flows.runs import (
    Source,
    as_of_or_now,
    build_pipeline,
    checked_connector,
    finish,
    run_id,
    run_name,
    run_timeout,
    stops_clearly,
    utc,
    writing,
)
from flows.settings import task_runner


@flow(
    name="backfill-leads",
    task_runner=task_runner(),
    flow_run_name=run_name("backfill"),
    timeout_seconds=run_timeout(),
)
@stops_clearly("backfill")
def backfill_leads(
    source: Source = "salesforce",
    start: datetime | None = None,
    end: datetime | None = None,
    window_days: int = 7,
    as_of: datetime | None = None,
    dry_run: bool = False,
    rules_path: str | None = None,
    credentials_block: str | None = None,
) -> State:
    """Rescore every lead modified between start and end, window by window.

    Safe to stop and rerun: Retry, or a rerun with the same parameters, resumes after the last
    finished window (with the end the first attempt resolved, when end is not given). Without
    a start, every lead is read through the CRM's list/bulk path, and a rerun resumes after the
    last segment written (LEADSYNC_BACKFILL_SEGMENT_LEADS, 50,000 leads).

    Args:
        source: which CRM to backfill.
        start: first modification time to include (default: the beginning).
        end: modification time to stop before (default: as_of of the first attempt).
        window_days: size of each window; progress is kept per window.
        as_of: the time to score at (default: now).
        dry_run: plan only: report what would change, write nothing.
        rules_path: a scoring rules file other than scoring/rules.yaml.
        credentials_block: a Prefect credentials block name.
    """
    as_of, ledger = as_of_or_now(as_of), Ledger()
    connector = checked_connector(source, credentials_block)
    key = progress_key(source, start, end, window_days)
    with writing(connector, ledger, dry_run) as check_lease:
        pipeline = build_pipeline(connector, ledger, rules_path, as_of, dry_run, check_lease)
        saved = (None if dry_run else ledger.progress(key)) or Progress()
        if start is None:
            report = _full_read(pipeline, ledger, key, saved.position)
        else:
            until = saved.until or (utc(end) if end else as_of)
            first = saved.done or utc(start)
            report = _windows(pipeline, ledger, key, utc(start), first, until, window_days)
        if not dry_run:
            ledger.clear_progress(key)
    return finish(report, source, "backfill", connector, dry_run)


def progress_key(
    source: str, start: datetime | None, end: datetime | None, window_days: int
) -> str:
    asked = [utc(moment).isoformat() if moment else "-" for moment in (start, end)]
    return f"backfill:{source}:{asked[0]}:{asked[1]}:{window_days}d"


class Segment:
    """The next `leads` leads of a full read, page by page, and where the read stood after
    the last page it gave."""

    def __init__(self, pages: Iterator[tuple[pd.DataFrame, str]], leads: int):
        self._pages, self._leads = pages, leads
        self.position: str | None = None
        self.exhausted = False

    def __iter__(self) -> Iterator[pd.DataFrame]:
        given = 0
        while given < self._leads:
            item = next(self._pages, None)
            if item is None:
                self.exhausted = True
                return
            page, self.position = item
            given += len(page)
            yield page


def _full_read(pipeline: Pipeline, ledger: Ledger, key: str, position: str | None) -> RunReport:
    """Every lead, a segment at a time; where the read stood is kept after each segment was
    written, so a stopped backfill goes on from there instead of reading everything again."""
    logger, dry_run = get_run_logger(), pipeline.dry_run
    if position is not None:
        logger.info("Backfill resumes after %s, where a stopped attempt got", position)
    pages = pipeline.connector.read_all_from(position)
    while True:
        segment = Segment(pages, pipeline.settings.backfill_segment_leads)
        pipeline.process_all(segment)
        if segment.position is not None and not dry_run:
            ledger.save_progress(key, Progress(position=segment.position), run_id())
        logger.info("Backfill: %d leads read", pipeline.report.read)
        if segment.exhausted or segment.position is None:
            return pipeline.report


def _windows(
    pipeline: Pipeline,
    ledger: Ledger,
    key: str,
    start: datetime,
    done: datetime,
    until: datetime,
    window_days: int,
) -> RunReport:
    """The windows from `done` to `until`, each one's end kept as progress once written."""
    source, dry_run = pipeline.connector.source, pipeline.dry_run
    total = (until - start).total_seconds() or 1.0
    progress = create_progress_artifact(
        progress=100 * (done - start).total_seconds() / total,
        key=f"{source}-backfill-progress",
        description=f"{source} backfill {start:%Y-%m-%d} to {until:%Y-%m-%d}",
    )
    logger = get_run_logger()
    if not dry_run:  # the end is kept from the first moment: a retry keeps it
        ledger.save_progress(key, Progress(until=until, done=done), run_id())
    if done > start:
        logger.info("Backfill %s resumes at %s (a stopped attempt got there)", source, done)
    while done < until:
        window_end = min(done + timedelta(days=window_days), until)
        pipeline.process_all(
            pipeline.connector.read_modified(done, window_end), label=f"{done:%Y-%m-%d}"
        )
        done = window_end
        if not dry_run:
            ledger.save_progress(key, Progress(until=until, done=done), run_id())
        percent = 100 * (done - start).total_seconds() / total
        update_progress_artifact(progress, percent)
        logger.info(
            "Backfill %s: %.0f%% (up to %s, %d leads read)",
            source,
            percent,
            done.isoformat(),
            pipeline.report.read,
        )
    return pipeline.report
