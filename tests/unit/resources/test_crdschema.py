"""Custom resources against a CRD's structural schema: errors, unknown fields, pruning."""

from __future__ import annotations

import copy
from typing import Any

from isthmus.resources.crdschema import (
    prune_custom,
    prune_resource,
    validate_custom,
    validate_resource,
)
from isthmus.resources.registry import BUILTIN, from_crd

LINK_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}}},
        "spec": {
            "type": "object",
            "required": ["peer", "gatewayPort"],
            "properties": {
                "peer": {"type": "string", "minLength": 1, "pattern": "^[a-z][a-z0-9-]*$"},
                "gatewayPort": {"type": "integer", "format": "int32", "minimum": 1, "maximum": 65535},
                "mode": {"type": "string", "enum": ["mtls", "plain"]},
                "weight": {"x-kubernetes-int-or-string": True,
                           "anyOf": [{"type": "integer"}, {"type": "string"}]},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                          "properties": {"level": {"type": "integer"}}},
                "note": {"type": "string", "nullable": True},
                "comment": {"type": "string"},
                "endpoints": {"type": "array", "maxItems": 2, "items": {
                    "type": "object", "properties": {"address": {"type": "string", "format": "ipv4"}}}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "x-kubernetes-preserve-unknown-fields": True},
            },
        },
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
    },
}


def link() -> dict[str, Any]:
    return {
        "apiVersion": "mesh.isthmus.dev/v1alpha1",
        "kind": "Link",
        "metadata": {"name": "west", "namespace": "default", "labels": {"a": "b"}},
        "spec": {
            "peer": "west",
            "gatewayPort": 15443,
            "mode": "mtls",
            "weight": "50%",
            "labels": {"zone": "a"},
            "extra": {"level": 2, "anything": {"nested": [1, 2]}},
            "note": None,
            "endpoints": [{"address": "127.1.64.2"}],
            "template": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "v"}},
        },
        "status": {"phase": "Ready"},
    }


def test_good_link_is_clean() -> None:
    res = validate_custom(LINK_SCHEMA, link())
    assert res.errors == [] and res.unknown_fields == []


def test_types_required_enum_and_limits() -> None:
    obj = link()
    obj["spec"].update({"gatewayPort": "string", "mode": "tcp", "weight": True, "peer": "West"})
    obj["spec"]["labels"]["zone"] = 1
    obj["spec"]["endpoints"] = [{"address": "999.1.1.1"}, {}, {}]
    obj["status"]["phase"] = 3
    res = validate_custom(LINK_SCHEMA, obj)
    assert res.errors == [
        "spec.peer: Invalid value: \"West\": spec.peer in body should match '^[a-z][a-z0-9-]*$'",
        'spec.gatewayPort: Invalid value: "string": spec.gatewayPort in body must be of type integer: "string"',
        'spec.mode: Unsupported value: "tcp": supported values: "mtls", "plain"',
        'spec.weight: Invalid value: "boolean": spec.weight in body must be of type integer or string: "boolean"',
        'spec.labels.zone: Invalid value: "integer": spec.labels.zone in body must be of type string: "integer"',
        "spec.endpoints: Too many: 3: must have at most 2 items",
        'spec.endpoints[0].address: Invalid value: "999.1.1.1": spec.endpoints[0].address in body must be of '
        'type ipv4: "999.1.1.1"',
        'status.phase: Invalid value: "integer": status.phase in body must be of type string: "integer"',
    ]


def test_minimum_maximum_and_required() -> None:
    obj = link()
    obj["spec"]["gatewayPort"] = 0
    del obj["spec"]["peer"]
    assert validate_custom(LINK_SCHEMA, obj).errors == [
        "spec.gatewayPort: Invalid value: 0: spec.gatewayPort in body should be greater than or equal to 1",
        "spec.peer: Required value",
    ]
    obj["spec"]["gatewayPort"] = 70000
    obj["spec"]["peer"] = ""
    assert validate_custom(LINK_SCHEMA, obj).errors == [
        "spec.gatewayPort: Invalid value: 70000: spec.gatewayPort in body should be less than or equal to 65535",
        'spec.peer: Invalid value: "": spec.peer in body should be at least 1 chars long',
        "spec.peer: Invalid value: \"\": spec.peer in body should match '^[a-z][a-z0-9-]*$'",
    ]


