"""Label selectors and field selectors of the embedded Kubernetes API.

isthmus's API server filters lists and watches with the ``labelSelector`` and
``fieldSelector`` query parameters, and matches Pods against the selectors of
Deployments, ReplicaSets and Services. This module parses those selectors and
decides whether an object matches.

Promises:

* Kubernetes' syntax and semantics: the same texts parse, they match the same
  label sets, and keys and values are validated by the same rules
  (:mod:`isthmus.core.names`);
* every invalid input raises :class:`SelectorError`, a :class:`ValueError`
  whose message names the offending part and says what was expected;
* selectors are immutable values; ``str()`` gives a canonical text that
  parses back to an equal selector;
* pure: no I/O, no state.

Label selector text is a comma-separated list of requirements::

    key=value   key==value   key!=value
    key in (v1,v2)   key notin (v1,v2)
    key   !key   key>5   key<5

``key!=value`` and ``notin`` also match objects that lack the label; an empty
selector matches everything. Field selector text is a comma-separated list of
``field=value``, ``field==value`` and ``field!=value``, where ``\\``, ``,`` and
``=`` in values are escaped with a backslash.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from isthmus.core.jsonvalue import json_type
from isthmus.core.names import validate_label_key, validate_label_value

__all__ = [
    "FieldRequirement",
    "FieldSelector",
    "LabelSelector",
    "Operator",
    "Requirement",
    "SelectorError",
    "object_fields",
    "parse_field_selector",
    "parse_label_selector",
    "selector_from_label_selector_object",
    "selector_from_set",
]


class SelectorError(ValueError):
    """A label or field selector that cannot be parsed or is invalid."""


def _quote(text: str) -> str:
    """``text`` in double quotes, with quotes and backslashes escaped."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# --------------------------------------------------------------------------- labels


class Operator(enum.StrEnum):
    """The operator of one label requirement."""

    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    IN = "in"
    NOT_IN = "notin"
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_INT64_RE = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _parse_int64(text: str) -> int | None:
    """``text`` as a signed 64-bit decimal integer, or None if it is none."""
    if not _INT64_RE.fullmatch(text):
        return None
    value = int(text)
    if not _INT64_MIN <= value <= _INT64_MAX:
        return None
    return value


@dataclass(frozen=True)
class Requirement:
    """One ``key <operator> values`` term of a label selector.

    ``values`` is sorted and free of duplicates; it holds exactly one value for
    the equality and comparison operators and none for EXISTS and
    DOES_NOT_EXIST.
    """

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether a label set satisfies this requirement."""
        op = self.operator
        if op in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.IN):
            return self.key in labels and labels[self.key] in self.values
        if op in (Operator.NOT_EQUALS, Operator.NOT_IN):
            return self.key not in labels or labels[self.key] not in self.values
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        # GREATER_THAN / LESS_THAN: both sides must be integers.
        if self.key not in labels or len(self.values) != 1:
            return False
        have = _parse_int64(labels[self.key])
        want = _parse_int64(self.values[0])
        if have is None or want is None:
            return False
        return have > want if op is Operator.GREATER_THAN else have < want

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return "!" + self.key
        joined = ",".join(self.values)
        if op is Operator.IN:
            return f"{self.key} in ({joined})"
        if op is Operator.NOT_IN:
            return f"{self.key} notin ({joined})"
        symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
        return f"{self.key}{symbol}{joined}"


def _new_requirement(key: str, op: Operator, values: Iterable[str]) -> Requirement:
    """A validated requirement; raises SelectorError with the reason otherwise."""
    vals = tuple(sorted(set(values)))
    problems: list[str] = []
    key_errors = validate_label_key(key)
    if key_errors:
        problems.append(f"invalid label key {_quote(key)}: " + "; ".join(key_errors))
    if op in (Operator.IN, Operator.NOT_IN):
        if not vals:
            problems.append(f"values for '{op.value}' must not be empty")
    elif op in (Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS):
        if len(vals) != 1:
            problems.append(f"operator '{op.value}' needs exactly one value")
    elif op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        if vals:
            problems.append(f"operator '{op.value}' takes no values")
    else:
        symbol = ">" if op is Operator.GREATER_THAN else "<"
        if len(vals) != 1:
            problems.append(f"operator '{symbol}' needs exactly one value")
        problems.extend(
            f"the value for '{symbol}' must be an integer, found {_quote(v)}"
            for v in vals
            if _parse_int64(v) is None
        )
    for value in vals:
        value_errors = validate_label_value(value)
        if value_errors:
            problems.append(
                f"invalid label value {_quote(value)} for key {_quote(key)}: "
                + "; ".join(value_errors)
            )
    if problems:
        raise SelectorError("; ".join(problems))
    return Requirement(key, op, vals)


@dataclass(frozen=True)
class LabelSelector:
    """A conjunction of label requirements.

    The empty selector matches every label set. ``matches_nothing`` marks the
    selector of a missing ``metav1.LabelSelector``, which matches no label set.
    """

    requirements: tuple[Requirement, ...] = ()
    matches_nothing: bool = False

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls((), matches_nothing=True)

    @property
    def empty(self) -> bool:
        """True for the selector that matches everything."""
        return not self.requirements and not self.matches_nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether ``labels`` (None meaning no labels) satisfies every requirement."""
        if self.matches_nothing:
            return False
        have: Mapping[str, str] = labels if labels is not None else {}
        return all(req.matches(have) for req in self.requirements)

    def __str__(self) -> str:
        return ",".join(str(req) for req in self.requirements)


