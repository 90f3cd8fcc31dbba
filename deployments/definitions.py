"""Every leadsync deployment, declared once, built from the flow objects.

`python -m deployments serve` serves these; `deployments/prefect.yaml` declares the same ones
for a work pool (tests/test_deployments.py keeps the two in step). The parameter descriptions in
the UI's Run form come from the flows' docstrings (their Args sections).

Two limits keep writes apart: each deployment runs one flow run at a time (`concurrency_limit`,
later runs wait in Scheduled/AwaitingConcurrencySlot), and every writing flow run holds the
write lease `leadsync-write-<source>` in the ledger (flows/lease.py), so a backfill, a sync, a
requalification and a rollback never write to the same CRM at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any

from prefect import Flow
from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from connectors import SOURCES
from flows.backfill import backfill_leads
from flows.jobs import requalify_leads, sync_leads
from flows.rollback import rollback_run
from flows.review import review_criteria

LABELS = {"salesforce": "Salesforce", "hubspot": "HubSpot"}
TIMEZONE = "UTC"
EVERY_15_MINUTES = "*/15 * * * *"
DAILY_AT_3 = "0 3 * * *"
MONTHLY_ON_THE_1ST_AT_6 = "0 6 1 * *"
VERSION = version("leadsync")


@dataclass(frozen=True)
class Spec:
    """One deployment: which flow, how it is named, scheduled, tagged and parameterized."""

    name: str
    flow: Flow
    description: str
    tags: list[str]
    parameters: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None  # None: on demand only

    def build(self) -> RunnerDeployment:
        return self.flow.to_deployment(
            self.name,
            schedules=[Cron(self.cron, timezone=TIMEZONE)] if self.cron else None,
            parameters=self.parameters,
            description=self.description,
            tags=self.tags,
            version=VERSION,
            concurrency_limit=1,
        )


def _sync(source: str) -> Spec:
    return Spec(
        f"{source}-sync",
        sync_leads,
        f"Score the {LABELS[source]} leads changed since the last sync and write status, score "
        "and reason back. Tick dry_run to see what would change without writing.",
        ["leadsync", source, "sync"],
        {"source": source},
        EVERY_15_MINUTES,
    )


def _requalify(source: str) -> Spec:
    return Spec(
        f"{source}-requalify",
        requalify_leads,
        f"Rescore open {LABELS[source]} leads last qualified more than older_than_days ago, and "
        "Qualified leads with no engagement for cold_after_days, with engagement decayed and "
        "timelines expired, so stale statuses move. Tick dry_run to count the moves without "
        "writing.",
        ["leadsync", source, "requalify"],
        {"source": source, "older_than_days": 7},
        DAILY_AT_3,
    )


def _backfill(source: str) -> Spec:
    return Spec(
        f"{source}-backfill",
        backfill_leads,
        f"Rescore every {LABELS[source]} lead modified from start to end (UTC), window by "
        "window. Rerun with the same start and end to resume; leave start empty to read every "
        "lead.",
        ["leadsync", source, "backfill"],
        {"source": source, "window_days": 7},
    )


def _review(source: str) -> Spec:
    return Spec(
        f"{source}-review",
        review_criteria,
        f"Criteria review of the {LABELS[source]} leads: conversion by score band, status and "
        "rules factor, Qualified leads never worked, the best threshold; with "
        "candidate_rules_path, what that rules file would change. Writes nothing.",
        ["leadsync", source, "review"],
        {"source": source},
        MONTHLY_ON_THE_1ST_AT_6,
    )


SPECS: list[Spec] = [
    *(kind(source) for kind in (_sync, _requalify, _backfill, _review) for source in SOURCES),
    Spec(
        "rollback-run",
        rollback_run,
        "Restore the values one flow run wrote (run_id: the id on that run's page), from the "
        "audit ledger, except on leads changed since. Tick dry_run first to see what it would do.",
        ["leadsync", "rollback"],
    ),
]


def deployments() -> list[RunnerDeployment]:
    """The deployments to serve, in the order of SPECS."""
    return [spec.build() for spec in SPECS]
