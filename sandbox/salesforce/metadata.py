"""The org's setup, as far as leadsync touches it: which custom Lead fields exist (Tooling API
`CustomField`), permission sets with their field permissions and assignments (ordinary sObjects
over REST), and the field-level security they add up to for the one API user.

As in Salesforce, the user's profile grants nothing on custom fields: a custom field is visible
only through an assigned permission set with `PermissionsRead` on it, and writable only with
`PermissionsEdit`. A field the user cannot read is absent from describe, and SOQL and writes that
name it are refused as if it did not exist; one the user can read but not edit is refused in
writes with INVALID_FIELD_FOR_INSERT_UPDATE.

A default org is seeded as if leadsync's setup had run (every custom field exists and the
permission set `leadsync_integration` grants it, assigned to the user); a bare org has neither.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sandbox.http import Request, Response
from sandbox.salesforce import schema, soql
from sandbox.salesforce.schema import FIELDS, Field, FieldError
from sandbox.store import Database, Table

SEEDED_PERMISSION_SET = "leadsync_integration"  # what leadsync's setup creates
ID_PREFIXES = {
    "CustomField": "00N",
    "PermissionSet": "0PS",
    "FieldPermissions": "01k",
    "PermissionSetAssignment": "0Pa",
}
# Per object: its queryable fields, and those a create may set (the rest are the system's).
QUERYABLE = {
    "CustomField": ("Id", "DeveloperName", "TableEnumOrId"),
    "PermissionSet": ("Id", "Name", "Label", "Description", "IsOwnedByProfile"),
    "FieldPermissions": (
        "Id",
        "ParentId",
        "SobjectType",
        "Field",
        "PermissionsRead",
        "PermissionsEdit",
    ),
    "PermissionSetAssignment": ("Id", "PermissionSetId", "AssigneeId"),
    "Organization": ("Id", "Name", "OrganizationType", "IsSandbox"),  # read-only: the org itself
}
CREATEABLE = {
    "PermissionSet": ("Name", "Label", "Description"),
    "FieldPermissions": ("ParentId", "SobjectType", "Field", "PermissionsRead", "PermissionsEdit"),
    "PermissionSetAssignment": ("PermissionSetId", "AssigneeId"),
}
UPDATEABLE = {"FieldPermissions": ("PermissionsRead", "PermissionsEdit")}
REQUIRED = {
    "PermissionSet": ("Name", "Label"),
    "FieldPermissions": ("ParentId", "SobjectType", "Field"),
    "PermissionSetAssignment": ("PermissionSetId", "AssigneeId"),
}
BOOLEANS = {"PermissionsRead", "PermissionsEdit", "IsOwnedByProfile"}
# Tooling API CustomField metadata: the field types the sandbox's Lead can hold, and the keys
# each needs, as Salesforce requires them.
METADATA_TYPES = {
    "Number": ("double", ("precision", "scale")),
    "Currency": ("currency", ("precision", "scale")),
    "Checkbox": ("boolean", ("defaultValue",)),
    "Date": ("date", ()),
    "DateTime": ("datetime", ()),
    "Text": ("string", ("length",)),
    "Picklist": ("picklist", ("valueSet",)),
}
METADATA_KEYS = {
    "label",
    "type",
    "precision",
    "scale",
    "length",
    "defaultValue",
    "valueSet",
    "description",
    "inlineHelpText",
    "required",
    "externalId",
    "unique",
}
API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9]*(_[A-Za-z0-9]+)*$")
OBJECT_RESOURCE = "(?P<object>PermissionSet|FieldPermissions|PermissionSetAssignment)"


class MetadataError(Exception):
    def __init__(self, error_code: str, message: str, fields: tuple[str, ...] = ()):
        super().__init__(message)
        self.error = FieldError(error_code, message, fields)


@dataclass(frozen=True)
class FieldAccess:
    """Lower-case names of the custom Lead fields the user can read, and can edit."""

    readable: frozenset[str]
    editable: frozenset[str]

    def can_read(self, field: Field) -> bool:
        return not field.custom or field.name.lower() in self.readable

    def can_edit(self, field: Field) -> bool:
        return field.updateable and (not field.custom or field.name.lower() in self.editable)


Handler = Callable[[Request, str, re.Match], Response]


class OrgMetadata:
    """Custom fields, permission sets and the field-level security of `user_id`."""

    def __init__(self, db: Database, leads: Table, user_id: str, bare: bool, org_id: str):
        self.db, self.leads, self.user_id = db, leads, user_id
        self.organization = {
            "Id": org_id,
            "Name": "leadsync sandbox",
            "OrganizationType": "Enterprise Edition",
            "IsSandbox": False,
            "_type": "Organization",
        }
        self.table = Table(db, "OrgMetadata", "Id", {"Id": "TEXT", "Type": "TEXT", "Body": "TEXT"})
        self._lock = threading.Lock()
        self._records: dict[str, dict[str, Any]] = {
            row["Id"]: {**json.loads(row["Body"]), "Id": row["Id"], "_type": row["Type"]}
            for row in self.table.select(order_by="rowid")
        }
        if not self._records and not bare:
            self._seed_setup()
        self.access = self._field_access()

    def routes(self) -> list[tuple[str, re.Pattern, Handler]]:
        sobject = rf"/sobjects/{OBJECT_RESOURCE}"
        return [
            ("GET", re.compile(r"/chatter/users/me"), self._me),
            ("POST", re.compile(sobject, re.IGNORECASE), self._create),
            ("PATCH", re.compile(sobject + r"/(?P<id>\w+)", re.IGNORECASE), self._update),
            ("DELETE", re.compile(sobject + r"/(?P<id>\w+)", re.IGNORECASE), self._delete),
            ("GET", re.compile(r"/tooling/query"), self._tooling_query),
            ("POST", re.compile(r"/tooling/sobjects/CustomField"), self._create_custom_field),
        ]

    # --- hooks for the Lead routes -----------------------------------------------------------

    def describe(self, describe: dict[str, Any]) -> dict[str, Any]:
        """Lead's describe as the user sees it: unreadable custom fields absent, uneditable
        ones neither updateable nor createable."""
        access, fields = self.access, []
        for entry in describe["fields"]:
            field = schema.field_named(entry["name"])
            if field is None or access.can_read(field):
                editable = field is None or access.can_edit(field)
                fields.append(
                    {
                        **entry,
                        "updateable": entry["updateable"] and editable,
                        "createable": entry["createable"] and editable,
                    }
                )
        return {**describe, "fields": fields}

    def readable_fields(self) -> list[Field]:
        return [field for field in FIELDS if self.access.can_read(field)]

    def query_response(self, text: str, version: str) -> Response | None:
        """The answer to a query this module owns (one of its objects; a Lead query naming a
        field the user cannot read, refused), or None for the Lead routes to answer."""
        try:
            tokens = soql.tokenize(text)
        except soql.SoqlError:
            return None
        target = _from_object(tokens)
        if target in QUERYABLE and target != "CustomField":
            return self._answer(text, tokens, target, version)
        return self.hidden_field_error(text)

    def hidden_field_error(self, text: str) -> Response | None:
        """Salesforce's refusal of a Lead query naming a field the user cannot read, or None."""
        try:
            tokens = soql.tokenize(text)
        except soql.SoqlError:
            return None
        hidden = next((token for token in tokens if self._hidden(token.text)), None)
        if hidden is None:
            return None
        return _error(
            400,
            "INVALID_FIELD",
            f"\n{text}\n{' ' * hidden.position}^\nERROR at Row:1:Column:{hidden.position + 1}\n"
            f"No such column '{hidden.text}' on entity 'Lead'. If you are attempting to use a "
            "custom field, be sure to append the '__c' after the custom field name. Please "
            "reference your WSDL or the describe call for the appropriate names.",
        )

    def write_errors(self, values: dict[str, Any]) -> list[FieldError]:
        """Salesforce's errors for the fields of a Lead write the user may not write."""
        errors = []
        for name in values:
            field = schema.field_named(name)
            if field is None or self.access.can_edit(field):
                continue
            if not self.access.can_read(field):
                message = f"No such column '{name}' on sobject of type Lead"
                errors.append(FieldError("INVALID_FIELD", message, (name,)))
            elif field.updateable:
                errors.append(
                    FieldError(
                        "INVALID_FIELD_FOR_INSERT_UPDATE",
                        f"Unable to create/update fields: {field.name}. Please check the "
                        "security settings of this field and verify that it is read/write for "
                        "your profile or permission set.",
                        (field.name,),
                    )
                )
        return errors

    def _hidden(self, name: str) -> bool:
        field = schema.field_named(name)
        return field is not None and not self.access.can_read(field)

    # --- queries of the setup objects --------------------------------------------------------

    def _tooling_query(self, request: Request, version: str, match: re.Match) -> Response:
        text = request.param("q") or ""
        try:
            tokens = soql.tokenize(text)
        except soql.SoqlError as error:
            return _error(400, error.error_code, error.message)
        target = _from_object(tokens)
        if target != "CustomField":
            return _error(400, "INVALID_TYPE", f"sObject type '{target}' is not supported.")
        return self._answer(text, tokens, target, version, tooling=True)

    def _answer(
        self, text: str, tokens: list[soql.Token], target: str, version: str, tooling=False
    ) -> Response:
        try:
            selected, conditions = _parse(tokens, target)
        except MetadataError as error:
            return _error(400, error.error.status_code, f"\n{text}\n{error.error.message}")
        with self._lock:
            rows = [r for r in [*self._records.values(), self.organization] if r["_type"] == target]
        matching = [row for row in rows if all(_holds(row, *term) for term in conditions)]
        base = "tooling/sobjects" if tooling else "sobjects"
        records = [
            {
                "attributes": {
                    "type": target,
                    "url": f"/services/data/v{version}/{base}/{target}/{row['Id']}",
                },
                **{name: row.get(name) for name in selected},
            }
            for row in matching
        ]
        return Response(200, {"totalSize": len(records), "done": True, "records": records})

    # --- writes of the setup objects ---------------------------------------------------------

    def _me(self, request: Request, version: str, match: re.Match) -> Response:
        return Response(200, {"id": self.user_id, "type": "User", "userType": "Standard"})

    def _create(self, request: Request, version: str, match: re.Match) -> Response:
        target = _canonical_object(match["object"])
        try:
            values = _values(request, target, CREATEABLE[target])
            missing = [name for name in REQUIRED[target] if values.get(name) in (None, "")]
            if missing:
                raise MetadataError(
                    "REQUIRED_FIELD_MISSING",
                    f"Required fields are missing: [{', '.join(missing)}]",
                    tuple(missing),
                )
            with self._lock:
                record = self._validated(target, values)
                record_id = self._store(target, record)
        except MetadataError as error:
            return _errors(error)
        return Response(201, {"id": record_id, "success": True, "errors": []})

    def _update(self, request: Request, version: str, match: re.Match) -> Response:
        target = _canonical_object(match["object"])
        try:
            values = _values(request, target, UPDATEABLE.get(target, ()))
            with self._lock:
                current = self._records.get(schema.with_checksum(match["id"][:15]))
                if current is None or current["_type"] != target:
                    return _not_found()
                record = {key: value for key, value in current.items() if key != "Id"}
                self._check_permissions({**record, **values})
                self._put(current["Id"], target, {**record, **values})
        except MetadataError as error:
            return _errors(error)
        return Response(204)

    def _delete(self, request: Request, version: str, match: re.Match) -> Response:
        target = _canonical_object(match["object"])
        with self._lock:
            current = self._records.get(schema.with_checksum(match["id"][:15]))
            if current is None or current["_type"] != target:
                return _not_found()
            del self._records[current["Id"]]
            self.db.execute('DELETE FROM "OrgMetadata" WHERE "Id" = ?', [current["Id"]])
            self.access = self._field_access()
        return Response(204)

    def _create_custom_field(self, request: Request, version: str, match: re.Match) -> Response:
        try:
            body = request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict) or set(body) - {"FullName", "Metadata"}:
            return _error(400, "JSON_PARSER_ERROR", "Expected an object of FullName and Metadata.")
        try:
            field = _custom_field(body.get("FullName"), body.get("Metadata"))
            with self._lock:
                if any(r.get("DeveloperName") == field.name[:-3] for r in self._custom_fields()):
                    raise MetadataError(
                        "DUPLICATE_DEVELOPER_NAME",
                        f"There is already a field named {field.name[:-3]} on Lead.",
                    )
                record_id = self._store("CustomField", _custom_field_record(field))
                with self.db.transaction() as connection:  # a new field starts empty
                    empty = 0 if field.type == "boolean" else None
                    connection.execute(f'UPDATE "Lead" SET "{field.name}" = ?', [empty])
        except MetadataError as error:
            return _errors(error)
        return Response(
            201, {"id": record_id, "success": True, "errors": [], "warnings": [], "infos": []}
        )

    def _validated(self, target: str, values: dict[str, Any]) -> dict[str, Any]:
        """A new record's values, checked against what exists (call with the lock held)."""
        if target == "PermissionSet":
            if not API_NAME.match(str(values["Name"])):
                raise MetadataError(
                    "INVALID_FIELD",
                    "The API Name can only contain underscores and alphanumeric characters. It "
                    "must begin with a letter, not include spaces, not end with an underscore, "
                    "and not contain two consecutive underscores.",
                    ("Name",),
                )
            if any(r.get("Name") == values["Name"] for r in self._of("PermissionSet")):
                raise MetadataError(
                    "DUPLICATE_DEVELOPER_NAME",
                    "The API Name you entered is already in use.",
                    ("Name",),
                )
            return {"Description": None, **values, "IsOwnedByProfile": False}
        if target == "FieldPermissions":
            self._check_reference(values["ParentId"], "PermissionSet", "ParentId")
            known = {f"Lead.{r['DeveloperName']}__c" for r in self._custom_fields()}
            if values["SobjectType"] != "Lead" or values["Field"] not in known:
                raise MetadataError(
                    "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                    f"Field Name: bad value for restricted picklist field: {values['Field']}",
                    ("Field",),
                )
            record = {"PermissionsRead": False, "PermissionsEdit": False, **values}
            self._check_permissions(record)
            self._check_unique(target, record, ("ParentId", "Field"))
            return record
        self._check_reference(values["PermissionSetId"], "PermissionSet", "PermissionSetId")
        if values["AssigneeId"] != self.user_id:
            raise MetadataError(
                "INVALID_CROSS_REFERENCE_KEY",
                f"invalid cross reference id: {values['AssigneeId']}",
                ("AssigneeId",),
            )
        self._check_unique(target, values, ("PermissionSetId", "AssigneeId"))
        return values

    def _check_permissions(self, record: dict[str, Any]) -> None:
        if record["PermissionsEdit"] and not record["PermissionsRead"]:
            raise MetadataError(
                "FIELD_INTEGRITY_EXCEPTION",
                "Permission Edit depends on permission(s): Read",
                ("PermissionsRead",),
            )

    def _check_reference(self, record_id: Any, target: str, name: str) -> None:
        record = self._records.get(schema.with_checksum(str(record_id)[:15]))
        if record is None or record["_type"] != target:
            raise MetadataError(
                "INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {record_id}", (name,)
            )

    def _check_unique(self, target: str, record: dict[str, Any], keys: tuple[str, ...]) -> None:
        for existing in self._of(target):
            if all(existing.get(key) == record[key] for key in keys):
                raise MetadataError(
                    "DUPLICATE_VALUE",
                    f"duplicate value found: {keys[0]} duplicates value on record with id: "
                    f"{existing['Id']}",
                    keys,
                )

    def _store(self, target: str, record: dict[str, Any]) -> str:
        """Keep a new record (call with the lock held); returns its Id."""
        count = sum(1 for r in self._records.values() if r["_type"] == target) + 1
        record_id = schema.with_checksum(f"{ID_PREFIXES[target]}5g{count:010d}")
        while record_id in self._records:
            count += 1
            record_id = schema.with_checksum(f"{ID_PREFIXES[target]}5g{count:010d}")
        with self.db.transaction() as connection:
            self.table.insert(
                connection, {"Id": record_id, "Type": target, "Body": json.dumps(record)}
            )
        self._records[record_id] = {**record, "Id": record_id, "_type": target}
        self.access = self._field_access()
        return record_id

    def _put(self, record_id: str, target: str, record: dict[str, Any]) -> None:
        body = {key: value for key, value in record.items() if key not in ("Id", "_type")}
        with self.db.transaction() as connection:
            self.table.update(connection, record_id, {"Body": json.dumps(body)})
        self._records[record_id] = {**body, "Id": record_id, "_type": target}
        self.access = self._field_access()

    def _of(self, target: str) -> list[dict[str, Any]]:
        return [record for record in self._records.values() if record["_type"] == target]

    def _custom_fields(self) -> list[dict[str, Any]]:
        return self._of("CustomField")

    def _field_access(self) -> FieldAccess:
        existing = {f"lead.{r['DeveloperName'].lower()}__c" for r in self._custom_fields()}
        assigned = {
            r["PermissionSetId"]
            for r in self._of("PermissionSetAssignment")
            if r["AssigneeId"] == self.user_id
        }
        granted = [
            r
            for r in self._of("FieldPermissions")
            if r["ParentId"] in assigned and r["Field"].lower() in existing
        ]
        names = lambda key: frozenset(  # noqa: E731
            r["Field"].lower().removeprefix("lead.") for r in granted if r[key]
        )
        return FieldAccess(names("PermissionsRead"), names("PermissionsEdit"))

    def _seed_setup(self) -> None:
        """The org as leadsync's setup leaves it: every custom field, granted to the user."""
        with self._lock:
            permission_set = self._store(
                "PermissionSet",
                {
                    "Name": SEEDED_PERMISSION_SET,
                    "Label": "leadsync integration",
                    "Description": None,
                    "IsOwnedByProfile": False,
                },
            )
            for field in FIELDS:
                if field.custom:
                    self._store("CustomField", _custom_field_record(field))
                    self._store(
                        "FieldPermissions",
                        {
                            "ParentId": permission_set,
                            "SobjectType": "Lead",
                            "Field": f"Lead.{field.name}",
                            "PermissionsRead": True,
                            "PermissionsEdit": True,
                        },
                    )
            self._store(
                "PermissionSetAssignment",
                {"PermissionSetId": permission_set, "AssigneeId": self.user_id},
            )


