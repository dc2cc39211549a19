"""The OpenAPI v3 documents the embedded API server publishes under `/openapi/v3`.

kubectl reads them before `apply` (to learn that the server validates fields
itself, and to compute strategic merge patches) and for `explain`. What this
module promises:

* `openapi_v3_index(registry)` is the JSON of `GET /openapi/v3`: one entry per
  served group-version, `{"paths": {"api/v1": {"serverRelativeURL":
  "/openapi/v3/api/v1?hash=<HEX>"}, "apis/apps/v1": {...}}}`, where the hash
  is a SHA-512 of the canonical JSON of that document, so it changes exactly
  when the document does.
* `openapi_v3_document(registry, group, version)` is the JSON of `GET
  /openapi/v3/api/v1` (core group, `group=""`) or `/openapi/v3/apis/<group>/<version>`:
  an OpenAPI 3.0 document with a path for each resource's collection, item and
  subresource URLs. Every POST, PUT and PATCH operation declares the query
  parameters `dryRun`, `fieldManager` and `fieldValidation` (the last one is
  what makes kubectl leave field validation to the server); every operation
  carries `x-kubernetes-group-version-kind` (one object) and
  `x-kubernetes-action`. PATCH operations of built-in kinds accept
  `application/strategic-merge-patch+json`; those of custom resources do not,
  so kubectl sends them JSON merge patches. `components.schemas` holds each
  kind (with `x-kubernetes-group-version-kind`, a list), its List, and every
  definition they reference, transitively. Built-in schemas come from the
  Kubernetes definitions `schemas.definitions()` reads, rewritten to OpenAPI
  3.0 (`#/components/schemas/` references, wrapped in `allOf` when the
  property carries its own description or extensions; `type: [T, "null"]`
  becomes `type: T`; `x-kubernetes-*` extensions kept); custom resources'
  come from their CRD's openAPIV3Schema.
  Unknown group-versions raise `UnknownResource`.
* `OpenAPICache` keeps built documents (and their serialized bytes and hashes)
  per group-version until `invalidate()` is called, which the server does
  whenever a CustomResourceDefinition is stored or removed.

Pure: no I/O besides the schema file `schemas` reads.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from isthmus.resources.registry import Registry, ResourceType, UnknownResource
from isthmus.resources.schemas import INT_OR_STRING, definitions, ref_name

OPENAPI_VERSION = "3.0.0"
KUBERNETES_VERSION = "v1.32.0"
_COMPONENTS = "#/components/schemas/"
_META = "io.k8s.apimachinery.pkg.apis.meta.v1."
OBJECT_META_REF = _COMPONENTS + _META + "ObjectMeta"
LIST_META_REF = _COMPONENTS + _META + "ListMeta"
_STATUS = _META + "Status"
_DELETE_OPTIONS = _META + "DeleteOptions"
_PATCH = _META + "Patch"
_SCALE = "io.k8s.api.autoscaling.v1.Scale"
_TOKEN_REQUEST = "io.k8s.api.authentication.v1.TokenRequest"
_GVK = "x-kubernetes-group-version-kind"

_API_VERSION_DOC = (
    "APIVersion defines the versioned schema of this representation of an object. Servers should "
    "convert recognized schemas to the latest internal value, and may reject unrecognized values. "
    "More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources")
_KIND_DOC = (
    "Kind is a string value representing the REST resource this object represents. Servers may infer "
    "this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds")
_METADATA_DOC = (
    "Standard object's metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")
_LIST_METADATA_DOC = (
    "Standard list metadata. More info: "
    "https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata")


def group_version_path(group: str, version: str) -> str:
    """The index key of a group-version: `api/v1` for the core group, else `apis/<group>/<version>`."""
    return f"api/{version}" if not group else f"apis/{group}/{version}"


# --------------------------------------------------------------------------- schemas


def _convert(node: Any) -> Any:
    """One JSON Schema node of the Kubernetes definitions, as OpenAPI 3.0."""
    if isinstance(node, list):
        return [_convert(x) for x in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "$ref" and isinstance(v, str):
            continue
        if k == "type" and isinstance(v, list):
            types = [t for t in v if t != "null"]
            if types:
                out[k] = types[0]
        elif k == "additionalProperties" and v is False:
            continue
        elif k == "properties" and isinstance(v, Mapping):
            out[k] = {pk: _convert(pv) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties", "not", "oneOf", "anyOf", "allOf"):
            out[k] = _convert(v)
        else:
            out[k] = copy.deepcopy(v)
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = _COMPONENTS + ref_name(ref)
        return {"allOf": [{"$ref": target}], **out} if out else {"$ref": target}
    return out


def _builtin_component(name: str) -> dict[str, Any]:
    out: dict[str, Any] = _convert(definitions()[name])
    if name == INT_OR_STRING:
        out = {"description": out.get("description", ""), "format": "int-or-string",
               "oneOf": [{"type": "integer"}, {"type": "string"}]}
    if _GVK in out:
        # The strict schema files pin apiVersion/kind with enums; the API does not.
        props = out.get("properties") or {}
        for key in ("apiVersion", "kind"):
            if isinstance(props.get(key), dict):
                props[key].pop("enum", None)
    return out


def _refs(node: Any, out: set[str]) -> None:
    if isinstance(node, Mapping):
        for k, v in node.items():
            if k == "$ref" and isinstance(v, str):
                out.add(v)
            else:
                _refs(v, out)
    elif isinstance(node, list):
        for x in node:
            _refs(x, out)


def _add_closure(components: dict[str, Any], roots: Iterable[str]) -> None:
    """Add the named built-in definitions and everything they reference."""
    defs = definitions()
    todo = [r for r in roots if r in defs]
    while todo:
        name = todo.pop()
        if name in components:
            continue
        comp = _builtin_component(name)
        components[name] = comp
        found: set[str] = set()
        _refs(comp, found)
        for ref in found:
            if ref.startswith(_COMPONENTS):
                dep = ref[len(_COMPONENTS):]
                if dep not in components and dep in defs:
                    todo.append(dep)


def custom_definition_name(rt: ResourceType) -> str:
    """Kubernetes' schema name of a custom kind: the group reversed, then version and kind."""
    reversed_group = ".".join(reversed(rt.group.split("."))) if rt.group else ""
    return ".".join(p for p in (reversed_group, rt.version, rt.kind) if p)


