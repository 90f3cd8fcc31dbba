"""The data-quality thresholds: what a lead record must look like before leadsync trusts it.

Defined once, in the `data_quality:` section of scoring/rules.yaml; the lead contract
(expectations/suite.py) is built from them, and scoring reads the contract's verdict.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class DataQuality(BaseModel):
    """Placeholders and bounds that send a record to a person to fix. Value sets apply only
    where given (e.g. a CRM picklist); None means the column is not checked against one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    placeholder_values: list[str] = Field(min_length=1)
    max_employees: float = Field(gt=0)
    max_annual_revenue: float = Field(gt=0)
    countries: frozenset[str] | None = None
    industries: frozenset[str] | None = None
