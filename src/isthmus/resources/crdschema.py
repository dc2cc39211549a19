"""Custom resources checked against their CRD's structural `openAPIV3Schema`.

What this module promises:

* `validate_custom(schema, obj)` returns a `ValidationResult` whose `errors`
  follow Kubernetes' wording for custom resources, naming the path, the value
  and the rule, e.g. `spec.gatewayPort: Invalid value: "string":
  spec.gatewayPort in body must be of type integer: "string"`, `spec.mode:
  Unsupported value: "x": supported values: "a", "b"`, `spec.name: Required
  value`; and whose `unknown_fields` lists the fields the schema neither
  declares nor preserves (`spec.foo`, `spec.items[0].bar`).
* `prune_custom(schema, obj)` returns a copy without those unknown fields and
  without `null`s in non-nullable fields, as Kubernetes prunes custom resources
  before storing them. The input is never modified.
* `validate_resource` / `prune_resource` pick the built-in or the CRD schema
  from a `ResourceType`.

Supported keywords: type, properties, required, enum, minimum/maximum (and
their boolean exclusive forms), multipleOf, minLength/maxLength, pattern,
minItems/maxItems, uniqueItems, minProperties/maxProperties, items,
additionalProperties (maps), nullable, format (int32/int64/float/double on
numbers; date-time, date, uuid, ipv4, ipv6, cidr, byte, hostname on strings;
others are accepted as is), allOf/anyOf/oneOf/not (value checks only, as in
structural schemas), `x-kubernetes-preserve-unknown-fields` (fields under such
a node are neither unknown nor pruned), `x-kubernetes-int-or-string` and
`x-kubernetes-embedded-resource` (apiVersion and kind required, metadata
checked as ObjectMeta).

At the top level `apiVersion`, `kind` and `metadata` are always allowed;
`metadata` is checked and pruned as a Kubernetes ObjectMeta. CEL rules
(`x-kubernetes-validations`) and defaults are not applied.

Pure: no I/O.
"""

from __future__ import annotations

import binascii
import ipaddress
import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

from isthmus.resources.registry import ResourceType
from isthmus.resources.schemas import (
    OBJECT_META,
    ValidationResult,
    copy_json,
    format_value,
    json_type,
    prune_definition,
    prune_unknown,
    validate_builtin,
    validate_definition,
)

_ROOT_ALWAYS = ("apiVersion", "kind", "metadata")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _number_str(n: Any) -> str:
    if isinstance(n, float) and n.is_integer():
        return str(int(n))
    return str(n)


def _is_preserved(schema: Mapping[str, Any]) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


# --------------------------------------------------------------------------- formats

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")
_DATE_TIME_RE = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")


def _format_ok(fmt: str, value: str) -> bool:
    try:
        if fmt in ("date-time", "datetime"):
            return bool(_DATE_TIME_RE.match(value)) and datetime.fromisoformat(value.upper()) is not None
        if fmt == "date":
            return len(value) == 10 and date.fromisoformat(value) is not None
        if fmt in ("uuid", "uuid3", "uuid4", "uuid5"):
            return bool(_UUID_RE.match(value))
        if fmt == "ipv4":
            ipaddress.IPv4Address(value)
            return True
        if fmt == "ipv6":
            ipaddress.IPv6Address(value)
            return True
        if fmt == "cidr":
            ipaddress.ip_network(value, strict=False)
            return "/" in value
        if fmt == "byte":
            binascii.a2b_base64(value, strict_mode=True)
            return True
        if fmt == "hostname":
            return bool(_HOSTNAME_RE.match(value))
    except ValueError:
        return False
    return True  # a format Kubernetes does not check, or one this module does not know


# --------------------------------------------------------------------------- validation


