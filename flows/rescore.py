"""The flow behind speed to lead: rescore the leads the CRMs just said changed. The listener
(flows/listen.py) gathers change events into short windows; each window is one run of this flow,
through the same pipeline, write lease, API budget and ledger as a sync."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.states import State

from connectors import connector_for
from flows.ledger import Ledger
from flows.runs import (
    Source,
    build_pipeline,
    finish,
    pages_by_id,
    run_name,
    run_timeout,
    stops_clearly,
    utc,
    writing,
)
from flows.settings import task_runner


@flow(
    name="rescore-leads",
    task_runner=task_runner(),
    flow_run_name=run_name("rescore"),
    timeout_seconds=run_timeout(),
)
@stops_clearly("rescore")
def rescore_leads(
    source: Source,
    crm_ids: list[str],
    deleted_ids: list[str] | None = None,
    changed_since: datetime | None = None,
    rules_path: str | None = None,
    credentials_block: str | None = None,
) -> State:
    """Score these leads now and write what changed: a window of change events.

    Args:
        source: which CRM the leads are in.
        crm_ids: the leads created or changed.
        deleted_ids: leads deleted in the CRM: anything still owed for them is settled.
        changed_since: when the oldest change of the window happened, for the lag reported.
        rules_path: a scoring rules file other than scoring/rules.yaml.
        credentials_block: a Prefect credentials block name.
    """
    as_of, ledger = datetime.now(UTC).replace(microsecond=0), Ledger()
    connector = connector_for(source, credentials_block)  # the listener checked the fields
    with writing(connector, ledger, False) as check_lease:
        if deleted_ids:
            ledger.settle(source, deleted_ids)
        pipeline = build_pipeline(connector, ledger, rules_path, as_of, False, check_lease)
        report = pipeline.process_all(pages_by_id(connector, ledger, crm_ids, False))
    note = f"{len(crm_ids):,} leads changed, {len(deleted_ids or []):,} deleted."
    if changed_since is not None:
        lag = (datetime.now(UTC) - utc(changed_since)).total_seconds()
        get_run_logger().info("From the oldest change to its write: %.1f s", lag)
        note += f" From the oldest change to the last write: {lag:.1f} s."
    return finish(report, source, "rescore", connector, False, note)
