"""The flows end to end: the real Prefect engine, the sandbox CRMs, the real clients."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from prefect import get_client
from prefect.artifacts import Artifact
from prefect.flow_engine import run_flow
from prefect.states import Scheduled
from prefect_dask import DaskTaskRunner
from scipy.stats import mannwhitneyu

from connectors import connector_for
from expectations.suite import LeadContract
from flows.__main__ import main as flows_main
from flows.backfill import backfill_leads, progress_key
from flows.jobs import requalify_leads, sync_leads
from flows.rollback import rollback_run
from flows.ledger import Ledger
from flows.pipeline import to_score, write_updates
from flows.review import review_criteria
from flows.settings import JobSettings, task_runner
from sandbox.http import FaultPlan
from sandbox.salesforce import SalesforceSettings
from sandbox.seed import planted_log_odds
from scoring import DEFAULT_RULES_PATH, load_rules, score

SOURCES = ("salesforce", "hubspot")
WRITTEN = ["status", "score", "reason", "qualified_at"]
NO_MATERIAL_WEIGHT = 3  # points between a factor's values: about 0.1 in log-odds


@pytest.fixture(scope="module", autouse=True)
def prefect_engine(prefect_api):
    """The session's Prefect test server (tests/conftest.py)."""


@pytest.fixture
def crm(start_sandbox, tmp_path, monkeypatch, as_of):
    """Start sandbox CRMs and point the connectors and the ledger at them (and only them).
    Sandboxes of one test hold the same leads (the same seed, as of the same time)."""
    for name in (
        "SALESFORCE_SESSION_ID",
        "SALESFORCE_USERNAME",
        "SALESFORCE_CONSUMER_KEY",
        "HUBSPOT_ACCESS_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)

    def start(name: str = "crm", **config):
        sandbox = start_sandbox(**{"leads": 300, "seed": 5, "seeded_at": as_of, **config})
        sandbox.write_info(tmp_path / f"{name}.json")
        monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / f"{name}.json"))
        monkeypatch.setenv("LEADSYNC_LEDGER_URL", f"sqlite:///{tmp_path / name}.sqlite3")
        return sandbox

    return start


@pytest.fixture
def as_of() -> pd.Timestamp:
    """Each test's own now: the lead contract refuses stamps more than 5 minutes past it, and
    the leads a test writes carry the time of writing (a module-wide now went stale in a long
    run of the whole suite, and the review then quarantined every lead it had just written)."""
    return pd.Timestamp.now(tz="UTC").floor("s")


def crm_state(source: str) -> pd.DataFrame:
    leads = pd.concat(connector_for(source).read_all())
    return leads.set_index("crm_id").sort_index()


def report_of(state):
    return state.result(raise_on_failure=False)


@pytest.mark.parametrize("source", SOURCES)
def test_sync_writes_what_scoring_says_and_a_rerun_writes_nothing(crm, source, as_of):
    crm()
    before = crm_state(source)
    first = sync_leads(source=source, as_of=as_of, return_state=True)
    assert first.is_completed(), first.message

    rules = load_rules()
    validation = LeadContract(rules.data_quality, now=as_of).validate(before.reset_index())
    leads, problems = to_score(validation)  # valid, and sent to review for bad data
    expected = score(leads, rules, as_of, problems).set_index(leads["crm_id"]).sort_index()
    after = crm_state(source).loc[expected.index]
    assert after["score"].tolist() == expected["score"].astype(float).tolist()
    assert after["reason"].tolist() == expected["reason"].astype(str).tolist()
    assert after["status"].fillna("").tolist() == expected["status"].fillna("").tolist()
    assert report_of(first).written == len(leads)  # nothing was scored before
    assert report_of(first).sent_to_review == len(validation.review) > 0

    quarantined = before.index.difference(leads["crm_id"])
    pd.testing.assert_frame_equal(  # never written
        crm_state(source).loc[quarantined, WRITTEN], before.loc[quarantined, WRITTEN]
    )

    again = report_of(sync_leads(source=source, as_of=as_of, return_state=True))
    assert again.changed == 0 and again.written == 0


