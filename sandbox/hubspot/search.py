"""HubSpot CRM search bodies as SQL over the contacts table.

Filter groups are OR'ed, the filters inside a group AND'ed. Strings compare case-insensitively;
numbers numerically; dates and datetimes as epoch milliseconds (ISO strings are accepted too).
As in HubSpot, NEQ, NOT_IN and NOT_CONTAINS_TOKEN also match contacts without a value. Results
are ordered by the requested sorts, then by id, so paging over ties is deterministic.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.hubspot.schema import (
    ID_PROPERTY,
    InvalidRequest,
    expect_known_fields,
    expect_list,
    expect_string,
    parse_instant,
    parse_number,
)

MAX_GROUPS, MAX_FILTERS_PER_GROUP, MAX_FILTERS = 5, 6, 18
MAX_PAGE, DEFAULT_PAGE = 200, 10
RESULT_CAP = 10_000
COMPARISONS = {"EQ": "=", "LT": "<", "LTE": "<=", "GT": ">", "GTE": ">="}
OPERATORS = {
    *COMPARISONS,
    "NEQ",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
}
QUERY_PROPERTIES = ("firstname", "lastname", "email", "company")
SEARCH_FIELDS = ("filterGroups", "filters", "sorts", "query", "properties", "limit", "after")
FILTER_FIELDS = ("propertyName", "operator", "value", "values", "highValue")
Definitions = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class SearchQuery:
    where: str
    params: list[Any]
    order_by: str
    limit: int
    offset: int


def compile_search(body: Any, definitions: Definitions) -> SearchQuery:
    """A search body as SQL; a top-level `filters` list is one more filter group, as HubSpot
    takes it."""
    body = expect_known_fields(body, SEARCH_FIELDS, "PublicObjectSearchRequest")
    groups = expect_list(body.get("filterGroups", []), "filterGroups")
    if "filters" in body:
        groups = [*groups, {"filters": expect_list(body["filters"], "filters")}]
    where, params = _filter_groups(groups, definitions)
    query_where, query_params = _free_text(body.get("query"))
    return SearchQuery(
        where=f'"_archived" = 0 AND ({where}) AND ({query_where})',
        params=[*params, *query_params],
        order_by=_order_by(body.get("sorts", []), definitions),
        limit=_limit(body.get("limit", DEFAULT_PAGE)),
        offset=_offset(body.get("after")),
    )


def _filter_groups(groups: Any, definitions: Definitions) -> tuple[str, list[Any]]:
    groups = [expect_known_fields(group, ("filters",), "FilterGroup") for group in groups]
    filter_lists = [
        expect_list(group.get("filters", []), "filterGroups[].filters") for group in groups
    ]
    if len(groups) > MAX_GROUPS:
        raise InvalidRequest(
            f"Too many filter groups ({len(groups)}); at most {MAX_GROUPS} are allowed."
        )
    if any(len(filters) > MAX_FILTERS_PER_GROUP for filters in filter_lists):
        raise InvalidRequest(
            f"Too many filters in a filter group; at most "
            f"{MAX_FILTERS_PER_GROUP} are allowed per group."
        )
    if sum(len(filters) for filters in filter_lists) > MAX_FILTERS:
        raise InvalidRequest(
            f"Too many filters; at most {MAX_FILTERS} are allowed across all filter groups."
        )
    if not filter_lists:
        return "1", []
    clauses, params = [], []
    for filters in filter_lists:
        conditions = [
            _condition(expect_known_fields(item, FILTER_FIELDS, "Filter"), definitions)
            for item in filters
        ]
        clauses.append(" AND ".join(sql for sql, _ in conditions) or "1")
        params.extend(value for _, values in conditions for value in values)
    return " OR ".join(f"({clause})" for clause in clauses), params


def _condition(item: dict[str, Any], definitions: Definitions) -> tuple[str, list[Any]]:
    name = expect_string(item.get("propertyName"), "filters[].propertyName")
    operator = expect_string(item.get("operator"), "filters[].operator")
    if operator not in OPERATORS:
        raise InvalidRequest(f"Unknown filter operator {operator!r}.")
    definition = _definition(name, definitions)
    column, kind = f'"{name}"', _kind(definition)
    compared = f"lower({column})" if kind == "text" else column
    if operator == "HAS_PROPERTY":
        return f"{column} IS NOT NULL", []
    if operator == "NOT_HAS_PROPERTY":
        return f"{column} IS NULL", []
    if operator in COMPARISONS:
        return f"{compared} {COMPARISONS[operator]} ?", [_operand(item, "value", kind)]
    if operator == "NEQ":
        return f"({column} IS NULL OR {compared} <> ?)", [_operand(item, "value", kind)]
    if operator == "BETWEEN":
        low, high = _operand(item, "value", kind), _operand(item, "highValue", kind)
        return f"{compared} BETWEEN ? AND ?", [low, high]
    if operator in ("IN", "NOT_IN"):
        values = [_convert(value, kind) for value in expect_list(item.get("values"), "values")]
        if not values:
            raise InvalidRequest(f"{operator} needs at least one value in 'values'.")
        marks = ", ".join("?" for _ in values)
        if operator == "IN":
            return f"{compared} IN ({marks})", values
        return f"({column} IS NULL OR {compared} NOT IN ({marks}))", values
    if kind != "text":
        raise InvalidRequest(f"{operator} applies to text properties only, not {name}.")
    pattern = _token_pattern(expect_string(item.get("value"), "filters[].value"))
    padded = f"(' ' || lower({column}) || ' ')"
    if operator == "CONTAINS_TOKEN":
        return f"{padded} LIKE ? ESCAPE '\\'", [pattern]
    return f"({column} IS NULL OR {padded} NOT LIKE ? ESCAPE '\\')", [pattern]


def _token_pattern(token: str) -> str:
    escaped = token.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    if "*" in token:
        return " " + escaped.replace("*", "%") + " "
    return f"% {escaped} %"


def _definition(name: str, definitions: Definitions) -> Mapping[str, Any]:
    definition = definitions.get(name)
    if definition is None:
        raise InvalidRequest(f"Property {name!r} does not exist.")
    return definition


def _kind(definition: Mapping[str, Any]) -> str:
    if definition["type"] in ("number", "datetime", "date"):
        return definition["type"]
    return "text"


def _operand(item: dict[str, Any], key: str, kind: str) -> Any:
    if item.get(key) is None:
        raise InvalidRequest(f"The filter on {item.get('propertyName')} needs '{key}'.")
    return _convert(item[key], kind)


def _convert(value: Any, kind: str) -> Any:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InvalidRequest(f"Filter value {value!r} must be a string.")
    text = str(value)
    try:
        if kind == "number":
            return parse_number(text)
        if kind in ("datetime", "date"):
            return parse_instant(text)
    except ValueError as error:
        raise InvalidRequest(f"Invalid filter value: {error}.") from None
    return text.lower()


def _free_text(query: Any) -> tuple[str, list[Any]]:
    if query is None:
        return "1", []
    words = expect_string(query, "query").lower().split()
    if not words:
        return "1", []
    clauses, params = [], []
    for word in words:
        pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        alternatives = [f"lower(\"{name}\") LIKE ? ESCAPE '\\'" for name in QUERY_PROPERTIES]
        clauses.append("(" + " OR ".join(alternatives) + ")")
        params.extend([pattern] * len(QUERY_PROPERTIES))
    return " AND ".join(clauses), params


def _order_by(sorts: Any, definitions: Definitions) -> str:
    terms = []
    for sort in expect_list(sorts, "sorts"):
        name, direction = _sort(sort)
        definition = _definition(name, definitions)
        column = f'"{name}"'
        collated = f"{column} COLLATE NOCASE" if _kind(definition) == "text" else column
        order = "DESC" if direction == "DESCENDING" else "ASC"
        terms.append(f"{column} IS NULL, {collated} {order}")
    return ", ".join([*terms, f'"{ID_PROPERTY}" ASC'])


def _sort(sort: Any) -> tuple[str, str]:
    """A sort as `{propertyName, direction}` or as a string, `-name` meaning descending."""
    if isinstance(sort, str):
        return (sort[1:], "DESCENDING") if sort.startswith("-") else (sort, "ASCENDING")
    sort = expect_known_fields(sort, ("propertyName", "direction"), "sorts[]")
    name = expect_string(sort.get("propertyName"), "sorts[].propertyName")
    direction = expect_string(sort.get("direction", "ASCENDING"), "sorts[].direction")
    if direction not in ("ASCENDING", "DESCENDING"):
        raise InvalidRequest(f"Sort direction must be ASCENDING or DESCENDING, not {direction!r}.")
    return name, direction


def _limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 0 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be an integer from 0 to {MAX_PAGE}.")
    return limit


def _offset(after: Any) -> int:
    if after is None or after == "":
        return 0
    text = str(after) if isinstance(after, int) and not isinstance(after, bool) else after
    if not isinstance(text, str) or not re.fullmatch(r"\d{1,9}", text):
        raise InvalidRequest(f"after must be a paging cursor from a previous page, not {after!r}.")
    offset = int(text)
    if offset >= RESULT_CAP:
        raise InvalidRequest(
            f"Search results are limited to {RESULT_CAP:,}; paging beyond "
            f"{RESULT_CAP:,} results is not possible. Narrow the search with "
            "filters."
        )
    return offset