def _selector(requirements: Iterable[Requirement]) -> LabelSelector:
    return LabelSelector(tuple(sorted(requirements, key=lambda r: r.key)))


# Label selector text is split into tokens first.

_WHITESPACE = " \t\r\n"
_SPECIAL = "=!(),<>"
_IDENT, _END = "identifier", "end"
_IN_KEYWORDS = ("in", "notin")
_BINARY_OPERATORS = "'=', '==', '!=', 'in', 'notin', '>' or '<'"


@dataclass(frozen=True)
class _Token:
    kind: str  # _IDENT, _END, or the symbol itself: "=", "==", "!=", "!", "(", ...
    text: str
    start: int

    def describe(self) -> str:
        return "end of selector" if self.kind == _END else f"'{self.text}'"


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i] in _WHITESPACE:
            i += 1
        if i >= n:
            tokens.append(_Token(_END, "", n))
            return tokens
        if text[i] in _SPECIAL:
            symbol = text[i : i + 2] if text[i : i + 2] in ("!=", "==") else text[i]
            tokens.append(_Token(symbol, symbol, i))
            i += len(symbol)
            continue
        start = i
        while i < n and text[i] not in _WHITESPACE and text[i] not in _SPECIAL:
            i += 1
        tokens.append(_Token(_IDENT, text[start:i], start))


class _LabelParser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.pos = 0

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        token = self.tokens[self.pos]
        if token.kind != _END:
            self.pos += 1
        return token

    def selector_error(self, detail: str) -> SelectorError:
        return SelectorError(f"unable to parse label selector {_quote(self.text)}: {detail}")

    def requirement_text(self, first: int) -> str:
        """The source text of the requirement starting at token ``first``."""
        depth = 0
        for token in self.tokens[first:]:
            if token.kind == "(":
                depth += 1
            elif token.kind == ")":
                depth = max(depth - 1, 0)
            elif token.kind == _END or (token.kind == "," and depth == 0):
                return self.text[self.tokens[first].start : token.start].strip()
        return self.text[self.tokens[first].start :].strip()  # pragma: no cover

    def parse(self) -> LabelSelector:
        requirements: list[Requirement] = []
        token = self.peek()
        if token.kind == _END:
            return LabelSelector()
        if token.kind not in (_IDENT, "!"):
            raise self.selector_error(f"found {token.describe()}, expected '!' or a label key")
        while True:
            first = self.pos
            try:
                requirements.append(self.requirement())
                after = self.take()
                if after.kind not in (",", _END):
                    raise SelectorError(
                        f"found {after.describe()}, expected ',' or end of selector"
                    )
            except SelectorError as exc:
                raise SelectorError(
                    f"unable to parse requirement: {_quote(self.requirement_text(first))}: {exc}"
                ) from None
            if after.kind == _END:
                return _selector(requirements)
            following = self.peek()
            if following.kind not in (_IDENT, "!"):
                raise self.selector_error(
                    f"found {following.describe()} after ',', expected '!' or a label key"
                )

    def requirement(self) -> Requirement:
        token = self.take()
        negated = token.kind == "!"
        if negated:
            token = self.take()
        if token.kind != _IDENT:
            where = " after '!'" if negated else ""
            raise SelectorError(f"found {token.describe()}{where}, expected a label key")
        key = token.text
        key_errors = validate_label_key(key)
        if key_errors:
            raise SelectorError(f"invalid label key {_quote(key)}: " + "; ".join(key_errors))
        if negated:
            return _new_requirement(key, Operator.DOES_NOT_EXIST, ())
        if self.peek().kind in (",", _END):
            return _new_requirement(key, Operator.EXISTS, ())
        op_token = self.take()
        if op_token.kind == _IDENT and op_token.text in _IN_KEYWORDS:
            op = Operator.IN if op_token.text == "in" else Operator.NOT_IN
            return _new_requirement(key, op, self.value_set(op))
        ops = {
            "=": Operator.EQUALS,
            "==": Operator.DOUBLE_EQUALS,
            "!=": Operator.NOT_EQUALS,
            ">": Operator.GREATER_THAN,
            "<": Operator.LESS_THAN,
        }
        if op_token.kind not in ops:
            raise SelectorError(
                f"found {op_token.describe()}, expected an operator ({_BINARY_OPERATORS})"
            )
        return _new_requirement(key, ops[op_token.kind], (self.exact_value(op_token.text),))

    def exact_value(self, op_text: str) -> str:
        token = self.peek()
        if token.kind in (",", _END):
            return ""  # `key=` selects the empty value
        self.take()
        if token.kind != _IDENT:
            raise SelectorError(f"found {token.describe()}, expected a value after '{op_text}'")
        return token.text

    def value_set(self, op: Operator) -> list[str]:
        """``(v1,v2,...)``; an empty item between commas is the empty value."""
        if self.take().kind != "(":
            raise SelectorError(f"values for '{op.value}' must be in parentheses")
        values: list[str] = []
        item: str | None = None  # the value of the current comma-separated item
        while True:
            token = self.take()
            if token.kind == _IDENT and item is None:
                item = token.text
            elif token.kind == _IDENT:
                raise SelectorError(f"found {token.describe()}, expected ',' or ')'")
            elif token.kind in (",", ")"):
                values.append(item if item is not None else "")
                item = None
                if token.kind == ")":
                    return values
            elif item is None:
                raise SelectorError(f"found {token.describe()}, expected a value, ',' or ')'")
            else:
                raise SelectorError(f"found {token.describe()}, expected ',' or ')'")