def test_a_reps_status_survives_and_an_edit_mid_run_is_not_overwritten(crm, as_of):
    crm()
    connector = connector_for("salesforce")
    lead = crm_state("salesforce").index[0]
    sf_client = connector.client
    sf_client.Lead.update(
        lead, {"Status": "Working - Contacted", "Qualification_Status__c": "Nurture"}
    )
    sync_leads(source="salesforce", as_of=as_of, return_state=True)
    after = crm_state("salesforce").loc[lead]
    assert after["status"] == "Nurture"
    assert after["reason"].startswith("Human status stands: Working - Contacted")

    other = crm_state("salesforce").index[1]
    read = connector.read_by_ids([other])
    sf_client.Lead.update(other, {"Lead_Score__c": 3})  # a rep edits after leadsync read it
    updates = pd.DataFrame(
        {
            "crm_id": [other],
            "status": ["Qualified"],
            "score": [99.0],
            "reason": ["x"],
            "qualified_at": [as_of],
        }
    )
    batches = []
    skipped = write_updates.fn(connector, updates, read, "test", True, batches.append)
    assert batches == [] and skipped["crm_id"].tolist() == [other]
    assert crm_state("salesforce").loc[other, "score"] == 3


def test_a_record_to_fix_goes_to_needs_review_in_the_crm_with_what_to_fix(crm, as_of):
    crm(leads=20)
    client = connector_for("salesforce").client
    absurd, owned = crm_state("salesforce").index[:2]
    client.Lead.update(absurd, {"NumberOfEmployees": -40, "AnnualRevenue": 9e16})
    client.Lead.update(
        owned,
        {
            "NumberOfEmployees": -5,
            "Status": "Working - Contacted",
            "Qualification_Status__c": "Nurture",
        },
    )
    state = sync_leads(source="salesforce", as_of=as_of, return_state=True)
    assert state.is_completed(), state.message
    assert report_of(state).sent_to_review >= 2
    after = crm_state("salesforce")
    assert after.loc[absurd, "status"] == "Needs review"
    assert after.loc[absurd, "reason"].startswith(
        "Fix the record: employees -40 is not a company size; annual revenue "
        "90,000,000,000,000,000 is not plausible (over 1,000,000,000,000); bad data (-20)"
    )
    assert after.loc[owned, "status"] == "Nurture"
    assert after.loc[owned, "reason"].startswith(
        "Human status stands: Working - Contacted; Fix the record: employees -5 is not a "
        "company size"
    )
    audit = Ledger().audit.writes_of_run(str(state.state_details.flow_run_id))
    for lead in (absurd, owned):
        reasons = audit[(audit["crm_id"] == lead) & (audit["field"] == "reason")]
        assert reasons["new"].tolist() == [after.loc[lead, "reason"]]
    outcomes = {
        row["crm_id"]: row["outcome"]
        for row in json.loads(Artifact.get("salesforce-sync-quarantine").data)
    }
    assert outcomes[absurd] == "Needs review in the CRM"
    assert outcomes[owned] == "fix reason in the CRM, status Nurture"


@pytest.mark.parametrize("source", SOURCES)
def test_requalification_moves_leads_that_went_cold(crm, source, as_of):
    crm()
    sync_leads(source=source, as_of=as_of, return_state=True)
    qualified = crm_state(source).query("status == 'Qualified'").index
    later = as_of + pd.Timedelta(days=150)
    state = requalify_leads(source=source, as_of=later, older_than_days=30, return_state=True)
    assert state.is_completed(), state.message
    moved = report_of(state).transitions
    assert moved.query("`from` == 'Qualified'")["leads"].sum() > 0
    cooled = crm_state(source).loc[qualified]
    assert (cooled["status"] != "Qualified").any()
    assert (cooled.loc[cooled["status"] != "Qualified", "qualified_at"] == later).all()


def test_dry_run_writes_nothing_and_reports_the_plan(crm, as_of):
    crm()
    before = crm_state("hubspot")
    state = sync_leads(source="hubspot", as_of=as_of, dry_run=True, return_state=True)
    report = report_of(state)
    assert report.changed > 0 and report.written == 0 and report.examples
    pd.testing.assert_frame_equal(crm_state("hubspot")[WRITTEN], before[WRITTEN])
    assert Ledger().watermark("hubspot") is None


