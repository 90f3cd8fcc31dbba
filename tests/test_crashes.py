"""Crash-exact: a run SIGKILLed in the middle of its writes leaves every value it wrote in the
audit ledger, the next run starts writing at once and finishes the job, and a rollback of the
killed run undoes what it wrote. The killed runs are real `python -m flows` processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import select

from connectors import connector_for
from flows.audit import as_text, writes
from flows.backfill import backfill_leads
from flows.jobs import sync_leads
from flows.lease import current_holder
from flows.ledger import Ledger
from flows.rollback import rollback_run
from sandbox.http import FaultPlan

SOURCES = ("salesforce", "hubspot")
WRITTEN = ["status", "score", "reason", "qualified_at"]
LEADS = 900
SCORE_COLUMN = {"salesforce": "Lead_Score__c", "hubspot": "leadsync_score"}
SLOW = FaultPlan(latency_seconds=0.2)  # a write batch takes a fifth of a second: time to kill
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def as_of() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC").floor("s")


@pytest.fixture
def crm(start_sandbox, tmp_path, monkeypatch, prefect_api, as_of):
    """Sandbox CRMs holding the same leads, the connectors and the ledger pointed at them."""
    for name in ("SALESFORCE_SESSION_ID", "SALESFORCE_USERNAME", "HUBSPOT_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LEADSYNC_WRITE_CONCURRENCY", "1")

    def start(name: str, **config):
        sandbox = start_sandbox(**{"leads": LEADS, "seed": 11, "seeded_at": as_of, **config})
        sandbox.write_info(tmp_path / f"{name}.json")
        monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / f"{name}.json"))
        monkeypatch.setenv("LEADSYNC_LEDGER_URL", f"sqlite:///{tmp_path / name}.sqlite3")
        return sandbox

    return start


def crm_state(source: str) -> pd.DataFrame:
    return pd.concat(connector_for(source).read_all()).set_index("crm_id").sort_index()


def scored_in_sandbox(sandbox, source: str) -> int:
    api = sandbox.salesforce if source == "salesforce" else sandbox.hubspot
    return api.table.count(f'"{SCORE_COLUMN[source]}" IS NOT NULL')


def command(kind: str, source: str, as_of: pd.Timestamp) -> list[str]:
    if kind == "sync":
        return ["sync", "--source", source, "--as-of", as_of.isoformat()]
    if kind == "full backfill":
        return ["backfill", "--source", source, "--as-of", as_of.isoformat()]
    start = (as_of - pd.Timedelta(days=31)).isoformat()
    return ["backfill", "--source", source, "--start", start, "--window-days", "5",
            "--as-of", as_of.isoformat()]  # no --end: a retry must keep the first one's


def run_in_process(kind: str, source: str, as_of: pd.Timestamp):
    if kind == "sync":
        return sync_leads(source=source, as_of=as_of, return_state=True)
    if kind == "full backfill":
        return backfill_leads(source=source, as_of=as_of, return_state=True)
    return backfill_leads(
        source=source, start=as_of - pd.Timedelta(days=31), window_days=5, as_of=as_of,
        return_state=True,
    )


def kill_mid_write(sandbox, source: str, args: list[str], prefect: dict[str, str]) -> int:
    """Run `python -m flows ARGS` and SIGKILL it once some write batches were accepted;
    returns how many leads the CRM then shows scored."""
    before = scored_in_sandbox(sandbox, source)
    env = {**os.environ, **prefect, "PREFECT_LOGGING_LEVEL": "WARNING"}
    process = subprocess.Popen([sys.executable, "-m", "flows", *args], cwd=ROOT, env=env)
    deadline = time.monotonic() + 180
    try:
        while scored_in_sandbox(sandbox, source) - before < 300:
            assert process.poll() is None, "the run ended before it could be killed"
            assert time.monotonic() < deadline, "the run never wrote"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    return scored_in_sandbox(sandbox, source) - before


def as_texts(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[WRITTEN].astype(object).map(as_text).fillna("-").astype(str)


def differs(one: pd.DataFrame, other: pd.DataFrame) -> pd.DataFrame:
    return one != other


@pytest.mark.parametrize(
    ("source", "kind"),
    [(source, kind) for source in SOURCES for kind in ("sync", "backfill")]
    + [("hubspot", "full backfill")],
)
def test_a_run_killed_mid_write_is_audited_finished_by_the_rerun_and_rolled_back(
    crm, source, kind, as_of, prefect_api, tmp_path, monkeypatch
):
    monkeypatch.setenv("LEADSYNC_BACKFILL_SEGMENT_LEADS", "200")  # progress kept every page
    # The HubSpot sync runs as from a shell: on a temporary Prefect server of its own, gone
    # with it; the others on a long-lived server. The write lease lives in neither.
    if (source, kind) == ("hubspot", "sync"):
        prefect = {"PREFECT_HOME": str(tmp_path / "prefect-home")}
    else:
        prefect = {"PREFECT_API_URL": prefect_api}
    crm("clean")
    assert run_in_process(kind, source, as_of).is_completed()
    expected = as_texts(crm_state(source))

    sandbox = crm("killed", faults=SLOW)
    before = as_texts(crm_state(source))
    written_before_kill = kill_mid_write(sandbox, source, command(kind, source, as_of), prefect)
    changed = differs(expected, before).any(axis=1).sum()
    assert 300 <= written_before_kill < changed  # killed part way through its writes

    started = pd.Timestamp.now(tz="UTC")
    rerun = run_in_process(kind, source, as_of)  # the same command again
    assert rerun.is_completed(), rerun.message
    if kind == "full backfill":  # it went on from the last segment the killed run finished
        assert 0 < rerun.result().read < LEADS
    after = as_texts(crm_state(source))
    pd.testing.assert_frame_equal(after.reset_index(drop=True), expected.reset_index(drop=True))

    rerun_id = str(rerun.state_details.flow_run_id)
    audit = Ledger().audit
    assert audit.count_open(source) == 0
    rows = pd.concat(
        [audit.writes_of_run(run, source) for run in _runs_with_writes(source)], ignore_index=True
    )
    per_field = rows.groupby(["crm_id", "field"]).size()
    assert (per_field == 1).all()  # one ledger row per field the CRM shows written
    cells = differs(after, before).stack()
    assert set(per_field.index) == set(cells.index[cells.to_numpy()])
    for cell, value in rows.set_index(["crm_id", "field"])["new"].fillna("-").items():
        assert after.at[cell] == value
    first_write = pd.Timestamp(rows.loc[rows["run_id"] == rerun_id, "written_at"].min())
    killed_runs = set(rows["run_id"]) - {rerun_id}
    assert len(killed_runs) == 1
    killed = killed_runs.pop()
    assert _utc(first_write) - started < pd.Timedelta(minutes=5)

    undone = rollback_run(source=source, run_id=killed, return_state=True)
    assert undone.is_completed(), undone.message
    restored = as_texts(crm_state(source))
    by_killed = rows.loc[rows["run_id"] == killed, "crm_id"].unique()
    assert len(by_killed) >= 300
    pd.testing.assert_frame_equal(restored.loc[by_killed], before.loc[by_killed])
    others = after.index.difference(by_killed)
    pd.testing.assert_frame_equal(restored.loc[others], after.loc[others])


def _runs_with_writes(source: str) -> list[str]:
    with Ledger().engine.connect() as connection:
        return list(
            connection.execute(
                select(writes.c.run_id).where(writes.c.source == source).distinct()
            ).scalars()
        )


def _utc(stamp: pd.Timestamp) -> pd.Timestamp:
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def test_two_writers_of_one_crm_started_together_take_turns(crm, as_of, prefect_api):
    crm("shared", faults=SLOW)
    # Scored a day and 200 days on, engagement decays in between: whichever runs second
    # rewrites what the first wrote (a window up to a future as_of takes in the first's writes).
    moments = [as_of + pd.Timedelta(days=days) for days in (1, 200)]
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PREFECT_LOGGING_LEVEL": "WARNING"}
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "flows", "sync", "--source", "hubspot", "--as-of", moment],
            cwd=ROOT,
            env=env,
        )
        for moment in (moment.isoformat() for moment in moments)
    ]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    rows = pd.concat(
        [Ledger().audit.writes_of_run(run, "hubspot") for run in _runs_with_writes("hubspot")]
    )
    windows = rows.groupby("run_id")["written_at"].agg(["min", "max", "size"]).sort_values("min")
    assert len(windows) == 2 and (windows["size"] > 0).all()  # both wrote
    first, second = windows.iloc[0], windows.iloc[1]
    assert first["max"] < second["min"]  # no write of one inside the other's window


def test_a_run_past_its_time_limit_ends_failed_and_frees_the_write_lease(crm, as_of):
    crm("slow", faults=FaultPlan(latency_seconds=1.0))
    state = sync_leads.with_options(timeout_seconds=4)(
        source="hubspot", as_of=as_of, return_state=True
    )
    assert state.is_failed() and "timeout" in state.message.lower()
    assert current_holder(Ledger().engine, "leadsync-write-hubspot") is None
