"""Signing in the ways real orgs do, end to end: each Salesforce flow and HubSpot OAuth through
the real clients' own login code (routed to the sandbox), sessions that expire mid-run and are
renewed, and refusals that end the run with a clear message."""

from __future__ import annotations

import os
from dataclasses import replace
import re
from pathlib import Path

import pandas as pd
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from simple_salesforce import Salesforce

from connectors import AuthenticationFailed, connector_for
from connectors.credentials import (
    CredentialsInvalid,
    SalesforceCredentials,
    hubspot_credentials,
    salesforce_credentials,
)
from connectors.salesforce import signin
from expectations.suite import LeadContract
from flows.pipeline import to_score
from scoring import load_rules
from flows.jobs import sync_leads
from sandbox.http import FaultPlan
from sandbox.hubspot import HubSpotSettings
from sandbox.salesforce import SalesforceSettings

TTL = 1.0  # seconds a session or access token lives: every sync below outlasts it
SLOW = FaultPlan(latency_seconds=0.25)


@pytest.fixture(scope="module", autouse=True)
def prefect_engine(prefect_api):
    """The session's Prefect test server (tests/conftest.py)."""


@pytest.fixture
def crm(start_sandbox, tmp_path, monkeypatch):
    """A sandbox whose sessions and access tokens expire after TTL, answering slowly; the
    ledger and the sandbox info file are the test's own, and no CRM variable is set."""
    for name in list(os.environ):
        if name.startswith(("SALESFORCE_", "HUBSPOT_")) or name == "LEADSYNC_CA_BUNDLE":
            monkeypatch.delenv(name)
    sandbox = start_sandbox(
        leads=120,
        seed=5,
        faults=SLOW,
        salesforce=SalesforceSettings(session_ttl=TTL),
        hubspot=HubSpotSettings(
            access_token_ttl=TTL, ten_second_limit=100_000, search_per_second=100_000
        ),
    )
    sandbox.write_info(tmp_path / "info.json")
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "info.json"))
    monkeypatch.setenv("LEADSYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger'}.sqlite3")
    monkeypatch.setenv("LEADSYNC_CA_BUNDLE", sandbox.info["ca_cert"])
    return sandbox


def salesforce_flow(sandbox, flow: str) -> dict[str, str]:
    """The SALESFORCE_* variables an admin sets for `flow`, pointed at the sandbox."""
    info = sandbox.info["salesforce"]
    app = {"SALESFORCE_CONSUMER_KEY": info["client_id"]}
    variables = {
        "jwt_bearer": {
            **app,
            "SALESFORCE_USERNAME": info["username"],
            "SALESFORCE_PRIVATE_KEY_FILE": info["private_key_file"],
        },
        "client_credentials": {
            **app,
            "SALESFORCE_CONSUMER_SECRET": info["client_secret"],
            "SALESFORCE_DOMAIN": "leadsync-sandbox.my",
        },
        "refresh_token": {
            **app,
            "SALESFORCE_CONSUMER_SECRET": info["client_secret"],
            "SALESFORCE_REFRESH_TOKEN": info["refresh_token"],
        },
        "password": {
            "SALESFORCE_USERNAME": info["username"],
            "SALESFORCE_PASSWORD": info["password"],
            "SALESFORCE_SECURITY_TOKEN": info["security_token"],
        },
    }[flow]
    return {**variables, "SALESFORCE_SANDBOX_URL": info["instance_url"]}


def use(monkeypatch, variables: dict[str, str]) -> None:
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def use_hubspot_oauth(crm, monkeypatch) -> None:
    """Sign in to the sandbox portal as a public app, with its OAuth refresh token."""
    info = crm.info["hubspot"]
    use(
        monkeypatch,
        {
            "HUBSPOT_CLIENT_ID": info["client_id"],
            "HUBSPOT_CLIENT_SECRET": info["client_secret"],
            "HUBSPOT_REFRESH_TOKEN": info["refresh_token"],
            "HUBSPOT_BASE_URL": info["base_url"],
        },
    )