def test_rollback_restores_the_previous_values_except_where_a_person_changed_them(crm, as_of):
    crm()
    before = crm_state("salesforce")
    run = sync_leads(source="salesforce", as_of=as_of, return_state=True)
    changed_by_rep = crm_state("salesforce").query("status == 'Qualified'").index[0]
    connector_for("salesforce").client.Lead.update(
        changed_by_rep, {"Qualification_Reason__c": "rep"}
    )
    state = rollback_run(
        source="salesforce", run_id=str(run.state_details.flow_run_id), return_state=True
    )
    assert state.is_completed(), state.message
    after = crm_state("salesforce")
    untouched = after.index.drop(changed_by_rep)
    pd.testing.assert_frame_equal(after.loc[untouched, WRITTEN], before.loc[untouched, WRITTEN])
    assert after.loc[changed_by_rep, "reason"] == "rep"


def test_a_stopped_rollback_keeps_what_it_restored_and_resumes_to_the_end(crm, as_of):
    sandbox = crm(leads=600)
    before = crm_state("salesforce")[WRITTEN]
    synced = sync_leads(source="salesforce", as_of=as_of, return_state=True)
    run = str(synced.state_details.flow_run_id)
    written = Ledger().audit.writes_of_run(run)["crm_id"].nunique()
    daily = sandbox.salesforce.daily
    daily.limit = daily.used + 4  # describe, two reads of the leads, one of three writes

    stopped = rollback_run(source="salesforce", run_id=run, return_state=True)
    assert stopped.is_failed() and "daily API request limit" in stopped.message
    rolled_back = str(stopped.state_details.flow_run_id)
    partial = Ledger().audit.writes_of_run(rolled_back)
    assert 0 < partial["crm_id"].nunique() < written  # the restores it made are in the ledger
    assert Ledger().audit.count_open("salesforce") == 0

    daily.limit += 10_000
    resumed = rollback_run(source="salesforce", run_id=run, return_state=True)
    assert resumed.is_completed(), resumed.message
    assert f"{partial['crm_id'].nunique()} restored by an earlier attempt" in (
        Artifact.get("salesforce-rollback-summary").data
    )
    pd.testing.assert_frame_equal(crm_state("salesforce")[WRITTEN], before)


def test_interrupted_backfill_resumes_to_the_same_state_as_an_uninterrupted_one(crm, as_of):
    start, end = as_of - pd.Timedelta(days=31), as_of + pd.Timedelta(hours=1)
    crm("clean", leads=600)
    assert backfill_leads(
        source="salesforce", start=start, end=end, window_days=5, as_of=as_of, return_state=True
    ).is_completed()
    expected = crm_state("salesforce")[WRITTEN]
    assert expected["score"].notna().sum() > 500

    interrupted = crm("interrupted", leads=600, salesforce=SalesforceSettings(daily_limit=12))
    first = backfill_leads(
        source="salesforce", start=start, end=end, window_days=5, as_of=as_of, return_state=True
    )
    assert first.is_failed()  # stopped half way by the daily API limit
    interrupted.salesforce.daily.limit = 10_000
    second = backfill_leads(
        source="salesforce", start=start, end=end, window_days=5, as_of=as_of, return_state=True
    )
    assert second.is_completed(), second.message
    actual = crm_state("salesforce")[WRITTEN]
    pd.testing.assert_frame_equal(actual.reset_index(drop=True), expected.reset_index(drop=True))


