"""`python -m sandbox serve` as a person uses it: start, connect with the real clients from the
info file, page through every lead, update some, stop with SIGTERM, restart with the data kept."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from hubspot import HubSpot
from hubspot.crm.contacts import BatchInputSimplePublicObjectBatchInput
from simple_salesforce import Salesforce

REPO = Path(__file__).resolve().parents[1]


def start_serve(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "sandbox", "serve", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def wait_for(path: Path, process: subprocess.Popen, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited early:\n{process.stdout.read()}")
        if path.exists() and path.stat().st_size:
            return json.loads(path.read_text())
        time.sleep(0.2)
    raise AssertionError("no info file")


def stop(process: subprocess.Popen) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=15)
    assert process.returncode == 0, output
    return output


def salesforce_client(info: dict) -> Salesforce:
    session = requests.Session()
    session.trust_env = False  # else REQUESTS_CA_BUNDLE in the environment overrides verify
    session.verify = info["ca_cert"]
    return Salesforce(
        instance_url=info["salesforce"]["instance_url"],
        session_id=info["salesforce"]["session_id"],
        session=session,
    )


def hubspot_client(info: dict) -> HubSpot:
    return HubSpot(
        access_token=info["hubspot"]["access_token"],
        host=info["hubspot"]["base_url"],
        ssl_ca_cert=info["ca_cert"],
    )


def all_contacts(client: HubSpot) -> list:
    contacts, after = [], None
    while True:
        page = client.crm.contacts.basic_api.get_page(limit=100, after=after)
        contacts += page.results
        if page.paging is None or page.paging.next is None:
            return contacts
        after = page.paging.next.after


def test_serve_pages_updates_stops_and_keeps_data(tmp_path):
    info_file, data_dir = tmp_path / "info.json", tmp_path / "data"
    process = start_serve(
        "--leads", "2500", "--seed", "4", "--data-dir", str(data_dir), "--info-file", str(info_file)
    )
    try:
        info = wait_for(info_file, process)
        sf = salesforce_client(info)
        leads = sf.query_all("SELECT Id, Email, Lead_Score__c FROM Lead")["records"]
        assert len(leads) == 2500 and len({lead["Id"] for lead in leads}) == 2500
        results = sf.restful(
            "composite/sobjects",
            method="PATCH",
            json={
                "allOrNone": False,
                "records": [
                    {"attributes": {"type": "Lead"}, "id": lead["Id"], "Lead_Score__c": 77}
                    for lead in leads[:5]
                ],
            },
        )
        assert all(result["success"] for result in results)

        hs = hubspot_client(info)
        contacts = all_contacts(hs)
        assert len(contacts) == 2500 and len({c.id for c in contacts}) == 2500
        batch = BatchInputSimplePublicObjectBatchInput(
            inputs=[{"id": c.id, "properties": {"leadsync_score": "77"}} for c in contacts[:5]]
        )
        assert len(hs.crm.contacts.batch_api.update(batch).results) == 5
    finally:
        output = stop(process)
    assert "Sandbox stopped." in output
    assert info["salesforce"]["session_id"] not in output  # tokens stay in the info file

    info_file.unlink()
    process = start_serve(
        "--leads", "2500", "--data-dir", str(data_dir), "--info-file", str(info_file)
    )
    try:
        again = wait_for(info_file, process)
        assert again["salesforce"]["session_id"] == info["salesforce"]["session_id"]
        sf = salesforce_client(again)
        kept = sf.query("SELECT COUNT() FROM Lead WHERE Lead_Score__c = 77")["totalSize"]
        assert kept == 5
        assert sf.query("SELECT COUNT() FROM Lead")["totalSize"] == 2500  # not seeded twice
    finally:
        stop(process)
