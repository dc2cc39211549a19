"""Decoding of Kubernetes protobuf request bodies into the objects' JSON form.

kubectl and other clients built on typed Kubernetes clients send request bodies
as `application/vnd.kubernetes.protobuf` for built-in kinds (`kubectl create
namespace`, `create deployment`, `create token`, `auth can-i`, ...). This server
keeps and serves objects as JSON, so it only needs to read such bodies and turn
them into the dict that the same request sent as JSON would have carried.

What this module promises:

* `decode(body)` takes a whole request body: the 4-byte magic `k8s\\x00`
  followed by a `runtime.Unknown` envelope (1: typeMeta {1: apiVersion,
  2: kind}, 2: raw, 3: contentEncoding, 4: contentType) whose `raw` is the
  object's own message. It returns the object as Kubernetes' JSON shape, with
  camelCase field names, `apiVersion` and `kind` set.
* Values take their Kubernetes JSON form: times as RFC 3339 strings
  (`MicroTime` with microseconds), durations as Go duration strings (`"10s"`),
  IntOrString as a number or a string, quantities as strings, `bytes` (Secret
  data) as base64, maps as objects, RawExtension and managed-field sets as the
  JSON they carry.
* Go's protobuf marshalers write every non-pointer field, so empty values
  appear on the wire that JSON would leave out. They are dropped as JSON's
  `omitempty` would: empty strings, zero numbers and false, empty lists and
  maps, zero times and empty nested objects. A field whose Go JSON tag has no
  `omitempty` keeps its zero value (`containerPort: 0`, `allowed: false`), and
  a pointer field keeps whatever was sent (`replicas: 0`, `emptyDir: {}`).
* Nothing is dropped silently: a kind, message or field number that the table
  in `isthmus.resources.protobuf_fields` does not know, a wire type that does
  not fit the field, and a truncated or malformed body all raise
  `ProtobufError`, whose message says what was wrong and where.

Pure: no I/O.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from isthmus.resources.protobuf_fields import Field, message_for, messages

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"

# The wire layer is written here rather than taken from the `protobuf` library:
# Kubernetes' JSON mapping is not protobuf's canonical JSON mapping (IntOrString,
# Quantity, Time and RawExtension have their own JSON forms, maps travel as
# repeated entry messages, proto2 presence and Go's omitempty decide which
# zero values appear), so json_format would not produce Kubernetes JSON, and
# the four wire types fit in a few dozen lines.
VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5
_WIRE_NAMES = {VARINT: "varint", FIXED64: "64-bit", LENGTH: "length-delimited",
               3: "start-group", 4: "end-group", FIXED32: "32-bit"}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ProtobufError(ValueError):
    """The body is not a Kubernetes protobuf object this server can read."""


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf request body (magic + runtime.Unknown)."""
    if not body.startswith(MAGIC):
        raise ProtobufError(
            f"the body is not Kubernetes protobuf: it must start with the 4 bytes "
            f"'k8s\\x00', but starts with {bytes(body[:4])!r}")
    envelope = _strings(body[len(MAGIC):], "runtime.Unknown", (1, 2, 3, 4))
    type_meta = _strings(envelope.get(1, b""), "runtime.Unknown typeMeta", (1, 2))
    api_version, kind = _text(type_meta.get(1, b"")), _text(type_meta.get(2, b""))
    encoding = _text(envelope.get(3, b""))
    if encoding:
        raise ProtobufError(f"the protobuf body uses contentEncoding {encoding!r}; "
                            f"only unencoded bodies are supported, send it as JSON")
    if not kind:
        raise ProtobufError("the protobuf body does not say its kind (runtime.Unknown "
                            "typeMeta.kind is empty)")
    name = message_for(api_version, kind)
    if name is None:
        raise ProtobufError(
            f"{kind} ({api_version or 'no apiVersion'}) cannot be sent as protobuf to "
            f"this server; send it as JSON (Content-Type: application/json)")
    obj = _message(envelope.get(2, b""), name, kind)
    return {"apiVersion": api_version, "kind": kind, **obj}


def _strings(data: bytes, name: str, numbers: tuple[int, ...]) -> dict[int, bytes]:
    """The length-delimited fields of a small envelope message, by number."""
    out: dict[int, bytes] = {}
    for number, wire, value in _fields(data, name):
        if number not in numbers:
            raise ProtobufError(f"{name}: field {number} is not valid (it has fields "
                                f"{', '.join(map(str, numbers))})")
        out[number] = _expect(value, wire, LENGTH, f"field {number} of {name}")
    return out


# --------------------------------------------------------------------------- wire layer


