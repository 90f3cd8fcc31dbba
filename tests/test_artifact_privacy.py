"""Artifacts live in Prefect's database, which more people read than the CRM: they hold CRM ids,
reasons and figures, with links to the records in the CRM, and never a lead's personal fields."""

from __future__ import annotations

import json
import re
from uuid import UUID

import pandas as pd
import pytest
from prefect import get_client
from prefect.artifacts import Artifact
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from sqlalchemy import select

from connectors import connector_for
from flows.__main__ import main as flows_main
from flows.audit import writes
from flows.jobs import sync_leads
from flows.ledger import Ledger
from sandbox.http import FaultPlan
from scoring import DEFAULT_RULES_PATH

SOURCES = ("salesforce", "hubspot")
PERSONAL = ["email", "first_name", "last_name", "company"]


@pytest.fixture(scope="module", autouse=True)
def prefect_engine(prefect_api):
    """The session's Prefect test server (tests/conftest.py)."""


@pytest.fixture
def crm(start_sandbox, tmp_path, monkeypatch):
    """Sandbox CRMs refusing some writes (so the failures artifact has rows), with bad leads
    (so the quarantine artifact has rows); the connectors and the ledger point at them."""
    for name in ("SALESFORCE_SESSION_ID", "SALESFORCE_USERNAME", "SALESFORCE_CONSUMER_KEY",
                 "HUBSPOT_ACCESS_TOKEN"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    sandbox = start_sandbox(leads=300, seed=5, faults=FaultPlan(write_error=0.2, seed=3))
    sandbox.write_info(tmp_path / "crm.json")
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "crm.json"))
    monkeypatch.setenv("LEADSYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger.sqlite3'}")
    return sandbox


def artifacts_of(flow_run_id: UUID) -> list[Artifact]:
    with get_client(sync_client=True) as client:
        return client.read_artifacts(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
        )


def personal_values(leads: pd.DataFrame) -> set[str]:
    """The leads' personal fields, but for words of the scoring rules' own labels (a placeholder
    company named "Company" is not found in "Company size")."""
    values = leads[PERSONAL].stack().dropna().astype(str).str.strip()
    ours = DEFAULT_RULES_PATH.read_text()
    return {value for value in values if len(value) >= 3 and value not in ours}


@pytest.mark.parametrize("source", SOURCES)
def test_no_personal_field_of_any_lead_reaches_an_artifact(crm, source):
    leads = pd.concat(connector_for(source).read_all())
    preview = sync_leads(source=source, dry_run=True, return_state=True)  # examples of changes
    sync = sync_leads(source=source, return_state=True)  # leads sent to review, refused leads
    report = sync.result(raise_on_failure=False)
    assert report.sent_to_review and report.failed  # the samples under test are not empty

    artifacts = [
        artifact
        for state in (preview, sync)
        for artifact in artifacts_of(state.state_details.flow_run_id)
    ]
    assert {f"{source}-sync-{kind}" for kind in ("quarantine", "failures", "summary")} <= {
        artifact.key for artifact in artifacts
    }
    text = "\n".join(json.dumps(artifact.data) for artifact in artifacts)
    found = [v for v in personal_values(leads) if re.search(rf"\b{re.escape(v)}\b", text)]
    assert not found, f"personal data in artifacts: {found[:10]}"
    assert "| lead | from | to | reason |" in text  # the dry run's examples were checked too


@pytest.mark.parametrize("source", SOURCES)
def test_quarantined_and_refused_leads_link_to_their_record_in_the_crm(crm, source):
    connector = connector_for(source)
    sync_leads(source=source, return_state=True)
    for kind in ("quarantine", "failures"):
        rows = json.loads(Artifact.get(f"{source}-sync-{kind}").data)
        assert rows and all(row["record"] == connector.record_url(row["crm_id"]) for row in rows)
    crm_id = rows[0]["crm_id"]
    if source == "salesforce":
        instance = connector.client.sf_instance
        assert connector.record_url(crm_id) == f"https://{instance}/lightning/r/Lead/{crm_id}/view"


def test_a_hubspot_link_opens_the_contact_page_of_the_portal_or_in_the_sandbox_its_api_url(
    crm, monkeypatch, trusted_session
):
    info = crm.info["hubspot"]
    contact = connector_for("hubspot").record_url("101")
    session = trusted_session(crm)
    answer = session.get(contact, headers={"Authorization": f"Bearer {info['access_token']}"})
    assert contact == f"{info['base_url']}/crm/v3/objects/contacts/101"
    assert answer.json()["id"] == "101"

    monkeypatch.setenv("LEADSYNC_HUBSPOT_PORTAL_ID", "4521987")
    assert (
        connector_for("hubspot").record_url("101")
        == "https://app.hubspot.com/contacts/4521987/record/0-1/101"
    )


def test_purge_deletes_the_leads_writes_and_owed_retries_from_the_ledger_only(crm):
    sync_leads(source="hubspot", return_state=True)
    ledger = Ledger()
    written = ledger.audit.writes_of_run(ledger_run(ledger))["crm_id"].unique().tolist()
    owed = ledger.owed("hubspot")
    forgotten, kept = [written[0], owed[0]], written[1:]

    assert flows_main(["purge", "--source", "hubspot", *(f"--crm-id={i}" for i in forgotten)]) == 0

    with ledger.engine.connect() as connection:
        left = set(
            connection.execute(select(writes.c.crm_id).where(writes.c.source == "hubspot"))
            .scalars()
        )
    assert left == set(kept)
    assert set(ledger.owed("hubspot")) == set(owed) - {owed[0]}
    assert ledger.watermark("hubspot") is not None  # the source's own state stays


def ledger_run(ledger: Ledger) -> str:
    """The one run that wrote to this ledger."""
    with ledger.engine.connect() as connection:
        return connection.execute(select(writes.c.run_id).limit(1)).scalar_one()
