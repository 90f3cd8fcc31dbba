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
    # when the CRM created the lead: the criteria review splits old leads from new by it
    "created_at": TIMESTAMP,
    "modified_at": TIMESTAMP,
}

QUALIFICATION_STATUSES = ("Qualified", "Nurture", "Disqualified", "Needs review")
# What a well-formed email address looks like, for the lead contract.
EMAIL_PATTERN = r"^[A-Za-z0-9._%+'-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}$"
# Values conform could not read, in words ("employees 'fifty' is not a number"), "; "-separated;
# missing where every value was read. Kept beside the canonical columns for the lead contract.
UNREADABLE = "unreadable"
UNREADABLE_SHOWN = 40  # characters of an unreadable value kept in its description
NOT_READ_AS = {"Float64": "a number", TIMESTAMP: "a date"}


def conform(frame: pd.DataFrame) -> pd.DataFrame:
    """Return `frame` with exactly the canonical columns, in order, with canonical dtypes.

    Extra columns are dropped; missing ones are added empty. Values that cannot be read as
    their dtype become missing, and are described in the `unreadable` column (added to what an
    earlier conform of the frame recorded), so the lead contract can report them.
    """
    out = {}
    unreadable = _column(frame, UNREADABLE).astype("str")
    for column, dtype in COLUMNS.items():
        values = _column(frame, column)
        out[column] = _as_dtype(values, dtype)
        if dtype in NOT_READ_AS:
            described = _describe_unread(column, values, out[column], dtype)
            if described is not None:
                unreadable = _joined(unreadable, described)
    out[UNREADABLE] = unreadable
    return pd.DataFrame(out, index=frame.index)


def _column(frame: pd.DataFrame, column: str) -> pd.Series:
    return frame[column] if column in frame.columns else pd.Series(pd.NA, index=frame.index)


def _describe_unread(
    column: str, raw: pd.Series, read: pd.Series, dtype: str
) -> pd.Series | None:
    """ "employees 'fifty' is not a number" where a present, non-blank value was not read;
    None where every value was read (most chunks), so nothing need be joined."""
    lost = read.isna() & raw.notna()
    if not lost.any():
        return None
    text = raw[lost].astype("str")
    text = text[text.str.strip() != ""]
    shown = text.str.slice(0, UNREADABLE_SHOWN).where(
        text.str.len() <= UNREADABLE_SHOWN, text.str.slice(0, UNREADABLE_SHOWN - 3) + "..."
    )
    described = f"{column.replace('_', ' ')} '" + shown + f"' is not {NOT_READ_AS[dtype]}"
    return described.reindex(raw.index).astype("str")


def _joined(earlier: pd.Series, later: pd.Series) -> pd.Series:
    """Both descriptions, "; "-separated, where both are present; else the one present."""
    both = earlier.notna() & later.notna()
    return earlier.fillna(later).where(~both, earlier + "; " + later)


def _as_dtype(values: pd.Series, dtype: str) -> pd.Series:
    if dtype == TIMESTAMP:
        return _as_timestamp(values)
    if dtype == "Float64":
        return pd.to_numeric(values, errors="coerce").astype("Float64")
    if dtype == "boolean":
        return values.astype("boolean")
    return values.astype("str")


def _as_timestamp(values: pd.Series) -> pd.Series:
    """ISO 8601, as the CRMs' APIs send dates and times, read fast; any other value is read by
    the format pandas infers from it. Not cached: a page's values are mostly distinct."""
    read = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601", cache=False)
    others = read.isna() & values.notna()
    if others.any():
        read[others] = pd.to_datetime(values[others], utc=True, errors="coerce", cache=False)
    return read.astype(TIMESTAMP)