class _Walker:
    """One validation pass; `report_unknown` is off inside allOf/anyOf/oneOf/not branches."""

    def __init__(self, res: ValidationResult, report_unknown: bool = True) -> None:
        self.res = res
        self.report_unknown = report_unknown

    def invalid(self, path: str, value: Any, detail: str) -> None:
        self.res.errors.append(f"{path}: Invalid value: {format_value(value)}: {detail}")

    def type_error(self, path: str, value: Any, expected: str) -> None:
        actual = json_type(value)
        self.res.errors.append(
            f'{path}: Invalid value: "{actual}": {path} in body must be of type {expected}: "{actual}"')

    def walk(self, schema: Mapping[str, Any], value: Any, path: str) -> None:
        if value is None:
            if schema.get("nullable") or (not schema.get("type") and not schema.get("x-kubernetes-int-or-string")):
                return
            self.type_error(path, value, str(schema.get("type") or "integer or string"))
            return
        if not self._check_type(schema, value, path):
            return
        self._check_value(schema, value, path)
        for key in ("allOf", "anyOf", "oneOf", "not"):
            if key in schema:
                self._combinators(schema, value, path)
                break
        if isinstance(value, dict):
            self._object(schema, value, path)
        elif isinstance(value, list):
            items = schema.get("items")
            if isinstance(items, Mapping):
                for i, v in enumerate(value):
                    self.walk(items, v, f"{path}[{i}]")

    def _check_type(self, schema: Mapping[str, Any], value: Any, path: str) -> bool:
        if schema.get("x-kubernetes-int-or-string"):
            if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
                return True
            self.type_error(path, value, "integer or string")
            return False
        t = schema.get("type")
        if not t:
            return True
        actual = json_type(value)
        ok = (actual == t or (t == "number" and actual == "integer")
              or (t == "integer" and actual == "number" and float(value).is_integer()))
        if not ok:
            self.type_error(path, value, str(t))
        return ok

    def _check_value(self, schema: Mapping[str, Any], value: Any, path: str) -> None:
        enum = schema.get("enum")
        if enum is not None and value not in enum:
            supported = ", ".join(format_value(e) for e in enum)
            self.res.errors.append(f"{path}: Unsupported value: {format_value(value)}: supported values: {supported}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            self._check_number(schema, value, path)
        elif isinstance(value, str):
            self._check_string(schema, value, path)
        elif isinstance(value, list):
            self._check_array(schema, value, path)
        elif isinstance(value, dict):
            n = len(value)
            lo, hi = schema.get("minProperties"), schema.get("maxProperties")
            if lo is not None and n < lo:
                self.invalid(path, n, f"{path} in body should have at least {lo} properties")
            if hi is not None and n > hi:
                self.res.errors.append(f"{path}: Too many: {n}: must have at most {hi} items")

    def _check_number(self, schema: Mapping[str, Any], value: float, path: str) -> None:
        lo = schema.get("minimum")
        if lo is not None:
            if schema.get("exclusiveMinimum"):
                if not value > lo:
                    self.invalid(path, value, f"{path} in body should be greater than {_number_str(lo)}")
            elif not value >= lo:
                self.invalid(path, value, f"{path} in body should be greater than or equal to {_number_str(lo)}")
        hi = schema.get("maximum")
        if hi is not None:
            if schema.get("exclusiveMaximum"):
                if not value < hi:
                    self.invalid(path, value, f"{path} in body should be less than {_number_str(hi)}")
            elif not value <= hi:
                self.invalid(path, value, f"{path} in body should be less than or equal to {_number_str(hi)}")
        mult = schema.get("multipleOf")
        if mult:
            q = value / mult
            if abs(q - round(q)) > 1e-9:
                self.invalid(path, value, f"{path} in body should be a multiple of {_number_str(mult)}")
        fmt = schema.get("format")
        if fmt in ("int32", "int64") and isinstance(value, int):
            bits = 31 if fmt == "int32" else 63
            if not -(2**bits) <= value < 2**bits:
                self.invalid(path, value, f"{path} in body must be of type {fmt}: {_number_str(value)}")

    def _check_string(self, schema: Mapping[str, Any], value: str, path: str) -> None:
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        n = len(value)
        if lo is not None and n < lo:
            self.invalid(path, value, f"{path} in body should be at least {lo} chars long")
        if hi is not None and n > hi:
            unit = "byte" if hi == 1 else "bytes"
            self.res.errors.append(f"{path}: Too long: may not be more than {hi} {unit}")
        pattern = schema.get("pattern")
        if pattern is not None:
            try:
                matched = re.search(pattern, value) is not None
            except re.error:
                matched = True  # a pattern Python cannot compile is not held against the object
            if not matched:
                self.invalid(path, value, f"{path} in body should match '{pattern}'")
        fmt = schema.get("format")
        if fmt and not schema.get("x-kubernetes-int-or-string") and not _format_ok(str(fmt), value):
            self.invalid(path, value, f"{path} in body must be of type {fmt}: {format_value(value)}")

    def _check_array(self, schema: Mapping[str, Any], value: list[Any], path: str) -> None:
        n = len(value)
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        if lo is not None and n < lo:
            self.invalid(path, n, f"{path} in body should have at least {lo} items")
        if hi is not None and n > hi:
            self.res.errors.append(f"{path}: Too many: {n}: must have at most {hi} items")
        if schema.get("uniqueItems"):
            seen: set[str] = set()
            for i, v in enumerate(value):
                key = json.dumps(v, sort_keys=True)
                if key in seen:
                    self.res.errors.append(f"{path}[{i}]: Duplicate value: {format_value(v)}")
                seen.add(key)

    def _branch_errors(self, branch: Mapping[str, Any], value: Any, path: str) -> list[str]:
        sub = ValidationResult()
        _Walker(sub, report_unknown=False).walk(branch, value, path)
        return sub.errors

    def _combinators(self, schema: Mapping[str, Any], value: Any, path: str) -> None:
        for branch in schema.get("allOf") or ():
            self.res.errors.extend(self._branch_errors(branch, value, path))
        any_of = schema.get("anyOf")
        if any_of:
            results = [self._branch_errors(b, value, path) for b in any_of]
            if all(results):
                for errs in results:
                    self.res.errors.extend(errs)
                self.invalid(path, value, f"{path} in body must match at least one schema (anyOf)")
        one_of = schema.get("oneOf")
        if one_of:
            passing = sum(1 for b in one_of if not self._branch_errors(b, value, path))
            if passing != 1:
                self.invalid(path, value, f"{path} in body must validate one and only one schema (oneOf)")
        not_ = schema.get("not")
        if isinstance(not_, Mapping) and not self._branch_errors(not_, value, path):
            self.invalid(path, value, f"{path} in body must not validate the schema (not)")

    def _object(self, schema: Mapping[str, Any], value: dict[str, Any], path: str) -> None:
        props: Mapping[str, Any] = schema.get("properties") or {}
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        preserve = _is_preserved(schema)
        additional = schema.get("additionalProperties")
        for k, v in value.items():
            child_path = _join(path, k)
            sub = props.get(k)
            if sub is not None:
                if v is None and not sub.get("nullable"):
                    continue  # pruned before validation, as Kubernetes does
                self.walk(sub, v, child_path)
                if embedded and k == "metadata" and isinstance(v, dict):
                    self._metadata(v, child_path, values_only=True)
            elif embedded and k in _ROOT_ALWAYS:
                if k == "metadata":
                    self._metadata(v, child_path, values_only=False)
                elif not isinstance(v, str) or not v:
                    self.invalid(child_path, v, "must be a non-empty string")
            elif isinstance(additional, Mapping):
                if v is None and not additional.get("nullable"):
                    continue
                self.walk(additional, v, child_path)
            elif additional is True or preserve:
                continue
            elif self.report_unknown:
                self.res.unknown_fields.append(child_path)
        for r in schema.get("required") or ():
            if r not in value or (value[r] is None and not (props.get(r) or {}).get("nullable")):
                self.res.errors.append(f"{_join(path, r)}: Required value")
        if embedded and value:
            for k in ("apiVersion", "kind"):
                if k not in value and k not in (schema.get("required") or ()):
                    self.res.errors.append(f"{_join(path, k)}: Required value: must not be empty")

    def _metadata(self, value: Any, path: str, values_only: bool) -> None:
        sub = validate_definition(OBJECT_META, value, path)
        self.res.errors.extend(sub.errors)
        if self.report_unknown and not values_only:
            self.res.unknown_fields.extend(sub.unknown_fields)


def validate_custom(schema: Mapping[str, Any] | None, obj: Mapping[str, Any]) -> ValidationResult:
    """Validate a custom resource against its CRD version's openAPIV3Schema.

    A missing schema accepts everything (and reports nothing unknown).
    """
    res = ValidationResult()
    if not schema:
        return res
    walker = _Walker(res)
    props: Mapping[str, Any] = schema.get("properties") or {}
    for k in ("apiVersion", "kind"):
        v = obj.get(k)
        if v is not None and not isinstance(v, str):
            walker.type_error(k, v, "string")
    meta = obj.get("metadata")
    if meta is not None:
        sub = validate_definition(OBJECT_META, meta, "metadata")
        res.extend(sub)
        if "metadata" in props and isinstance(meta, dict):
            # The CRD may only constrain metadata.name/generateName; check values, nothing is unknown there.
            _Walker(res, report_unknown=False).walk(props["metadata"], meta, "metadata")
    rest = {k: v for k, v in obj.items() if k not in _ROOT_ALWAYS}
    root = {**schema, "properties": {k: v for k, v in props.items() if k not in _ROOT_ALWAYS}}
    root["required"] = [r for r in schema.get("required") or () if r not in _ROOT_ALWAYS]
    walker.walk(root, rest, "")
    return res


# --------------------------------------------------------------------------- pruning




def _prune(schema: Mapping[str, Any], value: Any) -> Any:
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            return [_prune(items, v) for v in value]
        return copy_json(value)
    if not isinstance(value, dict):
        return value
    props: Mapping[str, Any] = schema.get("properties") or {}
    embedded = bool(schema.get("x-kubernetes-embedded-resource"))
    preserve = _is_preserved(schema)
    additional = schema.get("additionalProperties")
    out: dict[str, Any] = {}
    for k, v in value.items():
        sub = props.get(k)
        if sub is not None:
            if v is None and not sub.get("nullable"):
                continue
            pruned = _prune(sub, v)
            if embedded and k == "metadata" and isinstance(pruned, dict):
                pruned = prune_definition(OBJECT_META, pruned)
            out[k] = pruned
        elif embedded and k in _ROOT_ALWAYS:
            out[k] = prune_definition(OBJECT_META, v) if k == "metadata" else v
        elif isinstance(additional, Mapping):
            if v is None and not additional.get("nullable"):
                continue
            out[k] = _prune(additional, v)
        elif additional is True or preserve:
            out[k] = copy_json(v)
    return out


def prune_custom(schema: Mapping[str, Any] | None, obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a custom resource without unknown fields and non-nullable nulls."""
    if not schema:
        return dict(copy_json(dict(obj)))
    props: Mapping[str, Any] = schema.get("properties") or {}
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if k in ("apiVersion", "kind"):
            out[k] = v
        elif k == "metadata":
            out[k] = prune_definition(OBJECT_META, v)
    root = {**schema, "properties": {k: v for k, v in props.items() if k not in _ROOT_ALWAYS}}
    rest = _prune(root, {k: v for k, v in obj.items() if k not in _ROOT_ALWAYS})
    out.update(rest)
    return out


# --------------------------------------------------------------------------- by resource type


def validate_resource(rt: ResourceType, obj: Mapping[str, Any]) -> ValidationResult:
    """Validate against the built-in schema or the CRD schema, whichever `rt` has."""
    if rt.definition is not None:
        return validate_builtin(rt, obj)
    return validate_custom(rt.crd_schema, obj)


def prune_resource(rt: ResourceType, obj: Mapping[str, Any]) -> dict[str, Any]:
    """Prune with the built-in schema or the CRD schema, whichever `rt` has."""
    if rt.definition is not None:
        return prune_unknown(rt, obj)
    return prune_custom(rt.crd_schema, obj)