def leads_to_write(source: str, as_of: pd.Timestamp) -> int:
    leads = pd.concat(connector_for(source).read_all())
    validation = LeadContract(load_rules().data_quality, now=as_of).validate(leads)
    return len(to_score(validation)[0])  # valid, and sent to review for bad data


@pytest.mark.parametrize("flow", ["jwt_bearer", "client_credentials", "refresh_token", "password"])
def test_a_salesforce_sync_signs_in_renews_its_expired_session_and_completes(
    crm, monkeypatch, flow
):
    use(monkeypatch, salesforce_flow(crm, flow))
    as_of = pd.Timestamp.now(tz="UTC").floor("s")
    expected = leads_to_write("salesforce", as_of)
    issued = crm.salesforce.sign_in.issued
    state = sync_leads(source="salesforce", as_of=as_of, return_state=True)
    assert state.is_completed(), state.message
    assert state.result().written == expected > 0
    assert crm.salesforce.sign_in.issued >= issued + 2  # signed in, outlived it, signed in again


def test_a_hubspot_sync_with_oauth_refreshes_its_access_token_and_completes(crm, monkeypatch):
    use_hubspot_oauth(crm, monkeypatch)
    as_of = pd.Timestamp.now(tz="UTC").floor("s")
    expected = leads_to_write("hubspot", as_of)
    issued = crm.hubspot.oauth.issued
    state = sync_leads(source="hubspot", as_of=as_of, return_state=True)
    assert state.is_completed(), state.message
    assert state.result().written == expected > 0
    assert crm.hubspot.oauth.issued >= issued + 2


def test_a_hubspot_token_refused_before_its_time_is_refreshed_and_the_call_retried(
    crm, monkeypatch
):
    use_hubspot_oauth(crm, monkeypatch)
    crm.hubspot.oauth.access_token_ttl = 3_600.0  # the connector will not refresh by itself
    connector = connector_for("hubspot")
    crm.hubspot.oauth.expire_access_tokens()  # yet HubSpot answers 401 EXPIRED_AUTHENTICATION
    assert len(connector.read_by_ids(["1", "2"])) == 2
    assert crm.hubspot.oauth.issued == 2


def test_a_salesforce_session_refused_in_a_bulk_api_call_is_renewed(crm, monkeypatch):
    """Bulk API 2.0 calls carry the session they were made with: simple-salesforce renews only
    its REST calls, so the connector signs in again itself and retries the call."""
    use(monkeypatch, salesforce_flow(crm, "jwt_bearer"))
    monkeypatch.setenv("LEADSYNC_SALESFORCE_BULK_THRESHOLD", "1")
    crm.salesforce.sign_in.session_ttl = 3_600.0
    connector = connector_for("salesforce")
    leads = pd.concat(connector.read_all()).head(5)
    updates = leads[["crm_id", "status", "score", "reason", "qualified_at"]].assign(score=42.0)
    issued = crm.salesforce.sign_in.issued
    crm.salesforce.sign_in.expire_sessions()
    connector.write(updates)
    assert crm.salesforce.sign_in.issued == issued + 1
    assert connector.read_by_ids(list(updates["crm_id"]))["score"].tolist() == [42.0] * 5


def test_a_sign_in_refused_mid_run_stops_with_the_reason(crm, monkeypatch):
    """simple-salesforce signs in again by itself when a REST call's session expired; when that
    sign-in is refused, the run stops with Salesforce's reason, not the client's exception."""
    use(monkeypatch, salesforce_flow(crm, "jwt_bearer"))
    connector = connector_for("salesforce")
    crm.salesforce.sign_in.app = replace(crm.salesforce.sign_in.app, certificate=None)
    crm.salesforce.sign_in.expire_sessions()
    with pytest.raises(
        AuthenticationFailed,
        match="Salesforce refused the sign-in again: invalid_grant: invalid assertion",
    ):
        connector.read_by_ids(["00Q000000000001AAA"])


