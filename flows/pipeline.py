"""One chunk of leads through the job: validate, score, plan, guard, write, record.

Every flow streams chunks (an API page or a few) through `Pipeline.process`; the tasks are
chunk-sized, never one per lead. `RunReport` accumulates what on-call and RevOps read afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from connectors import Connector
from connectors.base import WriteInterrupted, write_results
from expectations.suite import REASON_COLUMN, LeadContract
from flows.ledger import Ledger
from flows.plan import Plan, plan_updates
from scoring import Rules, score

QUARANTINE_SAMPLE = 200
EXAMPLES_PER_TRANSITION = 3
SCORE_BANDS = [-1, 19, 39, 59, 79, 100]
SCORE_LABELS = ["0-19", "20-39", "40-59", "60-79", "80-100"]


@dataclass
class RunReport:
    read: int = 0
    valid: int = 0
    quarantined: int = 0
    scored: int = 0
    changed: int = 0
    written: int = 0
    failed: int = 0
    skipped: int = 0  # a person changed the lead after it was read: retried next run
    transitions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["from", "to", "leads"])
    )
    examples: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    scores: pd.Series = field(default_factory=lambda: pd.Series(0, index=SCORE_LABELS))

    def add_plan(self, chunk: pd.DataFrame, scored: pd.DataFrame, plan: Plan) -> None:
        self.scored += len(scored)
        self.changed += len(plan.updates)
        moves = plan.transitions
        if not moves.empty:
            merged = pd.concat([self.transitions, moves]).groupby(["from", "to"], dropna=False)
            self.transitions = merged["leads"].sum().reset_index()
        status_changes = plan.changes[plan.changes["field"] == "status"]
        for (old, new), rows in status_changes.groupby(["old", "new"], dropna=False):
            have = sum(1 for e in self.examples if (e["from"], e["to"]) == (old, new))
            for crm_id in rows["crm_id"].head(max(0, EXAMPLES_PER_TRANSITION - have)):
                reason = scored.loc[chunk["crm_id"] == crm_id, "reason"].astype(str).iloc[0]
                self.examples.append({"crm_id": crm_id, "from": old, "to": new, "reason": reason})
        banded = pd.cut(scored["score"], SCORE_BANDS, labels=SCORE_LABELS).value_counts()
        self.scores = self.scores.add(banded.reindex(SCORE_LABELS, fill_value=0), fill_value=0)

    @property
    def has_failures(self) -> bool:
        return self.failed > 0


@dataclass(frozen=True)
class ChunkResult:
    valid: pd.DataFrame
    quarantined: pd.DataFrame
    scored: pd.DataFrame
    plan: Plan


@task(name="validate-and-score", cache_policy=NO_CACHE, task_run_name="score-{label}")
def score_chunk(
    chunk: pd.DataFrame, rules: Rules, contract: LeadContract, as_of: datetime, label: str
) -> ChunkResult:
    validation = contract.validate(chunk)
    valid = validation.valid
    scored = score(valid, rules, as_of)
    return ChunkResult(valid, validation.quarantined, scored, plan_updates(valid, scored))


@task(name="write-updates", cache_policy=NO_CACHE, task_run_name="write-{label}")
def write_updates(
    connector: Connector, updates: pd.DataFrame, read: pd.DataFrame, label: str
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write `updates`, except leads modified since `read` (a rep's edit mid-run is never
    overwritten). Returns the write report and the skipped leads with why."""
    current = connector.read_by_ids(updates["crm_id"].tolist())
    before = read.set_index("crm_id")["modified_at"]
    now = current.set_index("crm_id")["modified_at"]
    touched = now.index[now.ne(before.reindex(now.index))].tolist()
    skipped = pd.DataFrame(
        {
            "crm_id": touched,
            "reason": ["changed in the CRM since it was read; rescored next run"] * len(touched),
        }
    )
    # Leads gone from the CRM since (deleted, merged) are neither written nor owed.
    to_write = updates[updates["crm_id"].isin(now.index) & ~updates["crm_id"].isin(touched)]
    report = connector.write(to_write) if len(to_write) else write_results([], [])
    return report, skipped


class Pipeline:
    def __init__(
        self,
        connector: Connector,
        ledger: Ledger,
        rules: Rules,
        contract: LeadContract,
        as_of: datetime,
        run_id: str,
        dry_run: bool,
    ):
        self.connector, self.ledger, self.rules, self.contract = connector, ledger, rules, contract
        self.as_of, self.run_id, self.dry_run = as_of, run_id, dry_run
        self.report = RunReport()

    def process_all(self, chunks: Iterable[pd.DataFrame], label: str = "") -> RunReport:
        prefix = f"{self.connector.source}{'-' + label if label else ''}"
        for number, chunk in enumerate(chunks, start=1):
            self.process(chunk, f"{prefix}-{number}")
        return self.report

    def process(self, chunk: pd.DataFrame, label: str) -> None:
        if chunk.empty:
            return
        chunk = chunk.drop_duplicates("crm_id", keep="last")
        report = self.report
        report.read += len(chunk)
        result = score_chunk(chunk, self.rules, self.contract, self.as_of, label)
        report.valid += len(result.valid)
        report.quarantined += len(result.quarantined)
        report.quarantine += _sample(result.quarantined, QUARANTINE_SAMPLE - len(report.quarantine))
        report.add_plan(result.valid, result.scored, result.plan)
        if self.dry_run or result.plan.updates.empty:
            if not self.dry_run:
                self.ledger.settle(self.connector.source, chunk["crm_id"])
            return
        try:
            written, skipped = write_updates(
                self.connector, result.plan.updates, result.valid, label
            )
        except WriteInterrupted as stop:  # record what was written, then stop the run
            self._record(chunk, result, stop.report, pd.DataFrame(columns=["crm_id", "reason"]))
            raise stop.cause from stop
        self._record(chunk, result, written, skipped)

    def _record(
        self, chunk: pd.DataFrame, result: ChunkResult, written: pd.DataFrame, skipped: pd.DataFrame
    ) -> None:
        source, report = self.connector.source, self.report
        succeeded = written.loc[written["success"].astype(bool), "crm_id"]
        failed = written.loc[~written["success"].astype(bool), ["crm_id", "error"]]
        changes = result.plan.changes
        self.ledger.record_writes(self.run_id, source, changes[changes["crm_id"].isin(succeeded)])
        owed = pd.concat([failed.rename(columns={"error": "reason"}), skipped], ignore_index=True)
        self.ledger.settle(source, chunk["crm_id"][~chunk["crm_id"].isin(owed["crm_id"])])
        self.ledger.owe(source, owed, self.run_id)
        report.written += len(succeeded)
        report.failed += len(failed)
        report.skipped += len(skipped)
        report.failures += failed.head(QUARANTINE_SAMPLE - len(report.failures)).to_dict("records")


def _sample(quarantined: pd.DataFrame, room: int) -> list[dict]:
    if room <= 0 or quarantined.empty:
        return []
    columns = ["crm_id", "email", "company", REASON_COLUMN]
    return (
        quarantined[columns]
        .head(room)
        .astype(object)
        .where(quarantined[columns].head(room).notna(), None)
        .to_dict("records")
    )