def _custom_field(full_name: Any, metadata: Any) -> Field:
    """The sandbox's Lead field a Tooling API CustomField names, if its metadata fits it."""
    if not isinstance(full_name, str) or not full_name.startswith("Lead."):
        raise MetadataError(
            "INVALID_FIELD", f"FullName must be Lead.<name>__c, not {full_name!r}", ("FullName",)
        )
    name = full_name.removeprefix("Lead.")
    field = schema.field_named(name)
    if not name.endswith("__c") or not API_NAME.match(name[:-3]):
        raise MetadataError(
            "INVALID_FIELD", f"{name} is not a valid custom field name", ("FullName",)
        )
    if not isinstance(metadata, dict):
        raise MetadataError("JSON_PARSER_ERROR", "Metadata must be an object.", ("Metadata",))
    unknown = sorted(set(metadata) - METADATA_KEYS)
    if unknown:
        raise MetadataError(
            "JSON_PARSER_ERROR", f"Unrecognized field \"{unknown[0]}\" in CustomField Metadata"
        )
    kind, needed = METADATA_TYPES.get(metadata.get("type"), ("", ()))
    missing = [key for key in ("label", "type", *needed) if metadata.get(key) in (None, "")]
    if not kind or missing:
        raise MetadataError(
            "FIELD_INTEGRITY_EXCEPTION",
            f"Metadata of type {metadata.get('type')!r} needs {', '.join(missing) or 'a type'}",
        )
    if field is None or field.type != kind:
        raise MetadataError(
            "FIELD_INTEGRITY_EXCEPTION",
            f"the sandbox's Lead holds only leadsync's fields: it has no {kind} field {name}",
        )
    return field


