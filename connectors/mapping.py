"""Field mappings: which CRM field holds each canonical column, in a file RevOps can change.

Each connector ships a default (`connectors/<crm>/mapping.yaml`); a copy with other field names
can be passed instead. At start-up the connector checks every mapped field against the CRM's
describe or properties call, so a missing custom field fails the run before anything is read.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from expectations.frame import COLUMNS

WRITE_BACK_COLUMNS = ("status", "score", "reason", "qualified_at")


class MappingError(ValueError):
    pass


class FieldMapping(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    object: str = Field(min_length=1)
    read: dict[str, str] = Field(min_length=1, description="canonical column -> CRM field")
    write: dict[str, str] = Field(min_length=1, description="write-back column -> CRM field")
    closed_statuses: list[str] = Field(
        default_factory=list, description="CRM statuses that end qualification (not requalified)"
    )
    converted_values: list[str] = Field(
        default_factory=list,
        description="HubSpot: values of the property mapped to `converted` that mean converted "
        "(Salesforce maps a boolean field, IsConverted)",
    )
    unworked_statuses: list[str] = Field(
        default_factory=list,
        description="CRM statuses of a lead sales has not worked yet (an empty status counts too)",
    )

    @model_validator(mode="after")
    def _known_columns(self) -> FieldMapping:
        unknown = sorted(set(self.read) - set(COLUMNS))
        if unknown:
            raise ValueError(f"read maps unknown canonical columns {unknown}")
        missing = sorted({"crm_id", "modified_at"} - set(self.read))
        if missing:
            raise ValueError(f"read must map {missing}")
        not_write_back = sorted(set(self.write) - set(WRITE_BACK_COLUMNS))
        if not_write_back:
            raise ValueError(f"write may only map {list(WRITE_BACK_COLUMNS)}, not {not_write_back}")
        return self

    @property
    def id_field(self) -> str:
        return self.read["crm_id"]

    @property
    def modified_field(self) -> str:
        return self.read["modified_at"]

    def fields(self) -> list[str]:
        """Every CRM field the connector reads or writes, each once."""
        return list(dict.fromkeys([*self.read.values(), *self.write.values()]))

    def missing_from(self, available: set[str]) -> list[str]:
        return [field for field in self.fields() if field not in available]


def load_mapping(path: str | Path) -> FieldMapping:
    path = Path(path)
    try:
        return FieldMapping.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except OSError as error:
        raise MappingError(f"{path}: cannot read field mapping: {error.strerror}") from None
    except (yaml.YAMLError, ValidationError) as error:
        raise MappingError(f"{path}: invalid field mapping: {error}") from None