def parse_label_selector(text: str) -> LabelSelector:
    """Parse label selector text such as ``app=web,tier in (a,b),!canary``.

    The empty (or all-blank) text is the selector that matches everything.
    Raises SelectorError for invalid text.
    """
    return _LabelParser(text).parse()


def selector_from_set(labels: Mapping[str, str] | None) -> LabelSelector:
    """The selector matching label sets that contain all of ``labels``.

    This is how a Service's ``spec.selector`` map selects Pods. An empty or
    missing map gives the empty selector, which matches everything; callers
    that want "no selector selects nothing" check for that themselves.
    """
    if not labels:
        return LabelSelector()
    if not isinstance(labels, Mapping):
        raise SelectorError(f"a label set must be a map of strings, got {json_type(labels)}")
    requirements = []
    for key, value in labels.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise SelectorError(
                f"a label set must map strings to strings, got {_quote(str(key))}: {json_type(value)}"
            )
        requirements.append(_new_requirement(key, Operator.EQUALS, (value,)))
    return _selector(requirements)


_OBJECT_OPERATORS = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}




def selector_from_label_selector_object(obj: Mapping[str, Any] | None) -> LabelSelector:
    """The selector of a ``metav1.LabelSelector`` in its JSON form.

    ``{"matchLabels": {...}, "matchExpressions": [{"key", "operator",
    "values"}]}`` with the operators In, NotIn, Exists and DoesNotExist, as in
    Deployment and ReplicaSet ``spec.selector``. An object with neither part
    matches everything; None (no selector at all) matches nothing.
    """
    if obj is None:
        return LabelSelector.nothing()
    if not isinstance(obj, Mapping):
        raise SelectorError(f"a label selector must be an object, got {json_type(obj)}")
    requirements: list[Requirement] = []
    match_labels = obj.get("matchLabels")
    if match_labels is not None:
        if not isinstance(match_labels, Mapping):
            raise SelectorError(
                f"matchLabels must be a map of strings to strings, got {json_type(match_labels)}"
            )
        for key, value in match_labels.items():
            if not isinstance(value, str):
                raise SelectorError(
                    f"matchLabels[{_quote(str(key))}] must be a string, got {json_type(value)}"
                )
            try:
                requirements.append(_new_requirement(str(key), Operator.EQUALS, (value,)))
            except SelectorError as exc:
                raise SelectorError(f"matchLabels[{_quote(str(key))}]: {exc}") from None
    expressions = obj.get("matchExpressions")
    if expressions is not None:
        if not isinstance(expressions, list):
            raise SelectorError(
                f"matchExpressions must be a list of objects, got {json_type(expressions)}"
            )
        for index, expr in enumerate(expressions):
            requirements.append(_expression_requirement(index, expr))
    return _selector(requirements)