def test_a_bad_jwt_assertion_ends_the_run_with_the_reason(crm, monkeypatch, tmp_path):
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "not-the-apps-key.pem"
    key_file.write_bytes(
        stranger.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    variables = salesforce_flow(crm, "jwt_bearer")
    use(monkeypatch, {**variables, "SALESFORCE_PRIVATE_KEY_FILE": str(key_file)})
    state = sync_leads(source="salesforce", return_state=True)
    assert state.is_failed()
    assert state.message == (
        "The salesforce sync stopped: Salesforce refused the JWT bearer sign-in: "
        "invalid_grant: invalid assertion"
    )


def test_a_revoked_salesforce_refresh_token_ends_the_run_with_the_reason(crm, monkeypatch):
    use(monkeypatch, salesforce_flow(crm, "refresh_token"))
    crm.salesforce.sign_in.revoke_refresh_token()
    state = sync_leads(source="salesforce", return_state=True)
    assert state.is_failed()
    assert state.message == (
        "The salesforce sync stopped: Salesforce refused the refresh token sign-in: "
        "invalid_grant: expired access/refresh token"
    )


def test_a_revoked_hubspot_refresh_token_ends_the_run_with_the_reason(crm, monkeypatch):
    use_hubspot_oauth(crm, monkeypatch)
    crm.hubspot.oauth.revoke_refresh_token()
    state = sync_leads(source="hubspot", return_state=True)
    assert state.is_failed()
    assert state.message.startswith(
        "The hubspot sync stopped: HubSpot refused the OAuth refresh token (BAD_REFRESH_TOKEN: "
    )
    assert crm.info["hubspot"]["refresh_token"] not in state.message


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        (
            {"SALESFORCE_PRIVATE_KEY_FILE": "app.pem", "SALESFORCE_USERNAME": "u"},
            "SALESFORCE_PRIVATE_KEY_FILE is set but SALESFORCE_CONSUMER_KEY is not.",
        ),
        (
            {"SALESFORCE_SESSION_ID": "00D!x", "SALESFORCE_REFRESH_TOKEN": "5Aep"},
            "SALESFORCE_SESSION_ID and SALESFORCE_REFRESH_TOKEN are both set",
        ),
        (
            {"SALESFORCE_CONSUMER_KEY": "k", "SALESFORCE_CONSUMER_SECRET": "s"},
            "the client credentials sign-in needs the org's My Domain: set SALESFORCE_DOMAIN",
        ),
        (
            {"SALESFORCE_USERNAME": "u", "SALESFORCE_PASSWORD": "p"},
            "SALESFORCE_SECURITY_TOKEN is not",
        ),
    ],
)
def test_a_missing_or_contradictory_salesforce_setting_is_named_at_start(
    crm, monkeypatch, variables, message
):
    use(monkeypatch, variables)
    with pytest.raises(CredentialsInvalid, match=re.escape(message)):
        salesforce_credentials()


def test_a_half_set_hubspot_oauth_is_named_at_start(crm, monkeypatch):
    use(monkeypatch, {"HUBSPOT_CLIENT_ID": "app", "HUBSPOT_REFRESH_TOKEN": "na1-x"})
    with pytest.raises(CredentialsInvalid, match="HUBSPOT_CLIENT_ID is set but HUBSPOT_CLIENT_S"):
        hubspot_credentials()


def test_a_jwt_bearer_block_signs_in_through_the_routed_login_host(crm):
    """A block's fields pick the flow as the variables do; simple-salesforce posts to
    https://login.salesforce.com/services/oauth2/token, which the session routes to the sandbox."""
    info = crm.info["salesforce"]
    block = SalesforceCredentials(
        consumer_key=info["client_id"],
        username=info["username"],
        private_key_file=info["private_key_file"],
        sandbox_url=info["instance_url"],
        ca_bundle=crm.info["ca_cert"],
    )
    sent: list[str] = []
    session = requests.Session()
    session.trust_env, session.verify = False, crm.info["ca_cert"]
    session.hooks["response"].append(lambda response, *_, **__: sent.append(response.url))
    signin.route_to_sandbox(session, block.sandbox_url)
    client = signin.sign_in(block.sign_in(), session)
    assert isinstance(client, Salesforce) and client.auth_type == "jwt-bearer"
    assert sent == [f"{info['instance_url']}/services/oauth2/token"]
    assert client.query("SELECT COUNT() FROM Lead")["totalSize"] == 120
    assert Path(info["private_key_file"]).stat().st_mode & 0o077 == 0