def test_the_ui_retry_of_a_stopped_backfill_without_an_end_resumes_where_it_stopped(crm, as_of):
    sandbox = crm(leads=600, salesforce=SalesforceSettings(daily_limit=12))
    parameters = {"source": "salesforce", "start": as_of - pd.Timedelta(days=31), "window_days": 5}
    before = crm_state_without_limit(sandbox)
    with get_client(sync_client=True) as client:
        run = client.create_flow_run(backfill_leads, parameters=parameters)
    first = run_flow(backfill_leads, flow_run=run, parameters=parameters, return_type="state")
    assert first.is_failed()  # stopped part way by the daily API limit
    kept = Ledger().progress(progress_key("salesforce", parameters["start"], None, 5))
    assert kept.until is not None and parameters["start"] < kept.done < kept.until

    sandbox.salesforce.daily.limit = 10_000
    with get_client(sync_client=True) as client:  # what Retry on the run's page does
        client.set_flow_run_state(run.id, Scheduled(), force=True)
        run = client.read_flow_run(run.id)
    second = run_flow(backfill_leads, flow_run=run, parameters=parameters, return_type="state")
    assert second.is_completed(), second.message
    leads = crm_state("salesforce")
    left = (before["modified_at"] >= kept.done).sum()
    assert report_of(second).read == left < len(leads)  # only what was left
    contract = LeadContract(load_rules().data_quality, now=pd.Timestamp.now(tz="UTC"))
    scored, _ = to_score(contract.validate(leads.reset_index()))
    assert leads.loc[scored["crm_id"], "score"].notna().all()
    assert Ledger().progress(progress_key("salesforce", parameters["start"], None, 5)) is None


def test_a_run_under_injected_faults_converges_to_the_clean_state(crm, as_of):
    crm("clean")
    sync_leads(source="hubspot", as_of=as_of, return_state=True)
    expected = crm_state("hubspot")[WRITTEN]
    assert expected["score"].notna().sum() > 250

    faults = FaultPlan(rate_limited=0.1, server_error=0.1, dropped=0.05, write_error=0.1, seed=7)
    crm("faulty", faults=faults)
    states = [sync_leads(source="hubspot", as_of=as_of, return_state=True) for _ in range(4)]
    assert states[0].is_failed() and "failed to write" in states[0].message
    assert states[-1].is_completed()
    actual = crm_state("hubspot")[WRITTEN]
    pd.testing.assert_frame_equal(actual.reset_index(drop=True), expected.reset_index(drop=True))


@pytest.mark.timeout(400)
@pytest.mark.parametrize("source", SOURCES)
def test_crm_calls_that_never_answer_are_timed_out_and_every_run_finishes(
    crm, source, as_of, monkeypatch
):
    crm("clean")
    before = crm_state(source)[WRITTEN]
    assert sync_leads(source=source, as_of=as_of, return_state=True).is_completed()
    expected = crm_state(source)[WRITTEN]

    monkeypatch.setenv("LEADSYNC_READ_TIMEOUT_SECONDS", "1")
    sandbox = crm("hanging", faults=FaultPlan(hang=0.08, hang_seconds=3600, seed=3))
    start = as_of - pd.Timedelta(days=31)
    backfill = backfill_leads(source=source, start=start, as_of=as_of, return_state=True)
    assert backfill.is_completed(), backfill.message
    pd.testing.assert_frame_equal(crm_state(source)[WRITTEN], expected)
    undone = rollback_run(
        source=source, run_id=str(backfill.state_details.flow_run_id), return_state=True
    )
    assert undone.is_completed(), undone.message
    pd.testing.assert_frame_equal(crm_state(source)[WRITTEN], before)
    synced = sync_leads(source=source, as_of=as_of, return_state=True)
    assert synced.is_completed(), synced.message
    pd.testing.assert_frame_equal(crm_state(source)[WRITTEN], expected)
    faults = sandbox.salesforce_faults if source == "salesforce" else sandbox.hubspot_faults
    assert faults.injected["hang"] > 0  # some calls were never answered


def test_command_line_runs_a_flow_with_its_parameters(crm, capsys, as_of):
    crm()
    before = crm_state("hubspot")
    assert (
        flows_main(["sync", "--source", "hubspot", "--dry-run", "--as-of", as_of.isoformat()]) == 0
    )
    assert "sync-leads: Completed" in capsys.readouterr().out
    pd.testing.assert_frame_equal(crm_state("hubspot")[WRITTEN], before[WRITTEN])