def _gvk_list(group: str, version: str, kind: str) -> list[dict[str, str]]:
    return [{"group": group, "kind": kind, "version": version}]


def _custom_components(rt: ResourceType) -> dict[str, dict[str, Any]]:
    name = custom_definition_name(rt)
    base = rt.crd_schema or {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema: dict[str, Any] = copy.deepcopy(dict(base))
    props: dict[str, Any] = dict(schema.get("properties") or {})
    props["apiVersion"] = {"description": _API_VERSION_DOC, "type": "string"}
    props["kind"] = {"description": _KIND_DOC, "type": "string"}
    props["metadata"] = {"allOf": [{"$ref": OBJECT_META_REF}], "description": _METADATA_DOC}
    schema["properties"] = dict(sorted(props.items()))
    schema.setdefault("type", "object")
    schema[_GVK] = _gvk_list(rt.group, rt.version, rt.kind)
    list_schema = {
        "description": f"{rt.list_kind} is a list of {rt.kind}",
        "properties": {
            "apiVersion": {"description": _API_VERSION_DOC, "type": "string"},
            "items": {
                "description": f"List of {rt.plural}. More info: "
                               "https://git.k8s.io/community/contributors/devel/api-conventions.md",
                "items": {"$ref": _COMPONENTS + name},
                "type": "array",
            },
            "kind": {"description": _KIND_DOC, "type": "string"},
            "metadata": {"allOf": [{"$ref": LIST_META_REF}], "description": _LIST_METADATA_DOC},
        },
        "required": ["items"],
        "type": "object",
        _GVK: _gvk_list(rt.group, rt.version, rt.list_kind),
    }
    return {name: schema, name + "List": list_schema}


def _definition_of(rt: ResourceType) -> str:
    return rt.definition if rt.definition is not None else custom_definition_name(rt)


def _list_definition_of(rt: ResourceType) -> str | None:
    name = _definition_of(rt) + "List"
    if rt.definition is None or name in definitions():
        return name
    return None


# --------------------------------------------------------------------------- paths

_Q = "query"


def _param(name: str, where: str, description: str, type_: str = "string", required: bool = False) -> dict[str, Any]:
    p: dict[str, Any] = {"description": description, "in": where, "name": name,
                         "schema": {"type": type_, "uniqueItems": True}}
    if required:
        p["required"] = True
    return p


_DRY_RUN = _param("dryRun", _Q, (
    "When present, indicates that modifications should not be persisted. An invalid or unrecognized "
    "dryRun directive will result in an error response and no further processing of the request. "
    "Valid values are: - All: all dry run stages will be processed"))
_FIELD_MANAGER = _param("fieldManager", _Q, (
    "fieldManager is a name associated with the actor or entity that is making these changes. The "
    "value must be less than or 128 characters long, and only contain printable characters, as "
    "defined by https://golang.org/pkg/unicode/#IsPrint."))
_FIELD_VALIDATION = _param("fieldValidation", _Q, (
    "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) "
    "containing unknown or duplicate fields. Valid values are: - Ignore: unknown fields are silently "
    "dropped from the object. - Warn: a warning is sent for each unknown field that is dropped; the "
    "request still succeeds. This is the default. - Strict: the request fails with a BadRequest "
    "error listing the unknown fields."))
_FORCE = _param("force", _Q, (
    "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields "
    "owned by other people. Force flag must be unset for non-apply patch requests."), "boolean")
_PRETTY = _param("pretty", _Q, "If 'true', then the output is pretty printed.")
_NAMESPACE = _param("namespace", "path", "object name and auth scope, such as for teams and projects",
                    required=True)
_LIST_PARAMS = [
    _param("allowWatchBookmarks", _Q, "allowWatchBookmarks requests watch events with type \"BOOKMARK\".",
           "boolean"),
    _param("continue", _Q, "The continue option should be set when retrieving more results from the server."),
    _param("fieldSelector", _Q, "A selector to restrict the list of returned objects by their fields."),
    _param("labelSelector", _Q, "A selector to restrict the list of returned objects by their labels."),
    _param("limit", _Q, "limit is a maximum number of responses to return for a list call.", "integer"),
    _param("resourceVersion", _Q, "resourceVersion sets a constraint on what resource versions a request may "
                                  "be served from."),
    _param("resourceVersionMatch", _Q, "resourceVersionMatch determines how resourceVersion is applied to "
                                       "list calls."),
    _param("sendInitialEvents", _Q, "`sendInitialEvents=true` may be set together with `watch=true`.",
           "boolean"),
    _param("timeoutSeconds", _Q, "Timeout for the list/watch call.", "integer"),
    _param("watch", _Q, "Watch for changes to the described resources and return them as a stream of add, "
                        "update, and remove notifications.", "boolean"),
]
_DELETE_PARAMS = [
    _DRY_RUN,
    _param("gracePeriodSeconds", _Q, "The duration in seconds before the object should be deleted.", "integer"),
    _param("orphanDependents", _Q, "Deprecated: please use the PropagationPolicy.", "boolean"),
    _param("propagationPolicy", _Q, "Whether and how garbage collection will be performed."),
]
_WRITE_PARAMS = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION]
_PATCH_PARAMS = [_DRY_RUN, _FIELD_MANAGER, _FIELD_VALIDATION, _FORCE]

