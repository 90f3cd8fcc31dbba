"""`python -m connectors setup` on a bare org and portal, and field-level security as Salesforce
enforces it: real clients against the sandbox."""

from __future__ import annotations

import pandas as pd
import pytest
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import SalesforceMalformedRequest

from connectors import connector_for
from connectors.__main__ import main as connectors_main
from connectors.base import FieldsNotAccessible
from flows.jobs import sync_leads
from sandbox.hubspot import HubSpotSettings
from sandbox.salesforce import SalesforceSettings

BARE = {
    "salesforce": SalesforceSettings(bare=True),
    "hubspot": HubSpotSettings(create_custom_properties=False),
}
SCORE_FIELD = {"salesforce": "Lead_Score__c", "hubspot": "leadsync_score"}


@pytest.fixture(scope="module")
def prefect_engine(prefect_api):
    """The session's Prefect test server (tests/conftest.py)."""


@pytest.fixture
def bare_crm(start_sandbox, tmp_path, monkeypatch):
    """A bare org and portal (leadsync's setup never ran), which the connectors sign in to."""
    for name in (
        "SALESFORCE_SESSION_ID",
        "SALESFORCE_USERNAME",
        "SALESFORCE_CONSUMER_KEY",
        "HUBSPOT_ACCESS_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    sandbox = start_sandbox(leads=60, seed=3, **BARE)
    sandbox.write_info(tmp_path / "info.json")
    monkeypatch.setenv("LEADSYNC_SANDBOX_INFO", str(tmp_path / "info.json"))
    monkeypatch.setenv("LEADSYNC_LEDGER_URL", f"sqlite:///{tmp_path / 'ledger'}.sqlite3")
    return sandbox


def salesforce_client(sandbox, trusted_session) -> Salesforce:
    info = sandbox.info["salesforce"]
    return Salesforce(
        instance_url=info["instance_url"],
        session_id=info["session_id"],
        session=trusted_session(sandbox),
    )


def setup(source: str, *options: str) -> int:
    return connectors_main(["setup", "--source", source, *options])


@pytest.mark.parametrize("source", ["salesforce", "hubspot"])
def test_setup_of_a_bare_crm_lets_check_pass_and_a_sync_write(
    bare_crm, source, capsys, prefect_engine
):
    assert connectors_main(["check", "--source", source]) == 1
    assert SCORE_FIELD[source] in capsys.readouterr().err

    assert setup(source, "--dry-run") == 0
    planned = capsys.readouterr().out
    assert "would create" in planned and SCORE_FIELD[source] in planned
    assert connectors_main(["check", "--source", source]) == 1  # the dry run changed nothing
    capsys.readouterr()

    assert setup(source) == 0
    done = capsys.readouterr().out.splitlines()
    assert done == [line.removeprefix("would ") for line in planned.splitlines()]
    assert connectors_main(["check", "--source", source]) == 0

    as_of = pd.Timestamp.now(tz="UTC").floor("s")
    synced = sync_leads(source=source, as_of=as_of, return_state=True)
    assert synced.is_completed(), synced.message
    assert synced.result().written > 0
    leads = pd.concat(connector_for(source).read_all())
    assert leads["score"].notna().sum() == synced.result().written


@pytest.mark.parametrize("source", ["salesforce", "hubspot"])
def test_a_rerun_of_setup_changes_nothing(bare_crm, source, capsys, trusted_session):
    assert setup(source) == 0
    capsys.readouterr()
    before = setup_state(bare_crm, source, trusted_session)
    assert setup(source) == 0
    assert capsys.readouterr().out == f"{source}: nothing to change\n"
    assert setup(source, "--dry-run") == 0
    assert capsys.readouterr().out == f"{source}: nothing to change\n"
    assert setup_state(bare_crm, source, trusted_session) == before


def setup_state(sandbox, source: str, trusted_session) -> list:
    """Everything setup creates, as the CRM lists it."""
    if source == "hubspot":
        return sorted(sandbox.hubspot.properties)
    client = salesforce_client(sandbox, trusted_session)
    custom_fields = "SELECT Id, DeveloperName FROM CustomField WHERE TableEnumOrId = 'Lead'"
    fields = client.toolingexecute("query/", params={"q": custom_fields})["records"]
    return [
        sorted(record["Id"] for record in fields),
        *(
            sorted(record["Id"] for record in client.query_all(f"SELECT Id FROM {name}")["records"])
            for name in ("PermissionSet", "FieldPermissions", "PermissionSetAssignment")
        ),
    ]


def test_without_the_permission_set_fields_are_hidden_and_check_says_how_to_grant_them(
    bare_crm, trusted_session
):
    assert setup("salesforce") == 0
    client = salesforce_client(bare_crm, trusted_session)
    assignment = client.query(
        "SELECT Id FROM PermissionSetAssignment WHERE AssigneeId = "
        f"'{client.restful('chatter/users/me')['id']}'"
    )["records"][0]["Id"]
    client.PermissionSetAssignment.delete(assignment)  # an admin takes the grant away

    with pytest.raises(FieldsNotAccessible) as refused:
        connector_for("salesforce").check_fields()
    assert (
        "Lead.Lead_Score__c exists but the integration user cannot read it: assign the "
        "permission set leadsync_integration (python -m connectors setup --source salesforce) "
        "or grant Read in its field-level security" in str(refused.value)
    )
    names = {field["name"] for field in client.Lead.describe()["fields"]}
    assert "Lead_Score__c" not in names and "Email" in names
    with pytest.raises(SalesforceMalformedRequest) as query:
        client.query("SELECT Id, Lead_Score__c FROM Lead")
    assert query.value.content[0]["errorCode"] == "INVALID_FIELD"
    assert "No such column 'Lead_Score__c'" in query.value.content[0]["message"]
    with pytest.raises(SalesforceMalformedRequest) as bulk_query:  # a Bulk API 2.0 query job
        list(client.bulk2.Lead.query("SELECT Id, Lead_Score__c FROM Lead", wait=1))
    assert bulk_query.value.content[0]["errorCode"] == "INVALID_FIELD"
    lead = client.query("SELECT Id FROM Lead LIMIT 1")["records"][0]["Id"]
    [result] = write_score(client, lead)
    assert result["errors"][0]["statusCode"] == "INVALID_FIELD"


def test_a_field_granted_read_only_is_refused_in_every_write_path(bare_crm, trusted_session):
    assert setup("salesforce") == 0
    client = salesforce_client(bare_crm, trusted_session)
    [grant] = client.query(
        "SELECT Id FROM FieldPermissions WHERE Field = 'Lead.Lead_Score__c'"
    )["records"]
    client.FieldPermissions.update(grant["Id"], {"PermissionsEdit": False})

    cannot_edit = "Lead.Lead_Score__c exists but the integration user cannot edit it: .* Edit"
    with pytest.raises(FieldsNotAccessible, match=cannot_edit):
        connector_for("salesforce").check_fields()
    field = next(f for f in client.Lead.describe()["fields"] if f["name"] == "Lead_Score__c")
    assert field["updateable"] is False
    lead = client.query("SELECT Id, Lead_Score__c FROM Lead LIMIT 1")["records"][0]["Id"]
    [collection] = write_score(client, lead)
    assert collection["errors"][0]["statusCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    with pytest.raises(SalesforceMalformedRequest) as single:
        client.Lead.update(lead, {"Lead_Score__c": 50})
    assert single.value.content[0]["errorCode"] == "INVALID_FIELD_FOR_INSERT_UPDATE"
    [bulk] = client.bulk2.Lead.update(records=[{"Id": lead, "Lead_Score__c": 50}], wait=1)
    assert bulk["numberRecordsFailed"] == 1

    assert setup("salesforce") == 0  # setup grants Edit again
    connector_for("salesforce").check_fields()


def write_score(client: Salesforce, lead: str) -> list[dict]:
    return client.restful(
        "composite/sobjects",
        method="PATCH",
        json={
            "allOrNone": False,
            "records": [{"attributes": {"type": "Lead"}, "id": lead, "Lead_Score__c": 50}],
        },
    )


def test_the_tooling_api_refuses_metadata_it_does_not_understand(bare_crm, trusted_session):
    client = salesforce_client(bare_crm, trusted_session)
    with pytest.raises(SalesforceMalformedRequest) as refused:
        client.toolingexecute(
            "sobjects/CustomField",
            method="POST",
            data={
                "FullName": "Lead.Lead_Score__c",
                "Metadata": {
                    "label": "Score",
                    "type": "Number",
                    "precision": 3,
                    "scale": 0,
                    "colour": "red",
                },
            },
        )
    assert "colour" in refused.value.content[0]["message"]


def test_a_new_custom_field_is_hidden_until_a_permission_set_grants_it(
    bare_crm, trusted_session
):
    client = salesforce_client(bare_crm, trusted_session)
    client.toolingexecute(
        "sobjects/CustomField",
        method="POST",
        data={
            "FullName": "Lead.Lead_Score__c",
            "Metadata": {"label": "Score", "type": "Number", "precision": 3, "scale": 0},
        },
    )
    assert "Lead_Score__c" not in {field["name"] for field in client.Lead.describe()["fields"]}
    with pytest.raises(SalesforceMalformedRequest):
        client.query("SELECT Lead_Score__c FROM Lead")

    permission_set = client.PermissionSet.create({"Name": "scores", "Label": "Scores"})["id"]
    client.FieldPermissions.create(
        {
            "ParentId": permission_set,
            "SobjectType": "Lead",
            "Field": "Lead.Lead_Score__c",
            "PermissionsRead": True,
        }
    )
    with pytest.raises(SalesforceMalformedRequest):  # granted, but not to this user yet
        client.query("SELECT Lead_Score__c FROM Lead")
    user = client.restful("chatter/users/me")["id"]
    client.PermissionSetAssignment.create({"PermissionSetId": permission_set, "AssigneeId": user})

    [field] = [f for f in client.Lead.describe()["fields"] if f["name"] == "Lead_Score__c"]
    assert field["updateable"] is False  # read, not edit
    scores = client.query_all("SELECT Lead_Score__c FROM Lead")["records"]
    assert len(scores) == 60 and {lead["Lead_Score__c"] for lead in scores} == {None}


def test_setup_adds_the_status_options_an_existing_property_lacks(bare_crm, capsys):
    from hubspot import HubSpot

    from connectors.hubspot.properties import CUSTOM_PROPERTIES

    info = bare_crm.info
    client = HubSpot(
        access_token=info["hubspot"]["access_token"],
        host=info["hubspot"]["base_url"],
        ssl_ca_cert=info["ca_cert"],
    )
    made_by_hand = {**CUSTOM_PROPERTIES["leadsync_status"]}
    made_by_hand["options"] = [o for o in made_by_hand["options"] if o["value"] != "Needs review"]
    client.crm.properties.core_api.create("contacts", property_create=made_by_hand)

    assert setup("hubspot", "--dry-run") == 0
    planned = capsys.readouterr().out
    assert "would add option(s) Needs review to contact property leadsync_status" in planned
    assert setup("hubspot") == 0
    capsys.readouterr()
    options = client.crm.properties.core_api.get_by_name("contacts", "leadsync_status").options
    assert [o.value for o in options][-1] == "Needs review"
    assert len(options) == len(CUSTOM_PROPERTIES["leadsync_status"]["options"])
    assert setup("hubspot") == 0
    assert capsys.readouterr().out == "hubspot: nothing to change\n"
