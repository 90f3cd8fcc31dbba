"""The flows RevOps runs: sync, backfill, requalify, roll back. Orchestration only: the CRM
work is in connectors/, the scoring in scoring/, the contract in expectations/."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime, timedelta
from typing import Literal

import pandas as pd
from prefect import flow, get_client, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from connectors import Connector, ConnectorError, connector_for
from connectors.mapping import MappingError
from expectations.suite import LeadContract
from flows.artifacts import publish, publish_failure
from flows.ledger import Ledger, as_text
from flows.pipeline import Pipeline, RunReport
from flows.settings import task_runner
from scoring import DEFAULT_RULES_PATH, RulesError, load_rules

Source = Literal["salesforce", "hubspot"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
WRITE_SLOT_TIMEOUT_SECONDS = 3600


def run_name(kind: str) -> Callable[[], str]:
    def name() -> str:
        parameters = flow_run.parameters
        as_of = parameters.get("as_of") or flow_run.scheduled_start_time or datetime.now(UTC)
        stamp = pd.Timestamp(_utc(as_of)).strftime("%Y-%m-%dT%H:%MZ")
        return f"{parameters.get('source', 'crm')}-{kind}-{stamp}"

    return name


def stops_clearly(kind: str) -> Callable[[Callable[..., State]], Callable[..., State]]:
    """A CRM or set-up problem that retrying will not fix (refused credentials, a spent daily
    limit, a missing field, an invalid rules file) ends the run Failed with its explanation as
    the state message, one log line and a failure artifact, instead of a traceback. Anything
    else still raises."""

    def decorate(function: Callable[..., State]) -> Callable[..., State]:
        signature = inspect.signature(function)

        @functools.wraps(function)
        def run(*args, **kwargs) -> State:
            try:
                return function(*args, **kwargs)
            except (ConnectorError, MappingError, RulesError) as error:
                bound = signature.bind(*args, **kwargs)
                bound.apply_defaults()
                source = bound.arguments["source"]
                message = f"The {source} {kind} stopped: {error}"
                get_run_logger().error("%s", message)
                publish_failure(source, kind, message)
                return Failed(message=message)

        return run

    return decorate


@flow(name="sync-leads", task_runner=task_runner(), flow_run_name=run_name("sync"))
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
    watermark = ledger.watermark(source)
    since = (watermark - timedelta(minutes=overlap_minutes)) if watermark else EPOCH
    logger = get_run_logger()
    logger.info(
        "Syncing %s leads modified from %s to %s", source, since.isoformat(), as_of.isoformat()
    )
    with _writing(source, dry_run):
        pipeline = _pipeline(connector, ledger, rules_path, as_of, dry_run)
        owed = ledger.owed(source)
        if owed:
            logger.info("Retrying %d leads a previous run could not finish", len(owed))
            pipeline.process_all(_owed_chunks(connector, ledger, owed, dry_run), label="owed")
        chunks = connector.read_modified(since, as_of) if watermark else connector.read_all()
        report = pipeline.process_all(chunks)
    if not dry_run:  # never into the future, even when as_of simulates it
        ledger.set_watermark(source, min(as_of, started), _run_id())
    return _finish(report, source, "sync", connector, dry_run)


@flow(name="backfill-leads", task_runner=task_runner(), flow_run_name=run_name("backfill"))
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

    Safe to stop and rerun: a rerun with the same start and end resumes after the last finished
    window. Without a start, every lead is read through the CRM's list/bulk path.

    Args:
        source: which CRM to backfill.
        start: first modification time to include (default: the beginning).
        end: modification time to stop before (default: as_of).
        window_days: size of each window; progress is kept per window.
        as_of: the time to score at (default: now).
        dry_run: plan only: report what would change, write nothing.
        rules_path: a scoring rules file other than scoring/rules.yaml.
        credentials_block: a Prefect credentials block name.
    """
    as_of, ledger = as_of_or_now(as_of), Ledger()
    connector = checked_connector(source, credentials_block)
    end = _utc(end) if end else as_of
    with _writing(source, dry_run):
        pipeline = _pipeline(connector, ledger, rules_path, as_of, dry_run)
        if start is None:
            report = pipeline.process_all(connector.read_all())
        else:
            report = _backfill_windows(
                pipeline, ledger, source, _utc(start), end, window_days, dry_run
            )
    return _finish(report, source, "backfill", connector, dry_run)


