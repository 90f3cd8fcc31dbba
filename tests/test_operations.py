"""The job as a team runs it: a `prefect server` on PostgreSQL that refuses requests without its
auth string, the deployments registered from deployments/prefect.yaml to a process work pool
with two workers, credentials as blocks, the audit ledger on PostgreSQL, the on-call automation
posting to a webhook, and the Prefect UI in headless Chromium, logged in. Screenshots of the UI
land in test-output/ui/.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.error import HTTPError
from uuid import UUID

import pandas as pd
import pytest
from prefect import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment
from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings
from prefect.states import Crashed, Scheduled

from connectors import SOURCES, connector_for
from connectors.credentials import HubSpotCredentials, SalesforceCredentials
from expectations.suite import LeadContract
from flows.pipeline import to_score
from scoring import load_rules
from flows.ledger import Ledger
from sandbox.run import Sandbox, SandboxConfig
from tests.stack import (
    ROOT,
    Postgres,
    PrefectServer,
    WebhookReceiver,
    chromium,
    log_in,
    prefect_server,
    wait_until,
    webhook_receiver,
    workers,
)

POOL = "leadsync"
HELD_QUEUE = "held"  # paused: its runs are never taken, so they go Late
LEADS = 1_500
SCREENSHOTS = ROOT / "test-output" / "ui"


@dataclass
class Stack:
    server: PrefectServer
    postgres: Postgres
    sandbox: Sandbox
    webhook: WebhookReceiver
    worker_logs: dict[str, Path]


@pytest.fixture(scope="module")
def stack(tmp_path_factory, postgres_cluster) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("prefect")
    database = postgres_cluster
    database.create_database("prefect")
    database.create_database("ledger")
    with ExitStack() as up:
        server = up.enter_context(
            prefect_server(
                home,
                database.url("prefect", driver="asyncpg"),
                PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED="false",  # no cron runs mid-test
                PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS="5",
                PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS="1",
            )
        )
        up.enter_context(
            temporary_settings(
                {PREFECT_API_URL: server.api_url, PREFECT_API_AUTH_STRING: server.auth_string}
            )
        )
        sandbox = up.enter_context(Sandbox(SandboxConfig(leads=LEADS, seed=11)))
        sandbox.write_info(home / "sandbox.json")
        webhook = up.enter_context(webhook_receiver())
        _set_up_like_a_team(server, sandbox, webhook)
        logs = up.enter_context(
            workers(
                server,
                POOL,
                ["worker-a", "worker-b"],
                home,
                LEADSYNC_LEDGER_URL=database.url("ledger"),
                LEADSYNC_SANDBOX_INFO=str(home / "sandbox.json"),
            )
        )
        yield Stack(server, database, sandbox, webhook, logs)


def _set_up_like_a_team(server: PrefectServer, sandbox: Sandbox, webhook: WebhookReceiver):
    """What the README tells an admin to do on a team's Prefect server."""
    server.cli("block", "register", "-m", "connectors.credentials")
    info = sandbox.info
    SalesforceCredentials(
        instance_url=info["salesforce"]["instance_url"],
        session_id=info["salesforce"]["session_id"],
        ca_bundle=info["ca_cert"],
    ).save("sandbox-salesforce")
    for name, token in (("sandbox-hubspot", info["hubspot"]["access_token"]),
                        ("revoked-hubspot", "pat-revoked")):  # fmt: skip
        HubSpotCredentials(
            access_token=token, base_url=info["hubspot"]["base_url"], ca_bundle=info["ca_cert"]
        ).save(name)
    server.cli("work-pool", "create", POOL, "--type", "process")
    server.cli("work-queue", "create", HELD_QUEUE, "--pool", POOL)
    server.cli("work-queue", "pause", HELD_QUEUE, "--pool", POOL)
    server.cli("--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml")
    notify(server, "--webhook-url", webhook.url)


