"""Contact properties: their definitions as the properties API reports them, how values are stored
and rendered, how API input is validated, and how the canonical lead frame becomes contacts.

Storage: number properties are REAL; datetime and date properties are integer epoch milliseconds
(dates at midnight UTC), so they compare and sort correctly; everything else is text. HubSpot
renders every value as a string: numbers without a trailing `.0`, datetimes as ISO 8601 with
milliseconds and `Z`, dates as `YYYY-MM-DD`, booleans as `true`/`false`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from expectations.frame import QUALIFICATION_STATUSES

ID_PROPERTY = "hs_object_id"
CREATED, MODIFIED = "createdate", "lastmodifieddate"
DEFAULT_PROPERTIES = (
    "createdate",
    "email",
    "firstname",
    "hs_object_id",
    "lastmodifieddate",
    "lastname",
)
CUSTOM_GROUP = "leadsync"
GROUPS = (
    "contactinformation",
    "emailinformation",
    "conversioninformation",
    "analyticsinformation",
    "sales_properties",
    CUSTOM_GROUP,
)
PROPERTY_TYPES = ("bool", "date", "datetime", "enumeration", "number", "phone_number", "string")
FIELD_TYPES = (
    "booleancheckbox",
    "calculation_equation",
    "checkbox",
    "date",
    "file",
    "html",
    "number",
    "phonenumber",
    "radio",
    "select",
    "text",
    "textarea",
)
EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
PROPERTY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
SQL_TYPES = {"number": "REAL", "datetime": "INTEGER", "date": "INTEGER"}
DAY_MS = 86_400_000
MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
LEAD_STATUSES = (
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
)
LIFECYCLE_STAGES = (
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
)
LEAD_STATUS_BY_CRM_STATUS = {
    "Open - Not Contacted": "NEW",
    "Working - Contacted": "IN_PROGRESS",
    "Closed - Converted": "OPEN_DEAL",
    "Closed - Not Converted": "UNQUALIFIED",
}
OWNER_IDS = ("75480219", "75480220", "75480221")


class InvalidRequest(ValueError):
    """A request HubSpot would refuse with 400 VALIDATION_ERROR."""


class InvalidValues(ValueError):
    """Property values HubSpot would not accept, one `(name, error code, message)` per problem."""

    def __init__(self, problems: list[tuple[str, str, str]]):
        self.problems = problems
        details = [
            {"isValid": False, "message": message, "error": code, "name": name}
            for name, code, message in problems
        ]
        super().__init__(f"Property values were not valid: {json.dumps(details)}")


def _definition(
    name: str,
    label: str,
    kind: str,
    field_type: str,
    group: str,
    options: tuple[str, ...] = (),
    read_only: bool = False,
    hubspot_defined: bool = True,
) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": kind,
        "fieldType": field_type,
        "groupName": group,
        "description": "",
        "options": [_option(value, order) for order, value in enumerate(options)],
        "displayOrder": -1,
        "calculated": False,
        "externalOptions": False,
        "hasUniqueValue": name == ID_PROPERTY,
        "hidden": False,
        "formField": not read_only,
        "hubspotDefined": hubspot_defined,
        "archived": False,
        "dataSensitivity": "non_sensitive",
        "modificationMetadata": {
            "archivable": not hubspot_defined,
            "readOnlyDefinition": hubspot_defined,
            "readOnlyValue": read_only,
        },
    }


def _option(value: str, order: int) -> dict[str, Any]:
    label = value.replace("_", " ").capitalize()
    return {"label": label, "value": value, "displayOrder": order, "hidden": False}


BOOLEAN_OPTIONS = ("true", "false")


def standard_definitions() -> list[dict[str, Any]]:
    info = "contactinformation"
    return [
        _definition("email", "Email", "string", "text", info),
        _definition("firstname", "First Name", "string", "text", info),
        _definition("lastname", "Last Name", "string", "text", info),
        _definition("company", "Company Name", "string", "text", info),
        _definition("jobtitle", "Job Title", "string", "text", info),
        _definition("industry", "Industry", "string", "text", info),
        _definition("numemployees", "Number of Employees", "number", "number", info),
        _definition("annualrevenue", "Annual Revenue", "number", "number", info),
        _definition("country", "Country/Region", "string", "text", info),
        _definition(
            "hs_lead_status",
            "Lead Status",
            "enumeration",
            "radio",
            "sales_properties",
            LEAD_STATUSES,
        ),
        _definition(
            "lifecyclestage", "Lifecycle Stage", "enumeration", "radio", info, LIFECYCLE_STAGES
        ),
        _definition(
            "hs_analytics_num_page_views",
            "Number of Pageviews",
            "number",
            "number",
            "analyticsinformation",
            read_only=True,
        ),
        _definition(
            "hs_email_open",
            "Marketing emails opened",
            "number",
            "number",
            "emailinformation",
            read_only=True,
        ),
        _definition(
            "num_conversion_events",
            "Number of Form Submissions",
            "number",
            "number",
            "conversioninformation",
            read_only=True,
        ),
        _definition(
            "recent_conversion_date",
            "Recent Conversion Date",
            "datetime",
            "date",
            "conversioninformation",
            read_only=True,
        ),
        _definition(
            "hs_analytics_last_visit_timestamp",
            "Time Last Seen",
            "datetime",
            "date",
            "analyticsinformation",
            read_only=True,
        ),
        _definition(CREATED, "Create Date", "datetime", "date", info, read_only=True),
        _definition(MODIFIED, "Last Modified Date", "datetime", "date", info, read_only=True),
        _definition(ID_PROPERTY, "Record ID", "number", "number", info, read_only=True),
        _definition("hubspot_owner_id", "Contact owner", "string", "text", "sales_properties"),
    ]


def custom_definitions() -> list[dict[str, Any]]:
    def custom(
        name: str, label: str, kind: str, field_type: str, options: tuple[str, ...] = ()
    ) -> dict[str, Any]:
        return _definition(
            name, label, kind, field_type, CUSTOM_GROUP, options, hubspot_defined=False
        )

    return [
        custom("leadsync_budget", "Budget", "number", "number"),
        custom("leadsync_need", "Need", "enumeration", "select", ("high", "medium", "low")),
        custom("leadsync_timeline", "Buying timeline", "date", "date"),
        custom(
            "leadsync_decision_maker", "Decision maker", "bool", "booleancheckbox", BOOLEAN_OPTIONS
        ),
        custom(
            "leadsync_status_locked",
            "Qualification locked by a person",
            "bool",
            "booleancheckbox",
            BOOLEAN_OPTIONS,
        ),
        custom("leadsync_last_engaged_at", "Last engaged at", "datetime", "date"),
        custom("leadsync_score", "Lead score (leadsync)", "number", "number"),
        custom(
            "leadsync_status",
            "Qualification status (leadsync)",
            "enumeration",
            "select",
            QUALIFICATION_STATUSES,
        ),
        custom("leadsync_reason", "Qualification reason (leadsync)", "string", "textarea"),
        custom("leadsync_qualified_at", "Qualified at (leadsync)", "datetime", "date"),
    ]


# PropertyCreate's optional settings, stored as given, and the JSON type each must have.
PROPERTY_SETTINGS: dict[str, type] = {
    "description": str,
    "displayOrder": int,
    "hasUniqueValue": bool,
    "hidden": bool,
    "formField": bool,
    "externalOptions": bool,
    "dataSensitivity": str,
    "calculationFormula": str,
    "currencyPropertyName": str,
    "referencedObjectType": str,
    "showCurrencySymbol": bool,
    "numberDisplayHint": str,
    "textDisplayHint": str,
}
PROPERTY_CREATE_FIELDS = ("name", "label", "type", "fieldType", "groupName", "options")
OPTION_FIELDS = ("label", "value", "description", "displayOrder", "hidden")


def created_definition(body: dict[str, Any], now: str) -> dict[str, Any]:
    """The definition of a custom property created through the API, from its request body."""
    expect_known_fields(body, [*PROPERTY_CREATE_FIELDS, *PROPERTY_SETTINGS], "PropertyCreate")
    name, label, kind, field_type, group = (
        expect_string(body.get(key), key)
        for key in ("name", "label", "type", "fieldType", "groupName")
    )
    if not PROPERTY_NAME.fullmatch(name):
        raise InvalidRequest(
            f"Property name {name!r} is not valid: use lower-case letters, "
            "digits and underscores, starting with a letter."
        )
    if kind not in PROPERTY_TYPES or field_type not in FIELD_TYPES:
        raise InvalidRequest(
            f"type must be one of {PROPERTY_TYPES} and fieldType one of {FIELD_TYPES}."
        )
    if group not in GROUPS:
        raise InvalidRequest(f"Property group {group!r} does not exist.")
    definition = _definition(name, label, kind, field_type, group, hubspot_defined=False)
    definition["options"] = [
        _created_option(option, order)
        for order, option in enumerate(expect_list(body.get("options", []), "options"))
    ]
    definition.update(_property_settings(body))
    return {**definition, "createdAt": now, "updatedAt": now}


PROPERTY_UPDATE_FIELDS = (
    "calculationFormula", "currencyPropertyName", "description", "displayOrder", "fieldType",
    "formField", "groupName", "hidden", "label", "numberDisplayHint", "options",
    "showCurrencySymbol", "textDisplayHint", "type",
)  # fmt: skip


def updated_definition(
    definition: dict[str, Any], body: dict[str, Any], now: str
) -> dict[str, Any]:
    """A property's definition after a PATCH (PropertyUpdate): the given fields replace theirs;
    given options replace the list. Only custom properties may change."""
    expect_known_fields(body, PROPERTY_UPDATE_FIELDS, "PropertyUpdate")
    if definition["hubspotDefined"]:
        raise InvalidRequest(f"Property {definition['name']} is defined by HubSpot.")
    updated = {**definition, **_property_settings(body), "updatedAt": now}
    for key in ("label", "type", "fieldType", "groupName"):
        if key in body:
            updated[key] = expect_string(body[key], key)
    if updated["type"] not in PROPERTY_TYPES or updated["fieldType"] not in FIELD_TYPES:
        raise InvalidRequest(
            f"type must be one of {PROPERTY_TYPES} and fieldType one of {FIELD_TYPES}."
        )
    if updated["groupName"] not in GROUPS:
        raise InvalidRequest(f"Property group {updated['groupName']!r} does not exist.")
    if "options" in body:
        updated["options"] = [
            _created_option(option, order)
            for order, option in enumerate(expect_list(body["options"], "options"))
        ]
    return updated


def _created_option(option: Any, order: int) -> dict[str, Any]:
    option = expect_known_fields(option, OPTION_FIELDS, "OptionInput")
    created = {
        "label": expect_string(option.get("label"), "options[].label"),
        "value": expect_string(option.get("value"), "options[].value"),
        "displayOrder": option.get("displayOrder", order),
        "hidden": option.get("hidden", False),
    }
    if not isinstance(created["displayOrder"], int) or not isinstance(created["hidden"], bool):
        raise InvalidRequest("Invalid input JSON: options[] displayOrder or hidden is malformed")
    if "description" in option:
        created["description"] = expect_string(option["description"], "options[].description")
    return created


def _property_settings(body: dict[str, Any]) -> dict[str, Any]:
    settings = {}
    for name, kind in PROPERTY_SETTINGS.items():
        value = body.get(name)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise InvalidRequest(f"Invalid input JSON: {name} must be a {kind.__name__}")
        settings[name] = value
    return settings


def sql_type(definition: Mapping[str, Any]) -> str:
    if definition["name"] == ID_PROPERTY:
        return "INTEGER"
    return SQL_TYPES.get(definition["type"], "TEXT")


def read_only(definition: Mapping[str, Any]) -> bool:
    return definition["modificationMetadata"]["readOnlyValue"]


# --- values: API text <-> storage ------------------------------------------------------------


def iso_millis(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def render(definition: Mapping[str, Any], stored: Any) -> str | None:
    """A stored value as HubSpot returns it: always a string, or null when unset."""
    if stored is None:
        return None
    kind = definition["type"]
    if kind == "number":
        return str(int(stored)) if float(stored).is_integer() else repr(float(stored))
    if kind == "datetime":
        return iso_millis(int(stored))
    if kind == "date":
        return datetime.fromtimestamp(int(stored) / 1000, UTC).date().isoformat()
    return str(stored)


def parse_instant(text: str) -> int:
    """Epoch milliseconds from epoch-millisecond digits or an ISO 8601 date or datetime."""
    text = text.strip()
    if re.fullmatch(r"-?\d{1,16}", text):
        millis = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"{text!r} is not a valid date or datetime") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        millis = math.floor(moment.timestamp() * 1000)
    if not 0 <= millis <= MAX_EPOCH_MS:
        raise ValueError(f"{text!r} is out of range")
    return millis


def parse_number(text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a valid number") from None
    if not math.isfinite(number):
        raise ValueError(f"{text!r} is not a valid number")
    return number


def as_text(value: Any) -> str | None:
    """A property value as sent in JSON (HubSpot documents strings; numbers and booleans pass)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise ValueError(f"{value!r} is not a valid property value")


