"""The verbs on stored objects: get, list, create, update, patch, delete.

`Objects` turns API requests into store writes the way Kubernetes' generic
registry does: it fills metadata (uid, creationTimestamp, generation), runs the
kind's strategy (defaults, allocation, validation), validates against the
kind's schema (built-in OpenAPI or the CRD's openAPIV3Schema) honouring
`fieldValidation`, applies the three patch types, keeps `status` and `spec`
apart where a status subresource exists, and translates store errors into API
errors. It owns the side effects of some kinds: a Namespace gets its `default`
ServiceAccount, deleting a Namespace deletes what is in it, storing a CRD makes
its resources servable.
"""

from __future__ import annotations

import builtins
import copy
import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from isthmus.adapters.store import AlreadyExists, Conflict, NotFound, Record, Store, make_key
from isthmus.core import patch as patching
from isthmus.core.selectors import FieldSelector, LabelSelector, object_fields
from isthmus.resources import crdschema, schemas
from isthmus.resources.registry import Registry, ResourceType

from . import strategies
from .errors import ApiError, already_exists, bad_request, conflict, invalid, not_found

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
PATCH_TYPES = [JSON_PATCH, MERGE_PATCH, STRATEGIC_PATCH]


def rfc3339(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class WriteResult:
    obj: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    created: bool = False


PATCH_ATTEMPTS = 5  # a patch is applied again to the newest object this often when another write intervenes


@dataclass
class PendingCreate:
    """A create between its phases: the object as it stands and the warnings so far."""

    rt: ResourceType
    namespace: str
    obj: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


@dataclass
class PendingUpdate:
    """An update or patch between its phases: the stored record and the new object as it stands."""

    rt: ResourceType
    namespace: str
    name: str
    cur: Record
    new: dict[str, Any]
    subresource: str = ""
    warnings: list[str] = field(default_factory=list)
    retryable: bool = False  # a patch: on a conflict, apply it again to the newest object

    def may_retry(self, e: ApiError, dry_run: bool) -> bool:
        """Whether a failed store of this patch should start over from the newest object."""
        patched_rv = (self.new.get("metadata") or {}).get("resourceVersion")
        return (self.retryable and e.reason == "Conflict" and not dry_run
                and patched_rv in (None, "", str(self.cur.rev)))


class Objects:
    def __init__(self, *, store: Store, registry: Registry, clock: Callable[[], dt.datetime],
                 allocators: strategies.Allocators, on_crd_change: Callable[[], None] = lambda: None) -> None:
        self.store = store
        self.registry = registry
        self._clock = clock
        self._alloc = allocators
        self._on_crd_change = on_crd_change
        crd_rt = registry.lookup("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        for rec in store.list(crd_rt.key):
            registry.set_crd(rec.obj())
        for rec in store.list("services"):
            strategies.mark_service(rec.obj(), allocators)

    # -- keys and lookups ------------------------------------------------------

    @staticmethod
    def key(rt: ResourceType, namespace: str, name: str) -> str:
        return make_key(rt.key, namespace if rt.namespaced else "", name)

    def record(self, rt: ResourceType, namespace: str, name: str) -> Record:
        rec = self.store.get(self.key(rt, namespace, name))
        if rec is None:
            raise not_found(rt.plural, rt.group, name)
        return rec

    def get(self, rt: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        return self._served(rt, self.record(rt, namespace, name).obj())

    @staticmethod
    def _served(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as served at the requested version (custom resources are stored at one version)."""
        if rt.is_custom and obj.get("apiVersion") != rt.api_version:
            obj["apiVersion"] = rt.api_version
        return obj

    def list(self, rt: ResourceType, namespace: str | None, labels: LabelSelector | None,
             fields: FieldSelector | None) -> builtins.list[Record]:
        records = self.store.list(rt.key, namespace if rt.namespaced else None)
        if (labels is None or labels.empty) and fields is None:
            return records
        out: builtins.list[Record] = []
        for rec in records:
            obj = rec.obj()
            if matches(rt, obj, labels, fields):
                out.append(rec)
        return out

    def _require_namespace(self, rt: ResourceType, namespace: str) -> None:
        if rt.namespaced and self.store.get(make_key("namespaces", "", namespace)) is None:
            raise not_found("namespaces", "", namespace)

    # -- validation ------------------------------------------------------------

    def _validate(self, rt: ResourceType, obj: dict[str, Any], field_validation: str) -> tuple[dict[str, Any], builtins.list[str]]:
        """Schema-check `obj`; returns the object with unknown fields dropped and the warnings."""
        if rt.is_custom:
            if rt.crd_schema is None:
                return obj, []
            result = crdschema.validate_custom(rt.crd_schema, obj)
            pruned = crdschema.prune_custom(rt.crd_schema, obj) if result.unknown_fields else obj
            errors_code = 422
        else:
            result = schemas.validate_builtin(rt, obj)
            pruned = schemas.prune_unknown(rt, obj) if result.unknown_fields else obj
            errors_code = 400
        name = (obj.get("metadata") or {}).get("name", "")
        if result.errors:
            if errors_code == 422:
                raise invalid(rt.kind, rt.group, name, [_cause(e) for e in result.errors])
            raise bad_request(f'{rt.kind} in version "{rt.version}" cannot be handled as a {rt.kind}: '
                              + "; ".join(result.errors))
        warnings: list[str] = []
        if result.unknown_fields:
            msgs = [f'unknown field "{f}"' for f in result.unknown_fields]
            if field_validation == "Strict":
                raise bad_request("strict decoding error: " + ", ".join(msgs))
            if field_validation != "Ignore":
                warnings = msgs
        return pruned, warnings

    def _check_kind(self, rt: ResourceType, obj: Any) -> None:
        if not isinstance(obj, dict):
            raise bad_request("the request body must be a JSON or YAML object")
        api_version, kind = obj.get("apiVersion"), obj.get("kind")
        if (kind and kind != rt.kind) or (api_version and api_version != rt.api_version):
            raise bad_request(f"the API version in the data ({api_version}) does not match the expected API "
                              f"version ({rt.api_version})" if api_version != rt.api_version else
                              f"the kind in the data ({kind}) does not match the expected kind ({rt.kind})")
        obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind

    # -- create ------------------------------------------------------------------
    #
    # A create runs in phases so that admission webhooks (components/apiserver/
    # admission.py) can be called between them, as in kube-apiserver: `begin_create`
    # decodes and schema-checks the object (mutating webhooks see it then),
    # `complete_create` sets metadata and runs the kind's strategy (validating
    # webhooks see the result), `store_create` writes it. `create` runs all three.

    def create(self, rt: ResourceType, namespace: str, obj: Any, *, field_validation: str = "Warn",
               dry_run: bool = False) -> WriteResult:
        pending = self.begin_create(rt, namespace, obj, field_validation=field_validation)
        self.complete_create(pending)
        return self.store_create(pending, dry_run=dry_run)

    def begin_create(self, rt: ResourceType, namespace: str, obj: Any, *,
                     field_validation: str = "Warn") -> PendingCreate:
        self._check_kind(rt, obj)
        self._require_namespace(rt, namespace)
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        if rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent "
                                  "on the request")
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        obj, warnings = self._validate(rt, obj, field_validation)
        return PendingCreate(rt, namespace, obj, warnings)

    def complete_create(self, p: PendingCreate) -> None:
        """Metadata, defaults, allocation and validation of the kind, in place; raises 422 on invalid objects."""
        rt, obj = p.rt, p.obj
        meta = obj["metadata"]
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + uuid.uuid4().hex[:5]
        for k in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(k, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = rfc3339(self._clock())
        if strategies.has_generation(rt):
            meta["generation"] = 1
        causes = strategies.on_create(rt, obj, self._alloc)
        if causes:
            self._release(rt, obj)
            raise invalid(rt.kind, rt.group, meta.get("name", ""), causes)

    def abandon_create(self, p: PendingCreate) -> None:
        """Give back what `complete_create` allocated for an object that will not be stored."""
        self._release(p.rt, p.obj)

    def store_create(self, p: PendingCreate, *, dry_run: bool = False) -> WriteResult:
        rt, obj = p.rt, p.obj
        meta = obj["metadata"]
        key = self.key(rt, p.namespace, meta["name"])
        if dry_run:
            self._release(rt, obj)
            if self.store.get(key) is not None:
                raise already_exists(rt.plural, rt.group, meta["name"])
            return WriteResult(obj, p.warnings, created=True)
        try:
            rec = self.store.create(key, obj)
        except AlreadyExists:
            self._release(rt, obj)
            raise already_exists(rt.plural, rt.group, meta["name"]) from None
        self._after_create(rt, rec)
        return WriteResult(self._served(rt, rec.obj()), p.warnings, created=True)

    def _release(self, rt: ResourceType, obj: dict[str, Any]) -> None:
        if rt.group == "" and rt.plural == "services":
            strategies.release_service(obj, self._alloc)

    def _after_create(self, rt: ResourceType, rec: Record) -> None:
        if rt.group == "" and rt.plural == "namespaces":
            ns = rec.obj()["metadata"]["name"]
            sa_rt = self.registry.lookup("", "v1", "serviceaccounts")
            if self.store.get(self.key(sa_rt, ns, "default")) is None:
                self.create(sa_rt, ns, {"apiVersion": "v1", "kind": "ServiceAccount",
                                        "metadata": {"name": "default"}})
        elif rt.group == "apiextensions.k8s.io":
            self.registry.set_crd(rec.obj())
            self._on_crd_change()

    # -- update and patch --------------------------------------------------------
    #
    # In phases too: `begin_update` / `begin_patch` give the new object as the
    # client asked for it (mutating webhooks see it then), `complete_update`
    # validates it and runs the kind's strategy, `store_update` writes it.

    def update(self, rt: ResourceType, namespace: str, name: str, obj: Any, *, subresource: str = "",
               field_validation: str = "Warn", dry_run: bool = False) -> WriteResult:
        pending = self.begin_update(rt, namespace, name, obj, subresource=subresource)
        self.complete_update(pending, field_validation=field_validation)
        return self.store_update(pending, dry_run=dry_run)

    def begin_update(self, rt: ResourceType, namespace: str, name: str, obj: Any, *,
                     subresource: str = "") -> PendingUpdate:
        self._check_kind(rt, obj)
        meta = obj.get("metadata") or {}
        if meta.get("name") and meta["name"] != name:
            raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({name})")
        cur = self.store.get(self.key(rt, namespace, name))
        if cur is None:
            raise not_found(rt.plural, rt.group, name)
        expected = meta.get("resourceVersion")
        if expected not in (None, "") and str(expected) != str(cur.rev):
            raise conflict(rt.plural, rt.group, name)
        return PendingUpdate(rt, namespace, name, cur, obj, subresource)

    @staticmethod
    def decode_patch(body: bytes) -> Any:
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise bad_request(f"the patch is not valid JSON: {e}") from None

    def patch(self, rt: ResourceType, namespace: str, name: str, content_type: str, body: bytes, *,
              subresource: str = "", field_validation: str = "Warn", dry_run: bool = False) -> WriteResult:
        patch_doc = self.decode_patch(body)
        for _attempt in range(PATCH_ATTEMPTS):
            pending = self.begin_patch(rt, namespace, name, content_type, patch_doc, subresource=subresource)
            try:
                self.complete_update(pending, field_validation=field_validation)
                return self.store_update(pending, dry_run=dry_run)
            except ApiError as e:
                if pending.may_retry(e, dry_run):
                    continue
                raise
        raise conflict(rt.plural, rt.group, name)

    def begin_patch(self, rt: ResourceType, namespace: str, name: str, content_type: str, patch_doc: Any, *,
                    subresource: str = "") -> PendingUpdate:
        """The stored object with the patch applied (one attempt: a conflict on store means begin again)."""
        cur = self.record(rt, namespace, name)
        obj = cur.obj()
        try:
            if content_type == MERGE_PATCH:
                new = patching.merge_patch(obj, patch_doc)
            elif content_type == JSON_PATCH:
                new = patching.json_patch(obj, patch_doc)
            else:  # strategic
                if rt.is_custom:
                    raise ApiError(415, "UnsupportedMediaType",
                                   "strategic merge patch is not supported for custom resources; "
                                   "use --type=merge or --type=json")
                new = patching.strategic_merge_patch(obj, patch_doc, schemas.patch_meta_for(rt))
        except patching.PatchError as e:
            raise ApiError(422, "Invalid", f"the patch could not be applied: {e}") from None
        if not isinstance(new, dict):
            raise ApiError(422, "Invalid", "the patch could not be applied: the result is not an object")
        patched_rv = (new.get("metadata") or {}).get("resourceVersion")
        if patched_rv not in (None, "", str(cur.rev)):
            raise conflict(rt.plural, rt.group, name)
        return PendingUpdate(rt, namespace, name, cur, new, subresource, retryable=True)

    def complete_update(self, p: PendingUpdate, *, field_validation: str = "Warn") -> None:
        """Validate the new object and run the kind's strategy; `p.new` becomes the object to store."""
        rt, old = p.rt, p.cur.obj()
        new = copy.deepcopy(p.new)
        new["apiVersion"], new["kind"] = old["apiVersion"], old["kind"]
        new, warnings = self._validate(rt, new, field_validation)
        meta = new.setdefault("metadata", {})
        ometa = old["metadata"]
        for k in ("uid", "creationTimestamp", "name", "namespace", "generation", "deletionTimestamp"):
            if k in ometa:
                meta[k] = ometa[k]
            else:
                meta.pop(k, None)
        meta.pop("managedFields", None)
        if p.subresource == "status":
            # Only the status moves; everything else stays as stored.
            new = {**old, "status": new.get("status", {})}
        elif "status" in rt.subresources:
            if "status" in old:
                new["status"] = old["status"]
            else:
                new.pop("status", None)
        causes = strategies.on_update(rt, old, new, self._alloc) if p.subresource != "status" else []
        if causes:
            raise invalid(rt.kind, rt.group, p.name, causes)
        p.new, p.warnings = new, p.warnings + warnings

    def abandon_update(self, p: PendingUpdate) -> None:
        """Give back an address `complete_update` allocated for an update that will not be stored."""
        if p.rt.group == "" and p.rt.plural == "services":
            def ingress(o: dict[str, Any]) -> set[str]:
                return {i.get("ip", "") for i in ((o.get("status") or {}).get("loadBalancer") or {}).get("ingress")
                        or []}
            for ip in ingress(p.new) - ingress(p.cur.obj()):
                self._alloc.load_balancers.release(ip)

    def store_update(self, p: PendingUpdate, *, dry_run: bool = False) -> WriteResult:
        rt, name, new, cur = p.rt, p.name, p.new, p.cur
        old = cur.obj()
        ometa = old["metadata"]
        if new == {**old, "metadata": {**ometa, "resourceVersion": ometa.get("resourceVersion")}} \
                or new == old:
            return WriteResult(self._served(rt, old), p.warnings)  # no-op writes do not move the revision
        if dry_run:
            return WriteResult(new, p.warnings)
        try:
            rec = self.store.update(cur.key, new, expected_rev=cur.rev)
        except Conflict:
            raise conflict(rt.plural, rt.group, name) from None
        except NotFound:
            raise not_found(rt.plural, rt.group, name) from None
        if rt.group == "apiextensions.k8s.io":
            self.registry.set_crd(rec.obj())
            self._on_crd_change()
        return WriteResult(self._served(rt, rec.obj()), p.warnings)

    def validate(self, rt: ResourceType, obj: dict[str, Any], field_validation: str) -> tuple[dict[str, Any], builtins.list[str]]:
        """Schema-check `obj` as a write does (400/422 on errors); returns it without unknown fields, and warnings."""
        return self._validate(rt, obj, field_validation)

    # -- delete --------------------------------------------------------------------

    def delete(self, rt: ResourceType, namespace: str, name: str, *, precondition_rv: str | None = None,
               precondition_uid: str | None = None, dry_run: bool = False,
               propagation: str = "Background") -> dict[str, Any]:
        cur = self.record(rt, namespace, name)
        obj = cur.obj()
        if precondition_uid and obj["metadata"].get("uid") != precondition_uid:
            raise conflict(rt.plural, rt.group, name)
        if precondition_rv and precondition_rv != str(cur.rev):
            raise conflict(rt.plural, rt.group, name)
        if dry_run:
            return obj
        if rt.group == "" and rt.plural == "namespaces":
            self._empty_namespace(name)
        try:
            rec = self.store.delete(cur.key, expected_rev=cur.rev)
        except (Conflict, NotFound):
            raise conflict(rt.plural, rt.group, name) from None
        deleted = rec.obj()
        self._release(rt, deleted)
        if propagation != "Orphan":
            self._delete_dependents(deleted["metadata"].get("uid", ""))
        if rt.group == "apiextensions.k8s.io":
            self._delete_custom_objects(deleted)
            self.registry.remove_crd(name)
            self._on_crd_change()
        return self._served(rt, deleted)

    def _delete_dependents(self, owner_uid: str) -> None:
        """Garbage collection by ownerReferences: objects owned by a deleted object go too (recursively)."""
        if not owner_uid:
            return
        for t in self.registry.all():
            if t.verbs == ("create",):
                continue
            for rec in self.store.list(t.key):
                if owner_uid.encode() not in rec.value:  # cheap filter before parsing
                    continue
                obj = rec.obj()
                refs = obj["metadata"].get("ownerReferences") or []
                if any(r.get("uid") == owner_uid for r in refs) and self.store.get(rec.key) is not None:
                    gone = self.store.delete(rec.key)
                    self._release(t, obj)
                    self._delete_dependents(gone.obj()["metadata"].get("uid", ""))

    def _empty_namespace(self, namespace: str) -> None:
        for t in self.registry.all():
            if not t.namespaced or t.verbs == ("create",):
                continue
            for rec in self.store.list(t.key, namespace):
                if self.store.get(rec.key) is not None:
                    self.store.delete(rec.key)
                    self._release(t, rec.obj())

    def _delete_custom_objects(self, crd: dict[str, Any]) -> None:
        spec = crd.get("spec") or {}
        resource = f"{spec.get('group')}/{(spec.get('names') or {}).get('plural')}"
        for rec in self.store.list(resource):
            self.store.delete(rec.key)

    def __repr__(self) -> str:
        return f"<Objects {self.store!r} {self.registry!r}>"


def _cause(error: str) -> tuple[str, str]:
    """Split a schema error "spec.x: Invalid value: ..." into (field, message) for a Status cause."""
    field_path, sep, message = error.partition(": ")
    if sep and " " not in field_path:
        return field_path, message
    return "", error


def matches(rt: ResourceType, obj: dict[str, Any], labels: LabelSelector | None,
            fields: FieldSelector | None) -> bool:
    if labels is not None and not labels.matches((obj.get("metadata") or {}).get("labels") or {}):
        return False
    return fields is None or fields.matches(object_fields(obj, rt.namespaced))
