"""What every flow run shares: its name in the UI, how it stops on a CRM or set-up problem,
the one-writer-per-CRM lease, and its closing summary. The flows are in jobs.py (sync and
requalify), backfill.py, rollback.py and review.py."""

from __future__ import annotations

import functools
import inspect
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from typing import Literal, TypeVar

import pandas as pd
from prefect import get_run_logger
from prefect.runtime import flow_run
from prefect.states import Completed, Failed, State

from connectors import Connector, ConnectorError, connector_for
from connectors.mapping import MappingError
from connectors.settings import ConnectorSettings
from expectations.suite import LeadContract
from flows.artifacts import publish, publish_failure
from flows.audit import reconcile_open_intents
from flows.lease import write_lease
from flows.ledger import Ledger
from flows.pipeline import Pipeline
from flows.report import RunReport
from flows.settings import JobSettings
from scoring import DEFAULT_RULES_PATH, RulesError, load_rules

Source = Literal["salesforce", "hubspot"]
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
A, R = TypeVar("A"), TypeVar("R")


def run_name(kind: str) -> Callable[[], str]:
    def name() -> str:
        parameters = flow_run.parameters
        as_of = parameters.get("as_of") or flow_run.scheduled_start_time or datetime.now(UTC)
        stamp = pd.Timestamp(utc(as_of)).strftime("%Y-%m-%dT%H:%MZ")
        return f"{parameters.get('source', 'crm')}-{kind}-{stamp}"

    return name


def run_timeout() -> float | None:
    """How long any run may take before it ends Failed (LEADSYNC_RUN_TIMEOUT_SECONDS)."""
    return JobSettings().run_timeout_seconds or None


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


@contextmanager
def writing(connector: Connector, ledger: Ledger, dry_run: bool) -> Iterator[Callable[[], None]]:
    """Only one run writes to a CRM at a time: hold its write lease (flows/lease.py) for the
    block, and first reconcile the writes a stopped run left unconfirmed. Yields the check to
    make before each write batch. A dry run writes nothing and takes no lease."""
    if dry_run:
        yield lambda: None
        return
    settings, logger = JobSettings(), get_run_logger()
    name = f"leadsync-write-{connector.source}"
    with write_lease(
        ledger.engine,
        name,
        run_id(),
        settings.write_lease_seconds,
        settings.write_wait_seconds,
        logger,
    ) as lease:
        confirmed, owed = reconcile_open_intents(ledger, connector)
        if confirmed or owed:
            logger.warning(
                "A stopped run left %d leads' writes unconfirmed: %d were written (now in the "
                "ledger under that run) and %d were not (retried now)",
                confirmed + owed,
                confirmed,
                owed,
            )
        yield lease.check


def build_pipeline(
    connector: Connector,
    ledger: Ledger,
    rules_path: str | None,
    as_of: datetime,
    dry_run: bool,
    check_lease: Callable[[], None],
) -> Pipeline:
    rules = load_rules(rules_path or DEFAULT_RULES_PATH)
    contract = LeadContract(rules.data_quality, now=pd.Timestamp(as_of))
    return Pipeline(
        connector, ledger, rules, contract, as_of, run_id(), dry_run, check_lease=check_lease
    )


def checked_connector(source: str, block: str | None) -> Connector:
    connector = connector_for(source, block)
    connector.check_fields()
    return connector


def finish(
    report: RunReport, source: str, kind: str, connector: Connector, dry_run: bool, note: str = ""
) -> State:
    report.usage = connector.usage()
    summary = publish(report, source, kind, dry_run, connector.record_url, note)
    get_run_logger().info("%s", summary.split("See also")[0])
    if report.has_failures:
        return Failed(
            message=f"{report.failed} records failed to write to {source}; they are "
            "retried next run (see the failures artifact)",
            data=report,
        )
    return Completed(
        message=f"{report.written} written, {report.changed} changed, {report.sent_to_review} "
        f"sent to review for bad data, {report.quarantined} quarantined",
        data=report,
    )


def as_of_or_now(as_of: datetime | None) -> datetime:
    return utc(as_of) if as_of else datetime.now(UTC).replace(microsecond=0)


def utc(moment: datetime) -> datetime:
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize("UTC")
    return stamp.tz_convert("UTC").to_pydatetime()


def run_id() -> str:
    return str(flow_run.id or "local")


def pages_by_id(
    connector: Connector, ledger: Ledger, crm_ids: list[str], dry_run: bool
) -> Iterator[pd.DataFrame]:
    """These leads as the CRM holds them now, a page at a time, in order; those gone from the
    CRM are settled, not retried. Pages are read `LEADSYNC_READ_CONCURRENCY` at a time: a burst
    of changes is read as fast as the CRM's budget, which the connector paces every call under,
    allows, not one round trip at a time."""
    pages = [
        crm_ids[start : start + connector.page_size]
        for start in range(0, len(crm_ids), connector.page_size)
    ]
    concurrency = ConnectorSettings().read_concurrency
    with (
        ThreadPoolExecutor(concurrency, thread_name_prefix="crm-read-by-id") as pool,
        closing(ordered(pool, connector.read_by_ids, pages, concurrency)) as reads,
    ):  # a stopped run cancels the reads not yet started before the pool waits for the rest
        for ids, chunk in zip(pages, reads):
            if not dry_run:
                ledger.settle(connector.source, set(ids) - set(chunk["crm_id"]))
            yield chunk


def ordered(
    pool: ThreadPoolExecutor, function: Callable[[A], R], items: list[A], in_flight: int
) -> Iterator[R]:
    """`function` of each item, in order, with at most `in_flight` calls running or done and
    not yet taken (`Executor.map` would start them all at once). Calls not yet started are
    cancelled when the caller stops taking."""
    running: deque[Future[R]] = deque()
    waiting = iter(items)
    try:
        for item in itertools.islice(waiting, in_flight):
            running.append(pool.submit(function, item))
        while running:
            result = running.popleft().result()
            for item in itertools.islice(waiting, 1):
                running.append(pool.submit(function, item))
            yield result
    finally:
        for future in running:
            future.cancel()
