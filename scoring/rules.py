"""The scoring rules: `rules.yaml` loaded into a validated model.

A rules file with a mistake fails at load with `RulesError`, naming the file, the line, the key
path and the offending value, so RevOps can fix it without reading a traceback.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from expectations.quality import DataQuality

DEFAULT_RULES_PATH = Path(__file__).with_name("rules.yaml")
# libyaml's parser where PyYAML was built with it: ten times faster than the pure-Python one,
# which every run would otherwise pay for when it loads the rules.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

Points = Annotated[int, Field(ge=-100, le=100)]


def _compiles(pattern: str) -> str:
    try:
        re.compile(pattern, re.IGNORECASE)
    except re.error as error:
        raise ValueError(f"not a valid regular expression: {error}") from None
    return pattern


TitlePattern = Annotated[str, AfterValidator(_compiles)]


class RulesError(ValueError):
    """A rules file that cannot be used, with a message that says where and why."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Band(_Model):
    """Values at or above `at_least` (and below the next band) earn `points`."""

    at_least: float
    points: Points
    label: str = Field(min_length=1, max_length=40)


class Banded(_Model):
    label: str = Field(min_length=1, max_length=40)
    bands: list[Band] = Field(min_length=1)
    missing_points: Points = 0
    missing_label: str = Field(default="not stated", max_length=40)

    @field_validator("bands")
    @classmethod
    def _ascending(cls, bands: list[Band]) -> list[Band]:
        bounds = [band.at_least for band in bands]
        if bounds != sorted(set(bounds)):
            raise ValueError(f"bands must have strictly ascending at_least values, got {bounds}")
        return bands


class Lookup(_Model):
    """Points per known value, matched case-insensitively; other values earn `other_points`."""

    label: str = Field(min_length=1, max_length=40)
    points: dict[Annotated[str, Field(min_length=1, max_length=40)], Points] = Field(min_length=1)
    other_points: Points = 0
    missing_points: Points = 0

    @field_validator("points")
    @classmethod
    def _unique_ignoring_case(cls, points: dict[str, int]) -> dict[str, int]:
        lowered = [key.strip().lower() for key in points]
        duplicates = sorted({key for key in lowered if lowered.count(key) > 1})
        if duplicates:
            raise ValueError(f"values listed twice (case-insensitively): {duplicates}")
        return points


class SeniorityLevel(_Model):
    name: str = Field(min_length=1, max_length=30)
    title_pattern: TitlePattern
    points: Points
    decision_maker: bool = False


class Seniority(_Model):
    label: str = Field(default="Seniority", max_length=40)
    levels: list[SeniorityLevel] = Field(min_length=1)


class Fit(_Model):
    industry: Lookup
    company_size: Banded
    revenue: Banded
    country: Lookup
    seniority: Seniority


class TimelineWindow(_Model):
    within_days: int = Field(ge=0, le=3650)
    points: Points


class Timeline(_Model):
    windows: list[TimelineWindow] = Field(min_length=1)
    missing_points: Points = 0

    @field_validator("windows")
    @classmethod
    def _ascending(cls, windows: list[TimelineWindow]) -> list[TimelineWindow]:
        days = [window.within_days for window in windows]
        if days != sorted(set(days)):
            raise ValueError(f"windows must have strictly ascending within_days, got {days}")
        return windows


class Authority(_Model):
    decision_maker_points: Points
    not_decision_maker_points: Points = 0


class Intent(_Model):
    budget: Banded
    authority: Authority
    need: Lookup
    timeline: Timeline


class EngagementSignal(_Model):
    label: str = Field(min_length=1, max_length=30)
    label_one: str = Field(min_length=1, max_length=30)
    points_each: float = Field(gt=0, le=100)
    max_points: Points = Field(gt=0)


class Engagement(_Model):
    half_life_days: float = Field(gt=0, le=3650)
    page_views: EngagementSignal
    email_opens: EngagementSignal
    form_submissions: EngagementSignal


class DomainSignal(_Model):
    points: Points = Field(le=0)
    domains: list[str] = Field(min_length=1)
    disqualifies: bool = False


class CompetitorSignal(DomainSignal):
    companies: list[str] = []