def notify(server: PrefectServer, *target: str) -> None:
    """`python -m deployments notify` against the test server."""
    subprocess.run(
        [sys.executable, "-m", "deployments", "notify", *target],
        env=server.env,
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def run(deployment: str, **parameters) -> UUID:
    return run_deployment(deployment, parameters=parameters, timeout=0).id


def finished(flow_run_id: UUID, timeout: float = 300) -> FlowRun:
    with get_client(sync_client=True) as client:
        wait_until(
            lambda: client.read_flow_run(flow_run_id).state.is_final(),
            f"flow run {flow_run_id} finished",
            timeout,
        )
        return client.read_flow_run(flow_run_id)


@pytest.fixture(scope="module")
def synced(stack) -> dict[str, FlowRun]:
    """A sync of each CRM, both started at once."""
    started = {
        source: run(f"sync-leads/{source}-sync", credentials_block=f"sandbox-{source}")
        for source in SOURCES
    }
    return {source: finished(flow_run_id) for source, flow_run_id in started.items()}


def test_two_workers_sync_both_crms_at_once_with_the_ledger_on_postgres(stack, synced):
    for source, flow_run in synced.items():
        assert flow_run.state.is_completed(), f"{source}: {flow_run.state.message}"
    ran_by = {
        flow_run.name: [name for name, log in logs.items() if f"flow run '{flow_run.name}'" in log]
        for flow_run in synced.values()
        for logs in [{name: path.read_text() for name, path in stack.worker_logs.items()}]
    }
    assert sorted(sum(ran_by.values(), [])) == ["worker-a", "worker-b"], ran_by
    # Each worker takes one run at a time, so both were handed out before either finished.
    taken = {source: pending_since(flow_run.id) for source, flow_run in synced.items()}
    assert max(taken.values()) < min(flow_run.end_time for flow_run in synced.values())

    ledger = Ledger(stack.postgres.url("ledger"))
    assert ledger.engine.dialect.name == "postgresql"
    for source, flow_run in synced.items():
        leads = pd.concat(connector_for(source, f"sandbox-{source}").read_all())
        scored = leads[leads["score"].notna()].set_index("crm_id")["score"]
        written = ledger.audit.writes_of_run(str(flow_run.id)).query("field == 'score'")
        to_write = scored_of(leads)
        assert len(scored) == len(to_write)  # every lead scored but the quarantined
        assert (
            written.set_index("crm_id")["new"]
            .astype(float)
            .sort_index()
            .equals(scored.astype(float).sort_index().rename("new"))
        )
        assert ledger.watermark(source) is not None


def pending_since(flow_run_id: UUID) -> datetime:
    """When a worker took the run (its Pending state)."""
    with get_client(sync_client=True) as client:
        states = client.read_flow_run_states(flow_run_id)
    return next(state.timestamp for state in states if state.is_pending())


def scored_of(leads: pd.DataFrame) -> pd.DataFrame:
    """The leads the job scores: the valid ones and those sent to review for bad data."""
    contract = LeadContract(load_rules().data_quality, now=pd.Timestamp.now(tz="UTC"))
    return to_score(contract.validate(leads))[0]


def artifacts_of(flow_run_id: UUID) -> dict[str, UUID]:
    """key -> artifact id, for the artifacts a flow run made."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )
    return {artifact.key: artifact.id for artifact in artifacts if artifact.key}


@pytest.fixture(scope="module")
def ui_login(stack, tmp_path_factory) -> Path:
    """Log in to the Prefect UI once (it asks for the server's auth string); the browser state
    it leaves (the string in local storage), which each UI test starts from. Each test opens
    Chromium only after its flow runs: Playwright's event loop would turn Prefect's sync calls
    into coroutines."""
    state = tmp_path_factory.mktemp("ui") / "state.json"
    with chromium() as browser:
        log_in(browser, stack.server, SCREENSHOTS / "login.png")
        browser.storage_state(path=state)
    return state


def basic(auth_string: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(auth_string.encode()).decode()}


def api_post(stack: Stack, path: str, headers: dict[str, str]):
    request = urllib.request.Request(
        f"{stack.server.api_url}{path}",
        data=b"{}",
        headers={"Content-Type": "application/json", **headers},
    )
    return urllib.request.urlopen(request, timeout=30)


def test_the_server_refuses_whoever_lacks_its_auth_string(stack):
    for headers in ({}, basic("leadsync:guessed")):
        with pytest.raises(HTTPError) as refused:
            api_post(stack, "/deployments/filter", headers)
        assert refused.value.code == 401
    with api_post(stack, "/deployments/filter", basic(stack.server.auth_string)) as answer:
        assert "salesforce-backfill" in {deployment["name"] for deployment in json.load(answer)}

    without = {k: v for k, v in stack.server.env.items() if k != "PREFECT_API_AUTH_STRING"}
    cli = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "ls"],
        env=without, cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert cli.returncode != 0 and "401" in cli.stdout + cli.stderr


def open_page(browser, url: str, shows: str, screenshot: str):
    """Open `url`, wait until the page shows the text `shows`, save a full-page screenshot."""
    page = browser.new_page()
    page.goto(url)
    page.get_by_text(shows, exact=False).first.wait_for(timeout=60_000)
    page.wait_for_timeout(500)  # the UI keeps polling, so it is never network-idle
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / screenshot, full_page=True)
    return page


def test_the_flow_run_page_shows_on_call_the_run_and_its_artifacts(stack, synced, ui_login):
    flow_run = synced["hubspot"]
    keys = artifacts_of(flow_run.id)
    leads = pd.concat(connector_for("hubspot", "sandbox-hubspot").read_all())
    quarantined = leads["crm_id"][~leads["crm_id"].isin(scored_of(leads)["crm_id"])]
    ui = stack.server.ui_url
    with chromium(ui_login) as browser:
        page = open_page(browser, f"{ui}/runs/flow-run/{flow_run.id}", flow_run.name, "run.png")
        assert "Completed" in page.inner_text("body")
        page.get_by_text("Artifacts", exact=True).click()
        page.get_by_text("hubspot-sync-summary").first.wait_for()
        page.screenshot(path=SCREENSHOTS / "run-artifacts.png", full_page=True)
        listed = page.inner_text("body")
        for kind in ("summary", "transitions", "quarantine", "scores", "failures"):
            assert f"hubspot-sync-{kind}" in listed

        summary = open_page(
            browser, f"{ui}/artifacts/artifact/{keys['hubspot-sync-summary']}", "API calls used",
            "summary.png",
        ).inner_text("body")  # fmt: skip
        for figure, value in (("read", LEADS), ("quarantined", len(quarantined))):
            assert f"{figure}\t{value}" in summary, summary

        transitions = open_page(
            browser, f"{ui}/artifacts/artifact/{keys['hubspot-sync-transitions']}", "leads",
            "transitions.png",
        ).inner_text("body")  # fmt: skip
        assert "(none)" in transitions and "Qualified" in transitions

        quarantine = open_page(
            browser, f"{ui}/artifacts/artifact/{keys['hubspot-sync-quarantine']}", "reason",
            "quarantine.png",
        ).inner_text("body")  # fmt: skip
        assert "crm_id\toutcome\treason\trecord" in quarantine  # the reason and the link
        assert "Needs review in the CRM" in quarantine


def test_a_refused_token_fails_with_its_reason_in_the_ui_and_tells_on_call(
    stack, synced, ui_login
):
    flow_run = finished(run("sync-leads/hubspot-sync", credentials_block="revoked-hubspot"))
    assert flow_run.state.is_failed()
    reason = "HubSpot refused the access token"
    assert reason in flow_run.state.message

    message = stack.webhook.wait_for(flow_run.name, "Failed")["text"]
    assert "Flow: sync-leads" in message and "CRM: hubspot" in message and reason in message
    assert f"Run: {stack.server.ui_url}/runs/flow-run/{flow_run.id}" in message

    failure = artifacts_of(flow_run.id)["hubspot-sync-failure"]
    with chromium(ui_login) as browser:
        page = open_page(
            browser, f"{stack.server.ui_url}/runs/flow-run/{flow_run.id}", reason, "failed-run.png"
        )
        logs = page.inner_text("body")
        # The reason is the first error on the page; Prefect's engine logs its own traceback of
        # the Failed state after it.
        first_error = re.search(r"ERROR\s+(.+)", logs).group(1)
        assert first_error.startswith(f"The hubspot sync stopped: {reason}"), first_error
        assert "Traceback" not in logs[: logs.index(reason)]
        artifact = open_page(
            browser, f"{stack.server.ui_url}/artifacts/artifact/{failure}", reason,
            "failed-run-artifact.png",
        ).inner_text("body")  # fmt: skip
        assert "hubspot sync stopped" in artifact and "on-call runbook" in artifact


def held_run(deployment: str, due_in: timedelta) -> FlowRun:
    """A run of `deployment` on the paused queue, which no worker takes."""
    with get_client(sync_client=True) as client:
        return client.create_flow_run_from_deployment(
            client.read_deployment_by_name(deployment).id,
            state=Scheduled(scheduled_time=datetime.now(UTC) + due_in),
            work_queue_name=HELD_QUEUE,
        )


def crash(flow_run: FlowRun, why: str) -> None:
    """What the server records when a run's process dies."""
    with get_client(sync_client=True) as client:
        client.set_flow_run_state(flow_run.id, Crashed(message=why), force=True)


def test_late_and_crashed_runs_tell_on_call(stack):
    late = held_run("requalify-leads/hubspot-requalify", due_in=-timedelta(minutes=1))
    message = stack.webhook.wait_for(late.name, "is Late")["text"]
    assert "Flow: requalify-leads" in message and "CRM: hubspot" in message
    assert f"no worker is taking runs from work pool {POOL}" in message

    crashed = held_run("backfill-leads/salesforce-backfill", due_in=timedelta(hours=1))
    why = "Flow run infrastructure exited with non-zero status code -9."
    crash(crashed, why)
    message = stack.webhook.wait_for(crashed.name, "is Crashed")["text"]
    assert "Flow: backfill-leads" in message and "CRM: salesforce" in message and why in message


def test_on_call_can_be_told_through_a_notification_block_made_in_the_ui(stack):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    CustomWebhookNotificationBlock(
        name="chat", url=stack.webhook.url, json_data={"text": "via chat: {{subject}} {{body}}"}
    ).save("chat", overwrite=True)
    notify(stack.server, "--block", "custom-webhook/chat")
    try:
        crashed = held_run("sync-leads/salesforce-sync", due_in=timedelta(hours=1))
        crash(crashed, "host lost")
        message = stack.webhook.wait_for("via chat:", crashed.name, "is Crashed")["text"]
        assert "CRM: salesforce" in message and "host lost" in message
    finally:  # back to the webhook the other tests read
        notify(stack.server, "--webhook-url", stack.webhook.url)


def test_the_criteria_review_and_its_proposal_read_at_a_glance_in_the_ui(
    stack, synced, ui_login, tmp_path
):
    proposed = tmp_path / "proposed-rules.yaml"  # the worker runs on this machine
    flow_run = finished(
        run(
            "review-criteria/hubspot-review",
            credentials_block="sandbox-hubspot",
            propose=str(proposed),
        )
    )
    assert flow_run.state.is_completed(), flow_run.state.message
    assert "held-out AUC" in flow_run.state.message and load_rules(proposed)
    artifacts = artifacts_of(flow_run.id)
    with chromium(ui_login) as browser:
        page = open_page(
            browser,
            f"{stack.server.ui_url}/artifacts/artifact/{artifacts['hubspot-criteria-review']}",
            "Conversion by score band",
            "criteria-review.png",
        )
        text = page.inner_text("body")
        assert "█" in text and "raises conversion" in text
        assert re.search(r"\b[\d,]+ of [\d,]+ leads would change status", text)  # the replay
        download = page.get_by_text("Download every rate and count as CSV")
        assert download.get_attribute("href").startswith("data:text/csv;base64,")
        page = open_page(
            browser,
            f"{stack.server.ui_url}/artifacts/artifact/{artifacts['hubspot-rules-proposal']}",
            "What would change",
            "rules-proposal.png",
        )
        chart = page.get_by_alt_text("Conversion by score band and calibration", exact=False)
        assert chart.evaluate("image => image.complete && image.naturalWidth") > 400
        text = page.inner_text("body")
        assert "ranks a converter first" in text and "score 70" in text