def test_credentials_from_a_prefect_block(crm, monkeypatch, as_of):
    from connectors.credentials import HubSpotCredentials

    sandbox = crm()
    HubSpotCredentials.register_type_and_schema()
    info = sandbox.info
    HubSpotCredentials(
        access_token=info["hubspot"]["access_token"],
        base_url=info["hubspot"]["base_url"],
        ca_bundle=info["ca_cert"],
    ).save("sandbox-hubspot", overwrite=True)
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", "/nonexistent/info.json")  # only the block works
    state = sync_leads(
        source="hubspot",
        as_of=as_of,
        dry_run=True,
        credentials_block="sandbox-hubspot",
        return_state=True,
    )
    assert state.is_completed(), state.message
    assert report_of(state).read == 300


def test_refused_credentials_fail_the_run_with_the_reason_not_a_traceback(crm, caplog):
    from connectors.credentials import HubSpotCredentials

    sandbox = crm()
    HubSpotCredentials.register_type_and_schema()
    HubSpotCredentials(
        access_token="pat-revoked",
        base_url=sandbox.info["hubspot"]["base_url"],
        ca_bundle=sandbox.info["ca_cert"],
    ).save("revoked-hubspot", overwrite=True)
    refused = sync_leads(source="hubspot", credentials_block="revoked-hubspot", return_state=True)
    assert refused.is_failed()
    assert refused.message.startswith("The hubspot sync stopped: HubSpot refused the access token")
    assert refused.message in Artifact.get("hubspot-sync-failure").data
    assert "Traceback" not in caplog.text

    missing = backfill_leads(source="salesforce", credentials_block="nope", return_state=True)
    assert missing.is_failed()
    assert "No leadsync Salesforce block named 'nope'" in missing.message

    bad_rules = sync_leads(source="salesforce", rules_path="/nonexistent.yaml", return_state=True)
    assert bad_rules.is_failed() and "/nonexistent.yaml" in bad_rules.message


def test_writes_made_before_a_fatal_stop_are_recorded_and_owed_leads_retried(crm, as_of):
    # describe, one page read, then 2 of the 3 collection writes fit the daily limit
    sandbox = crm(leads=600, salesforce=SalesforceSettings(daily_limit=4))
    stopped = sync_leads(source="salesforce", as_of=as_of, return_state=True)
    assert stopped.is_failed() and "daily API request limit" in stopped.message
    scored_in_crm = crm_state_without_limit(sandbox)["score"].notna().sum()
    recorded = Ledger().audit.writes_of_run(str(stopped.state_details.flow_run_id))
    assert scored_in_crm > 0
    assert recorded.query("field == 'score'")["crm_id"].nunique() == scored_in_crm
    assert Ledger().watermark("salesforce") is None  # not advanced past unwritten leads

    sandbox.salesforce.daily.limit = 10_000
    assert sync_leads(source="salesforce", as_of=as_of, return_state=True).is_completed()
    assert Ledger().owed("salesforce") == []


def crm_state_without_limit(sandbox) -> pd.DataFrame:
    sandbox.salesforce.daily.limit += 100
    try:
        return crm_state("salesforce")
    finally:
        sandbox.salesforce.daily.limit -= 100


def test_a_future_as_of_never_moves_the_watermark_past_now(crm, as_of):
    crm()
    before = pd.Timestamp.now(tz="UTC")
    sync_leads(source="hubspot", as_of=as_of + pd.Timedelta(days=2), return_state=True)
    watermark = pd.Timestamp(Ledger().watermark("hubspot"))
    assert before - pd.Timedelta(minutes=5) <= watermark <= pd.Timestamp.now(tz="UTC")


