"""The canonical lead frame: the one set of columns every connector produces and every stage reads.

Connectors translate CRM fields into these columns (and back); scoring, validation and planning
never see a CRM field name. `conform` gives any frame exactly these columns with these dtypes,
so a missing optional column is an empty column, never a KeyError deep inside scoring.
"""

from __future__ import annotations

import pandas as pd

TIMESTAMP = "datetime64[us, UTC]"

COLUMNS: dict[str, str] = {
    # identity
    "source": "str",
    "crm_id": "str",
    # who and where
    "email": "str",
    "first_name": "str",
    "last_name": "str",
    "company": "str",
    "title": "str",
    "industry": "str",
    "employees": "Float64",
    "annual_revenue": "Float64",
    "country": "str",
    "lead_source": "str",
    # BANT inputs: budget in currency units, authority as a decision-maker flag (derived from
    # the title's seniority when the CRM has no value), need as low/medium/high, timeline as
    # the date the lead plans to buy by.
    "budget": "Float64",
    "authority": "boolean",
    "need": "str",
    "timeline": TIMESTAMP,
    # engagement
    "page_views": "Float64",
    "email_opens": "Float64",
    "form_submissions": "Float64",
    "last_engaged_at": TIMESTAMP,
    # current qualification, as the CRM holds it
    "status": "str",
    "score": "Float64",
    "reason": "str",
    "qualified_at": TIMESTAMP,
    # the CRM's own lead status (e.g. "Working - Contacted"), and a lock a person can set
    "crm_status": "str",
    "status_locked": "boolean",
    # the outcome: the lead converted (Salesforce) or reached a converted lifecycle stage
    # (HubSpot); read for the criteria review, never written
    "converted": "boolean",
    "modified_at": TIMESTAMP,
}

QUALIFICATION_STATUSES = ("Qualified", "Nurture", "Disqualified", "Needs review")
# What a well-formed email address looks like, for the contract and for scoring's bad-data signal.
EMAIL_PATTERN = r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Return `frame` with exactly the canonical columns, in order, with canonical dtypes.

    Extra columns are dropped; missing ones are added empty. Values that cannot be read as
    their dtype become missing (validation, not coercion, is where bad data is reported).
    """
    out = {}
    for column, dtype in COLUMNS.items():
        values = frame[column] if column in frame.columns else pd.Series(pd.NA, index=frame.index)
        out[column] = _as_dtype(values, dtype)
    return pd.DataFrame(out, index=frame.index)


def _as_dtype(values: pd.Series, dtype: str) -> pd.Series:
    if dtype == TIMESTAMP:
        return pd.to_datetime(values, utc=True, errors="coerce").astype(TIMESTAMP)
    if dtype == "Float64":
        return pd.to_numeric(values, errors="coerce").astype("Float64")
    if dtype == "boolean":
        return values.astype("boolean")
    return values.astype("str")