def _expression_requirement(index: int, expr: Any) -> Requirement:
    where = f"matchExpressions[{index}]"
    if not isinstance(expr, Mapping):
        raise SelectorError(f"{where} must be an object, got {json_type(expr)}")
    key = expr.get("key")
    if not isinstance(key, str):
        raise SelectorError(f"{where}.key must be a string, got {json_type(key)}")
    op_name = expr.get("operator")
    if not isinstance(op_name, str) or op_name not in _OBJECT_OPERATORS:
        shown = _quote(op_name) if isinstance(op_name, str) else json_type(op_name)
        raise SelectorError(
            f"{where}: {shown} is not a valid label selector operator, "
            "expected one of In, NotIn, Exists, DoesNotExist"
        )
    values = expr.get("values")
    if values is None:
        values = []
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise SelectorError(f"{where}.values must be a list of strings")
    try:
        return _new_requirement(key, _OBJECT_OPERATORS[op_name], values)
    except SelectorError as exc:
        raise SelectorError(f"{where}: {exc}") from None


# --------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class FieldRequirement:
    """``field=value`` (``negated`` False) or ``field!=value`` (``negated`` True)."""

    field: str
    value: str
    negated: bool = False

    def matches(self, fields: Mapping[str, str]) -> bool:
        # A field the object lacks has the empty value.
        return (fields.get(self.field, "") == self.value) != self.negated

    def __str__(self) -> str:
        return f"{self.field}{'!=' if self.negated else '='}{_escape_field_value(self.value)}"


@dataclass(frozen=True)
class FieldSelector:
    """A conjunction of field requirements; the empty one matches everything."""

    requirements: tuple[FieldRequirement, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.requirements

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Whether the field values of an object (see object_fields) satisfy all terms."""
        return all(req.matches(fields) for req in self.requirements)

    def requires_exact_match(self, field_name: str) -> str | None:
        """The value ``field_name`` must equal, if a ``field=value`` term says so."""
        for req in self.requirements:
            if req.field == field_name and not req.negated:
                return req.value
        return None

    def __str__(self) -> str:
        return ",".join(str(req) for req in self.requirements)


def _escape_field_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _split_field_terms(text: str) -> list[str]:
    """Split at commas that are not escaped with a backslash."""
    terms: list[str] = []
    start, escaped = 0, False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _unescape_field_value(raw: str, term: str) -> str:
    out: list[str] = []
    escaped = False
    for ch in raw:
        if escaped:
            if ch not in "\\,=":
                raise SelectorError(
                    f"invalid field selector term {_quote(term)}: invalid escape sequence '\\{ch}', "
                    "expected '\\\\', '\\,' or '\\='"
                )
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            raise SelectorError(
                f"invalid field selector term {_quote(term)}: unescaped '{ch}' in value, "
                f"expected '\\{ch}'"
            )
        else:
            out.append(ch)
    if escaped:
        raise SelectorError(
            f"invalid field selector term {_quote(term)}: value ends in a lone '\\', "
            "expected '\\\\', '\\,' or '\\='"
        )
    return "".join(out)


def _split_field_term(term: str) -> tuple[str, str, str] | None:
    """(field, operator, raw value), split at the first operator in ``term``."""
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


def parse_field_selector(text: str, allowed: Collection[str]) -> FieldSelector:
    """Parse field selector text such as ``metadata.name=web,status.phase!=Failed``.

    ``allowed`` holds the field names the resource supports; any other field
    raises SelectorError ``field label not supported: <field>``. Text is taken
    as it is (no trimming of blanks); empty terms are skipped, so the empty
    text matches everything.
    """
    terms = sorted(term for term in _split_field_terms(text) if term)
    requirements: list[FieldRequirement] = []
    expected = "expected <field>=<value>, <field>==<value> or <field>!=<value>"
    for term in terms:
        split = _split_field_term(term)
        if split is None:
            raise SelectorError(
                f"invalid field selector {_quote(text)}: can't understand {_quote(term)}, "
                + expected
            )
        name, op, raw = split
        if not name:
            raise SelectorError(
                f"invalid field selector {_quote(text)}: {_quote(term)} has no field name, "
                + expected
            )
        requirements.append(FieldRequirement(name, _unescape_field_value(raw, term), op == "!="))
    for req in requirements:
        if req.field not in allowed:
            raise SelectorError(f"field label not supported: {req.field}")
    return FieldSelector(tuple(requirements))


def object_fields(obj: Mapping[str, Any], namespaced: bool) -> dict[str, str]:
    """The selectable fields every object has: its name and, if namespaced, namespace."""
    metadata = obj.get("metadata")
    meta: Mapping[str, Any] = metadata if isinstance(metadata, Mapping) else {}
    name = meta.get("name")
    fields = {"metadata.name": name if isinstance(name, str) else ""}
    if namespaced:
        namespace = meta.get("namespace")
        fields["metadata.namespace"] = namespace if isinstance(namespace, str) else ""
    return fields
