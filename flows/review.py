"""The criteria review flow: RevOps' evidence that the scoring predicts conversion, and a preview
of what a candidate rules file would change. Reads only; writes nothing to the CRMs or the
ledger. The figures are in scoring/review.py, the artifacts in flows/artifacts.py."""

from __future__ import annotations

from datetime import datetime

import pandas as pd
from prefect import flow, get_run_logger
from prefect.states import Completed, State

from expectations.frame import conform
from expectations.suite import LeadContract
from flows.artifacts import publish_review
from flows.runs import Source, as_of_or_now, checked_connector, run_name, stops_clearly
from flows.pipeline import chunks_of
from flows.settings import JobSettings
from scoring import DEFAULT_RULES_PATH, load_rules
from scoring.review import MIN_GROUP, replay, review


@flow(name="review-criteria", flow_run_name=run_name("review"))
@stops_clearly("review")
def review_criteria(
    source: Source = "salesforce",
    candidate_rules_path: str | None = None,
    rules_path: str | None = None,
    as_of: datetime | None = None,
    min_group: int = MIN_GROUP,
    credentials_block: str | None = None,
) -> State:
    """Report how the leads the job scored went on to convert: by score band, by status, by each
    rules factor; Qualified leads sales never worked; the score that best separates converters.
    With candidate_rules_path, also how that rules file would move the statuses of the same
    leads and rank the converters. Writes nothing.

    Args:
        source: which CRM's leads to review.
        candidate_rules_path: a rules file to replay over every current lead (optional).
        rules_path: the rules file the job runs with (default scoring/rules.yaml); sub-scores
            and factors are computed with it.
        as_of: the time to compute sub-scores and factors at (default: now).
        min_group: groups with fewer leads than this are flagged as too small to judge.
        credentials_block: a Prefect credentials block name.
    """
    as_of = as_of_or_now(as_of)
    rules = load_rules(rules_path or DEFAULT_RULES_PATH)  # a bad file stops before any read
    candidate_rules = load_rules(candidate_rules_path) if candidate_rules_path else None
    connector = checked_connector(source, credentials_block)
    logger = get_run_logger()
    contract, settings = LeadContract(rules.data_quality, now=pd.Timestamp(as_of)), JobSettings()
    read = valid = 0
    scored_parts = []
    for chunk, _ in chunks_of(
        connector.read_all(), settings.chunk_leads, settings.chunk_seconds, lambda _: None
    ):
        checked = contract.validate(chunk).valid
        read, valid = read + len(chunk), valid + len(checked)
        scored_parts.append(checked[checked["score"].notna()])
    scored = pd.concat(scored_parts, ignore_index=True) if scored_parts else conform(pd.DataFrame())
    logger.info(
        "Reviewing %d %s leads the job scored (%d read, %d failing the lead contract, %d not "
        "scored yet)",
        len(scored),
        source,
        read,
        read - valid,
        valid - len(scored),
    )
    if scored.empty:
        return Completed(message=f"No {source} lead has been scored yet: nothing to review")
    result = review(scored, rules, as_of, connector.mapping.unworked_statuses, min_group)
    candidate = replay(scored, rules, candidate_rules, as_of) if candidate_rules else None
    publish_review(result, candidate, source, candidate_rules_path, rules, candidate_rules)
    best = result.best.score if result.best else "n/a"
    ranking = "n/a" if pd.isna(result.ranking) else f"{result.ranking:.0%}"
    return Completed(
        message=f"{result.leads} leads, {result.converted} converted; score ranks converters "
        f"first {ranking} of the time; best threshold {best}",
        data=result,
    )
