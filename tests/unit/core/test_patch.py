"""The three patch formats: merge patch, JSON patch and strategic merge patch."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest

from isthmus.core.patch import (
    MAX_JSON_PATCH_OPERATIONS,
    PatchError,
    PatchMeta,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)

# --------------------------------------------------------------------------- test double


@dataclass(frozen=True)
class DictMeta:
    """PatchMeta read from a nested dict.

    ``{"strategy": ..., "key": ..., "fields": {name: spec}, "items": spec}``.
    """

    spec: dict[str, Any]

    def field(self, name: str) -> DictMeta | None:
        child = self.spec.get("fields", {}).get(name)
        return DictMeta(child) if child is not None else None

    def items(self) -> DictMeta | None:
        child = self.spec.get("items")
        return DictMeta(child) if child is not None else None

    @property
    def merge_key(self) -> str | None:
        key = self.spec.get("key")
        return str(key) if key is not None else None

    @property
    def strategy(self) -> str:
        return str(self.spec.get("strategy", ""))


def merged_by(
    key: str, item_fields: dict[str, Any] | None = None, strategy: str = "merge"
) -> dict[str, Any]:
    return {"strategy": strategy, "key": key, "items": {"fields": item_fields or {}}}


CONTAINER = {
    "env": merged_by("name"),
    "ports": merged_by("containerPort"),
    "volumeMounts": merged_by("mountPath"),
    "args": {},
    "command": {},
    "resources": {"fields": {"limits": {"items": {}}, "requests": {"items": {}}}},
}
OBJECT_META = {
    "labels": {"items": {}},
    "annotations": {"items": {}},
    "finalizers": {"strategy": "merge"},
    "ownerReferences": merged_by("uid"),
}
POD_SPEC = {
    "containers": merged_by("name", CONTAINER),
    "initContainers": merged_by("name", CONTAINER),
    "volumes": merged_by("name", {}, strategy="merge,retainKeys"),
    "tolerations": {"items": {}},
    "nodeSelector": {"items": {}},
}
DEPLOYMENT = DictMeta(
    {
        "fields": {
            "metadata": {"fields": OBJECT_META},
            "spec": {
                "fields": {
                    "strategy": {"strategy": "retainKeys", "fields": {"rollingUpdate": {}}},
                    "selector": {"fields": {"matchLabels": {"items": {}}}},
                    "template": {
                        "fields": {
                            "metadata": {"fields": OBJECT_META},
                            "spec": {"fields": POD_SPEC},
                        }
                    },
                }
            },
        }
    }
)


def deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "labels": {"app": "web", "tier": "fe"},
            "finalizers": ["a.example.com/x", "b.example.com/y"],
        },
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "web:1",
                            "args": ["--port", "80", "--verbose"],
                            "env": [
                                {"name": "A", "value": "1"},
                                {"name": "B", "value": "2"},
                            ],
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                        },
                        {"name": "sidecar", "image": "proxy:1"},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                },
            },
        },
    }


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = doc["spec"]["template"]["spec"]["containers"]
    return result


def no_directives(value: Any) -> bool:
    if isinstance(value, dict):
        return all(not k.startswith("$") and no_directives(v) for k, v in value.items())
    if isinstance(value, list):
        return all(no_directives(v) for v in value)
    return True


def test_dict_meta_satisfies_the_protocol() -> None:
    meta: PatchMeta = DEPLOYMENT
    assert meta.field("spec") is not None


# --------------------------------------------------------------------------- merge patch


@pytest.mark.parametrize(
    ("doc", "patch", "expected"),
    [
        # RFC 7386 appendix A
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        (["a", "b"], ["c", "d"], ["c", "d"]),
        ({"a": "b"}, ["c"], ["c"]),
        ({"a": "foo"}, None, None),
        ({"a": "foo"}, "bar", "bar"),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
        # Kubernetes-flavoured cases
        (
            {"metadata": {"labels": {"app": "web", "old": "x"}}},
            {"metadata": {"labels": {"old": None, "new": "y"}}},
            {"metadata": {"labels": {"app": "web", "new": "y"}}},
        ),
        ({"spec": {"replicas": 1}}, {"spec": {"replicas": 3}}, {"spec": {"replicas": 3}}),
        ({"a": {"b": 1}}, {"a": {"c": [None, 1]}}, {"a": {"b": 1, "c": [None, 1]}}),
        ({"a": 1}, {}, {"a": 1}),
    ],
)
def test_merge_patch(doc: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(doc, patch) == expected


def test_merge_patch_does_not_mutate_or_share() -> None:
    doc = {"a": {"b": [1, 2]}, "keep": {"x": [1]}}
    patch = {"a": {"c": {"d": [3]}}, "n": None}
    doc_copy, patch_copy = copy.deepcopy(doc), copy.deepcopy(patch)
    result = merge_patch(doc, patch)
    assert result == {"a": {"b": [1, 2], "c": {"d": [3]}}, "keep": {"x": [1]}}
    assert doc == doc_copy and patch == patch_copy
    result["keep"]["x"].append(2)
    result["a"]["b"].append(3)
    result["a"]["c"]["d"].append(4)
    assert doc == doc_copy and patch == patch_copy


# --------------------------------------------------------------------------- JSON patch


@pytest.mark.parametrize(
    ("doc", "ops", "expected"),
    [
        ({"a": 1}, [], {"a": 1}),
        ({"a": 1}, [{"op": "add", "path": "/b", "value": 2}], {"a": 1, "b": 2}),
        ({"a": 1}, [{"op": "add", "path": "/a", "value": 2}], {"a": 2}),
        ({"l": [1, 3]}, [{"op": "add", "path": "/l/1", "value": 2}], {"l": [1, 2, 3]}),
        ({"l": [1]}, [{"op": "add", "path": "/l/-", "value": 2}], {"l": [1, 2]}),
        ({"a": 1, "b": 2}, [{"op": "remove", "path": "/a"}], {"b": 2}),
        ({"a": 1}, [{"op": "replace", "path": "/a", "value": [1]}], {"a": [1]}),
        ({"a": 1}, [{"op": "move", "from": "/a", "path": "/b"}], {"b": 1}),
        (
            {"a": {"x": 1}},
            [{"op": "copy", "from": "/a", "path": "/b"}],
            {"a": {"x": 1}, "b": {"x": 1}},
        ),
        ({"a": 1}, [{"op": "test", "path": "/a", "value": 1}], {"a": 1}),
        (
            {"metadata": {"annotations": {"a/b": "x"}}},
            [{"op": "remove", "path": "/metadata/annotations/a~1b"}],
            {"metadata": {"annotations": {}}},
        ),
        (
            {"spec": {"replicas": 1}},
            [
                {"op": "test", "path": "/spec/replicas", "value": 1},
                {"op": "replace", "path": "/spec/replicas", "value": 5},
            ],
            {"spec": {"replicas": 5}},
        ),
        ({"a": 1}, [{"op": "replace", "path": "", "value": {"b": 2}}], {"b": 2}),
    ],
)
def test_json_patch(doc: dict[str, Any], ops: list[dict[str, Any]], expected: Any) -> None:
    assert json_patch(doc, ops) == expected


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        (
            [{"op": "test", "path": "/a", "value": 2}],
            "json patch operation 0 (test '/a'): test failed: ",
        ),
        (
            [
                {"op": "add", "path": "/b", "value": 1},
                {"op": "test", "path": "/missing", "value": 1},
            ],
            "json patch operation 1 (test '/missing'): test failed: ",
        ),
        (
            [{"op": "replace", "path": "/nope", "value": 1}],
            "json patch operation 0 (replace '/nope'): cannot apply: can't replace a non-existent object 'nope'",
        ),
        (
            [{"op": "remove", "path": "/nope"}],
            "json patch operation 0 (remove '/nope'): cannot apply: can't remove a non-existent object 'nope'",
        ),
        (
            [{"op": "add", "path": "/l/5", "value": 1}],
            "json patch operation 0 (add '/l/5'): cannot apply: can't insert outside of list",
        ),
        (
            [{"op": "add", "path": "/x/y", "value": 1}],
            "json patch operation 0 (add '/x/y'): bad path: ",
        ),
        ([{"op": "add", "path": "a", "value": 1}], "json patch operation 0 (add 'a'): bad path: "),
        (
            [{"op": "add", "path": "/l/x", "value": 1}],
            "json patch operation 0 (add '/l/x'): bad path: ",
        ),
        ([{"op": "add", "path": "/b"}], "json patch operation 0 (add '/b'): invalid operation: "),
        (
            [{"op": "frobnicate", "path": "/a"}],
            "json patch operation 0 (frobnicate '/a'): invalid operation: ",
        ),
        ([{"op": "move", "path": "/b"}], "json patch operation 0 (move '/b'): invalid operation: "),
        (
            [{"op": "move", "from": "/nope", "path": "/b"}],
            "json patch operation 0 (move '/b'): cannot apply: ",
        ),
        (
            [{"op": "append", "path": "/a", "value": "x"}],
            "json patch operation 0 (append '/a'): invalid operation: ",
        ),
    ],
)
def test_json_patch_failures(ops: list[dict[str, Any]], message: str) -> None:
    doc = {"a": 1, "l": [1]}
    with pytest.raises(PatchError) as info:
        json_patch(doc, ops)
    assert str(info.value).startswith(message)
    assert isinstance(info.value.__cause__, Exception)
    assert doc == {"a": 1, "l": [1]}


@pytest.mark.parametrize(
    ("ops", "message"),
    [
        (
            {"op": "add", "path": "/a", "value": 1},
            "a json patch must be an array of operations, got object",
        ),
        ("[]", "a json patch must be an array of operations, got string"),
        ([1], "json patch operation 0: must be an object, got number"),
        (
            [{"op": "test", "path": "/a", "value": 1}, []],
            "json patch operation 1: must be an object, got array",
        ),
        ([{"path": "/a"}], "json patch operation 0: missing member 'op'"),
        ([{"op": "remove"}], "json patch operation 0: missing member 'path'"),
        ([{"op": 1, "path": "/a"}], "json patch operation 0: 'op' must be a string, got number"),
        (
            [{"op": "remove", "path": None}],
            "json patch operation 0: 'path' must be a string, got null",
        ),
    ],
)
def test_json_patch_malformed(ops: Any, message: str) -> None:
    with pytest.raises(PatchError) as info:
        json_patch({"a": 1}, ops)
    assert str(info.value) == message


def test_json_patch_operation_limit() -> None:
    ops = [{"op": "test", "path": "/a", "value": 1}] * MAX_JSON_PATCH_OPERATIONS
    assert json_patch({"a": 1}, ops) == {"a": 1}
    with pytest.raises(PatchError, match="at most 10000 operations, got 10001"):
        json_patch({"a": 1}, [*ops, ops[0]])


def test_json_patch_does_not_mutate_or_share() -> None:
    doc = {"a": {"b": [1]}}
    value = {"deep": [1]}
    ops = [
        {"op": "add", "path": "/c", "value": value},
        {"op": "add", "path": "/a/b/-", "value": 2},
    ]
    ops_copy = copy.deepcopy(ops)
    result = json_patch(doc, ops)
    assert result == {"a": {"b": [1, 2]}, "c": {"deep": [1]}}
    assert doc == {"a": {"b": [1]}}
    assert ops == ops_copy
    result["c"]["deep"].append(2)
    assert value == {"deep": [1]}


def test_json_patch_is_all_or_nothing() -> None:
    doc = {"a": 1}
    with pytest.raises(PatchError):
        json_patch(doc, [{"op": "add", "path": "/b", "value": 2}, {"op": "remove", "path": "/zz"}])
    assert doc == {"a": 1}


# --------------------------------------------------------------------------- strategic: kubectl shapes


def test_set_env_adds_variable_to_named_container() -> None:
    # What `kubectl set env deployment/web FOO=bar` sends (no order directive).
    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "app", "env": [{"name": "FOO", "value": "bar"}]}]}
            }
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    expected = deployment()
    # Kubernetes puts elements new in the patch before the server's others.
    containers(expected)[0]["env"].insert(0, {"name": "FOO", "value": "bar"})
    assert result == expected


def test_set_env_changes_existing_variable_in_place() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "app", "env": [{"name": "A", "value": "9"}]}]}
            }
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert containers(result)[0]["env"] == [
        {"name": "A", "value": "9"},
        {"name": "B", "value": "2"},
    ]
    assert containers(result)[1] == {"name": "sidecar", "image": "proxy:1"}
    assert containers(result)[0]["image"] == "web:1"


def test_set_image() -> None:
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "proxy:2"}]}}}
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert [(c["name"], c["image"]) for c in containers(result)] == [
        ("app", "web:1"),
        ("sidecar", "proxy:2"),
    ]


def test_new_container_comes_first_as_in_kubernetes() -> None:
    patch = {
        "spec": {"template": {"spec": {"containers": [{"name": "debug", "image": "busybox"}]}}}
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert [c["name"] for c in containers(result)] == ["debug", "app", "sidecar"]
    assert containers(result)[0] == {"name": "debug", "image": "busybox"}


def test_existing_elements_keep_server_order_new_ones_first() -> None:
    patch = {
        "spec": {"template": {"spec": {"containers": [
            {"name": "sidecar", "image": "s:2"}, {"name": "new"}, {"name": "app", "image": "a:2"}]}}}
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert [c["name"] for c in containers(result)] == ["sidecar", "new", "app"]


def test_apply_with_set_element_order() -> None:
    # `kubectl apply` after the user reordered the containers and changed one image.
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                    "containers": [{"name": "app", "image": "web:2"}],
                }
            }
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert [(c["name"], c["image"]) for c in containers(result)] == [
        ("sidecar", "proxy:1"),
        ("app", "web:2"),
    ]
    assert (
        containers(result)[1]["env"]
        == deployment()["spec"]["template"]["spec"]["containers"][0]["env"]
    )
    assert no_directives(result)


def test_apply_set_element_order_places_new_and_server_only_elements() -> None:
    doc = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "a"},
                        {"name": "injected"},
                        {"name": "b"},
                        {"name": "c"},
                    ]
                }
            }
        }
    }
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [
                        {"name": "c"},
                        {"name": "new"},
                        {"name": "a"},
                        {"name": "b"},
                    ],
                    "containers": [{"name": "new", "image": "n"}],
                }
            }
        }
    }
    result = strategic_merge_patch(doc, patch, DEPLOYMENT)
    # Listed elements follow the directive. The server-only "injected" goes before the
    # next listed element that came after it in the live list: "c" did.
    assert [c["name"] for c in containers(result)] == ["injected", "c", "new", "a", "b"]


def test_apply_set_element_order_keeps_server_only_element_in_place() -> None:
    doc = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "a"},
                        {"name": "injected", "image": "i"},
                        {"name": "b"},
                        {"name": "c"},
                    ]
                }
            }
        }
    }
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [
                        {"name": "a"},
                        {"name": "new"},
                        {"name": "b"},
                        {"name": "c"},
                    ],
                    "containers": [{"name": "new", "image": "n"}],
                }
            }
        }
    }
    result = strategic_merge_patch(doc, patch, DEPLOYMENT)
    assert containers(result) == [
        {"name": "a"},
        {"name": "new", "image": "n"},
        {"name": "injected", "image": "i"},
        {"name": "b"},
        {"name": "c"},
    ]


def test_set_element_order_alone_reorders() -> None:
    doc = {
        "spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}}}
    }
    patch = {
        "spec": {
            "template": {"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}
        }
    }
    result = strategic_merge_patch(doc, patch, DEPLOYMENT)
    assert containers(result) == [{"name": "b"}, {"name": "a", "image": "1"}]


def test_set_element_order_of_env_with_a_deletion() -> None:
    # `kubectl apply` removing env B and adding C between A and the rest.
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                    "containers": [
                        {
                            "name": "app",
                            "$setElementOrder/env": [{"name": "C"}, {"name": "A"}],
                            "env": [{"name": "C", "value": "3"}, {"name": "B", "$patch": "delete"}],
                        }
                    ],
                }
            }
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert containers(result)[0]["env"] == [
        {"name": "C", "value": "3"},
        {"name": "A", "value": "1"},
    ]


def test_set_element_order_of_primitive_list() -> None:
    patch = {
        "metadata": {
            "$setElementOrder/finalizers": [
                "b.example.com/y",
                "c.example.com/z",
                "a.example.com/x",
            ],
            "finalizers": ["c.example.com/z"],
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert result["metadata"]["finalizers"] == [
        "b.example.com/y",
        "c.example.com/z",
        "a.example.com/x",
    ]


def test_set_element_order_for_list_absent_from_original() -> None:
    doc: dict[str, Any] = {"spec": {"template": {"spec": {}}}}
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "b"}, {"name": "a"}],
                    "containers": [{"name": "a"}, {"name": "b"}],
                }
            }
        }
    }
    with pytest.raises(PatchError, match="do not follow"):
        strategic_merge_patch(doc, patch, DEPLOYMENT)
    patch["spec"]["template"]["spec"]["containers"] = [{"name": "b"}, {"name": "a"}]
    assert containers(strategic_merge_patch(doc, patch, DEPLOYMENT)) == [
        {"name": "b"},
        {"name": "a"},
    ]


def test_delete_env_var_with_patch_delete() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [{"name": "app", "env": [{"name": "A", "$patch": "delete"}]}]
                }
            }
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert containers(result)[0]["env"] == [{"name": "B", "value": "2"}]


def test_delete_container_and_missing_element_delete_is_noop() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "sidecar", "$patch": "delete"},
                        {"name": "never-existed", "$patch": "delete"},
                    ]
                }
            }
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert [c["name"] for c in containers(result)] == ["app"]


def test_delete_then_re_add_same_key() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"name": "sidecar", "$patch": "delete"},
                        {"name": "sidecar", "image": "fresh"},
                    ]
                }
            }
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert [c["name"] for c in containers(result)] == ["sidecar", "app"]
    assert containers(result)[0] == {"name": "sidecar", "image": "fresh"}


def test_delete_label_with_null() -> None:
    # What `kubectl label deployment web tier-` sends.
    result = strategic_merge_patch(
        deployment(), {"metadata": {"labels": {"tier": None}}}, DEPLOYMENT
    )
    assert result["metadata"]["labels"] == {"app": "web"}


def test_add_and_overwrite_labels() -> None:
    patch = {"metadata": {"labels": {"tier": "be", "env": "prod"}}}
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert result["metadata"]["labels"] == {"app": "web", "tier": "be", "env": "prod"}


def test_null_for_absent_key_is_ignored() -> None:
    result = strategic_merge_patch(
        deployment(), {"metadata": {"annotations": {"x": None}}}, DEPLOYMENT
    )
    assert result["metadata"]["annotations"] == {}
    result = strategic_merge_patch(deployment(), {"spec": {"paused": None}}, DEPLOYMENT)
    assert "paused" not in result["spec"]


def test_retain_keys_on_union_field() -> None:
    # Switching the Deployment strategy to Recreate must drop rollingUpdate.
    patch = {"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert result["spec"]["strategy"] == {"type": "Recreate"}


def test_retain_keys_in_volume_list_element() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "volumes": [
                        {
                            "name": "data",
                            "configMap": {"name": "cfg"},
                            "$retainKeys": ["configMap", "name"],
                        },
                    ]
                }
            }
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert result["spec"]["template"]["spec"]["volumes"] == [
        {"name": "data", "configMap": {"name": "cfg"}}
    ]


def test_retain_keys_keeps_listed_keys_and_merges() -> None:
    doc = {
        "spec": {
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
            }
        }
    }
    patch = {
        "spec": {
            "strategy": {"$retainKeys": ["type", "rollingUpdate"], "rollingUpdate": {"maxSurge": 2}}
        }
    }
    result = strategic_merge_patch(doc, patch, DEPLOYMENT)
    assert result["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 2, "maxUnavailable": 0},
    }


def test_retain_keys_rejects_patch_keys_it_does_not_list() -> None:
    patch = {
        "spec": {
            "strategy": {
                "$retainKeys": ["type"],
                "type": "Recreate",
                "rollingUpdate": {"maxSurge": 1},
            }
        }
    }
    with pytest.raises(
        PatchError, match=r"spec\.strategy: the patch sets 'rollingUpdate', which \$retainKeys"
    ):
        strategic_merge_patch(deployment(), patch, DEPLOYMENT)


@pytest.mark.parametrize("retain", ["type", [1], None, {"type": 1}])
def test_retain_keys_must_be_list_of_names(retain: Any) -> None:
    patch = {"spec": {"strategy": {"$retainKeys": retain}}}
    with pytest.raises(
        PatchError, match=r"spec\.strategy: \$retainKeys must be a list of field names"
    ):
        strategic_merge_patch(deployment(), patch, DEPLOYMENT)


def test_delete_from_primitive_list() -> None:
    patch = {"metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example.com/x", "not-there"]}}
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert result["metadata"]["finalizers"] == ["b.example.com/y"]


def test_delete_from_primitive_list_with_additions() -> None:
    patch = {
        "metadata": {
            "finalizers": ["c.example.com/z"],
            "$deleteFromPrimitiveList/finalizers": ["b.example.com/y"],
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert result["metadata"]["finalizers"] == ["a.example.com/x", "c.example.com/z"]


def test_delete_from_absent_primitive_list_is_noop() -> None:
    result = strategic_merge_patch(
        {"metadata": {}}, {"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"]}}, DEPLOYMENT
    )
    assert result == {"metadata": {}}


def test_primitive_merge_list_is_a_union() -> None:
    patch = {"metadata": {"finalizers": ["c.example.com/z", "a.example.com/x", "c.example.com/z"]}}
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert result["metadata"]["finalizers"] == [
        "a.example.com/x",
        "b.example.com/y",
        "c.example.com/z",
    ]


def test_union_keeps_true_apart_from_one() -> None:
    meta = DictMeta({"fields": {"l": {"strategy": "merge"}}})
    assert strategic_merge_patch({"l": [1, "1"]}, {"l": [True, 1.0, "1", None]}, meta) == {
        "l": [1, "1", True, None]
    }


def test_list_without_merge_strategy_is_replaced() -> None:
    patch = {
        "spec": {
            "template": {"spec": {"containers": [{"name": "app", "args": ["--port", "8080"]}]}}
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert containers(result)[0]["args"] == ["--port", "8080"]


def test_list_of_objects_without_merge_strategy_is_replaced() -> None:
    doc = {"spec": {"template": {"spec": {"tolerations": [{"key": "a"}, {"key": "b"}]}}}}
    patch = {"spec": {"template": {"spec": {"tolerations": [{"key": "c", "operator": "Exists"}]}}}}
    result = strategic_merge_patch(doc, patch, DEPLOYMENT)
    assert result["spec"]["template"]["spec"]["tolerations"] == [{"key": "c", "operator": "Exists"}]


def test_empty_patch_list_does_not_clear_a_merge_list() -> None:
    patch: dict[str, Any] = {"spec": {"template": {"spec": {"containers": []}}}}
    assert strategic_merge_patch(deployment(), patch, DEPLOYMENT) == deployment()


def test_patch_replace_in_list_replaces_the_list() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {"$patch": "replace"},
                        {"name": "only", "image": "x", "env": [{"name": "A", "$patch": "delete"}]},
                    ]
                }
            }
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert containers(result) == [{"name": "only", "image": "x", "env": []}]


def test_patch_replace_in_map_replaces_the_map() -> None:
    patch = {"metadata": {"labels": {"$patch": "replace", "only": "this"}}}
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert result["metadata"]["labels"] == {"only": "this"}


def test_patch_replace_strips_nested_directives_and_nulls() -> None:
    patch = {
        "spec": {
            "template": {
                "$patch": "replace",
                "metadata": {"labels": {"a": None, "b": "1"}},
                "spec": {"containers": [{"name": "x", "env": [{"name": "E", "$patch": "delete"}]}]},
            }
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert result["spec"]["template"] == {
        "metadata": {"labels": {"b": "1"}},
        "spec": {"containers": [{"name": "x", "env": []}]},
    }


def test_patch_delete_in_map_deletes_it() -> None:
    patch = {"spec": {"strategy": {"$patch": "delete"}}}
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert "strategy" not in result["spec"]
    assert result["spec"]["replicas"] == 2


def test_patch_delete_at_top_level_empties_the_object() -> None:
    assert strategic_merge_patch(deployment(), {"$patch": "delete"}, DEPLOYMENT) == {}


def test_patch_replace_at_top_level() -> None:
    assert strategic_merge_patch(deployment(), {"$patch": "replace", "kind": "X"}, DEPLOYMENT) == {
        "kind": "X"
    }


def test_new_subtree_is_cleaned_of_directives_and_nulls() -> None:
    doc: dict[str, Any] = {"metadata": {"name": "x"}}
    patch = {
        "spec": {
            "replicas": None,
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "a"}],
                    "containers": [
                        {
                            "name": "a",
                            "env": [{"name": "E", "value": "1"}, {"name": "G", "$patch": "delete"}],
                            "resources": {"limits": {"cpu": "1", "memory": None}},
                        }
                    ],
                    "volumes": [{"$patch": "replace"}],
                }
            },
            "strategy": {"$patch": "delete"},
            "selector": {"$retainKeys": ["matchLabels"], "matchLabels": {"app": "x"}},
        }
    }
    result = strategic_merge_patch(doc, patch, DEPLOYMENT)
    assert result == {
        "metadata": {"name": "x"},
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "a",
                            "env": [{"name": "E", "value": "1"}],
                            "resources": {"limits": {"cpu": "1"}},
                        }
                    ],
                    "volumes": [],
                }
            },
            "selector": {"matchLabels": {"app": "x"}},
        },
    }
    assert no_directives(result)


def test_type_change_takes_the_patch_value() -> None:
    doc = {"spec": {"replicas": 2, "template": {"spec": {"containers": "oops"}}}}
    patch = {"spec": {"replicas": {"n": 1}, "template": {"spec": {"containers": [{"name": "a"}]}}}}
    result = strategic_merge_patch(doc, patch, DEPLOYMENT)
    assert result == {
        "spec": {"replicas": {"n": 1}, "template": {"spec": {"containers": [{"name": "a"}]}}}
    }


def test_scalar_replaces_map() -> None:
    assert strategic_merge_patch({"a": {"b": 1}}, {"a": 5}, None) == {"a": 5}


def test_merge_keyed_list_with_numeric_key() -> None:
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "ports": [
                                {"containerPort": 80, "name": "http"},
                                {"containerPort": 443},
                            ],
                        },
                    ]
                }
            }
        }
    }
    result = strategic_merge_patch(deployment(), patch, DEPLOYMENT)
    assert containers(result)[0]["ports"] == [
        {"containerPort": 80, "protocol": "TCP", "name": "http"},
        {"containerPort": 443},
    ]


def test_map_with_replace_strategy_is_replaced() -> None:
    meta = DictMeta({"fields": {"m": {"strategy": "replace"}}})
    assert strategic_merge_patch({"m": {"a": 1, "b": 2}}, {"m": {"b": 3, "c": None}}, meta) == {
        "m": {"b": 3}
    }


def test_unknown_fields_behave_like_merge_patch() -> None:
    doc = {
        "spec": {
            "custom": {"a": 1, "l": [1, 2]},
            "template": {"spec": {"containers": [{"name": "app", "x": {"l": [{"k": 1}]}}]}},
        }
    }
    patch = {
        "spec": {
            "custom": {"b": 2, "a": None, "l": [3]},
            "template": {"spec": {"containers": [{"name": "app", "x": {"l": [{"k": 2}]}}]}},
        }
    }
    result = strategic_merge_patch(doc, patch, DEPLOYMENT)
    assert result["spec"]["custom"] == {"b": 2, "l": [3]}
    assert containers(result) == [{"name": "app", "x": {"l": [{"k": 2}]}}]


# --------------------------------------------------------------------------- strategic: no schema


def test_no_meta_merges_maps_and_replaces_lists() -> None:
    doc = {"a": {"b": 1, "c": [1, 2]}, "l": [{"name": "x", "v": 1}]}
    patch = {"a": {"b": None, "d": 4, "c": [3]}, "l": [{"name": "x", "w": 2}]}
    assert strategic_merge_patch(doc, patch, None) == {
        "a": {"c": [3], "d": 4},
        "l": [{"name": "x", "w": 2}],
    }


def test_no_meta_still_honours_directives() -> None:
    doc = {"a": {"b": 1, "c": 2}, "d": {"e": 1}, "f": ["x", "y"], "g": {"h": 1, "i": 2}}
    patch = {
        "a": {"$patch": "replace", "z": 1},
        "d": {"$patch": "delete"},
        "$deleteFromPrimitiveList/f": ["x"],
        "g": {"$retainKeys": ["i"], "i": 3},
        "l": [{"$patch": "replace"}, {"k": 1, "n": None}],
    }
    result = strategic_merge_patch(doc, patch, None)
    assert result == {"a": {"z": 1}, "f": ["y"], "g": {"i": 3}, "l": [{"k": 1}]}
    assert no_directives(result)


def test_no_meta_set_element_order_on_scalars() -> None:
    assert strategic_merge_patch(
        {"l": ["a", "b", "c"]}, {"$setElementOrder/l": ["c", "a", "b"]}, None
    ) == {"l": ["c", "a", "b"]}


def test_no_meta_set_element_order_of_objects_is_dropped() -> None:
    doc = {"l": [{"name": "a"}, {"name": "b"}]}
    patch = {
        "$setElementOrder/l": [{"name": "b"}, {"name": "a"}, {"name": "c"}],
        "l": [{"name": "c"}, {"name": "a"}],
    }
    assert strategic_merge_patch(doc, patch, None) == {"l": [{"name": "c"}, {"name": "a"}]}


def test_no_meta_element_delete_is_an_error() -> None:
    with pytest.raises(PatchError, match=r"l\[0\]: \$patch: delete needs a list merged by key"):
        strategic_merge_patch(
            {"l": [{"name": "a"}]}, {"l": [{"name": "a", "$patch": "delete"}]}, None
        )


# --------------------------------------------------------------------------- strategic: errors


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            {"metadata": {"$patch": "merge"}},
            'metadata: unknown $patch directive "merge" in a map, expected "replace" or "delete"',
        ),
        (
            {"$patch": 1},
            'the object: unknown $patch directive 1 in a map, expected "replace" or "delete"',
        ),
        (
            {"spec": {"template": {"spec": {"containers": [{"$patch": "merge"}]}}}},
            r"spec.template.spec.containers[0]: $patch: merge is not supported in a list",
        ),
        (
            {"spec": {"template": {"spec": {"containers": [{"$patch": "bogus"}]}}}},
            'spec.template.spec.containers[0]: unknown $patch directive "bogus" in a list, expected "replace" or "delete"',
        ),
        (
            {"spec": {"template": {"spec": {"containers": [{"$patch": "delete"}]}}}},
            "spec.template.spec.containers[0]: $patch: delete needs the merge key 'name'",
        ),
        (
            {"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
            "spec.template.spec.containers[0]: the element lacks the merge key 'name'",
        ),
        (
            {"spec": {"template": {"spec": {"containers": ["app"]}}}},
            "spec.template.spec.containers: cannot merge a list that mixes objects and scalars",
        ),
        (
            {"metadata": {"finalizers": [["x"]]}},
            "metadata.finalizers: lists of lists cannot be merged",
        ),
        (
            {"metadata": {"finalizers": [{"a": 1}]}},
            "metadata.finalizers: cannot merge a list that mixes objects and scalars",
        ),
        (
            {"metadata": {"$deleteFromPrimitiveList/finalizers": "x"}},
            "metadata.finalizers: $deleteFromPrimitiveList/finalizers must be a list of scalars",
        ),
        (
            {"metadata": {"$deleteFromPrimitiveList/finalizers": [{"a": 1}]}},
            "metadata.finalizers: $deleteFromPrimitiveList/finalizers must be a list of scalars",
        ),
        (
            {"metadata": {"$setElementOrder/finalizers": "x"}},
            "metadata.finalizers: $setElementOrder/finalizers must be a list, got string",
        ),
        (
            {"spec": {"template": {"spec": {"$setElementOrder/containers": ["app"]}}}},
            "spec.template.spec.containers: element 0 of $setElementOrder/containers must be an object with the merge key 'name'",
        ),
        (
            {"metadata": {"$setElementOrder/finalizers": ["b"], "finalizers": None}},
            "metadata.finalizers: $setElementOrder/finalizers given, but the list is set to null",
        ),
        (
            {"metadata": {"$setElementOrder/labels": ["b"], "labels": {"a": "b"}}},
            "metadata.labels: $setElementOrder/labels given, but the patch value is not a list (object)",
        ),
        (
            {
                "spec": {
                    "template": {
                        "spec": {
                            "$setElementOrder/containers": [{"name": "app"}],
                            "containers": [{"name": "sidecar", "image": "x"}],
                        }
                    }
                }
            },
            'spec.template.spec.containers: the elements of the patch list do not follow $setElementOrder/containers: {"name": "sidecar", "image": "x"} is missing from it',
        ),
        (
            {
                "spec": {
                    "template": {
                        "spec": {
                            "$setElementOrder/containers": [{"name": "app"}, {"name": "sidecar"}],
                            "containers": [{"name": "sidecar"}, {"name": "app"}],
                        }
                    }
                }
            },
            'spec.template.spec.containers: the elements of the patch list do not follow $setElementOrder/containers: {"name": "app"} is out of order',
        ),
        (
            {"metadata": {"$setElementOrder": []}},
            "metadata: directive '$setElementOrder' must be followed by '/<list name>'",
        ),
        (
            {"metadata": {"$deleteFromPrimitiveList/": []}},
            "metadata: directive '$deleteFromPrimitiveList/' names no list",
        ),
        (
            {"metadata": {"$bogus": 1}},
            "metadata: unknown patch directive '$bogus', expected $patch, $retainKeys, $setElementOrder/<list> or $deleteFromPrimitiveList/<list>",
        ),
    ],
)
def test_strategic_merge_patch_errors(patch: dict[str, Any], message: str) -> None:
    doc = deployment()
    with pytest.raises(PatchError) as info:
        strategic_merge_patch(doc, patch, DEPLOYMENT)
    assert str(info.value) == message
    assert doc == deployment()


def test_merge_list_of_objects_without_merge_key_is_an_error() -> None:
    meta = DictMeta({"fields": {"l": {"strategy": "merge"}}})
    with pytest.raises(PatchError, match="l: cannot merge a list of objects that has no merge key"):
        strategic_merge_patch({"l": [{"a": 1}]}, {"l": [{"a": 2}]}, meta)


@pytest.mark.parametrize(("doc", "patch"), [({}, []), ({}, "x"), ([], {})])
def test_strategic_merge_patch_needs_objects(doc: Any, patch: Any) -> None:
    with pytest.raises(PatchError, match="must be an object"):
        strategic_merge_patch(doc, patch, None)


def test_patch_error_is_value_error() -> None:
    assert issubclass(PatchError, ValueError)


# --------------------------------------------------------------------------- strategic: purity


def test_strategic_merge_patch_leaves_inputs_unmutated_and_unshared() -> None:
    doc = deployment()
    new_env = {"name": "FOO", "value": "bar"}
    patch = {
        "metadata": {
            "labels": {"tier": None, "x": "y"},
            "$deleteFromPrimitiveList/finalizers": ["a.example.com/x"],
        },
        "spec": {
            "strategy": {"$retainKeys": ["type"], "type": "Recreate"},
            "template": {
                "spec": {
                    "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "app"}],
                    "containers": [
                        {
                            "name": "app",
                            "env": [new_env, {"name": "A", "$patch": "delete"}],
                            "args": ["x"],
                        }
                    ],
                    "volumes": [{"name": "new", "emptyDir": {"medium": "Memory"}}],
                }
            },
        },
    }
    doc_before, patch_before = copy.deepcopy(doc), copy.deepcopy(patch)
    result = strategic_merge_patch(doc, patch, DEPLOYMENT)
    assert doc == doc_before
    assert patch == patch_before
    assert no_directives(result)
    # Mutating the result touches neither input.
    containers(result)[1]["env"][1]["value"] = "changed"
    result["spec"]["template"]["spec"]["volumes"][1]["emptyDir"]["medium"] = ""
    result["metadata"]["labels"]["app"] = "changed"
    containers(result)[0]["image"] = "changed"
    assert doc == doc_before
    assert patch == patch_before
    assert new_env == {"name": "FOO", "value": "bar"}


def test_strategic_merge_patch_full_result() -> None:
    patch = {
        "metadata": {"labels": {"tier": None}, "annotations": {"note": "hi"}},
        "spec": {
            "replicas": 3,
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "env": [{"name": "B", "value": "22"}, {"name": "C", "value": "3"}],
                        },
                    ]
                }
            },
        },
    }
    expected = deployment()
    expected["metadata"]["labels"] = {"app": "web"}
    expected["metadata"]["annotations"] = {"note": "hi"}
    expected["spec"]["replicas"] = 3
    containers(expected)[0]["env"] = [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "22"},
        {"name": "C", "value": "3"},
    ]
    assert strategic_merge_patch(deployment(), patch, DEPLOYMENT) == expected
