"""The write-back plan: what scoring changed against what the CRM already holds.

Pure: a rerun over unchanged leads plans nothing, so it writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

WRITE_BACK = ("status", "score", "reason", "qualified_at")


@dataclass(frozen=True)
class Plan:
    updates: pd.DataFrame  # crm_id + every write-back column, for leads with any change
    changes: pd.DataFrame  # crm_id, field, old, new: one row per changed field

    @property
    def transitions(self) -> pd.DataFrame:
        """Status moves: from, to, leads."""
        moved = self.changes[self.changes["field"] == "status"]
        counts = moved.groupby(["old", "new"], dropna=False).size()
        return counts.rename("leads").reset_index().rename(columns={"old": "from", "new": "to"})


def plan_updates(current: pd.DataFrame, scored: pd.DataFrame) -> Plan:
    """`current`: canonical rows as read; `scored`: scoring.score of them (same index)."""
    proposed = pd.DataFrame(
        {
            "crm_id": current["crm_id"],
            "status": scored["status"],
            "score": scored["score"].astype("Float64"),
            "reason": scored["reason"].astype("str"),
            "qualified_at": scored["qualified_at"].dt.floor("ms"),
        },
        index=current.index,
    )
    before = {
        "status": current["status"],
        "score": current["score"].round(0),
        "reason": current["reason"],
        "qualified_at": current["qualified_at"].dt.floor("ms"),
    }
    changed = {field: ~_same(before[field], proposed[field]) for field in WRITE_BACK}
    any_change = pd.DataFrame(changed).any(axis=1)
    changes = pd.concat(
        [
            pd.DataFrame(
                {
                    "crm_id": current.loc[mask, "crm_id"],
                    "field": field,
                    "old": before[field][mask].astype(object),
                    "new": proposed.loc[mask, field].astype(object),
                }
            )
            for field, mask in changed.items()
        ],
        ignore_index=True,
    )
    return Plan(proposed[any_change].reset_index(drop=True), changes)


def _same(left: pd.Series, right: pd.Series) -> pd.Series:
    """Equal, or both missing."""
    both_missing = left.isna() & right.isna()
    equal = (left.astype(object) == right.astype(object)) & left.notna() & right.notna()
    return (equal | both_missing).astype(bool)
