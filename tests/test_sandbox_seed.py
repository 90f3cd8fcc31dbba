"""The seed holds only what each CRM can hold: every generated lead, bad ones included, is one the
CRM's own API accepts on create (through the real clients), and the bad data is the kind real
CRMs accept: placeholders, negative counts, absurd revenue, free text in open picklists."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from hubspot import HubSpot
from hubspot.crm.contacts.exceptions import ApiException
from simple_salesforce import Salesforce

from sandbox.hubspot import schema as hubspot_schema
from sandbox.salesforce import schema as salesforce_schema
from sandbox.seed import LeadMix, generate_leads

ALL_BAD = LeadMix(bad=1.0)
LEADS = 600
PLACEHOLDERS = {"N/A", "test", "asdf", "-", "unknown"}  # values real orgs fill required fields with


@pytest.fixture(scope="module")
def spoiled() -> pd.DataFrame:
    return generate_leads(LEADS, seed=7, now=pd.Timestamp("2026-01-15T12:00:00Z"), mix=ALL_BAD)


def salesforce_records(frame: pd.DataFrame) -> list[dict]:
    """The seeded Lead rows as an API create would send them (createable fields only)."""
    rows = salesforce_schema.lead_records(frame, 1)
    fields = [f for f in salesforce_schema.FIELDS if f.createable and f.name in rows]
    return [
        {
            "attributes": {"type": "Lead"},
            **{
                f.name: salesforce_schema.to_api(f, None if pd.isna(row[f.name]) else row[f.name])
                for f in fields
            },
        }
        for _, row in rows.iterrows()
    ]


def hubspot_inputs(frame: pd.DataFrame, definitions: dict) -> list[dict]:
    """The seeded contacts as a batch create would send them (writable properties only)."""
    rows = hubspot_schema.contact_rows(frame, 1)
    names = [
        name
        for name in rows.columns
        if name in definitions and not hubspot_schema.read_only(definitions[name])
    ]
    return [
        {
            "properties": {
                name: hubspot_schema.render(definitions[name], row[name])
                for name in names
                if not pd.isna(row[name])
            }
        }
        for _, row in rows.iterrows()
    ]


def test_the_seed_text_fits_salesforce_before_any_cut(spoiled):
    assert spoiled["company"].notna().all()
    assert spoiled["company"].str.len().max() <= 255
    assert spoiled["email"].str.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+").all()
    assert spoiled["email"].is_unique  # HubSpot keys contacts on their email


def test_the_bad_data_is_the_kind_real_crms_accept(spoiled):
    assert spoiled["company"].isin(PLACEHOLDERS).any()
    assert (spoiled["employees"] < 0).any()
    assert (spoiled["annual_revenue"] >= 1e15).any()
    assert (~spoiled["industry"].isin(salesforce_schema.field_named("Industry").picklist)).any()
    assert spoiled["company"].str.contains(r"[\u0400-\u04ff\u3040-\u30ff\u0600-\u06ff]").any()


def test_salesforce_accepts_every_seeded_lead_on_create(start_sandbox, trusted_session, spoiled):
    sandbox = start_sandbox()
    info = sandbox.info["salesforce"]
    sf = Salesforce(
        instance_url=info["instance_url"],
        session_id=info["session_id"],
        session=trusted_session(sandbox),
    )
    records = salesforce_records(spoiled)
    for start in range(0, len(records), 200):
        results = sf.restful(
            "composite/sobjects",
            method="POST",
            json={"allOrNone": False, "records": records[start : start + 200]},
        )
        refused = [r["errors"] for r in results if not r["success"]]
        assert refused == [], refused[:3]
    assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == LEADS


def test_hubspot_checks_email_formats_and_accepts_every_seeded_contact(start_sandbox, spoiled):
    sandbox = start_sandbox()
    info = sandbox.info
    api = HubSpot(
        access_token=info["hubspot"]["access_token"],
        host=info["hubspot"]["base_url"],
        ssl_ca_cert=info["ca_cert"],
    )
    with pytest.raises(ApiException) as refused:  # as HubSpot does, so the check below means it
        api.crm.contacts.basic_api.create({"properties": {"email": "ana at acme.com"}})
    assert refused.value.status == 400
    assert [e["code"] for e in json.loads(refused.value.body)["errors"]] == ["INVALID_EMAIL"]
    inputs = hubspot_inputs(spoiled, sandbox.hubspot.properties)
    for start in range(0, len(inputs), 100):
        created = api.crm.contacts.batch_api.create({"inputs": inputs[start : start + 100]})
        assert not getattr(created, "errors", None), created.errors[:3]
    assert sandbox.hubspot.contact_count() == LEADS
