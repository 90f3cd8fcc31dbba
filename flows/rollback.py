"""The rollback flow admins run when a run wrote what it should not have: put back, from the
audit ledger, the values that run replaced, except on leads changed since.

It takes the write lease before it reads, so no sync writes between its comparison and its
write; it pages through the run's writes a few thousand leads at a time; every restore is in the
ledger (written ahead, confirmed per batch) under the rollback's own run id, and its progress is
kept, so a stopped rollback resumes on Retry or on the same command run again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Failed, State

from connectors import Connector
from connectors.base import WriteInterrupted
from flows.audit import as_text
from flows.ledger import Ledger, Progress
from flows.report import RunReport
from flows import runs
from flows.runs import Source, checked_connector, finish, run_timeout, stops_clearly, writing

LEADS_PER_PAGE = 2_000
CHANGED_LISTED = 20


@dataclass(frozen=True)
class Restorable:
    """One page of a run's writes, compared with the CRM now."""

    restore: pd.DataFrame  # crm_id and the canonical columns to write back
    undo: pd.DataFrame  # the ledger rows of the restore: crm_id, field, old (now), new (then)
    changed: list[str]  # leads someone changed since (or gone): left alone
    already: list[str]  # leads that hold the old values already (an earlier attempt)


@flow(
    name="rollback-run",
    flow_run_name=lambda: (
        f"{flow_run.parameters['source']}-rollback-{flow_run.parameters['run_id'][:8]}"
    ),
    timeout_seconds=run_timeout(),
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
    if ledger.audit.writes_of_run(run_id, source, leads=1).empty:
        return Failed(message=f"no writes to {source} recorded for run {run_id}")
    key = f"rollback:{source}:{run_id}"
    report, changed, already = RunReport(), [], 0
    with writing(connector, ledger, dry_run) as check_lease:
        after = None if dry_run else (ledger.progress(key) or Progress()).position
        if after is not None:
            get_run_logger().info("Rollback resumes after lead %s, where a stopped one got", after)
        while not (
            written := ledger.audit.writes_of_run(run_id, source, after, LEADS_PER_PAGE)
        ).empty:
            page = _page(connector, written, report)
            changed += page.changed
            already += len(page.already)
            if not dry_run and len(page.restore):
                _restore(connector, ledger, page, report, check_lease)
            after = written["crm_id"].iloc[-1]
            if not dry_run:
                ledger.save_progress(key, Progress(position=after), runs.run_id())
        if not dry_run:
            ledger.clear_progress(key)
    get_run_logger().info(
        "Rolled back %d leads; %d changed since and are left alone", report.changed, len(changed)
    )
    note = (
        f"Rolling back run {run_id}: {report.changed} leads restored"
        f"{' (dry run)' if dry_run else ''}"
        + (f", {already} restored by an earlier attempt" if already else "")
        + f"; {len(changed)} changed since and left alone"
        + (f": {', '.join(changed[:CHANGED_LISTED])}" if changed else "")
        + "."
    )
    return finish(report, source, "rollback", connector, dry_run, note)


def _page(connector: Connector, written: pd.DataFrame, report: RunReport) -> Restorable:
    current = connector.read_by_ids(written["crm_id"].unique().tolist()).set_index("crm_id")
    page = restorable(written, current)
    report.read += len(current)
    report.valid += len(current)
    report.changed += len(page.restore)
    return page


def _restore(
    connector: Connector,
    ledger: Ledger,
    page: Restorable,
    report: RunReport,
    check_lease: Callable[[], None],
) -> None:
    source, me = connector.source, runs.run_id()
    check_lease()
    ledger.audit.intend(me, source, page.undo)

    recorded: set[str] = set()

    def returned(batch: pd.DataFrame) -> None:
        accepted = batch["success"].astype(bool)
        refused = batch.loc[~accepted]
        ledger.audit.confirm(me, source, batch.loc[accepted, "crm_id"], refused["crm_id"])
        recorded.update(batch["crm_id"])
        report.add_written(int(accepted.sum()), refused[["crm_id", "error"]])
        check_lease()

    try:
        connector.write(page.restore, returned)
    except WriteInterrupted as stop:  # record what was restored, then stop the run
        unrecorded = stop.report[~stop.report["crm_id"].isin(recorded)]
        accepted = unrecorded["success"].astype(bool)
        ledger.audit.confirm(
            me, source, unrecorded.loc[accepted, "crm_id"], unrecorded.loc[~accepted, "crm_id"]
        )
        raise stop.cause from stop


def restorable(written: pd.DataFrame, current: pd.DataFrame) -> Restorable:
    """Leads whose written fields still hold what the run wrote, with the old values to put
    back; the leads someone changed since (or that are gone); and those already restored."""
    # A lead written twice in one run: restore its first old value, compare with its last new.
    ordered = written.sort_values("id")
    key = ["crm_id", "field"]
    first_old = ordered.drop_duplicates(key, keep="first").set_index(key)["old"]
    last_new = ordered.drop_duplicates(key, keep="last").set_index(key)["new"]
    written = pd.concat([first_old, last_new], axis=1)
    fields = written.index.get_level_values("field").unique().tolist()
    now = current.reindex(columns=fields).map(as_text).rename_axis(columns="field").stack()
    now = now.reindex(written.index)
    leads = written.index.get_level_values("crm_id")
    present = leads.isin(current.index)
    same = present & _equal(now, written["new"]).to_numpy()
    back = pd.Series(present & _equal(now, written["old"]).to_numpy(), index=written.index)
    already_back = back.groupby(level="crm_id").all()
    already = already_back.index[already_back.to_numpy()].tolist()
    changed = leads[~same & ~leads.isin(already)].unique().tolist()
    kept = written[~leads.isin(changed) & ~leads.isin(already)]
    old = kept["old"].unstack("field").reindex(columns=fields)
    was_written = pd.Series(True, index=kept.index).unstack("field", fill_value=False)
    was_written = was_written.reindex(columns=fields, fill_value=False)
    # Fields the run did not change keep their current value (the same as before the run).
    restore = current.loc[old.index, fields].copy()
    for field in fields:
        restore[field] = restore[field].where(~was_written[field], _typed(field, old[field]))
    undo = kept.rename(columns={"old": "new", "new": "old"}).reset_index()
    return Restorable(
        restore.rename_axis("crm_id").reset_index(),
        undo[["crm_id", "field", "old", "new"]],
        changed,
        already,
    )


def _equal(now: pd.Series, texts: pd.Series) -> pd.Series:
    return (now == texts) | (now.isna() & texts.isna())


def _typed(field: str, texts: pd.Series) -> pd.Series:
    """Ledger text back to the canonical column's type."""
    if field == "score":
        return pd.to_numeric(texts)
    if field == "qualified_at":
        return pd.to_datetime(texts, utc=True)
    return texts

