"""The deployments: what definitions.py promises RevOps, that prefect.yaml declares the same, and
that every entrypoint still names a flow. No server: deployments are built, not applied."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml
from prefect.cli.deploy._models import PrefectYamlModel
from prefect.flows import load_flow_from_entrypoint
from prefect.utilities.schema_tools import validate

from deployments.definitions import SPECS

ROOT = Path(__file__).resolve().parent.parent
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"

# What the deployments promise, written out here rather than derived from definitions.py.
EXPECTED = {
    # name: (flow name, cron or None, parameters set by the deployment)
    "salesforce-sync": ("sync-leads", "*/15 * * * *", {"source": "salesforce"}),
    "hubspot-sync": ("sync-leads", "*/15 * * * *", {"source": "hubspot"}),
    "salesforce-requalify": (
        "requalify-leads",
        "0 3 * * *",
        {"source": "salesforce", "older_than_days": 7},
    ),
    "hubspot-requalify": (
        "requalify-leads",
        "0 3 * * *",
        {"source": "hubspot", "older_than_days": 7},
    ),
    "salesforce-backfill": ("backfill-leads", None, {"source": "salesforce", "window_days": 7}),
    "hubspot-backfill": ("backfill-leads", None, {"source": "hubspot", "window_days": 7}),
    "salesforce-review": ("review-criteria", "0 6 1 * *", {"source": "salesforce"}),
    "hubspot-review": ("review-criteria", "0 6 1 * *", {"source": "hubspot"}),
    "rollback-run": ("rollback-run", None, {}),
}


@pytest.fixture(scope="module")
def built():
    """definitions.py's deployments, built from the checkout (entrypoints are relative to it)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(ROOT)
        return {spec.name: spec.build() for spec in SPECS}


@pytest.fixture(scope="module")
def declared() -> dict[str, dict]:
    """prefect.yaml's deployments by name, anchors merged."""
    document = yaml.safe_load(PREFECT_YAML.read_text())
    names = [d["name"] for d in document["deployments"]]
    assert len(names) == len(set(names)), f"duplicate deployment names in prefect.yaml: {names}"
    return {d["name"]: d for d in document["deployments"]}


def _crons(schedules) -> list[tuple[str, str | None]]:
    return [(s.schedule.cron, s.schedule.timezone) for s in schedules or []]


def _yaml_crons(entry: dict) -> list[tuple[str, str | None]]:
    return [(s["cron"], s.get("timezone")) for s in entry.get("schedules") or []]


def test_definitions_declare_every_promised_deployment(built):
    assert sorted(built) == sorted(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_deployment_schedule_tags_parameters(built, name):
    flow_name, cron, parameters = EXPECTED[name]
    deployment = built[name]
    assert deployment.flow_name == flow_name
    assert _crons(deployment.schedules) == ([(cron, "UTC")] if cron else [])
    assert deployment.parameters == parameters
    source = parameters.get("source")
    kind = name.split("-")[-1]
    assert deployment.tags == (["leadsync", source, kind] if source else ["leadsync", "rollback"])
    assert deployment.concurrency_limit == 1
    assert deployment.version == version("leadsync")
    assert len(deployment.description or "") > 40


@pytest.mark.parametrize("name", EXPECTED)
def test_run_form_is_self_explanatory(built, name):
    """Every parameter in the UI's Run form has a description (from the flow's docstring), and
    the deployment's own values pass the schema the server enforces."""
    schema = built[name]._parameter_openapi_schema.model_dump()
    undescribed = [p for p, spec in schema["properties"].items() if not spec.get("description")]
    assert not undescribed, f"{name}: parameters without a description: {undescribed}"
    assert set(built[name].parameters) <= set(schema["properties"])
    validate(built[name].parameters, schema, raise_on_error=True, ignore_required=True)


def test_rollback_asks_for_source_and_run_id(built):
    schema = built["rollback-run"]._parameter_openapi_schema.model_dump()
    assert set(schema["required"]) == {"source", "run_id"}


def test_prefect_yaml_parses_as_prefect_reads_it(declared):
    model = PrefectYamlModel.model_validate(yaml.safe_load(PREFECT_YAML.read_text()))
    assert sorted(d.name for d in model.deployments) == sorted(declared)
    for name, entry in declared.items():
        assert re.fullmatch(r"[a-z]+(-[a-z]+)*", name), f"not kebab-case: {name}"
        assert entry["work_pool"]["name"] == "leadsync"


@pytest.mark.parametrize("name", EXPECTED)
def test_prefect_yaml_entrypoint_imports_and_names_the_flow(declared, name, monkeypatch):
    monkeypatch.chdir(ROOT)
    flow = load_flow_from_entrypoint(declared[name]["entrypoint"])
    assert flow.name == EXPECTED[name][0]


@pytest.mark.parametrize("name", EXPECTED)
def test_prefect_yaml_agrees_with_definitions(built, declared, name):
    deployment, entry = built[name], declared[name]
    assert entry["entrypoint"] == deployment.entrypoint
    assert _yaml_crons(entry) == _crons(deployment.schedules)
    assert entry.get("parameters", {}) == deployment.parameters
    assert entry["tags"] == deployment.tags
    assert " ".join(entry["description"].split()) == " ".join(deployment.description.split())
    assert entry["concurrency_limit"] == deployment.concurrency_limit
    assert str(entry["version"]) == deployment.version


def test_list_command_prints_every_deployment_without_a_server():
    nowhere = {
        "PATH": "/usr/bin:/bin",
        "PREFECT_API_URL": "http://127.0.0.1:9/api",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
    }
    result = subprocess.run(
        [sys.executable, "-m", "deployments", "list"],
        cwd=ROOT,
        env=nowhere,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    for name, (flow_name, _, _) in EXPECTED.items():
        assert f"{flow_name}/{name}" in result.stdout
    assert result.stdout.count("cron '*/15 * * * *' (UTC)") == 2
    assert "run_id = (required)" in result.stdout


def test_serve_on_another_port_gives_the_ui_that_port(tmp_path, monkeypatch):
    """`serve --port 4299` once served a UI whose /ui-settings named port 4200's API, so every
    page said "Can't connect to Server API"."""
    import json
    import urllib.request
    from contextlib import ExitStack

    from deployments.__main__ import _start_server
    from tests.stack import free_port

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    port = free_port()
    with ExitStack() as cleanup:
        api_url = _start_server(port, cleanup)
        with urllib.request.urlopen(f"{api_url.removesuffix('/api')}/ui-settings") as response:
            settings = json.load(response)
    assert api_url == f"http://127.0.0.1:{port}/api" and settings["api_url"] == api_url