def test_metadata_is_objectmeta_and_crd_constraints_apply() -> None:
    obj = link()
    obj["metadata"]["name"] = "a-name-that-is-far-too-long"
    obj["metadata"]["colour"] = "blue"
    obj["metadata"]["labels"] = {"a": 1}
    res = validate_custom(LINK_SCHEMA, obj)
    assert res.errors == [
        "metadata.labels[a]: Invalid value: 1: must be of type string",
        "metadata.name: Too long: may not be more than 20 bytes",
    ]
    assert res.unknown_fields == ["metadata.colour"]


def test_unknown_fields_preserved_fields_and_nulls() -> None:
    obj = link()
    obj["spec"]["bogus"] = 1
    obj["spec"]["endpoints"][0]["port"] = 80
    obj["spec"]["extra"]["more"] = True  # preserved: not unknown
    obj["spec"]["comment"] = None  # non-nullable null: pruned, not an error
    obj["status"]["other"] = "x"
    obj["top"] = 1
    res = validate_custom(LINK_SCHEMA, obj)
    assert res.errors == []
    assert res.unknown_fields == ["spec.endpoints[0].port", "spec.bogus", "status.other", "top"]


def test_embedded_resource_needs_apiversion_and_kind() -> None:
    obj = link()
    obj["spec"]["template"] = {"data": {"k": "v"}}
    assert validate_custom(LINK_SCHEMA, obj).errors == [
        "spec.template.apiVersion: Required value: must not be empty",
        "spec.template.kind: Required value: must not be empty",
    ]


def test_prune_custom() -> None:
    obj = link()
    obj["metadata"]["colour"] = "blue"
    obj["spec"]["bogus"] = 1
    obj["spec"]["comment"] = None
    obj["spec"]["endpoints"][0]["port"] = 80
    obj["spec"]["extra"]["more"] = True
    obj["spec"]["template"]["metadata"]["junk"] = 1
    obj["status"]["other"] = "x"
    obj["top"] = 1
    before = copy.deepcopy(obj)
    pruned = prune_custom(LINK_SCHEMA, obj)
    assert obj == before
    expected = link()
    expected["spec"]["extra"]["more"] = True
    assert pruned == expected


def test_object_without_properties_prunes_everything() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object"}}}
    obj = {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "spec": {"a": 1}}
    assert validate_custom(schema, obj).unknown_fields == ["spec.a"]
    assert prune_custom(schema, obj) == {"apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"}, "spec": {}}


def test_combinators() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object", "properties": {
        "size": {"type": "integer", "oneOf": [{"minimum": 10}, {"maximum": 2}]},
        "name": {"type": "string", "not": {"pattern": "^admin$"}},
    }}}}
    assert validate_custom(schema, {"spec": {"size": 11, "name": "bob"}}).errors == []
    assert validate_custom(schema, {"spec": {"size": 5, "name": "admin"}}).errors == [
        "spec.size: Invalid value: 5: spec.size in body must validate one and only one schema (oneOf)",
        'spec.name: Invalid value: "admin": spec.name in body must not validate the schema (not)',
    ]


def test_by_resource_type() -> None:
    crd = {"metadata": {"name": "links.mesh.isthmus.dev"},
           "spec": {"group": "mesh.isthmus.dev", "names": {"plural": "links", "kind": "Link"},
                    "versions": [{"name": "v1alpha1", "served": True,
                                  "schema": {"openAPIV3Schema": LINK_SCHEMA}}]}}
    rt = from_crd(crd)[0]
    obj = link()
    obj["spec"]["bogus"] = 1
    assert validate_resource(rt, obj).unknown_fields == ["spec.bogus"]
    assert "bogus" not in prune_resource(rt, obj)["spec"]
    cm = next(t for t in BUILTIN if t.kind == "ConfigMap")
    assert validate_resource(cm, {"apiVersion": "v1", "kind": "ConfigMap", "datum": {}}).unknown_fields == ["datum"]
    assert prune_resource(cm, {"kind": "ConfigMap", "datum": {}}) == {"kind": "ConfigMap"}


def test_no_schema_accepts_everything() -> None:
    obj = {"apiVersion": "x/v1", "kind": "X", "spec": {"anything": 1}}
    assert validate_custom(None, obj).errors == [] and validate_custom(None, obj).unknown_fields == []
    assert prune_custom(None, obj) == obj