def test_owed_leads_that_were_deleted_or_quarantined_are_settled(crm, as_of):
    sandbox = crm()
    leads = crm_state("salesforce")
    quarantined_id = leads.index[0]
    client = connector_for("salesforce").client
    client.Lead.update(quarantined_id, {"Title": "Analyst"})  # modified after the run's time
    deleted_id = leads.index[1]
    Ledger().owe(
        "salesforce",
        pd.DataFrame({"crm_id": [quarantined_id, deleted_id], "reason": ["test", "test"]}),
        "earlier-run",
    )
    client.Lead.delete(deleted_id)
    earlier = as_of - pd.Timedelta(minutes=10)  # the edit's stamp is in this run's future
    run = sync_leads(source="salesforce", as_of=earlier, return_state=True)
    assert run.is_completed() and report_of(run).quarantined >= 1
    assert Ledger().owed("salesforce") == []
    assert sandbox.salesforce.lead_count() == 300


def test_chunks_that_waited_are_rechecked_and_fresh_ones_are_not(crm, monkeypatch, as_of):
    crm(leads=600)
    fresh = report_of(sync_leads(source="hubspot", as_of=as_of, return_state=True))
    assert fresh.rechecked == 0 and fresh.usage.reads == 3  # 600 contacts, 200 per search

    crm(name="again", leads=600)
    monkeypatch.setenv("LEADSYNC_RECHECK_AFTER_SECONDS", "0")
    rechecked = report_of(sync_leads(source="hubspot", as_of=as_of, return_state=True))
    assert rechecked.rechecked >= 1
    # every lead to write is re-read first, in batch reads of 100
    assert rechecked.usage.reads >= 3 + math.ceil(rechecked.written / 100)
    assert rechecked.written == fresh.written


def test_scoring_on_a_dask_cluster_writes_exactly_what_threads_write(crm, as_of):
    crm(name="threads", leads=900)
    sync_leads(source="salesforce", as_of=as_of, return_state=True)
    on_threads = crm_state("salesforce")[WRITTEN]

    crm(name="dask", leads=900)
    on_dask = sync_leads.with_options(task_runner=task_runner(JobSettings(task_runner="dask")))
    assert isinstance(on_dask.task_runner, DaskTaskRunner)
    assert on_dask(source="salesforce", as_of=as_of, return_state=True).is_completed()
    pd.testing.assert_frame_equal(crm_state("salesforce")[WRITTEN], on_threads)
    assert on_threads["score"].notna().sum() > 800


def test_writes_fill_whole_batches_across_chunks(crm, monkeypatch, as_of):
    crm(leads=900)
    monkeypatch.setenv("LEADSYNC_CHUNK_LEADS", "250")  # 5 search pages: chunks of 400, 400, 100
    report = report_of(sync_leads(source="hubspot", as_of=as_of, return_state=True))
    assert report.written == report.changed > 800
    assert report.usage.writes == math.ceil(report.changed / 100)  # no part-filled batch
    assert report.usage.reads == 5


def test_a_review_before_any_lead_was_scored_says_so(crm, as_of):
    crm()
    state = review_criteria(source="hubspot", as_of=as_of, return_state=True)
    assert state.is_completed() and "No hubspot lead has been scored yet" in state.message


@pytest.mark.parametrize("source", SOURCES)
def test_review_reports_conversion_replays_candidate_rules_and_writes_nothing(
    crm, source, tmp_path
, as_of):
    crm(leads=1_500)
    assert sync_leads(source=source, as_of=as_of, return_state=True).is_completed()
    before = crm_state(source)
    candidate = yaml.safe_load(Path(DEFAULT_RULES_PATH).read_text())
    candidate["status"]["qualified_at_or_above"] = 75
    candidate_path = tmp_path / "rules-candidate.yaml"
    candidate_path.write_text(yaml.safe_dump(candidate))

    state = review_criteria(
        source=source, candidate_rules_path=str(candidate_path), as_of=as_of, return_state=True
    )
    assert state.is_completed(), state.message
    pd.testing.assert_frame_equal(crm_state(source), before)  # nothing written
    assert Ledger().audit.writes_of_run(str(state.state_details.flow_run_id)).empty

    markdown = Artifact.get(f"{source}-criteria-review").data
    valid = LeadContract(load_rules().data_quality, now=as_of).validate(before.reset_index()).valid
    valid = valid[valid["score"].notna()]
    scored = before.loc[valid["crm_id"]]  # it reviews the scored leads that meet the contract
    converted = int(scored["converted"].sum())
    assert 0 < converted < len(scored)  # the connector reads each CRM's outcome
    assert f"**{len(scored):,} leads** the job scored, **{converted:,} converted**" in markdown
    proposed = score(valid, load_rules(candidate_path), as_of)["status"]
    today = score(valid, load_rules(), as_of)["status"]
    expected = int((proposed.fillna("-") != today.fillna("-")).sum())
    moved = int(re.search(r"\*\*([\d,]+) of [\d,]+ leads would change status", markdown)[1])
    assert moved == expected > 0  # a higher Qualified threshold demotes some
    csv = base64.b64decode(re.search(r"data:text/csv;base64,([A-Za-z0-9+/=]+)", markdown)[1])
    table = pd.read_csv(io.BytesIO(csv))
    bands = table[table["section"] == "score band"]
    assert bands["leads"].sum() == len(scored) and bands["converted"].sum() == converted
    assert set(table.loc[table["section"] == "factor", "group"]) >= {"fit: industry (+)"}


