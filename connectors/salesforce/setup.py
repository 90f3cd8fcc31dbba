"""What leadsync needs in a Salesforce org, created once and safe to rerun: the mapping's custom
Lead fields (Tooling API `CustomField`), and the permission set `leadsync_integration` granting
the signed-in integration user read and edit access to them (`PermissionSet`, `FieldPermissions`,
`PermissionSetAssignment`: ordinary sObjects over REST).

Salesforce hides a new custom field from every user until field-level security grants it, so
fields alone are not enough: a user without the grant sees no such column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from simple_salesforce import Salesforce
from simple_salesforce.format import format_soql

from connectors.base import ConnectorError
from connectors.mapping import FieldMapping
from expectations.frame import QUALIFICATION_STATUSES

PERMISSION_SET = "leadsync_integration"
PERMISSION_SET_LABEL = "leadsync integration"
SETUP_COMMAND = "python -m connectors setup --source salesforce"


def _number(label: str, precision: int, scale: int = 0) -> dict[str, Any]:
    return {"label": label, "type": "Number", "precision": precision, "scale": scale}


def _picklist(label: str, values: tuple[str, ...]) -> dict[str, Any]:
    entries = [{"fullName": value, "default": False, "label": value} for value in values]
    return {
        "label": label,
        "type": "Picklist",
        "valueSet": {"restricted": True, "valueSetDefinition": {"sorted": False, "value": entries}},
    }


def _checkbox(label: str) -> dict[str, Any]:
    return {"label": label, "type": "Checkbox", "defaultValue": "false"}


# Tooling API CustomField metadata of leadsync's Lead fields (README, "Pointing leadsync at real
# CRMs", lists the same types).
CUSTOM_FIELDS: dict[str, dict[str, Any]] = {
    "Lead_Score__c": _number("Lead Score", 3),
    "Qualification_Status__c": _picklist("Qualification Status", QUALIFICATION_STATUSES),
    "Qualification_Reason__c": {"label": "Qualification Reason", "type": "Text", "length": 255},
    "Qualified_At__c": {"label": "Qualified At", "type": "DateTime"},
    "Budget__c": {"label": "Budget", "type": "Currency", "precision": 16, "scale": 2},
    "Need__c": _picklist("Need", ("high", "medium", "low")),
    "Timeline__c": {"label": "Timeline", "type": "Date"},
    "Decision_Maker__c": _checkbox("Decision Maker"),
    "Status_Locked__c": _checkbox("Status Locked"),
    "Page_Views__c": _number("Page Views", 18),
    "Email_Opens__c": _number("Email Opens", 18),
    "Form_Submissions__c": _number("Form Submissions", 18),
    "Last_Engaged_At__c": {"label": "Last Engaged At", "type": "DateTime"},
}


Call = Callable[[Callable[[], Any]], Any]  # makes a request, retrying what is transient


class OrgSetup:
    """Finds what the org lacks and (unless a dry run) creates it; `changes` says what."""

    def __init__(self, client: Salesforce, mapping: FieldMapping, call: Call, dry_run: bool):
        self.client, self.mapping, self.call, self.dry_run = client, mapping, call, dry_run
        self.changes: list[str] = []

    def run(self) -> list[str]:
        """Create what is missing; returns what was (or, in a dry run, would be) changed."""
        wanted = [field for field in self.mapping.fields() if field.endswith("__c")]
        self._create_fields(wanted)
        permission_set = self._permission_set()
        self._grant(permission_set, wanted)
        self._assign(permission_set)
        return self.changes

    def _create_fields(self, wanted: list[str]) -> None:
        existing = existing_custom_fields(self.client, self.mapping.object, self.call)
        missing = [field for field in wanted if field not in existing]
        undefined = [field for field in missing if field not in CUSTOM_FIELDS]
        if undefined:
            raise ConnectorError(
                f"no definition for {', '.join(undefined)}: create them in Setup > Object "
                f"Manager > {self.mapping.object} > Fields & Relationships, or map other fields"
            )
        for field in missing:
            metadata = CUSTOM_FIELDS[field]
            self._change(
                f"create field {self.mapping.object}.{field} ({metadata['type']})",
                lambda field=field, metadata=metadata: self.client.toolingexecute(
                    "sobjects/CustomField",
                    method="POST",
                    data={"FullName": f"{self.mapping.object}.{field}", "Metadata": metadata},
                ),
            )

    def _permission_set(self) -> str | None:
        """The permission set's Id (None in a dry run that would create it)."""
        found = self._query(
            format_soql("SELECT Id FROM PermissionSet WHERE Name = {}", PERMISSION_SET)
        )
        if found:
            return found[0]["Id"]
        created = self._change(
            f"create permission set {PERMISSION_SET}",
            lambda: self.client.PermissionSet.create(
                {"Name": PERMISSION_SET, "Label": PERMISSION_SET_LABEL}
            ),
        )
        return created["id"] if created else None

    def _grant(self, permission_set: str | None, wanted: list[str]) -> None:
        granted = {
            record["Field"]: record
            for record in (
                self._query(
                    format_soql(
                        "SELECT Id, Field, PermissionsRead, PermissionsEdit FROM FieldPermissions "
                        "WHERE ParentId = {} AND SobjectType = {}",
                        permission_set,
                        self.mapping.object,
                    )
                )
                if permission_set
                else []
            )
        }
        full = {"PermissionsRead": True, "PermissionsEdit": True}
        for field in wanted:
            name = f"{self.mapping.object}.{field}"
            current = granted.get(name)
            if current is None:
                self._change(
                    f"grant read and edit of {name} in {PERMISSION_SET}",
                    lambda name=name: self.client.FieldPermissions.create(
                        {
                            "ParentId": permission_set,
                            "SobjectType": self.mapping.object,
                            "Field": name,
                            **full,
                        }
                    ),
                )
            elif not (current["PermissionsRead"] and current["PermissionsEdit"]):
                self._change(
                    f"grant read and edit of {name} in {PERMISSION_SET} (was read-only)",
                    lambda record=current["Id"]: self.client.FieldPermissions.update(record, full),
                )

    def _assign(self, permission_set: str | None) -> None:
        user = self.call(lambda: self.client.restful("chatter/users/me"))["id"]
        if permission_set and self._query(
            format_soql(
                "SELECT Id FROM PermissionSetAssignment WHERE PermissionSetId = {} "
                "AND AssigneeId = {}",
                permission_set,
                user,
            )
        ):
            return
        self._change(
            f"assign {PERMISSION_SET} to the signed-in user {user}",
            lambda: self.client.PermissionSetAssignment.create(
                {"PermissionSetId": permission_set, "AssigneeId": user}
            ),
        )

    def _change(self, description: str, make: Callable[[], Any]) -> Any:
        self.changes.append(description)
        return None if self.dry_run else self.call(make)

    def _query(self, soql: str) -> list[dict[str, Any]]:
        return self.call(lambda: self.client.query_all(soql))["records"]


def existing_custom_fields(client: Salesforce, object_name: str, call: Call) -> set[str]:
    """The object's custom fields, whether or not the signed-in user may see them (describe
    shows only those field-level security lets it read)."""
    soql = format_soql(
        "SELECT Id, DeveloperName FROM CustomField WHERE TableEnumOrId = {}", object_name
    )
    result = call(lambda: client.toolingexecute("query/", params={"q": soql}))
    return {f"{record['DeveloperName']}__c" for record in result["records"]}


def access_problems(object_name: str, unreadable: list[str], uneditable: list[str]) -> list[str]:
    """What the integration user lacks on fields that exist, and how to grant it."""
    fix = (
        f"assign the permission set {PERMISSION_SET} ({SETUP_COMMAND}) or grant {{}} in its "
        "field-level security"
    )
    return [
        *(
            f"{object_name}.{field} exists but the integration user cannot read it: "
            + fix.format("Read")
            for field in unreadable
        ),
        *(
            f"{object_name}.{field} exists but the integration user cannot edit it: "
            + fix.format("Edit")
            for field in uneditable
        ),
    ]