def _owed_chunks(
    connector: Connector, ledger: Ledger, owed: list[str], dry_run: bool
) -> Iterator[pd.DataFrame]:
    """The owed leads, a page at a time; those gone from the CRM are settled, not retried."""
    for start in range(0, len(owed), connector.page_size):
        ids = owed[start : start + connector.page_size]
        chunk = connector.read_by_ids(ids)
        if not dry_run:
            ledger.settle(connector.source, set(ids) - set(chunk["crm_id"]))
        yield chunk


def _backfill_windows(
    pipeline: Pipeline,
    ledger: Ledger,
    source: str,
    start: datetime,
    end: datetime,
    window_days: int,
    dry_run: bool,
) -> RunReport:
    checkpoint = f"backfill:{source}:{start.isoformat()}:{end.isoformat()}"
    done = (ledger.watermark(checkpoint) or start) if not dry_run else start
    total = (end - start).total_seconds() or 1.0
    progress = create_progress_artifact(
        progress=100 * (done - start).total_seconds() / total,
        key=f"{source}-backfill-progress",
        description=f"{source} backfill {start:%Y-%m-%d} to {end:%Y-%m-%d}",
    )
    logger = get_run_logger()
    while done < end:
        window_end = min(done + timedelta(days=window_days), end)
        pipeline.process_all(
            pipeline.connector.read_modified(done, window_end), label=f"{done:%Y-%m-%d}"
        )
        done = window_end
        if not dry_run:
            ledger.set_watermark(checkpoint, done, _run_id())
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


@flow(name="requalify-leads", task_runner=task_runner(), flow_run_name=run_name("requalify"))
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
    with _writing(source, dry_run):
        pipeline = _pipeline(connector, ledger, rules_path, as_of, dry_run)
        report = pipeline.process_all(
            connector.read_stale(
                as_of - timedelta(days=older_than_days), as_of - timedelta(days=cold_after_days)
            )
        )
    moved = int(report.transitions["leads"].sum()) if not report.transitions.empty else 0
    note = f"{moved:,} leads {'would move' if dry_run else 'moved'} between statuses."
    return _finish(report, source, "requalify", connector, dry_run, note)


@flow(
    name="rollback-run",
    flow_run_name=lambda: (
        f"{flow_run.parameters['source']}-rollback-{flow_run.parameters['run_id'][:8]}"
    ),
)
@stops_clearly("rollback")
def rollback_run(
    source: Source,
    run_id: str,
    dry_run: bool = False,
    credentials_block: str | None = None,
) -> State:
    """Restore the values a flow run wrote, from the audit ledger, except on leads changed since.

    Args:
        source: the CRM the run wrote to.
        run_id: the flow run id whose writes to undo (see the run's page in the Prefect UI).
        dry_run: report what would be restored, write nothing.
        credentials_block: a Prefect credentials block name.
    """
    ledger = Ledger()
    connector = checked_connector(source, credentials_block)
    written = ledger.writes_of_run(run_id)
    written = written[written["source"] == source]
    logger = get_run_logger()
    if written.empty:
        return Failed(message=f"no writes to {source} recorded for run {run_id}")
    current = connector.read_by_ids(written["crm_id"].unique().tolist()).set_index("crm_id")
    restorable, changed = _restorable(written, current)
    logger.info(
        "Rolling back %d leads; %d changed since and are left alone", len(restorable), len(changed)
    )
    report = RunReport(read=len(current), valid=len(current), scored=0, changed=len(restorable))
    if not dry_run and len(restorable):
        with _writing(source, dry_run):
            result = connector.write(restorable)
        done = result.loc[result["success"].astype(bool), "crm_id"]
        undo = written[written["crm_id"].isin(done)].rename(columns={"old": "new", "new": "old"})
        ledger.record_writes(_run_id(), source, undo)
        report.written = len(done)
        report.failed = int((~result["success"].astype(bool)).sum())
        report.failures = result.loc[~result["success"].astype(bool)].to_dict("records")
    note = (
        f"Rolling back run {run_id}: {len(restorable)} leads restored"
        f"{' (dry run)' if dry_run else ''}; {len(changed)} changed since and left alone"
        + (f": {', '.join(changed[:20])}" if changed else "")
        + "."
    )
    return _finish(report, source, "rollback", connector, dry_run, note)