def _varint(data: bytes, pos: int, where: str) -> tuple[int, int]:
    result = shift = 0
    start = pos
    while True:
        if pos >= len(data):
            raise ProtobufError(f"{where}: truncated varint at byte {start} "
                                f"(the data ends after {len(data) - start} byte(s))")
        if pos - start >= 10:
            raise ProtobufError(f"{where}: varint at byte {start} is longer than 10 bytes")
        b = data[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        shift += 7
        if b < 0x80:
            return result & 0xFFFF_FFFF_FFFF_FFFF, pos


def _fields(data: bytes, where: str) -> Iterator[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of each field of a message, in order."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos, where)
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError(f"{where}: field number 0 at byte {pos} is not valid")
        value: int | bytes
        if wire == VARINT:
            value, pos = _varint(data, pos, f"{where}, field {number}")
        elif wire == LENGTH:
            size, pos = _varint(data, pos, f"{where}, length of field {number}")
            if size > len(data) - pos:
                raise ProtobufError(
                    f"{where}: field {number} is truncated: it says it is {size} bytes "
                    f"long but only {len(data) - pos} remain")
            value, pos = bytes(data[pos:pos + size]), pos + size
        elif wire in (FIXED64, FIXED32):
            size = 8 if wire == FIXED64 else 4
            if size > len(data) - pos:
                raise ProtobufError(f"{where}: field {number} is truncated: a "
                                    f"{_WIRE_NAMES[wire]} value needs {size} bytes but "
                                    f"only {len(data) - pos} remain")
            value, pos = int.from_bytes(data[pos:pos + size], "little"), pos + size
        else:
            raise ProtobufError(f"{where}: field {number} uses wire type {wire} "
                                f"({_WIRE_NAMES.get(wire, 'unknown')}), which Kubernetes "
                                f"messages never use")
        yield number, wire, value


def _expect(value: int | bytes, wire: int, want: int, where: str) -> Any:
    if wire != want:
        raise ProtobufError(f"{where} was sent as a {_WIRE_NAMES[wire]} value, "
                            f"expected {_WIRE_NAMES[want]}")
    return value


def _text(raw: bytes) -> str:
    # Go strings need not be UTF-8; Go's JSON encoder replaces invalid bytes the same way.
    return raw.decode("utf-8", errors="replace")


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


# --------------------------------------------------------------------------- messages


def _message(data: bytes, name: str, path: str) -> dict[str, Any]:
    table = messages().get(name)
    if table is None:
        raise ProtobufError(f"{path}: message {name} is not known to this server's "
                            f"protobuf decoder; send the object as JSON")
    seen: dict[int, list[tuple[int, int | bytes]]] = {}
    for number, wire, value in _fields(data, f"{path} ({name})"):
        if number not in table:
            raise ProtobufError(f"{path}: field {number} of message {name} is not known "
                                f"to this server's protobuf decoder; send the object as JSON")
        seen.setdefault(number, []).append((wire, value))
    out: dict[str, Any] = {}
    for number, values in seen.items():
        field = table[number]
        where = f"{path}.{field.json}" if field.json else path
        if field.map:
            entries = {}
            for wire, value in values:
                key, item = _map_entry(_expect(value, wire, LENGTH, where), field, where)
                entries[key] = item
            out[field.json] = entries
        elif field.repeated:
            out[field.json] = _repeated(values, field, where)
        elif field.kind == "message":
            # Repeated occurrences of a singular message merge, like concatenated bytes.
            raw = b"".join(_expect(v, w, LENGTH, where) for w, v in values)
            sub = _message(raw, field.message or "", where)
            if field.inline:
                out.update(sub)
            elif sub or field.pointer:
                out[field.json] = sub
        else:
            wire, value = values[-1]
            item = _value(wire, value, field, where)
            if item is not None and (field.pointer or field.always or not _empty(item, field)):
                out[field.json] = item
    return out


def _repeated(values: list[tuple[int, int | bytes]], field: Field, where: str) -> list[Any]:
    items: list[Any] = []
    for wire, value in values:
        if wire == LENGTH and field.kind in ("bool", "int32", "int64"):
            pos, packed = 0, _expect(value, wire, LENGTH, where)
            while pos < len(packed):
                number, pos = _varint(packed, pos, f"{where} (packed)")
                items.append(_value(VARINT, number, field, f"{where}[{len(items)}]"))
        elif field.kind == "message":
            items.append(_message(_expect(value, wire, LENGTH, where), field.message or "",
                                  f"{where}[{len(items)}]"))
        else:
            items.append(_value(wire, value, field, f"{where}[{len(items)}]"))
    return items


def _map_entry(data: bytes, field: Field, where: str) -> tuple[str, Any]:
    key, raw = "", None
    for number, wire, value in _fields(data, f"{where} (map entry)"):
        if number == 1:
            key = _text(_expect(value, wire, LENGTH, f"{where} map key"))
        elif number == 2:
            raw = (wire, value)
        else:
            raise ProtobufError(f"{where}: map entry field {number} is not valid "
                                f"(entries have key=1 and value=2)")
    where = f"{where}[{key!r}]"
    if field.kind == "message":
        return key, _message(_expect(raw[1], raw[0], LENGTH, where) if raw else b"",
                             field.message or "", where)
    if raw is None:
        raw = (VARINT, 0) if field.kind in ("bool", "int32", "int64") else (LENGTH, b"")
    return key, _value(raw[0], raw[1], field, where)


def _value(wire: int, value: int | bytes, field: Field, where: str) -> Any:
    kind = field.kind
    if kind == "bool":
        return _expect(value, wire, VARINT, where) != 0
    if kind == "int32":
        return _signed(_expect(value, wire, VARINT, where), 32)
    if kind == "int64":
        return _signed(_expect(value, wire, VARINT, where), 64)
    raw: bytes = _expect(value, wire, LENGTH, where)
    if kind == "string":
        return _text(raw)
    if kind == "bytes":
        return base64.b64encode(raw).decode("ascii")
    return _special(kind, raw, where)


def _empty(item: Any, field: Field) -> bool:
    if field.kind == "IntOrString":
        return item == 0
    if field.kind == "Quantity":
        return item in ("", "0")
    if field.kind == "Duration":
        return item == "0s"
    return item in ("", 0, False, [], {})


# --------------------------------------------------------------------------- special types


def _special(kind: str, raw: bytes, where: str) -> Any:
    """The JSON form of a message type that Kubernetes encodes in JSON its own way."""
    fields = {n: (w, v) for n, w, v in _fields(raw, f"{where} ({kind})")}

    def get(number: int, want: int, default: Any) -> Any:
        if number not in fields:
            return default
        wire, value = fields[number]
        return _expect(value, wire, want, f"{where} ({kind} field {number})")

    if kind in ("Time", "MicroTime"):
        _only(fields, (1, 2), kind, where)
        seconds = _signed(get(1, VARINT, 0), 64)
        nanos = _signed(get(2, VARINT, 0), 32)
        if seconds == 0 and nanos == 0:
            return None  # the zero time, which JSON writes as null
        seconds, nanos = seconds + nanos // 1_000_000_000, nanos % 1_000_000_000
        try:
            at = _EPOCH + timedelta(seconds=seconds)
        except OverflowError:
            raise ProtobufError(f"{where}: {kind} seconds {seconds} is out of range") from None
        text = (f"{at.year:04d}-{at.month:02d}-{at.day:02d}"
                f"T{at.hour:02d}:{at.minute:02d}:{at.second:02d}")
        if kind == "Time":  # Kubernetes keeps Time to the second
            return text + "Z"
        return f"{text}.{nanos // 1000:06d}Z"
    if kind == "Duration":
        _only(fields, (1,), kind, where)
        return _go_duration(_signed(get(1, VARINT, 0), 64))
    if kind == "IntOrString":
        _only(fields, (1, 2, 3), kind, where)
        if _signed(get(1, VARINT, 0), 64) == 1:
            return _text(get(3, LENGTH, b""))
        return _signed(get(2, VARINT, 0), 32)
    if kind == "Quantity":
        _only(fields, (1,), kind, where)
        return _text(get(1, LENGTH, b""))
    if kind == "ExtraValue":
        items = [_text(_expect(v, w, LENGTH, f"{where} (ExtraValue item)"))
                 for n, w, v in _fields(raw, where) if n == 1]
        _only(fields, (1,), kind, where)
        return items
    # RawExtension and FieldsV1: field 1 holds the JSON (or, for RawExtension,
    # a nested protobuf object) that the JSON form carries as is.
    _only(fields, (1,), kind, where)
    data: bytes = get(1, LENGTH, b"")
    if not data:
        return None
    if data.startswith(MAGIC) and kind == "RawExtension":
        return decode(data)
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtobufError(f"{where}: {kind} does not hold valid JSON ({e})") from None


def _only(fields: dict[int, Any], allowed: tuple[int, ...], kind: str, where: str) -> None:
    for number in fields:
        if number not in allowed:
            raise ProtobufError(f"{where}: field {number} of {kind} is not known to this "
                                f"server's protobuf decoder; send the object as JSON")


def _go_duration(ns: int) -> str:
    """A duration in nanoseconds as Go's time.Duration.String() writes it."""
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _fraction(ns, size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    text = _fraction(rest, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{text}"
    if minutes:
        return f"{sign}{minutes}m{text}"
    return sign + text


def _fraction(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = str(frac).rjust(len(str(unit)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"