_PATCH_TYPES_CUSTOM = ("application/apply-patch+yaml", "application/json-patch+json",
                       "application/merge-patch+json")
_PATCH_TYPES_BUILTIN = (*_PATCH_TYPES_CUSTOM, "application/strategic-merge-patch+json")


def _content(ref: str) -> dict[str, Any]:
    schema = {"$ref": _COMPONENTS + ref}
    return {"application/json": {"schema": schema}, "application/yaml": {"schema": schema}}


def _responses(ref: str, codes: Iterable[str]) -> dict[str, Any]:
    text = {"200": "OK", "201": "Created", "202": "Accepted"}
    out: dict[str, Any] = {c: {"content": _content(ref), "description": text[c]} for c in codes}
    out["401"] = {"description": "Unauthorized"}
    return out


def _camel(s: str) -> str:
    parts = s.replace("-", ".").split(".")
    return "".join(p[:1].upper() + p[1:] for p in parts if p)


def _group_tag(group: str) -> str:
    if not group:
        return "Core"
    return _camel(group.removesuffix(".k8s.io"))


class _PathBuilder:
    def __init__(self, group: str, version: str) -> None:
        self.group = group
        self.version = version
        self.prefix = "/" + group_version_path(group, version)
        self.tag = f"{_group_tag(group)[:1].lower()}{_group_tag(group)[1:]}_{version}"
        self.op_infix = f"{_group_tag(group)}{version[:1].upper()}{version[1:]}"
        self.paths: dict[str, dict[str, Any]] = {}
        self.builtin_refs: set[str] = set()  # definitions the operations reference

    def _op(self, verb: str, action: str, what: str, description: str, gvk: Mapping[str, str],
            params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        op: dict[str, Any] = {
            "description": description,
            "operationId": f"{verb}{self.op_infix}{what}",
            "tags": [self.tag],
            "x-kubernetes-action": action,
            _GVK: dict(gvk),
        }
        if params:
            op["parameters"] = list(params)
        return op

    def _path(self, url: str, path_params: list[dict[str, Any]]) -> dict[str, Any]:
        entry = self.paths.setdefault(url, {})
        entry["parameters"] = [*path_params, _PRETTY]
        return entry

    def add(self, rt: ResourceType) -> None:
        kind, plural = rt.kind, rt.plural
        gvk = {"group": rt.group, "kind": kind, "version": rt.version}
        ref = _definition_of(rt)
        list_ref = _list_definition_of(rt)
        ns = "Namespaced" if rt.namespaced else ""
        name_param = _param("name", "path", f"name of the {kind}", required=True)
        scope = [_NAMESPACE] if rt.namespaced else []
        collection = (f"{self.prefix}/namespaces/{{namespace}}/{plural}" if rt.namespaced
                      else f"{self.prefix}/{plural}")
        item = collection + "/{name}"
        patch_types = _PATCH_TYPES_BUILTIN if rt.definition is not None else _PATCH_TYPES_CUSTOM
        verbs = set(rt.verbs)
        self.builtin_refs.update((_STATUS, _DELETE_OPTIONS, _PATCH))

        def patch_op(what: str, description: str, target_gvk: Mapping[str, str], target: str) -> dict[str, Any]:
            op = self._op("patch", "patch", what, description, target_gvk, _PATCH_PARAMS)
            op["requestBody"] = {
                "content": {t: {"schema": {"$ref": _COMPONENTS + _PATCH}} for t in patch_types},
                "required": True,
            }
            op["responses"] = _responses(target, ("200", "201"))
            return op

        def put_op(what: str, description: str, target_gvk: Mapping[str, str], target: str) -> dict[str, Any]:
            op = self._op("replace", "put", what, description, target_gvk, _WRITE_PARAMS)
            op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": _COMPONENTS + target}}}, "required": True}
            op["responses"] = _responses(target, ("200", "201"))
            return op

        if verbs & {"list", "watch", "create", "deletecollection"}:
            entry = self._path(collection, scope)
            if "list" in verbs and list_ref is not None:
                op = self._op("list", "list", f"{ns}{kind}", f"list or watch objects of kind {kind}", gvk,
                              _LIST_PARAMS)
                op["responses"] = _responses(list_ref, ("200",))
                entry["get"] = op
            if "create" in verbs:
                op = self._op("create", "post", f"{ns}{kind}", f"create a {kind}", gvk, _WRITE_PARAMS)
                op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": _COMPONENTS + ref}}}, "required": True}
                op["responses"] = _responses(ref, ("200", "201", "202"))
                entry["post"] = op
            if "deletecollection" in verbs:
                op = self._op("deletecollection", "deletecollection", f"{ns}{kind}",
                              f"delete collection of {kind}", gvk, _DELETE_PARAMS + _LIST_PARAMS)
                op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": _COMPONENTS + _DELETE_OPTIONS}}}}
                op["responses"] = _responses(_STATUS, ("200",))
                entry["delete"] = op
        if rt.namespaced and "list" in verbs and list_ref is not None:
            entry = self._path(f"{self.prefix}/{plural}", [])
            op = self._op("list", "list", f"{kind}ForAllNamespaces", f"list or watch objects of kind {kind}",
                          gvk, _LIST_PARAMS)
            op["responses"] = _responses(list_ref, ("200",))
            entry["get"] = op
        if verbs & {"get", "update", "patch", "delete"}:
            entry = self._path(item, [name_param, *scope])
            if "get" in verbs:
                op = self._op("read", "get", f"{ns}{kind}", f"read the specified {kind}", gvk)
                op["responses"] = _responses(ref, ("200",))
                entry["get"] = op
            if "update" in verbs:
                entry["put"] = put_op(f"{ns}{kind}", f"replace the specified {kind}", gvk, ref)
            if "patch" in verbs:
                entry["patch"] = patch_op(f"{ns}{kind}", f"partially update the specified {kind}", gvk, ref)
            if "delete" in verbs:
                op = self._op("delete", "delete", f"{ns}{kind}", f"delete a {kind}", gvk, _DELETE_PARAMS)
                op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": _COMPONENTS + _DELETE_OPTIONS}}}}
                op["responses"] = _responses(_STATUS, ("200", "202"))
                entry["delete"] = op
        for sub in rt.subresources:
            self._subresource(rt, sub, item, [name_param, *scope], gvk, ref, put_op, patch_op)

    def _subresource(self, rt: ResourceType, sub: str, item: str, params: list[dict[str, Any]],
                     gvk: Mapping[str, str], ref: str, put_op: Any, patch_op: Any) -> None:
        kind = rt.kind
        ns = "Namespaced" if rt.namespaced else ""
        if sub in ("status", "scale"):
            target, target_gvk = ref, gvk
            if sub == "scale":
                target, target_gvk = _SCALE, {"group": "autoscaling", "kind": "Scale", "version": "v1"}
                self.builtin_refs.add(_SCALE)
            what = f"{ns}{kind}{sub.capitalize()}"
            entry = self._path(f"{item}/{sub}", params)
            op = self._op("read", "get", what, f"read {sub} of the specified {kind}", target_gvk)
            op["responses"] = _responses(target, ("200",))
            entry["get"] = op
            entry["put"] = put_op(what, f"replace {sub} of the specified {kind}", target_gvk, target)
            entry["patch"] = patch_op(what, f"partially update {sub} of the specified {kind}", target_gvk, target)
        elif sub == "token":
            self.builtin_refs.add(_TOKEN_REQUEST)
            target_gvk = {"group": "authentication.k8s.io", "kind": "TokenRequest", "version": "v1"}
            entry = self._path(f"{item}/token", params)
            op = self._op("create", "post", f"{ns}{kind}Token", f"create token of a {kind}", target_gvk,
                          _WRITE_PARAMS)
            op["requestBody"] = {"content": {"*/*": {"schema": {"$ref": _COMPONENTS + _TOKEN_REQUEST}}},
                                 "required": True}
            op["responses"] = _responses(_TOKEN_REQUEST, ("200", "201", "202"))
            entry["post"] = op
        elif sub == "log":
            entry = self._path(f"{item}/log", params)
            op = self._op("read", "get", f"{ns}{kind}Log", f"read log of the specified {kind}", gvk, [
                _param("container", _Q, "The container for which to stream logs."),
                _param("follow", _Q, "Follow the log stream of the pod.", "boolean"),
                _param("previous", _Q, "Return previous terminated container logs.", "boolean"),
                _param("sinceSeconds", _Q, "A relative time in seconds before the current time.", "integer"),
                _param("tailLines", _Q, "The number of lines from the end of the logs to show.", "integer"),
                _param("timestamps", _Q, "Add an RFC3339 timestamp at the beginning of every line.", "boolean"),
            ])
            op["responses"] = {"200": {"content": {"text/plain": {"schema": {"type": "string"}}},
                                       "description": "OK"},
                               "401": {"description": "Unauthorized"}}
            entry["get"] = op


# --------------------------------------------------------------------------- documents


def openapi_v3_document(registry: Registry, group: str, version: str) -> dict[str, Any]:
    """The OpenAPI v3 document of one served group-version (core group: `group=""`)."""
    types = registry.in_group_version(group, version)
    if not types:
        raise UnknownResource(group_version_path(group, version))
    builder = _PathBuilder(group, version)
    components: dict[str, Any] = {}
    builtin_roots: list[str] = []
    for rt in types:
        builder.add(rt)
        if rt.definition is not None:
            builtin_roots.append(rt.definition)
            list_def = _list_definition_of(rt)
            if list_def is not None:
                builtin_roots.append(list_def)
        else:
            components.update(_custom_components(rt))
            builtin_roots.extend((_META + "ObjectMeta", _META + "ListMeta"))
    builtin_roots.extend(sorted(builder.builtin_refs))
    _add_closure(components, builtin_roots)
    return {
        "components": {"schemas": dict(sorted(components.items()))},
        "info": {"title": "isthmus", "version": KUBERNETES_VERSION},
        "openapi": OPENAPI_VERSION,
        "paths": dict(sorted(builder.paths.items())),
    }


def canonical_json(doc: Mapping[str, Any]) -> bytes:
    """The canonical serialization a document's hash is computed over."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def document_hash(doc: Mapping[str, Any]) -> str:
    """SHA-512 of the canonical JSON of a document, in upper-case hex (as Kubernetes writes it)."""
    return hashlib.sha512(canonical_json(doc)).hexdigest().upper()


def _index(hashes: Mapping[str, str]) -> dict[str, Any]:
    return {"paths": {path: {"serverRelativeURL": f"/openapi/v3/{path}?hash={h}"}
                      for path, h in sorted(hashes.items())}}


def openapi_v3_index(registry: Registry) -> dict[str, Any]:
    """The JSON of `GET /openapi/v3`: every served group-version and where its document is."""
    hashes: dict[str, str] = {}
    for group, versions in registry.group_versions().items():
        for version in versions:
            hashes[group_version_path(group, version)] = document_hash(
                openapi_v3_document(registry, group, version))
    return _index(hashes)


class OpenAPICache:
    """Built documents per group-version, kept until `invalidate()` (call it when CRDs change)."""

    def __init__(self, registry: Registry) -> None:
        self._registry = registry
        self._docs: dict[tuple[str, str], dict[str, Any]] = {}
        self._bytes: dict[tuple[str, str], bytes] = {}
        self._hashes: dict[tuple[str, str], str] = {}
        self._index: dict[str, Any] | None = None

    def invalidate(self) -> None:
        """Forget every document: the next request rebuilds from the registry as it is then."""
        self._docs.clear()
        self._bytes.clear()
        self._hashes.clear()
        self._index = None

    def document(self, group: str, version: str) -> dict[str, Any]:
        """The document of a group-version (shared: do not modify). Raises UnknownResource."""
        key = (group, version)
        doc = self._docs.get(key)
        if doc is None:
            doc = openapi_v3_document(self._registry, group, version)
            self._docs[key] = doc
        return doc

    def document_bytes(self, group: str, version: str) -> bytes:
        """The document serialized as JSON (what the server sends)."""
        key = (group, version)
        data = self._bytes.get(key)
        if data is None:
            data = canonical_json(self.document(group, version))
            self._bytes[key] = data
        return data

    def hash(self, group: str, version: str) -> str:
        """The document's hash, as in the index's `?hash=` (usable as an ETag)."""
        key = (group, version)
        h = self._hashes.get(key)
        if h is None:
            h = hashlib.sha512(self.document_bytes(group, version)).hexdigest().upper()
            self._hashes[key] = h
        return h

    def index(self) -> dict[str, Any]:
        """The JSON of `GET /openapi/v3`."""
        if self._index is None:
            hashes = {group_version_path(g, v): self.hash(g, v)
                      for g, versions in self._registry.group_versions().items() for v in versions}
            self._index = _index(hashes)
        return self._index


# -- OpenAPI v2 ---------------------------------------------------------------------
#
# isthmus publishes its schemas as OpenAPI v3 only. kubectl still asks for v2 when
# a group-version is missing from the v3 index (an unknown kind, or kubectl <= 1.28
# for everything); with no v2 document at all it refuses to continue. An empty v2
# document (no paths, no definitions) tells it truthfully that v2 holds nothing:
# kubectl then skips client-side checks for what it cannot look up and reports
# unknown kinds as such ("no matches for kind ...").

OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
OPENAPI_V2_INFO = {"title": "isthmus", "version": "v1.32.0"}


def _pb_string(field: int, value: str) -> bytes:
    data = value.encode()
    return bytes([(field << 3) | 2, len(data)]) + data


def openapi_v2_empty_json() -> dict[str, Any]:
    return {"swagger": "2.0", "info": dict(OPENAPI_V2_INFO), "paths": {}, "definitions": {}}


def openapi_v2_empty_protobuf() -> bytes:
    """The same empty document in the protobuf form (openapi_v2.Document) kubectl asks for.

    Document: 1 swagger, 2 info (Info: 1 title, 2 version). Three strings need no
    protobuf library.
    """
    info = _pb_string(1, OPENAPI_V2_INFO["title"]) + _pb_string(2, OPENAPI_V2_INFO["version"])
    return _pb_string(1, "2.0") + bytes([(2 << 3) | 2, len(info)]) + info
