"""The Lead object: its fields as describe reports them, how values are stored and rendered, how
API input is validated, and how the canonical lead frame becomes Lead records for seeding.

Storage: datetimes are integer epoch milliseconds (UTC), so they compare and sort correctly;
dates are ISO `YYYY-MM-DD` text; checkboxes are 0/1.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from sandbox.seed import CONVERTED_STATUS, ICP_INDUSTRIES, OPEN_STATUS, OTHER_INDUSTRIES

ID_PREFIX = "00Q"
ID_SEQUENCE_PREFIX = "00Q5g"  # key prefix plus a fixed "pod and reserved" part, then a counter
DEFAULT_OWNER_ID = "0055g00000SBXOWAA5"
IMPORT_USER_ID = "0055g00000SBXIMAA5"  # the user whose data import last modified seeded leads
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # Salesforce field type, as describe reports it
    length: int = 0
    picklist: tuple[str, ...] = ()
    restricted: bool = False  # restricted picklist: only its values are accepted
    updateable: bool = True
    createable: bool = True
    nillable: bool = True
    precision: int = 0
    scale: int = 0

    @property
    def custom(self) -> bool:
        return self.name.endswith("__c")

    @property
    def sqlite_type(self) -> str:
        return SQLITE_TYPES.get(self.type, "TEXT")

    @property
    def is_text(self) -> bool:
        return self.type in TEXT_TYPES

    @property
    def label(self) -> str:
        return self.name.removesuffix("__c").replace("_", " ")


SQLITE_TYPES = {
    "int": "INTEGER",
    "double": "REAL",
    "currency": "REAL",
    "boolean": "INTEGER",
    "datetime": "INTEGER",
}
TEXT_TYPES = {"id", "reference", "string", "email", "picklist", "textarea", "phone", "url"}
SOAP_TYPES = {
    "id": "tns:ID",
    "reference": "tns:ID",
    "int": "xsd:int",
    "double": "xsd:double",
    "currency": "xsd:double",
    "boolean": "xsd:boolean",
    "date": "xsd:date",
    "datetime": "xsd:dateTime",
}
SYSTEM = {"updateable": False, "createable": False}

FIELDS: tuple[Field, ...] = (
    Field("Id", "id", 18, nillable=False, **SYSTEM),
    Field("FirstName", "string", 40),
    Field("LastName", "string", 80, nillable=False),
    Field("Email", "email", 80),
    Field("Company", "string", 255, nillable=False),
    Field("Title", "string", 128),
    Field("Industry", "picklist", 255, picklist=tuple(ICP_INDUSTRIES + OTHER_INDUSTRIES)),
    Field("NumberOfEmployees", "int", precision=8),
    Field("AnnualRevenue", "currency", precision=18),
    Field("Country", "string", 80),
    Field(
        "LeadSource",
        "picklist",
        255,
        picklist=(
            "Web",
            "Phone Inquiry",
            "Partner Referral",
            "Purchased List",
            "Webinar",
            "Trade Show",
            "Other",
        ),
    ),
    Field(
        "Status",
        "picklist",
        255,
        nillable=False,
        restricted=True,
        picklist=(OPEN_STATUS, "Working - Contacted", CONVERTED_STATUS, "Closed - Not Converted"),
    ),
    Field("Rating", "picklist", 255, restricted=True, picklist=("Hot", "Warm", "Cold")),
    Field("Description", "textarea", 32000),
    Field("IsConverted", "boolean", nillable=False, **SYSTEM),
    Field("OwnerId", "reference", 18, nillable=False),
    Field("CreatedDate", "datetime", nillable=False, **SYSTEM),
    Field("LastModifiedDate", "datetime", nillable=False, **SYSTEM),
    Field("LastModifiedById", "reference", 18, nillable=False, **SYSTEM),
    Field("SystemModstamp", "datetime", nillable=False, **SYSTEM),
    Field("IsDeleted", "boolean", nillable=False, **SYSTEM),
    Field("LastActivityDate", "date", **SYSTEM),
    Field("Budget__c", "currency", precision=16, scale=2),
    Field("Need__c", "picklist", 255, restricted=True, picklist=("high", "medium", "low")),
    Field("Timeline__c", "date"),
    Field("Decision_Maker__c", "boolean", nillable=False),
    Field("Page_Views__c", "double", precision=18),
    Field("Email_Opens__c", "double", precision=18),
    Field("Form_Submissions__c", "double", precision=18),
    Field("Last_Engaged_At__c", "datetime"),
    Field("Lead_Score__c", "double", precision=5, scale=2),
    Field(
        "Qualification_Status__c",
        "picklist",
        255,
        restricted=True,
        picklist=("Qualified", "Nurture", "Disqualified", "Needs review"),
    ),
    Field("Qualification_Reason__c", "string", 255),
    Field("Qualified_At__c", "datetime"),
    Field("Status_Locked__c", "boolean", nillable=False),
)
BY_LOWER_NAME = {field.name.lower(): field for field in FIELDS}
COLUMNS = {field.name: field.sqlite_type for field in FIELDS}
REQUIRED_ON_CREATE = ("LastName", "Company")


def field_named(name: str) -> Field | None:
    """Field names are case-insensitive, as in SOQL and the REST API."""
    return BY_LOWER_NAME.get(name.lower())


def describe() -> dict[str, Any]:
    return {
        "name": "Lead",
        "label": "Lead",
        "labelPlural": "Leads",
        "keyPrefix": ID_PREFIX,
        "custom": False,
        "createable": True,
        "updateable": True,
        "deletable": True,
        "queryable": True,
        "fields": [_describe_field(field) for field in FIELDS],
    }


def _describe_field(field: Field) -> dict[str, Any]:
    return {
        "name": field.name,
        "label": field.label,
        "type": field.type,
        "soapType": SOAP_TYPES.get(field.type, "xsd:string"),
        "custom": field.custom,
        "updateable": field.updateable,
        "createable": field.createable,
        "nillable": field.nillable,
        "length": field.length,
        "precision": field.precision,
        "scale": field.scale,
        "restrictedPicklist": field.restricted,
        "picklistValues": [
            {
                "value": value,
                "label": value,
                "active": True,
                "defaultValue": value == OPEN_STATUS,
                "validFor": None,
            }
            for value in field.picklist
        ],
    }


# --- ids -------------------------------------------------------------------------------------


def lead_id(number: int) -> str:
    """The 18-character Id of the `number`th Lead: a fixed-width base-62 counter (so Ids sort in
    creation order) plus Salesforce's case-checksum suffix."""
    counter = ""
    for _ in range(10):
        number, digit = divmod(number, 62)
        counter = BASE62[digit] + counter
    return with_checksum(ID_SEQUENCE_PREFIX + counter)


