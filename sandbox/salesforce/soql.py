"""The SOQL subset the connectors use, translated to parameterized SQLite over the Lead table.

    SELECT field, ... | COUNT() FROM Lead
    [WHERE condition] [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST], ...] [LIMIT n] [OFFSET n]

Conditions: AND, OR, NOT and parentheses over `field op literal`, `field [NOT] IN (...)` and
`field LIKE 'pattern'`. As in SOQL, string comparisons ignore case, and `!=` / `NOT IN` also
match null values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, NoReturn

from sandbox.salesforce.schema import Field, field_named, parse_date, parse_datetime

TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<string>'(?:[^'\\]|\\.)*')
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\d:T]))
  | (?P<number>[+-]?\d+(?:\.\d+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<operator>!=|<>|<=|>=|=|<|>)
  | (?P<punctuation>[(),])
    """,
    re.VERBOSE,
)
ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}
SQL_OPERATORS = {"=": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
LITERAL_KINDS = {"string", "datetime", "date", "number", "true", "false", "null"}
NUMERIC_TYPES = {"int", "double", "currency"}
TIMES = re.compile(r"\d{4}-\d{2}-\d{2}(?:T[\d:.]+(?:Z|[+-]\d{2}:?\d{2})?)?")


def without_times(text: str) -> str:
    """SOQL with its date and time literals blanked: the sandbox's fault draws key on queries,
    and a run's window moves from run to run."""
    return TIMES.sub("?", text)


class SoqlError(Exception):
    def __init__(self, error_code: str, message: str):
        super().__init__(message)
        self.error_code, self.message = error_code, message


@dataclass(frozen=True)
class Token:
    kind: str  # a TOKEN group name, or a lower-case keyword/literal: "true", "false", "null"
    text: str
    position: int


@dataclass
class Query:
    fields: list[Field]  # empty for COUNT()
    count_only: bool = False
    where: str = "1"
    params: list[Any] = field(default_factory=list)
    order_by: str | None = None
    limit: int | None = None
    offset: int = 0


def parse(soql: str) -> Query:
    return _Parser(soql).query()


def tokenize(soql: str) -> list[Token]:
    tokens, position = [], 0
    while position < len(soql):
        match = TOKEN.match(soql, position)
        if match is None:
            raise SoqlError("MALFORMED_QUERY", f"unexpected token: '{soql[position:].split()[0]}'")
        kind, text = match.lastgroup or "", match.group()
        if kind == "name" and text.lower() in ("true", "false", "null"):
            kind = text.lower()
        if kind != "space":
            tokens.append(Token(kind, text, position))
        position = match.end()
    return tokens


class _Parser:
    def __init__(self, soql: str):
        self.soql = soql
        self.tokens = tokenize(soql)
        self.index = 0
        self.params: list[Any] = []

    def query(self) -> Query:
        self._keyword("SELECT")
        query = self._count() if self._at_keyword("COUNT") else Query(self._select_list())
        self._keyword("FROM")
        self._object_name()
        if self._take_keyword("WHERE"):
            query.where = self._disjunction()
            query.params = self.params
        if self._take_keyword("ORDER"):
            self._keyword("BY")
            query.order_by = self._order_by()
        if self._take_keyword("LIMIT"):
            query.limit = self._integer()
        if self._take_keyword("OFFSET"):
            query.offset = self._integer()
        if self._peek() is not None:
            self._unexpected()
        return query

    def _count(self) -> Query:
        self.index += 1
        self._punctuation("(")
        self._punctuation(")")
        return Query(fields=[], count_only=True)

    def _select_list(self) -> list[Field]:
        fields = [self._field()]
        while self._take_punctuation(","):
            fields.append(self._field())
        return list(dict.fromkeys(fields))

    def _object_name(self) -> None:
        token = self._expect("name")
        if token.text.lower() != "lead":
            raise SoqlError(
                "INVALID_TYPE",
                f"\n{self.soql}\n{self._pointer(token)}\nsObject type '{token.text}' is not "
                "supported. If you are attempting to use a custom object, be sure to append the "
                "'__c' after the entity name. Please reference your WSDL or the describe call for "
                "the appropriate names.",
            )

    def _order_by(self) -> str:
        terms = [self._order_term()]
        while self._take_punctuation(","):
            terms.append(self._order_term())
        return ", ".join(terms)

    def _order_term(self) -> str:
        field = self._field()
        term = _column(field) + _collation(field)
        if self._take_keyword("DESC"):
            term += " DESC"
        else:
            self._take_keyword("ASC")
        if self._take_keyword("NULLS"):
            if not (self._take_keyword("FIRST") or self._take_keyword("LAST")):
                self._unexpected()
            term += f" NULLS {self.tokens[self.index - 1].text.upper()}"
        return term

    def _disjunction(self) -> str:
        parts = [self._conjunction()]
        while self._take_keyword("OR"):
            parts.append(self._conjunction())
        return parts[0] if len(parts) == 1 else "(" + " OR ".join(parts) + ")"

    def _conjunction(self) -> str:
        parts = [self._negation()]
        while self._take_keyword("AND"):
            parts.append(self._negation())
        return parts[0] if len(parts) == 1 else "(" + " AND ".join(parts) + ")"

    def _negation(self) -> str:
        if self._take_keyword("NOT"):
            return f"NOT {self._negation()}"
        if self._take_punctuation("("):
            inner = self._disjunction()
            self._punctuation(")")
            return f"({inner})"
        return self._comparison()

    def _comparison(self) -> str:
        field = self._field()
        if self._take_keyword("NOT"):
            self._keyword("IN")
            return self._membership(field, negated=True)
        if self._take_keyword("IN"):
            return self._membership(field, negated=False)
        if self._take_keyword("LIKE"):
            return self._like(field)
        operator = SQL_OPERATORS[self._expect("operator").text]
        token = self._literal()
        column = _column(field)
        if token.kind == "null":
            if operator not in ("=", "!="):
                self._unexpected(token)
            return f"{column} IS {'NOT ' if operator == '!=' else ''}NULL"
        self.params.append(self._value(field, token))
        comparison = f"{column} {operator} ?{_collation(field)}"
        return f"({column} IS NULL OR {comparison})" if operator == "!=" else comparison

    def _membership(self, field: Field, negated: bool) -> str:
        self._punctuation("(")
        values = [self._value(field, self._literal())]
        while self._take_punctuation(","):
            values.append(self._value(field, self._literal()))
        self._punctuation(")")
        self.params.extend(values)
        marks = ", ".join("?" for _ in values)
        column = _column(field)
        if negated:
            return f"({column} IS NULL OR {column}{_collation(field)} NOT IN ({marks}))"
        return f"{column}{_collation(field)} IN ({marks})"

    def _like(self, field: Field) -> str:
        token = self._expect("string")
        if not field.is_text:
            self._invalid_value(field, token)
        self.params.append(_like_pattern(token.text[1:-1]))
        return f"{_column(field)} LIKE ? ESCAPE '\\'"

    def _value(self, field: Field, token: Token) -> Any:
        """A literal as the stored value it is compared with, if its kind fits the field's type."""
        if token.kind == "null":
            return None
        if field.is_text and token.kind == "string":
            return _unescape(token.text[1:-1])
        if field.type in NUMERIC_TYPES and token.kind == "number":
            return float(token.text)
        if field.type == "boolean" and token.kind in ("true", "false"):
            return int(token.kind == "true")
        if field.type == "datetime" and token.kind == "datetime":
            return parse_datetime(token.text)
        if field.type == "date" and token.kind == "date":
            value = parse_date(token.text)
            if value is not None:
                return value
        self._invalid_value(field, token)

    def _invalid_value(self, field: Field, token: Token) -> NoReturn:
        quoting = "be enclosed" if field.is_text else "not be enclosed"
        expected = "string" if field.is_text else field.type
        raise SoqlError(
            "INVALID_FIELD",
            f"\n{self.soql}\n{self._pointer(token)}\nvalue of filter criterion for field "
            f"'{field.name}' must be of type {expected} and should {quoting} in quotes",
        )

    def _field(self) -> Field:
        token = self._expect("name")
        field = field_named(token.text)
        if field is None:
            raise SoqlError(
                "INVALID_FIELD",
                f"\n{self.soql}\n{self._pointer(token)}\nNo such column '{token.text}' on entity "
                "'Lead'. If you are attempting to use a custom field, be sure to append the '__c' "
                "after the custom field name. Please reference your WSDL or the describe call for "
                "the appropriate names.",
            )
        return field

    def _literal(self) -> Token:
        token = self._peek()
        if token is None or token.kind not in LITERAL_KINDS:
            self._unexpected(token)
        self.index += 1
        return token

    def _integer(self) -> int:
        token = self._expect("number")
        if not token.text.isdigit():
            self._unexpected(token)
        return int(token.text)

    def _pointer(self, token: Token) -> str:
        return f"{' ' * token.position}^\nERROR at Row:1:Column:{token.position + 1}"

    def _peek(self) -> Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def _expect(self, kind: str) -> Token:
        token = self._peek()
        if token is None or token.kind != kind:
            self._unexpected(token)
        self.index += 1
        return token

    def _at_keyword(self, keyword: str) -> bool:
        token = self._peek()
        return token is not None and token.kind == "name" and token.text.upper() == keyword

    def _take_keyword(self, keyword: str) -> bool:
        if self._at_keyword(keyword):
            self.index += 1
            return True
        return False

    def _keyword(self, keyword: str) -> None:
        if not self._take_keyword(keyword):
            self._unexpected()

    def _take_punctuation(self, mark: str) -> bool:
        token = self._peek()
        if token is not None and token.kind == "punctuation" and token.text == mark:
            self.index += 1
            return True
        return False

    def _punctuation(self, mark: str) -> None:
        if not self._take_punctuation(mark):
            self._unexpected()

    def _unexpected(self, token: Token | None = None) -> NoReturn:
        token = token or self._peek()
        if token is None:
            raise SoqlError("MALFORMED_QUERY", "unexpected end of query")
        raise SoqlError(
            "MALFORMED_QUERY",
            f"\n{self.soql}\n{self._pointer(token)}\nunexpected token: '{token.text}'",
        )


def _column(field: Field) -> str:
    return f'"{field.name}"'


def _collation(field: Field) -> str:
    return " COLLATE NOCASE" if field.is_text and field.type not in ("id", "reference") else ""


def _unescape(body: str) -> str:
    return re.sub(r"\\(.)", lambda match: _escaped(match.group(1)), body)


def _escaped(char: str) -> str:
    if char not in ESCAPES:
        raise SoqlError("MALFORMED_QUERY", f"Invalid string literal: unknown escape '\\{char}'")
    return ESCAPES[char]


def _like_pattern(body: str) -> str:
    r"""A SOQL LIKE pattern for SQLite's LIKE ... ESCAPE '\': `\%` and `\_` stay literal
    wildcards escaped, every other escape becomes its character (a backslash escaped again)."""
    parts = re.split(r"(\\.)", body)
    pattern = ""
    for part in parts:
        if part in ("\\%", "\\_"):
            pattern += part
        elif part.startswith("\\") and len(part) == 2:
            char = _escaped(part[1])
            pattern += "\\\\" if char == "\\" else char
        else:
            pattern += part
    return pattern
