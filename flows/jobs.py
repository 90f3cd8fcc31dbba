"""The flows RevOps schedules: sync and requalify. Orchestration only: the CRM work is in
connectors/, the scoring in scoring/, the contract in expectations/; backfills and rollbacks are
in backfill.py and rollback.py, what every run shares in runs.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect import flow, get_run_logger
from prefect.states import State

from flows.ledger import Ledger
from flows.runs import (
    EPOCH,
    Source,
    as_of_or_now,
    build_pipeline,
    checked_connector,
    finish,
    pages_by_id,
    run_id,
    run_name,
    run_timeout,
    stops_clearly,
    writing,
)
from flows.settings import task_runner


@flow(
    name="sync-leads",
    task_runner=task_runner(),
    flow_run_name=run_name("sync"),
    timeout_seconds=run_timeout(),
)
@stops_clearly("sync")
def sync_leads(
    source: Source = "salesforce",
    as_of: datetime | None = None,
    dry_run: bool = False,
    overlap_minutes: int = 10,
    rules_path: str | None = None,
    credentials_block: str | None = None,
) -> State:
    """Score the leads changed since the last sync and write status, score and reason back.

    Args:
        source: which CRM to sync.
        as_of: the time to score at (default: now); a later time simulates the future.
        dry_run: plan only: report what would change, write nothing, keep the watermark.
        overlap_minutes: how far before the watermark to start reading, so no lead sharing a
            timestamp with the last one read is missed (rewrites are diffs, so this is free).
        rules_path: a scoring rules file other than scoring/rules.yaml.
        credentials_block: a Prefect credentials block name (default: environment variables,
            then the sandbox).
    """
    started = datetime.now(UTC)
    as_of, ledger = as_of_or_now(as_of), Ledger()
    connector = checked_connector(source, credentials_block)
    logger = get_run_logger()
    with writing(connector, ledger, dry_run) as check_lease:
        watermark = ledger.watermark(source)
        since = (watermark - timedelta(minutes=overlap_minutes)) if watermark else EPOCH
        logger.info(
            "Syncing %s leads modified from %s to %s", source, since.isoformat(), as_of.isoformat()
        )
        pipeline = build_pipeline(connector, ledger, rules_path, as_of, dry_run, check_lease)
        owed = ledger.owed(source)
        if owed:
            logger.info("Retrying %d leads a previous run could not finish", len(owed))
            pipeline.process_all(pages_by_id(connector, ledger, owed, dry_run), label="owed")
        pages = (
            connector.read_modified(since, as_of, skip_own_writes=True)
            if watermark
            else connector.read_all()
        )
        report = pipeline.process_all(pages)
        if not dry_run:  # never into the future, even when as_of simulates it
            ledger.set_watermark(source, min(as_of, started), run_id())
    return finish(report, source, "sync", connector, dry_run)


@flow(
    name="requalify-leads",
    task_runner=task_runner(),
    flow_run_name=run_name("requalify"),
    timeout_seconds=run_timeout(),
)
@stops_clearly("requalify")
def requalify_leads(
    source: Source = "salesforce",
    as_of: datetime | None = None,
    older_than_days: int = 7,
    cold_after_days: int = 30,
    dry_run: bool = False,
    rules_path: str | None = None,
    credentials_block: str | None = None,
) -> State:
    """Rescore open leads whose qualification is older than `older_than_days`, and Qualified
    leads with no engagement for `cold_after_days`, with engagement decayed and timelines
    expired as of `as_of`, so stale statuses change.

    Args:
        source: which CRM to requalify.
        as_of: the time to score at (default: now); a later time simulates the future.
        older_than_days: requalify leads last qualified longer ago than this.
        cold_after_days: also requalify Qualified leads with no engagement for this long.
        dry_run: plan only: report how many statuses would move, write nothing.
        rules_path: a scoring rules file other than scoring/rules.yaml.
        credentials_block: a Prefect credentials block name.
    """
    as_of, ledger = as_of_or_now(as_of), Ledger()
    connector = checked_connector(source, credentials_block)
    with writing(connector, ledger, dry_run) as check_lease:
        pipeline = build_pipeline(connector, ledger, rules_path, as_of, dry_run, check_lease)
        report = pipeline.process_all(
            connector.read_stale(
                as_of - timedelta(days=older_than_days), as_of - timedelta(days=cold_after_days)
            )
        )
    moved = int(report.transitions["leads"].sum()) if not report.transitions.empty else 0
    note = f"{moved:,} leads {'would move' if dry_run else 'moved'} between statuses."
    return finish(report, source, "requalify", connector, dry_run, note)
