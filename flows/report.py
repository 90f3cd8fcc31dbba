"""What a run did, as on-call and RevOps read it afterwards: counts, transitions with examples,
score bands, samples of the leads sent to review or quarantined and of those the CRM refused,
busy seconds per stage and per scoring worker, when each chunk was read, scored and written, and
API usage."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from connectors.base import ApiUsage
from expectations.frame import QUALIFICATION_STATUSES
from expectations.suite import FIX_COLUMN, REASON_COLUMN, Validation
from flows.plan import Plan

QUARANTINE_SAMPLE = 200
EXAMPLES_PER_TRANSITION = 3
SCORE_BANDS = [-1, 19, 39, 59, 79, 100]
SCORE_LABELS = ["0-19", "20-39", "40-59", "60-79", "80-100"]
STAGES = ("read", "validate", "score", "plan", "write")
NEEDS_REVIEW = QUALIFICATION_STATUSES[3]
SENT_TO_REVIEW = "Needs review in the CRM"
FIX_ASKED = "fix reason in the CRM, status "  # + the status kept or set (human-owned, competitor)
QUARANTINED = "quarantined, not written"


@dataclass(frozen=True)
class Span:
    """A stage's work on one chunk, from `start` to `end` (wall-clock seconds, time.time(), so
    spans from the Dask workers' processes compare). A write carries the label of the chunk
    whose updates completed its batches."""

    stage: str  # read, score (validate, score and plan), write
    chunk: str  # the chunk's label, e.g. hubspot-3
    start: float
    end: float
    worker: str = ""  # who scored the chunk


@dataclass
class RunReport:
    read: int = 0
    valid: int = 0
    sent_to_review: int = 0  # bad data a person can fix: scored, written with the fix reason
    quarantined: int = 0  # bad data leadsync cannot address: not scored, not written
    scored: int = 0
    changed: int = 0
    written: int = 0
    failed: int = 0
    skipped: int = 0  # a person changed the lead after it was read: retried next run
    transitions: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["from", "to", "leads"])
    )
    examples: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)  # crm_id, outcome, reason
    failures: list[dict] = field(default_factory=list)
    scores: pd.Series = field(default_factory=lambda: pd.Series(0, index=SCORE_LABELS))
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    elapsed: float = 0.0  # seconds from the first read to the last write recorded
    rechecked: int = 0  # chunks re-read before writing, as they waited long
    worker_seconds: dict[str, float] = field(default_factory=dict)  # validate+score+plan
    timeline: list[Span] = field(default_factory=list)  # a few spans per chunk, in order
    usage: ApiUsage | None = None  # the connector's calls, when the run ends

    def add_seconds(self, stage: str, seconds: float) -> None:
        self.seconds[stage] += seconds

    def add_span(self, stage: str, chunk: str, start: float, end: float) -> None:
        self.timeline.append(Span(stage, chunk, start, end))

    def add_scored_chunk(
        self, chunk: str, worker: str, start: float, end: float, seconds: dict[str, float]
    ) -> None:
        """A chunk validated, scored and planned by `worker`: `seconds` per stage."""
        for stage, busy in seconds.items():
            self.add_seconds(stage, busy)
        busy = sum(seconds.values())
        self.worker_seconds[worker] = self.worker_seconds.get(worker, 0.0) + busy
        self.timeline.append(Span("score", chunk, start, end, worker))

    def add_validation(self, validation: Validation, statuses: pd.Series) -> None:
        """`statuses`: the status scoring gave each lead sent to review (same index)."""
        self.valid += len(validation.valid)
        self.sent_to_review += len(validation.review)
        self.quarantined += len(validation.quarantined)
        review_status = statuses.reindex(validation.review.index).astype("str")
        review_outcome = (FIX_ASKED + review_status).where(
            review_status != NEEDS_REVIEW, SENT_TO_REVIEW
        )
        for rows, reason, outcome in (
            (validation.review, FIX_COLUMN, review_outcome),
            (validation.quarantined, REASON_COLUMN, QUARANTINED),
        ):
            self._sample_bad_data(rows, reason, outcome)

    def _sample_bad_data(self, rows: pd.DataFrame, reason: str, outcome: str | pd.Series) -> None:
        room = QUARANTINE_SAMPLE - len(self.quarantine)
        if room <= 0 or rows.empty:
            return
        # The id and the reason only: artifacts live in Prefect's database, so they link to
        # the record in the CRM instead of copying its personal fields.
        sample = pd.DataFrame(
            {"crm_id": rows["crm_id"], "outcome": outcome, "reason": rows[reason]}
        ).head(room)
        self.quarantine += sample.astype(object).where(sample.notna(), None).to_dict("records")

    def add_written(self, written: int, failed: pd.DataFrame) -> None:
        """A batch's outcome: `failed` has crm_id and error of each record refused."""
        self.written += written
        self.failed += len(failed)
        self.failures += failed.head(QUARANTINE_SAMPLE - len(self.failures)).to_dict("records")

    def add_plan(self, chunk: pd.DataFrame, scored: pd.DataFrame, plan: Plan) -> None:
        self.scored += len(scored)
        self.changed += len(plan.updates)
        moves = plan.transitions
        if not moves.empty:
            merged = pd.concat([self.transitions, moves]).groupby(["from", "to"], dropna=False)
            self.transitions = merged["leads"].sum().reset_index()
        status_changes = plan.changes[plan.changes["field"] == "status"]
        reasons = pd.Series(scored["reason"].astype(str).to_numpy(), index=chunk["crm_id"])
        for (old, new), rows in status_changes.groupby(["old", "new"], dropna=False):
            have = sum(1 for e in self.examples if (e["from"], e["to"]) == (old, new))
            for crm_id in rows["crm_id"].head(max(0, EXAMPLES_PER_TRANSITION - have)):
                self.examples.append(
                    {"crm_id": crm_id, "from": old, "to": new, "reason": reasons[crm_id]}
                )
        banded = pd.cut(scored["score"], SCORE_BANDS, labels=SCORE_LABELS).value_counts()
        self.scores = self.scores.add(banded.reindex(SCORE_LABELS, fill_value=0), fill_value=0)

    @property
    def has_failures(self) -> bool:
        return self.failed > 0