def store(definition: Mapping[str, Any], value: Any) -> Any:
    """An API value as stored; an empty string (or null) clears the property."""
    text = as_text(value)
    if text is None or text == "":
        return None
    kind = definition["type"]
    if kind == "number":
        return parse_number(text)
    if kind == "datetime":
        return parse_instant(text)
    if kind == "date":
        millis = parse_instant(text)
        if millis % DAY_MS:
            raise ValueError(f"{text} is not at midnight UTC; a date property takes a date only")
        return millis
    if kind == "bool":
        if text.lower() not in BOOLEAN_OPTIONS:
            raise ValueError(f"{text} was not one of the allowed options: true, false")
        return text.lower()
    if kind == "enumeration":
        allowed = [option["value"] for option in definition["options"]]
        if text not in allowed:
            raise ValueError(f"{text} was not one of the allowed options: {', '.join(allowed)}")
    return text


def storage_values(properties: Any, definitions: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Validated stored values for a write; raises InvalidValues naming every bad property."""
    if not isinstance(properties, dict):
        raise InvalidRequest("properties must be an object of property names to values")
    values, problems = {}, []
    for name, value in properties.items():
        definition = definitions.get(name)
        if definition is None:
            problems.append((name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
        elif read_only(definition):
            problems.append(
                (
                    name,
                    "READ_ONLY_VALUE",
                    f'"{name}" is a read only property; its value cannot be set.',
                )
            )
        elif name == "email" and not _valid_email(value):
            problems.append((name, "INVALID_EMAIL", f"Email address {value} is invalid"))
        else:
            try:
                values[name] = store(definition, value)
            except ValueError as error:
                code = (
                    "INVALID_OPTION"
                    if definition["type"] in ("enumeration", "bool")
                    else f"INVALID_{definition['type'].upper()}"
                )
                problems.append((name, code, str(error)))
    if problems:
        raise InvalidValues(problems)
    return values


def _valid_email(value: Any) -> bool:
    """HubSpot checks an email's format on every write (an empty value clears it)."""
    try:
        text = as_text(value)
    except ValueError:
        return True  # not a value at all: store() reports it
    return not text or EMAIL.fullmatch(text) is not None


# --- request-shape helpers ---------------------------------------------------------------------


def expect_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"Invalid input JSON: {where} must be an object")
    return value