class TitleSignal(_Model):
    points: Points = Field(le=0)
    title_pattern: TitlePattern
    disqualifies: bool = False


class BadDataSignal(_Model):
    """Points for a lead the data contract sent to review (rules.data_quality)."""

    points: Points = Field(le=0)


class Negative(_Model):
    free_mail: DomainSignal
    competitor: CompetitorSignal
    student_or_job_seeker: TitleSignal
    bad_data: BadDataSignal


class Status(_Model):
    qualified_at_or_above: Points = Field(gt=0)
    nurture_at_or_above: Points = Field(gt=0)
    hysteresis: int = Field(ge=0, le=20)
    review_when_conflict_with_fit_at_least: Points = Field(ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> Status:
        gap = self.qualified_at_or_above - self.nurture_at_or_above
        if gap <= 2 * self.hysteresis:
            raise ValueError(
                "qualified_at_or_above must exceed nurture_at_or_above by more than twice the "
                f"hysteresis (got {self.qualified_at_or_above}, {self.nurture_at_or_above}, "
                f"{self.hysteresis})"
            )
        return self


class HumanOwned(_Model):
    crm_statuses: list[str] = []


class Reasons(_Model):
    max_factors: int = Field(ge=1, le=6)


class Rules(_Model):
    version: int = Field(ge=1)
    fit: Fit
    intent: Intent
    engagement: Engagement
    negative: Negative
    status: Status
    human_owned: HumanOwned
    reasons: Reasons
    data_quality: DataQuality


def load_rules(path: str | Path = DEFAULT_RULES_PATH) -> Rules:
    """Read and validate a rules file; raise `RulesError` naming line, key and value if wrong."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise RulesError(f"{path}: cannot read rules file: {error.strerror}") from None
    return parse_rules(text, path)


def parse_rules(text: str, origin: str | Path = "<rules>") -> Rules:
    """Validate the text of a rules file; `origin` names it in a `RulesError`."""
    try:
        raw = yaml.load(text, Loader=SAFE_LOADER)
    except yaml.YAMLError as error:
        raise RulesError(f"{origin}: not valid YAML: {error}") from None
    try:
        return Rules.model_validate(raw)
    except ValidationError as error:
        raise RulesError(_describe(origin, yaml.compose(text), error)) from None


RulesPath = tuple[str | int, ...]


def rewrite_rules(
    text: str, values: Mapping[RulesPath, int | float]
) -> tuple[str, list[RulesPath]]:
    """`text` with the number at each path (e.g. ("fit", "industry", "points", "SaaS")) set to
    its new value and nothing else changed: comments, order, quoting and layout stay. Returns
    the new text and the paths the text does not hold (a value left to its default)."""
    tree = yaml.compose(text)
    spans, absent = [], []
    for path, value in values.items():
        node = _node_at(tree, list(path))
        if isinstance(node, yaml.ScalarNode):
            spans.append((node.start_mark.index, node.end_mark.index, f"{value:g}"))
        else:
            absent.append(path)
    for start, end, number in sorted(spans, reverse=True):
        text = text[:start] + number + text[end:]
    return text, absent


def _describe(path: str | Path, tree: yaml.Node | None, error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        location = [part for part in item["loc"] if not str(part).startswith("function-")]
        key = ".".join(str(part) for part in location) or "(top level)"
        line = _line_of(tree, location)
        where = f"line {line}, " if line else ""
        problems.append(f"{where}{key} = {item['input']!r}: {item['msg']}")
    return f"{path}: invalid rules:\n  " + "\n  ".join(problems)


def _line_of(node: yaml.Node | None, location: list[Any]) -> int | None:
    """Line number (1-based) of the YAML node at `location`, or of its nearest existing parent."""
    for depth in range(len(location), -1, -1):
        found = _node_at(node, location[:depth])
        if found is not None:
            return found.start_mark.line + 1
    return None


def _node_at(node: yaml.Node | None, location: list[Any]) -> yaml.Node | None:
    for part in location:
        if isinstance(node, yaml.MappingNode):
            node = next((value for key, value in node.value if key.value == str(part)), None)
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            return None
    return node