def lead_number(record_id: str) -> int:
    number = 0
    for char in record_id[len(ID_SEQUENCE_PREFIX) : 15]:
        number = number * 62 + BASE62.index(char)
    return number


def with_checksum(id15: str) -> str:
    suffix = ""
    for start in range(0, 15, 5):
        bits = sum(1 << i for i, char in enumerate(id15[start : start + 5]) if char.isupper())
        suffix += "ABCDEFGHIJKLMNOPQRSTUVWXYZ012345"[bits]
    return id15 + suffix


def canonical_id(raw: str) -> str | None:
    """The 18-character form of a 15- or 18-character Lead Id, or None if it is not one."""
    if len(raw) not in (15, 18) or not raw.isalnum() or not raw.startswith(ID_PREFIX):
        return None
    return with_checksum(raw[:15])


# --- values ----------------------------------------------------------------------------------


def epoch_ms(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(milliseconds=1)


def render_datetime(milliseconds: int) -> str:
    moment = EPOCH + timedelta(milliseconds=milliseconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{milliseconds % 1000:03d}+0000"


def parse_datetime(text: str) -> int | None:
    """Epoch ms of an ISO 8601 datetime with an offset (Z, +0000, +00:00); None if it is not one."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})", text):
        return None
    try:
        return epoch_ms(datetime.fromisoformat(text))
    except ValueError:
        return None


def parse_date(text: str) -> str | None:
    try:
        return date.fromisoformat(text).isoformat() if len(text) == 10 else None
    except ValueError:
        return None


def to_api(field: Field, stored: Any) -> Any:
    """A stored value as the REST API returns it in JSON."""
    if stored is None:
        return None
    if field.type == "datetime":
        return render_datetime(stored)
    if field.type == "boolean":
        return bool(stored)
    if field.type == "int":
        return int(stored)
    if field.type in ("double", "currency"):
        return float(stored)
    return stored


@dataclass(frozen=True)
class FieldError:
    status_code: str
    message: str
    fields: tuple[str, ...] = ()

    def as_result_error(self) -> dict[str, Any]:
        return {
            "statusCode": self.status_code,
            "message": self.message,
            "fields": list(self.fields),
        }

    def as_api_error(self) -> dict[str, Any]:
        return {"message": self.message, "errorCode": self.status_code, "fields": list(self.fields)}


@dataclass(frozen=True)
class WriteResult:
    """The outcome of writing one record: its id, or why it failed."""

    id: str | None
    errors: tuple[FieldError, ...] = ()

    @property
    def success(self) -> bool:
        return not self.errors

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "success": self.success,
            "errors": [error.as_result_error() for error in self.errors],
        }


def no_such_column(name: str) -> FieldError:
    return FieldError("INVALID_FIELD", f"No such column '{name}' on sobject of type Lead", (name,))


def validate_values(
    values: dict[str, Any], creating: bool
) -> tuple[dict[str, Any], list[FieldError]]:
    """API input (field name -> JSON value) as stored values, or the errors Salesforce reports."""
    stored: dict[str, Any] = {}
    errors: list[FieldError] = []
    for name, value in values.items():
        field = field_named(name)
        if field is None:
            errors.append(no_such_column(name))
        elif not (field.createable if creating else field.updateable):
            errors.append(
                FieldError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {field.name}. Please check the security "
                    "settings of this field and verify that it is read/write for your profile or "
                    "permission set.",
                    (field.name,),
                )
            )
        else:
            converted, error = to_storage(field, value)
            if error:
                errors.append(error)
            else:
                stored[field.name] = converted
    return stored, errors


def to_storage(field: Field, value: Any) -> tuple[Any, FieldError | None]:
    if value is None:
        if field.type == "boolean":
            return 0, None
        if not field.nillable:
            return None, FieldError(
                "REQUIRED_FIELD_MISSING",
                f"Required fields are missing: [{field.name}]",
                (field.name,),
            )
        return None, None
    if field.type == "boolean":
        return _boolean(field, value)
    if field.type in ("int", "double", "currency"):
        return _number(field, value)
    if not isinstance(value, str):
        return None, _wrong_type(field, value)
    if field.type == "datetime":
        parsed = parse_datetime(value)
        return parsed, None if parsed is not None else _wrong_type(field, value)
    if field.type == "date":
        parsed = parse_date(value)
        return parsed, None if parsed is not None else _wrong_type(field, value)
    return _text(field, value)


def _boolean(field: Field, value: Any) -> tuple[Any, FieldError | None]:
    if isinstance(value, bool):
        return int(value), None
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return int(value.lower() == "true"), None
    return None, _wrong_type(field, value)


def _number(field: Field, value: Any) -> tuple[Any, FieldError | None]:
    if isinstance(value, bool):
        return None, _wrong_type(field, value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None, _wrong_type(field, value)
    if not np.isfinite(number):
        return None, _wrong_type(field, value)
    return (round(number) if field.type == "int" else number), None


def _text(field: Field, value: str) -> tuple[Any, FieldError | None]:
    if field.length and len(value) > field.length:
        return None, FieldError(
            "STRING_TOO_LONG",
            f"{field.label}: data value too large: {value[:40]} (max length={field.length})",
            (field.name,),
        )
    if field.restricted and value not in field.picklist:
        return None, FieldError(
            "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
            f"{field.label}: bad value for restricted picklist field: {value}",
            (field.name,),
        )
    if field.type == "email" and value and not EMAIL.match(value):
        return None, FieldError(
            "INVALID_EMAIL_ADDRESS", f"Email: invalid email address: {value}", (field.name,)
        )
    return value, None


def _wrong_type(field: Field, value: Any) -> FieldError:
    return FieldError(
        "INVALID_TYPE_ON_FIELD_IN_RECORD",
        f"{field.label}: value not of required type: {value}",
        (field.name,),
    )


# --- seeding ---------------------------------------------------------------------------------

FRAME_TO_FIELDS = {
    "first_name": "FirstName",
    "last_name": "LastName",
    "email": "Email",
    "company": "Company",
    "title": "Title",
    "industry": "Industry",
    "annual_revenue": "AnnualRevenue",
    "country": "Country",
    "lead_source": "LeadSource",
    "crm_status": "Status",
    "budget": "Budget__c",
    "need": "Need__c",
    "page_views": "Page_Views__c",
    "email_opens": "Email_Opens__c",
    "form_submissions": "Form_Submissions__c",
    "score": "Lead_Score__c",
    "status": "Qualification_Status__c",
    "reason": "Qualification_Reason__c",
}
BOOLEAN_FRAME_COLUMNS = {"authority": "Decision_Maker__c", "status_locked": "Status_Locked__c"}
DATETIME_FRAME_COLUMNS = {
    "last_engaged_at": "Last_Engaged_At__c",
    "qualified_at": "Qualified_At__c",
}


def lead_records(frame: pd.DataFrame, first_number: int) -> pd.DataFrame:
    """The canonical lead frame as stored Lead rows, numbered from `first_number`.

    Modification stamps are floored to the second, so (as in real orgs) many leads share one
    SystemModstamp; the last modification is a data import's (another user than the API's).
    CreatedDate is the lead's `created_at` (its modification time when it has none). Text
    longer than its field is cut.
    """
    count = len(frame)
    records = pd.DataFrame(index=frame.index)
    records["Id"] = [lead_id(number) for number in range(first_number, first_number + count)]
    for column, name in FRAME_TO_FIELDS.items():
        records[name] = frame[column]
    for column, name in BOOLEAN_FRAME_COLUMNS.items():
        records[name] = frame[column].fillna(False).astype(int)
    for column, name in DATETIME_FRAME_COLUMNS.items():
        records[name] = _epoch_ms(frame[column])
    records["NumberOfEmployees"] = frame["employees"].round().astype("Int64")
    records["Timeline__c"] = frame["timeline"].dt.strftime("%Y-%m-%d")
    records["LastActivityDate"] = frame["last_engaged_at"].dt.strftime("%Y-%m-%d")
    modified = _epoch_ms(frame["modified_at"].dt.floor("s"))
    records["LastModifiedDate"] = records["SystemModstamp"] = modified
    records["LastModifiedById"] = IMPORT_USER_ID
    created = _epoch_ms(frame["created_at"].dt.floor("s"))
    records["CreatedDate"] = created.where(created.notna() & (created <= modified), modified)
    records["Status"] = records["Status"].where(records["Status"].notna(), OPEN_STATUS)
    records["IsConverted"] = (records["Status"] == CONVERTED_STATUS).astype(int)
    records["IsDeleted"] = 0
    records["OwnerId"] = DEFAULT_OWNER_ID
    for field in FIELDS:
        if field.is_text and field.length and field.name in records:
            records[field.name] = records[field.name].str.slice(0, field.length)
    return records


def _epoch_ms(moments: pd.Series) -> pd.Series:
    epoch = pd.Timestamp(0, tz="UTC")
    return ((moments - epoch) // pd.Timedelta(milliseconds=1)).astype("Int64")