def expect_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidRequest(f"Invalid input JSON: {where} must be an array")
    return value


def expect_string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidRequest(f"Invalid input JSON: {where} must be a string")
    return value


def expect_strings(value: Any, where: str) -> list[str]:
    return [expect_string(item, f"{where}[]") for item in expect_list(value, where)]


def expect_known_fields(value: Any, known: Iterable[str], where: str) -> dict[str, Any]:
    """`value` as an object with no field outside `known`: HubSpot refuses a request field it
    does not define rather than ignoring it."""
    value = expect_object(value, where)
    known = tuple(known)
    unknown = [name for name in value if name not in known]
    if unknown:
        raise InvalidRequest(
            f'Invalid input JSON: Unrecognized field "{unknown[0]}" in {where}, not marked as '
            f"ignorable ({len(known)} known properties: {', '.join(map(repr, known))})"
        )
    return value


# --- seeding -----------------------------------------------------------------------------------

TEXT_COLUMNS = {
    "email": "email",
    "first_name": "firstname",
    "last_name": "lastname",
    "company": "company",
    "title": "jobtitle",
    "industry": "industry",
    "country": "country",
    "need": "leadsync_need",
    "reason": "leadsync_reason",
    "status": "leadsync_status",
}
NUMBER_COLUMNS = {
    "employees": "numemployees",
    "annual_revenue": "annualrevenue",
    "budget": "leadsync_budget",
    "page_views": "hs_analytics_num_page_views",
    "email_opens": "hs_email_open",
    "form_submissions": "num_conversion_events",
    "score": "leadsync_score",
}
DATETIME_COLUMNS = {
    "last_engaged_at": "leadsync_last_engaged_at",
    "qualified_at": "leadsync_qualified_at",
}
BOOLEAN_COLUMNS = {
    "authority": "leadsync_decision_maker",
    "status_locked": "leadsync_status_locked",
}
TIE_EVERY = 10  # every tenth contact shares its modification stamp with the one before