def test_review_proposes_rules_from_the_command_line_and_replays_them(
    crm, as_of, tmp_path, capsys
):
    crm(leads=2_000)
    assert sync_leads(source="salesforce", as_of=as_of, return_state=True).is_completed()
    before = crm_state("salesforce")
    path = tmp_path / "proposed-rules.yaml"
    arguments = ["review", "--source", "salesforce", "--propose", str(path)]
    assert flows_main([*arguments, "--as-of", as_of.isoformat()]) == 0

    out = capsys.readouterr().out
    auc = r"0\.\d{3}"
    assert re.search(rf"proposed rules in \S+: held-out AUC {auc} \(current rules {auc}\)", out)
    proposed = load_rules(path)
    pd.testing.assert_frame_equal(crm_state("salesforce"), before)  # nothing written
    proposal = Artifact.get("salesforce-rules-proposal").data
    assert "What would change" in proposal and "data:image/png;base64," in proposal
    review = Artifact.get("salesforce-criteria-review").data
    assert f"## Candidate rules `{path}`: a replay" in review
    valid = LeadContract(load_rules().data_quality, now=as_of).validate(before.reset_index()).valid
    valid = valid[valid["score"].notna()]
    moved = (score(valid, proposed, as_of)["status"] != score(valid, load_rules(), as_of)["status"])
    assert f"**{int(moved.sum()):,} of {len(valid):,} leads would change status.**" in review


def test_on_a_seeded_sandbox_the_proposal_ranks_newer_leads_nearly_as_well_as_the_truth(
    crm, as_of, tmp_path
):
    """The seed plants conversion from what the records show (sandbox.seed.planted_log_odds):
    their AUC on the newer leads is the ceiling any model of the records can reach."""
    crm(leads=20_000)
    state = review_criteria(
        source="salesforce", as_of=as_of, propose=str(tmp_path / "p.yaml"), return_state=True
    )
    proposal = state.result().proposal
    leads = crm_state("salesforce").reset_index().sort_values(["created_at", "crm_id"])
    valid = LeadContract(load_rules().data_quality, now=as_of).validate(leads).valid
    held_out = valid.tail(proposal.held_out)
    assert proposal.fitted + proposal.held_out == len(valid) >= 19_000
    assert (held_out["created_at"] >= proposal.split_at).all()  # a split in time
    converted = held_out["converted"].to_numpy(dtype=bool)
    planted = planted_log_odds(held_out, as_of)
    pairs = converted.sum() * (~converted).sum()
    ceiling = mannwhitneyu(planted[converted], planted[~converted]).statistic / pairs

    assert proposal.candidate.ranking > proposal.current.ranking
    assert ceiling - proposal.candidate.ranking <= 0.02, (ceiling, proposal.candidate.ranking)
    assert proposal.candidate.converters == converted.sum()
    need = proposal.terms[proposal.terms.index.str.startswith("Need:")]
    need = need[need["leads"] > 0]  # need plays no part in the planted outcome
    assert need["current"].max() - need["current"].min() == 10
    assert need["proposed"].max() - need["proposed"].min() <= NO_MATERIAL_WEIGHT
