"""The leadsync custom contact properties, and the opt-in command that creates missing ones."""

from __future__ import annotations

from expectations.frame import QUALIFICATION_STATUSES

GROUP = "contactinformation"  # exists in every portal


def _enumeration(name: str, label: str, values: tuple[str, ...]) -> dict:
    return {
        "name": name,
        "label": label,
        "type": "enumeration",
        "fieldType": "select",
        "groupName": GROUP,
        "options": [
            {"label": value, "value": value, "displayOrder": order, "hidden": False}
            for order, value in enumerate(values)
        ],
    }


def _plain(name: str, label: str, kind: str, field_type: str) -> dict:
    return {"name": name, "label": label, "type": kind, "fieldType": field_type, "groupName": GROUP}


def _checkbox(name: str, label: str) -> dict:
    return {
        **_plain(name, label, "bool", "booleancheckbox"),
        "options": [
            {"label": "Yes", "value": "true", "displayOrder": 0, "hidden": False},
            {"label": "No", "value": "false", "displayOrder": 1, "hidden": False},
        ],
    }


CUSTOM_PROPERTIES = {
    definition["name"]: definition
    for definition in (
        _plain("leadsync_score", "Lead score (leadsync)", "number", "number"),
        _enumeration("leadsync_status", "Qualification status (leadsync)", QUALIFICATION_STATUSES),
        _plain("leadsync_reason", "Qualification reason (leadsync)", "string", "textarea"),
        _plain("leadsync_qualified_at", "Qualified at (leadsync)", "datetime", "date"),
        _plain("leadsync_budget", "Budget", "number", "number"),
        _enumeration("leadsync_need", "Need", ("high", "medium", "low")),
        _plain("leadsync_timeline", "Buying timeline", "date", "date"),
        _checkbox("leadsync_decision_maker", "Decision maker"),
        _checkbox("leadsync_status_locked", "Qualification locked by a person"),
        _plain("leadsync_last_engaged_at", "Last engaged at", "datetime", "date"),
    )
}