def _custom_field_record(field: Field) -> dict[str, Any]:
    return {"DeveloperName": field.name[:-3], "TableEnumOrId": "Lead"}


def _values(request: Request, target: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    try:
        body = request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise MetadataError("JSON_PARSER_ERROR", "Expected a JSON object.")
    values = {}
    for name, value in body.items():
        if name == "attributes":
            continue
        field = next((known for known in QUERYABLE[target] if known.lower() == name.lower()), None)
        if field is None:
            raise MetadataError(
                "INVALID_FIELD", f"No such column '{name}' on sobject of type {target}", (name,)
            )
        if field not in allowed:
            raise MetadataError(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                f"Unable to create/update fields: {field}. Please check the security settings "
                "of this field and verify that it is read/write for your profile or permission "
                "set.",
                (field,),
            )
        if field in BOOLEANS and not isinstance(value, bool):
            raise MetadataError(
                "INVALID_TYPE_ON_FIELD_IN_RECORD", f"{field}: value not of required type: {value}"
            )
        values[field] = value
    return values


def _from_object(tokens: list[soql.Token]) -> str | None:
    """The object a query reads (canonically spelled, if it is one this module owns)."""
    for index, token in enumerate(tokens[:-1]):
        if token.kind == "name" and token.text.upper() == "FROM":
            name = tokens[index + 1].text
            return next((known for known in QUERYABLE if known.lower() == name.lower()), name)
    return None


def _parse(
    tokens: list[soql.Token], target: str
) -> tuple[list[str], list[tuple[str, str, list[Any]]]]:
    """`SELECT f, ... FROM target [WHERE f = v | f IN (v, ...) [AND ...]]`: the fields, and
    each condition as (field, operator, values)."""
    words = iter(tokens)

    def next_token(kind: str | None = None, text: str | None = None) -> soql.Token:
        token = next(words, None)
        wrong_text = token is not None and text is not None and token.text.upper() != text
        if token is None or (kind and token.kind != kind) or wrong_text:
            found = token.text if token else "end of query"
            raise MetadataError("MALFORMED_QUERY", f"unexpected token: '{found}'")
        return token

    def field_name(token: soql.Token) -> str:
        lowered = token.text.lower()
        known = next((name for name in QUERYABLE[target] if name.lower() == lowered), None)
        if known is None:
            raise MetadataError(
                "INVALID_FIELD", f"No such column '{token.text}' on entity '{target}'."
            )
        return known

    def literal() -> Any:
        token = next_token()
        if token.kind == "string":
            return token.text[1:-1]
        if token.kind in ("true", "false"):
            return token.kind == "true"
        raise MetadataError("MALFORMED_QUERY", f"unexpected token: '{token.text}'")

    next_token("name", "SELECT")
    selected = [field_name(next_token("name"))]
    token = next_token()
    while token.text == ",":
        selected.append(field_name(next_token("name")))
        token = next_token()
    if token.text.upper() != "FROM":
        raise MetadataError("MALFORMED_QUERY", f"unexpected token: '{token.text}'")
    next_token("name")
    conditions: list[tuple[str, str, list[Any]]] = []
    token = next(words, None)
    if token is not None:
        if token.text.upper() != "WHERE":
            raise MetadataError("MALFORMED_QUERY", f"unexpected token: '{token.text}'")
        while True:
            name = field_name(next_token("name"))
            operator = next_token()
            if operator.text == "=":
                conditions.append((name, "=", [literal()]))
            elif operator.text.upper() == "IN":
                next_token("punctuation", "(")
                values = [literal()]
                while next_token("punctuation").text == ",":
                    values.append(literal())
                conditions.append((name, "IN", values))
            else:
                raise MetadataError("MALFORMED_QUERY", f"unexpected token: '{operator.text}'")
            token = next(words, None)
            if token is None:
                break
            if token.text.upper() != "AND":
                raise MetadataError("MALFORMED_QUERY", f"unexpected token: '{token.text}'")
    return selected, conditions


def _holds(row: dict[str, Any], name: str, operator: str, values: list[Any]) -> bool:
    value = row.get(name)
    if name.endswith("Id") and isinstance(value, str):  # ids match in 15 or 18 characters
        return value[:15] in {str(v)[:15] for v in values}
    if isinstance(value, str):
        return value.lower() in {str(v).lower() for v in values}
    return value in values


def _canonical_object(name: str) -> str:
    return next(known for known in CREATEABLE if known.lower() == name.lower())


def _error(status: int, error_code: str, message: str) -> Response:
    return Response(status, [{"message": message, "errorCode": error_code}])


def _errors(error: MetadataError) -> Response:
    return Response(400, [error.error.as_api_error()])


def _not_found() -> Response:
    return _error(404, "NOT_FOUND", "The requested resource does not exist")