def contact_rows(frame: pd.DataFrame, first_id: int) -> pd.DataFrame:
    """The canonical lead frame as stored contacts, numbered from `first_id`.

    Modification stamps are floored to the second and every TIE_EVERY-th contact repeats the
    previous contact's stamp, so ties on `lastmodifieddate` always exist; `createdate` is the lead's `created_at` (its
    modification time when it has none).
    """
    count = len(frame)
    rows = pd.DataFrame(index=frame.index)
    rows[ID_PROPERTY] = np.arange(first_id, first_id + count)
    for column, name in TEXT_COLUMNS.items():
        rows[name] = frame[column]
    for column, name in NUMBER_COLUMNS.items():
        rows[name] = frame[column]
    for column, name in DATETIME_COLUMNS.items():
        rows[name] = _epoch_ms(frame[column])
    for column, name in BOOLEAN_COLUMNS.items():
        rows[name] = frame[column].map({True: "true", False: "false"}).astype(object)
    rows["leadsync_timeline"] = _epoch_ms(frame["timeline"].dt.floor("D"))
    engaged = _epoch_ms(frame["last_engaged_at"])
    rows["hs_analytics_last_visit_timestamp"] = engaged.where(frame["page_views"] > 0)
    rows["recent_conversion_date"] = engaged.where(frame["form_submissions"] > 0)
    statuses = frame["crm_status"].map(LEAD_STATUS_BY_CRM_STATUS)
    rows["hs_lead_status"] = statuses.where(statuses.notna(), "NEW")
    rows["lifecyclestage"] = np.where(rows["hs_lead_status"] == "OPEN_DEAL", "opportunity", "lead")
    rng = np.random.default_rng(first_id + count)
    rows["hubspot_owner_id"] = np.array(OWNER_IDS, dtype=object)[rng.integers(0, 3, count)]
    modified = _epoch_ms(frame["modified_at"].dt.floor("s")).to_numpy(dtype="int64").copy()
    tied = len(modified[TIE_EVERY::TIE_EVERY])
    modified[TIE_EVERY::TIE_EVERY] = modified[TIE_EVERY - 1 :: TIE_EVERY][:tied]
    rows[MODIFIED] = modified
    created = _epoch_ms(frame["created_at"].dt.floor("s")).to_numpy(dtype="float64", na_value=np.nan)
    rows[CREATED] = np.fmin(created, modified).astype("int64")
    rows["_archived"] = 0
    return rows


def _epoch_ms(moments: pd.Series) -> pd.Series:
    epoch = pd.Timestamp(0, tz="UTC")
    return ((moments - epoch) // pd.Timedelta(milliseconds=1)).astype("Int64")
