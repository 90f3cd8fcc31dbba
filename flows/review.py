"""The criteria review flow: RevOps' evidence that the scoring predicts conversion, a preview of
what a candidate rules file would change, and a proposal of the next rules fitted to the
outcomes. Reads only; writes nothing to the CRMs or the ledger (a proposal is a file to review).
The figures are in scoring/review.py and scoring/proposal.py, the artifacts in
flows/review_artifacts.py."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger
from prefect.states import Completed, State

from expectations.frame import conform
from expectations.suite import LeadContract
from connectors import Connector
from flows.review_artifacts import publish_proposal, publish_review
from flows.runs import Source, as_of_or_now, checked_connector, run_name, stops_clearly
from flows.pipeline import chunks_of
from flows.settings import JobSettings
from scoring import DEFAULT_RULES_PATH, load_rules
from scoring.proposal import NotEnoughOutcomes, Proposal, propose
from scoring.review import MIN_GROUP, CriteriaReview, replay, review


@flow(name="review-criteria", flow_run_name=run_name("review"))
@stops_clearly("review")
def review_criteria(
    source: Source = "salesforce",
    candidate_rules_path: str | None = None,
    propose: str | None = None,
    rules_path: str | None = None,
    as_of: datetime | None = None,
    min_group: int = MIN_GROUP,
    credentials_block: str | None = None,
) -> State:
    """Report how the leads the job scored went on to convert: by score band, by status, by each
    rules factor; Qualified leads sales never worked; the score that best separates converters.
    With candidate_rules_path, also how that rules file would move the statuses of the same
    leads and rank the converters. With propose, also fit new points and thresholds to the
    outcomes and write them as a rules file to review. Writes nothing to the CRMs.

    Args:
        source: which CRM's leads to review.
        candidate_rules_path: a rules file to replay over every current lead (optional).
        propose: write a proposed rules file here: the current file with new points and
            thresholds fitted to the outcomes of the older leads and judged on the newer ones,
            nothing else changed; it is replayed like a candidate (optional).
        rules_path: the rules file the job runs with (default scoring/rules.yaml); sub-scores
            and factors are computed with it.
        as_of: the time to compute sub-scores and factors at (default: now).
        min_group: groups with fewer leads than this are flagged as too small to judge.
        credentials_block: a Prefect credentials block name.
    """
    as_of = as_of_or_now(as_of)
    rules_file = Path(rules_path or DEFAULT_RULES_PATH)
    rules = load_rules(rules_file)  # a bad file stops before any read
    candidate_rules = load_rules(candidate_rules_path) if candidate_rules_path else None
    connector = checked_connector(source, credentials_block)
    logger = get_run_logger()
    valid = _valid_leads(connector, LeadContract(rules.data_quality, now=pd.Timestamp(as_of)))
    scored = valid[valid["score"].notna()]
    logger.info(
        "Reviewing %d %s leads the job scored (%d meet the lead contract, %d not scored yet)",
        len(scored),
        source,
        len(valid),
        len(valid) - len(scored),
    )
    proposal = _propose(valid, rules_file, as_of, propose) if propose else None
    if proposal is not None:
        publish_proposal(proposal, source, propose)
    if isinstance(proposal, Proposal):  # replayed like a candidate file
        candidate_rules, candidate_rules_path = proposal.rules, propose
    if scored.empty:
        return Completed(
            message=f"No {source} lead has been scored yet: nothing to review"
            + (f"; {_proposal_message(proposal, propose)}" if proposal else ""),
            data=ReviewOutcome(None, proposal),
        )
    result = review(scored, rules, as_of, connector.mapping.unworked_statuses, min_group)
    candidate = replay(scored, rules, candidate_rules, as_of) if candidate_rules else None
    publish_review(result, candidate, source, candidate_rules_path, rules, candidate_rules)
    best = result.best.score if result.best else "n/a"
    ranking = "n/a" if pd.isna(result.ranking) else f"{result.ranking:.0%}"
    return Completed(
        message=f"{result.leads} leads, {result.converted} converted; score ranks converters "
        f"first {ranking} of the time; best threshold {best}"
        + (f"; {_proposal_message(proposal, propose)}" if proposal else ""),
        data=ReviewOutcome(result, proposal),
    )


@dataclass(frozen=True)
class ReviewOutcome:
    review: CriteriaReview | None  # None: no lead scored yet
    proposal: Proposal | NotEnoughOutcomes | None


def _valid_leads(connector: Connector, contract: LeadContract) -> pd.DataFrame:
    """Every lead that meets the lead contract (the review judges records the job can score)."""
    settings = JobSettings()
    parts = [
        contract.validate(chunk).valid
        for chunk, _ in chunks_of(
            connector.read_all(), settings.chunk_leads, settings.chunk_seconds, lambda _: None
        )
    ]
    return pd.concat(parts, ignore_index=True) if parts else conform(pd.DataFrame())


def _propose(
    valid: pd.DataFrame, rules_file: Path, as_of: datetime, path: str
) -> Proposal | NotEnoughOutcomes:
    proposal = propose(valid, rules_file.read_text(encoding="utf-8"), as_of)
    logger = get_run_logger()
    if isinstance(proposal, NotEnoughOutcomes):
        logger.warning("%s", proposal.message)
        return proposal
    Path(path).write_text(proposal.text, encoding="utf-8")
    logger.info(
        "Proposed rules written to %s: %d changes; on the %d newest leads they rank converters "
        "first %.1f%% of the time, the current rules %.1f%%",
        path,
        len(proposal.changes),
        proposal.held_out,
        100 * proposal.candidate.ranking,
        100 * proposal.current.ranking,
    )
    return proposal


def _proposal_message(proposal: Proposal | NotEnoughOutcomes, path: str) -> str:
    if isinstance(proposal, NotEnoughOutcomes):
        return proposal.message
    return (
        f"proposed rules in {path}: held-out AUC {proposal.candidate.ranking:.3f} "
        f"(current rules {proposal.current.ranking:.3f})"
    )