def _restorable(written: pd.DataFrame, current: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Leads whose written fields still hold what the run wrote, with the old values to put
    back; and the leads someone changed since (or that are gone)."""
    # A lead written twice in one run: restore its first old value, compare with its last new.
    ordered = written.sort_values("id")
    key = ["crm_id", "field"]
    first_old = ordered.drop_duplicates(key, keep="first").set_index(key)["old"]
    last_new = ordered.drop_duplicates(key, keep="last").set_index(key)["new"]
    written = pd.concat([first_old, last_new], axis=1)
    fields = written.index.get_level_values("field").unique().tolist()
    now = current.reindex(columns=fields).map(as_text).rename_axis(columns="field").stack()
    now = now.reindex(written.index)
    same = (now == written["new"]) | (now.isna() & written["new"].isna())
    present = written.index.get_level_values("crm_id").isin(current.index)
    changed = written.index.get_level_values("crm_id")[~(same & present)].unique().tolist()
    kept = written[~written.index.get_level_values("crm_id").isin(changed)]
    old = kept["old"].unstack("field").reindex(columns=fields)
    was_written = pd.Series(True, index=kept.index).unstack("field", fill_value=False)
    was_written = was_written.reindex(columns=fields, fill_value=False)
    # Fields the run did not change keep their current value (the same as before the run).
    restore = current.loc[old.index, fields].copy()
    for field in fields:
        restore[field] = restore[field].where(~was_written[field], _typed(field, old[field]))
    return restore.rename_axis("crm_id").reset_index(), changed


def _typed(field: str, texts: pd.Series) -> pd.Series:
    """Ledger text back to the canonical column's type."""
    if field == "score":
        return pd.to_numeric(texts)
    if field == "qualified_at":
        return pd.to_datetime(texts, utc=True)
    return texts


def _pipeline(
    connector: Connector, ledger: Ledger, rules_path: str | None, as_of: datetime, dry_run: bool
) -> Pipeline:
    rules = load_rules(rules_path or DEFAULT_RULES_PATH)
    return Pipeline(
        connector, ledger, rules, LeadContract(now=pd.Timestamp(as_of)), as_of, _run_id(), dry_run
    )


def checked_connector(source: str, block: str | None) -> Connector:
    connector = connector_for(source, block)
    connector.check_fields()
    return connector


@contextmanager
def _writing(source: str, dry_run: bool) -> Iterator[None]:
    """Only one run writes to a CRM at a time (a Prefect global concurrency limit)."""
    if dry_run:
        yield
        return
    name = f"leadsync-write-{source}"
    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:  # first use; an admin's later change of the limit is kept
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))
    with ExitStack() as held:
        try:
            held.enter_context(
                concurrency(
                    name,
                    occupy=1,
                    strict=True,
                    timeout_seconds=WRITE_SLOT_TIMEOUT_SECONDS,
                    raise_on_lease_renewal_failure=False,
                )
            )
        except TimeoutError:
            raise TimeoutError(
                f"another run has held the {name} concurrency limit for over "
                f"{WRITE_SLOT_TIMEOUT_SECONDS // 60} minutes; see the on-call runbook in the "
                "README"
            ) from None
        yield


def _finish(
    report: RunReport, source: str, kind: str, connector: Connector, dry_run: bool, note: str = ""
) -> State:
    report.usage = connector.usage()
    summary = publish(report, source, kind, dry_run, note)
    get_run_logger().info("%s", summary.split("See also")[0])
    if report.has_failures:
        return Failed(
            message=f"{report.failed} records failed to write to {source}; they are "
            "retried next run (see the failures artifact)",
            data=report,
        )
    return Completed(
        message=f"{report.written} written, {report.changed} changed, "
        f"{report.quarantined} quarantined",
        data=report,
    )


def as_of_or_now(as_of: datetime | None) -> datetime:
    return _utc(as_of) if as_of else datetime.now(UTC).replace(microsecond=0)


def _utc(moment: datetime) -> datetime:
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC").to_pydatetime()


def _run_id() -> str:
    return str(flow_run.id or "local")
