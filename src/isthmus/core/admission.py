"""Admission webhooks, decided without I/O: which webhooks a request goes to, what they are sent, what their answers mean.

The embedded API server calls `admissionregistration.k8s.io/v1` webhooks the
way kube-apiserver does, so a webhook server (the mesh's sidecar injector, for
one) behaves the same on an embedded cluster and on Kubernetes. This module is
the part of that without sockets or clocks; the API server's
`components/apiserver/admission.py` does the HTTPS calls.

Promises:

* `defaults` / `validate_configuration` give a Mutating- or
  ValidatingWebhookConfiguration Kubernetes' defaults and check it with
  Kubernetes' rules and wording (`webhooks[0].sideEffects: Unsupported value:
  ...`); `webhooks_of` reads a stored (valid) configuration into `Webhook`s.
* `ordered` sorts webhooks as kube-apiserver calls them: configurations by
  name, webhooks in their order within one.
* `matches_rules` and `matches` decide with Kubernetes' semantics: operations,
  apiGroups, apiVersions and resources with `*`, `resource/*`, `*/sub` and
  `*/*`; scope; namespaceSelector on the labels of the object's namespace (of
  the object itself for Namespaces; cluster-scoped objects are never skipped
  by it); objectSelector on the new or the old object's labels. Objects of
  `admissionregistration.k8s.io` never go to webhooks, so a broken webhook
  cannot lock its own configuration. Every namespace carries
  `kubernetes.io/metadata.name: <name>` for the namespaceSelector, as every
  Kubernetes namespace does.
* `review` builds the `admission.k8s.io/v1` AdmissionReview request;
  `parse_response` checks the answer (kind, uid, patch type) and returns a
  `Response`; `apply_patch` applies its JSON patch. Failures are
  `InvalidResponse` / `PatchFailed` with messages that name what was wrong.
* `denial`, `call_failure`, `dry_run_refusal` and `patch_failure` turn
  outcomes into the `Status` kube-apiserver answers with (`admission webhook
  "x" denied the request: ...`, `Internal error occurred: failed calling
  webhook "x": ...`, `admission webhook "x" does not support dry run`);
  `call_failure` returns None under `failurePolicy: Ignore`.
* `service_endpoints` resolves a webhook's `clientConfig.service` through the
  Service and its Endpoints, as kube-apiserver with endpoint routing does.

Not done: `matchConditions` (CEL) are refused when a configuration is
written; `reinvocationPolicy: IfNeeded` is accepted but webhooks are called
once each; `matchPolicy: Equivalent` matches as `Exact` (one version of each
resource is served). Pure: no I/O, no clock, no randomness (the request uid is
passed in).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from isthmus.core import patch as patching
from isthmus.core.jsonvalue import json_type
from isthmus.core.names import validate_dns1123_subdomain
from isthmus.core.rbac import User
from isthmus.core.selectors import LabelSelector, SelectorError, selector_from_label_selector_object

__all__ = [
    "GROUP",
    "REVIEW_API_VERSION",
    "ClientConfig",
    "InvalidResponse",
    "PatchFailed",
    "Request",
    "ResolveError",
    "Response",
    "Rule",
    "ServiceRef",
    "Status",
    "Webhook",
    "apply_patch",
    "call_failure",
    "defaults",
    "denial",
    "dry_run_refusal",
    "exempt",
    "is_loopback_host",
    "matches",
    "matches_rules",
    "namespace_to_look_up",
    "ordered",
    "parse_response",
    "patch_failure",
    "review",
    "service_endpoints",
    "validate_configuration",
    "webhooks_of",
]

GROUP: Final = "admissionregistration.k8s.io"
REVIEW_API_VERSION: Final = "admission.k8s.io/v1"
NAMESPACE_NAME_LABEL: Final = "kubernetes.io/metadata.name"

OPERATIONS: Final = ("CREATE", "UPDATE", "DELETE", "CONNECT")
_OPERATION_VALUES: Final = ("*", "CONNECT", "CREATE", "DELETE", "UPDATE")
_SCOPES: Final = ("*", "Cluster", "Namespaced")
_FAILURE_POLICIES: Final = ("Fail", "Ignore")
_MATCH_POLICIES: Final = ("Equivalent", "Exact")
_REINVOCATION_POLICIES: Final = ("IfNeeded", "Never")
_SIDE_EFFECTS: Final = ("None", "NoneOnDryRun")
_REVIEW_VERSIONS: Final = ("v1", "v1beta1")

Causes = list[tuple[str, str]]


# --------------------------------------------------------------------------- webhooks


@dataclass(frozen=True, slots=True)
class Rule:
    operations: tuple[str, ...]
    api_groups: tuple[str, ...]
    api_versions: tuple[str, ...]
    resources: tuple[str, ...]
    scope: str = "*"


@dataclass(frozen=True, slots=True)
class ServiceRef:
    namespace: str
    name: str
    port: int = 443
    path: str = ""

    @property
    def host(self) -> str:
        """The DNS name the webhook's serving certificate must carry."""
        return f"{self.name}.{self.namespace}.svc"


@dataclass(frozen=True, slots=True)
class ClientConfig:
    url: str = ""
    service: ServiceRef | None = None
    ca_bundle: bytes = b""  # PEM; empty means the system's trusted roots

    def display_url(self, timeout_seconds: int) -> str:
        """The URL as kube-apiserver names it in messages (a service by its DNS name)."""
        if self.service is not None:
            s = self.service
            base = f"https://{s.host}:{s.port}{s.path or '/'}"
        else:
            base = self.url
        return f"{base}?timeout={timeout_seconds}s"


@dataclass(frozen=True, slots=True)
class Webhook:
    name: str
    configuration: str
    mutating: bool
    client: ClientConfig
    rules: tuple[Rule, ...]
    failure_policy: str = "Fail"
    match_policy: str = "Equivalent"
    namespace_selector: LabelSelector = field(default_factory=LabelSelector)
    object_selector: LabelSelector = field(default_factory=LabelSelector)
    side_effects: str = "None"
    timeout_seconds: int = 10
    reinvocation_policy: str = "Never"


def _strs(value: Any) -> tuple[str, ...]:
    return tuple(v for v in value if isinstance(v, str)) if isinstance(value, list) else ()


def webhooks_of(config: Mapping[str, Any], *, mutating: bool) -> list[Webhook]:
    """The webhooks of a stored configuration (already defaulted and valid), in their order."""
    out: list[Webhook] = []
    cname = str((config.get("metadata") or {}).get("name") or "")
    for hook in config.get("webhooks") or []:
        cc = hook.get("clientConfig") or {}
        svc = cc.get("service")
        service = None
        if isinstance(svc, Mapping):
            service = ServiceRef(str(svc.get("namespace") or ""), str(svc.get("name") or ""),
                                 int(svc.get("port") or 443), str(svc.get("path") or ""))
        try:
            ca = base64.b64decode(cc.get("caBundle") or "", validate=True)
        except (binascii.Error, ValueError):
            ca = b"-invalid-"  # a call fails (and says so) rather than trusting the system roots
        rules = tuple(Rule(_strs(r.get("operations")), _strs(r.get("apiGroups")), _strs(r.get("apiVersions")),
                           _strs(r.get("resources")), str(r.get("scope") or "*"))
                      for r in hook.get("rules") or [] if isinstance(r, Mapping))
        out.append(Webhook(
            name=str(hook.get("name") or ""), configuration=cname, mutating=mutating,
            client=ClientConfig(url=str(cc.get("url") or ""), service=service, ca_bundle=ca),
            rules=rules,
            failure_policy=str(hook.get("failurePolicy") or "Fail"),
            match_policy=str(hook.get("matchPolicy") or "Equivalent"),
            namespace_selector=selector_from_label_selector_object(hook.get("namespaceSelector") or {}),
            object_selector=selector_from_label_selector_object(hook.get("objectSelector") or {}),
            side_effects=str(hook.get("sideEffects") or ""),
            timeout_seconds=int(hook.get("timeoutSeconds") or 10),
            reinvocation_policy=str(hook.get("reinvocationPolicy") or "Never"),
        ))
    return out


def ordered(configurations: Iterable[Mapping[str, Any]], *, mutating: bool) -> list[Webhook]:
    """Every webhook of the configurations in calling order: configurations by name, then as listed."""
    configs = sorted(configurations, key=lambda c: str((c.get("metadata") or {}).get("name") or ""))
    return [w for c in configs for w in webhooks_of(c, mutating=mutating)]


# --------------------------------------------------------------------------- defaults and validation


def defaults(config: dict[str, Any], *, mutating: bool) -> None:
    """Fill in Kubernetes' defaults, in place (as kube-apiserver stores them)."""
    for hook in config.get("webhooks") or []:
        if not isinstance(hook, dict):
            continue
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        if hook.get("namespaceSelector") is None:
            hook["namespaceSelector"] = {}
        if hook.get("objectSelector") is None:
            hook["objectSelector"] = {}
        hook.setdefault("timeoutSeconds", 10)
        if mutating:
            hook.setdefault("reinvocationPolicy", "Never")
        for rule in hook.get("rules") or []:
            if isinstance(rule, dict):
                rule.setdefault("scope", "*")
        svc = (hook.get("clientConfig") or {}).get("service")
        if isinstance(svc, dict):
            svc.setdefault("port", 443)


def _unsupported(value: Any, supported: Sequence[str]) -> str:
    shown = json.dumps(value) if isinstance(value, str) else repr(value)
    return f"Unsupported value: {shown}: supported values: " + ", ".join(f'"{s}"' for s in supported)


def _check_list(path: str, values: Any, *, what: str) -> tuple[Causes, tuple[str, ...]]:
    if not isinstance(values, list) or not values:
        return [(path, "Required value")], ()
    items = _strs(values)
    causes: Causes = []
    if "*" in items and len(items) > 1:
        causes.append((path, f"Invalid value: {_go_list(items)}: if '*' is present, must not specify other {what}"))
    for i, v in enumerate(items):
        if v == "" and what != "API groups":
            causes.append((f"{path}[{i}]", "Required value"))
    return causes, items


def _go_list(items: Sequence[str]) -> str:
    return "[]string{" + ", ".join(json.dumps(i) for i in items) + "}"


def _check_resources(path: str, values: Any) -> Causes:
    causes, items = _check_list(path, values, what="resources")
    if not items:
        return causes
    with_sub: dict[str, set[str]] = {}
    for i, r in enumerate(items):
        if r == "":
            continue
        res, sep, sub = r.partition("/")
        if sep and (not res or not sub or "/" in sub):
            causes.append((f"{path}[{i}]", f'Invalid value: "{r}": must be "resource", "resource/subresource", '
                                            '"resource/*", "*/subresource" or "*/*"'))
            continue
        with_sub.setdefault(res, set()).add(sub if sep else "")
    if "*/*" in items and len(items) > 1:
        causes.append((path, f"Invalid value: {_go_list(items)}: if '*/*' is present, must not specify other resources"))
    if "*" in items and any(r != "*" and "/" not in r for r in items):
        causes.append((path, f"Invalid value: {_go_list(items)}: if '*' is present, must not specify other "
                             "resources without subresources"))
    for res, subs in with_sub.items():
        if "*" in subs and len(subs - {"*", ""}) > 0:
            causes.append((path, f"Invalid value: {_go_list(items)}: if '{res}/*' is present, must not specify "
                                 f"{res}/subresource"))
    return causes


def _check_url(path: str, url: Any) -> Causes:
    if not isinstance(url, str) or not url:
        return [(path, "Required value")]
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError as e:
        return [(path, f'Invalid value: "{url}": {e}')]
    causes: Causes = []
    if parts.scheme != "https":
        causes.append((path, f"Invalid value: \"{url}\": 'https' is the only allowed URL scheme"))
    if not parts.hostname:
        causes.append((path, f'Invalid value: "{url}": host must be specified'))
    if parts.username is not None or parts.password is not None:
        causes.append((path, f'Invalid value: "{url}": user information is not permitted in the URL'))
    if parts.fragment:
        causes.append((path, f'Invalid value: "{url}": fragments are not permitted in the URL'))
    if parts.query:
        causes.append((path, f'Invalid value: "{url}": query parameters are not permitted in the URL'))
    return causes


def _check_service(path: str, svc: Any) -> Causes:
    if not isinstance(svc, Mapping):
        return [(path, "Required value")]
    causes: Causes = []
    if not svc.get("namespace"):
        causes.append((f"{path}.namespace", "Required value: service namespace is required"))
    if not svc.get("name"):
        causes.append((f"{path}.name", "Required value: service name is required"))
    port = svc.get("port", 443)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        causes.append((f"{path}.port", f"Invalid value: {json.dumps(port)}: port is not valid: must be between "
                                       "1 and 65535, inclusive"))
    p = svc.get("path")
    if p:
        if not isinstance(p, str) or not p.startswith("/"):
            causes.append((f"{path}.path", f"Invalid value: {json.dumps(p)}: must start with a '/'"))
        elif "//" in p:
            causes.append((f"{path}.path", f'Invalid value: "{p}": segment[1]: must not be empty'))
    return causes


def _check_selector(path: str, value: Any) -> Causes:
    try:
        selector_from_label_selector_object(value or {})
    except SelectorError as e:
        return [(path, f"Invalid value: {e}")]
    return []


def _check_webhook(path: str, hook: Any, *, mutating: bool) -> Causes:
    if not isinstance(hook, Mapping):
        return [(path, f"Invalid value: must be an object, not {json_type(hook)}")]
    causes: Causes = []
    name = hook.get("name")
    if not isinstance(name, str) or not name:
        causes.append((f"{path}.name", "Required value"))
    else:
        errs = validate_dns1123_subdomain(name)
        causes += [(f"{path}.name", f'Invalid value: "{name}": {m}') for m in errs]
        if not errs and len(name.split(".")) < 3:
            causes.append((f"{path}.name", f'Invalid value: "{name}": should be a domain with at least three '
                                           "segments separated by dots"))
    versions = hook.get("admissionReviewVersions")
    if not isinstance(versions, list) or not versions:
        causes.append((f"{path}.admissionReviewVersions", "Required value: must specify one of v1, v1beta1"))
    elif "v1" not in versions:
        causes.append((f"{path}.admissionReviewVersions",
                       f"Invalid value: {_go_list(_strs(versions))}: must include v1 (isthmus sends "
                       "admission.k8s.io/v1 AdmissionReviews only)"))
    side = hook.get("sideEffects")
    if side is None:
        causes.append((f"{path}.sideEffects", "Required value: must specify one of None, NoneOnDryRun"))
    elif side not in _SIDE_EFFECTS:
        causes.append((f"{path}.sideEffects", _unsupported(side, _SIDE_EFFECTS)))
    for key, allowed in (("failurePolicy", _FAILURE_POLICIES), ("matchPolicy", _MATCH_POLICIES)):
        if hook.get(key) is not None and hook[key] not in allowed:
            causes.append((f"{path}.{key}", _unsupported(hook[key], allowed)))
    if mutating and hook.get("reinvocationPolicy") is not None \
            and hook["reinvocationPolicy"] not in _REINVOCATION_POLICIES:
        causes.append((f"{path}.reinvocationPolicy", _unsupported(hook["reinvocationPolicy"], _REINVOCATION_POLICIES)))
    timeout = hook.get("timeoutSeconds")
    if timeout is not None and (not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 30):
        causes.append((f"{path}.timeoutSeconds", f"Invalid value: {json.dumps(timeout)}: the timeout value must "
                                                 "be between 1 and 30 seconds"))
    cc = hook.get("clientConfig")
    if not isinstance(cc, Mapping):
        causes.append((f"{path}.clientConfig", "Required value: exactly one of url or service is required"))
    else:
        has_url, has_svc = cc.get("url") is not None, cc.get("service") is not None
        if has_url == has_svc:
            causes.append((f"{path}.clientConfig", "Required value: exactly one of url or service is required"))
        elif has_url:
            causes += _check_url(f"{path}.clientConfig.url", cc["url"])
        else:
            causes += _check_service(f"{path}.clientConfig.service", cc["service"])
        if cc.get("caBundle"):
            try:
                base64.b64decode(cc["caBundle"], validate=True)
            except (binascii.Error, ValueError, TypeError):
                causes.append((f"{path}.clientConfig.caBundle", "Invalid value: must be base64 encoded"))
    for i, rule in enumerate(hook.get("rules") or []):
        rp = f"{path}.rules[{i}]"
        if not isinstance(rule, Mapping):
            causes.append((rp, f"Invalid value: must be an object, not {json_type(rule)}"))
            continue
        op_causes, ops = _check_list(f"{rp}.operations", rule.get("operations"), what="operations")
        causes += op_causes
        causes += [(f"{rp}.operations", _unsupported(o, _OPERATION_VALUES)) for o in ops if o not in _OPERATION_VALUES]
        causes += _check_list(f"{rp}.apiGroups", rule.get("apiGroups"), what="API groups")[0]
        causes += _check_list(f"{rp}.apiVersions", rule.get("apiVersions"), what="API versions")[0]
        causes += _check_resources(f"{rp}.resources", rule.get("resources"))
        scope = rule.get("scope")
        if scope is not None and scope not in _SCOPES:
            causes.append((f"{rp}.scope", _unsupported(scope, _SCOPES)))
    causes += _check_selector(f"{path}.namespaceSelector", hook.get("namespaceSelector"))
    causes += _check_selector(f"{path}.objectSelector", hook.get("objectSelector"))
    if hook.get("matchConditions"):
        causes.append((f"{path}.matchConditions", "Forbidden: matchConditions (CEL expressions) are not supported "
                                                  "by isthmus; select requests with rules, namespaceSelector and "
                                                  "objectSelector"))
    return causes


def validate_configuration(config: Mapping[str, Any], *, mutating: bool) -> Causes:
    """Field causes (path, message) for a 422, in Kubernetes' wording; empty when valid."""
    hooks = config.get("webhooks")
    if hooks is None:
        return []
    causes: Causes = []
    seen: set[str] = set()
    for i, hook in enumerate(hooks):
        causes += _check_webhook(f"webhooks[{i}]", hook, mutating=mutating)
        name = hook.get("name") if isinstance(hook, Mapping) else None
        if isinstance(name, str) and name:
            if name in seen:
                causes.append((f"webhooks[{i}].name", f'Duplicate value: "{name}"'))
            seen.add(name)
    return causes


# --------------------------------------------------------------------------- matching


@dataclass(frozen=True, slots=True)
class Request:
    """One write the API server is admitting (the attributes kube-apiserver's admission sees)."""

    operation: str  # CREATE | UPDATE | DELETE | CONNECT
    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool
    namespace: str  # "" for cluster-scoped objects
    name: str  # "" on a create that will generate it
    user: User
    object: Mapping[str, Any] | None = None
    old_object: Mapping[str, Any] | None = None
    subresource: str = ""
    dry_run: bool = False
    options: Mapping[str, Any] | None = None


def _in(values: tuple[str, ...], wanted: str) -> bool:
    return "*" in values or wanted in values


def _rule_matches(rule: Rule, req: Request) -> bool:
    if not (_in(rule.operations, req.operation) and _in(rule.api_groups, req.group)
            and _in(rule.api_versions, req.version)):
        return False
    if rule.scope == "Namespaced" and not req.namespaced:
        return False
    if rule.scope == "Cluster" and req.namespaced:
        return False
    for r in rule.resources:
        res, _, sub = r.partition("/")
        if (res == "*" or res == req.resource) and (sub == "*" or sub == req.subresource):
            return True
    return False


def exempt(req: Request) -> bool:
    """Requests no webhook sees: those for admission configuration itself."""
    return req.group == GROUP


def matches_rules(webhook: Webhook, req: Request) -> bool:
    """Whether one of the webhook's rules covers the request (the cheap test, before the selectors)."""
    return not exempt(req) and any(_rule_matches(r, req) for r in webhook.rules)


def _labels(obj: Mapping[str, Any] | None) -> Mapping[str, str]:
    labels = ((obj or {}).get("metadata") or {}).get("labels")
    return labels if isinstance(labels, Mapping) else {}


def _is_namespace(req: Request) -> bool:
    return req.group == "" and req.resource == "namespaces"


def namespace_to_look_up(req: Request) -> str:
    """The namespace whose stored labels the namespaceSelector needs ("" when none is needed)."""
    if _is_namespace(req):
        if not req.subresource and req.operation in ("CREATE", "UPDATE"):
            return ""  # the object's own labels decide
        return req.name
    return req.namespace if req.namespaced else ""


def _namespace_labels(req: Request, stored: Mapping[str, str] | None) -> Mapping[str, str]:
    if _is_namespace(req) and not req.subresource and req.operation in ("CREATE", "UPDATE"):
        labels, name = _labels(req.object), req.name
    else:
        labels, name = stored or {}, namespace_to_look_up(req)
    return {**labels, NAMESPACE_NAME_LABEL: name}


def matches(webhook: Webhook, req: Request, namespace_labels: Mapping[str, str] | None = None) -> bool:
    """Whether the request goes to the webhook: rules, then namespaceSelector, then objectSelector.

    `namespace_labels` are the stored labels of `namespace_to_look_up(req)`.
    """
    if not matches_rules(webhook, req):
        return False
    if (req.namespaced or _is_namespace(req)) and not webhook.namespace_selector.empty \
            and not webhook.namespace_selector.matches(_namespace_labels(req, namespace_labels)):
        return False
    sel = webhook.object_selector
    if sel.empty:
        return True
    return any(sel.matches(_labels(o)) for o in (req.object, req.old_object) if o is not None)


# --------------------------------------------------------------------------- the review and its answer


def review(webhook: Webhook, req: Request, uid: str) -> dict[str, Any]:
    """The AdmissionReview sent to the webhook for this request."""
    kind = {"group": req.group, "version": req.version, "kind": req.kind}
    resource = {"group": req.group, "version": req.version, "resource": req.resource}
    user: dict[str, Any] = {"username": req.user.name}
    if req.user.uid:
        user["uid"] = req.user.uid
    if req.user.groups:
        user["groups"] = list(req.user.groups)
    if req.user.extra:
        user["extra"] = {k: list(v) for k, v in req.user.extra.items()}
    body: dict[str, Any] = {"uid": uid, "kind": kind, "resource": resource}
    if req.subresource:
        body["subResource"] = req.subresource
    body |= {"requestKind": kind, "requestResource": resource}
    if req.subresource:
        body["requestSubResource"] = req.subresource
    if req.name:
        body["name"] = req.name
    if req.namespace:
        body["namespace"] = req.namespace
    body |= {"operation": req.operation, "userInfo": user, "object": req.object, "oldObject": req.old_object,
             "dryRun": req.dry_run, "options": req.options}
    return {"apiVersion": REVIEW_API_VERSION, "kind": "AdmissionReview", "request": body}


class InvalidResponse(ValueError):
    """The webhook's answer is not an AdmissionReview response kube-apiserver would accept."""


class PatchFailed(ValueError):
    """The webhook's JSON patch is malformed or does not apply to the object."""


@dataclass(frozen=True, slots=True)
class Response:
    allowed: bool
    patch: list[Any] | None = None  # JSON patch operations (mutating webhooks)
    status: Mapping[str, Any] | None = None  # the webhook's Status, for a denial
    warnings: tuple[str, ...] = ()


def parse_response(body: bytes, *, uid: str, mutating: bool) -> Response:
    """Read the webhook's answer to the review with `uid`; raises InvalidResponse."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidResponse(f"the response is not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidResponse(f"the response is {json_type(doc)}, not an AdmissionReview object")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if api_version != REVIEW_API_VERSION or kind != "AdmissionReview":
        raise InvalidResponse(f"expected webhook response of {REVIEW_API_VERSION}, Kind=AdmissionReview, "
                              f"got {api_version or ''}, Kind={kind or ''}")
    resp = doc.get("response")
    if not isinstance(resp, dict):
        raise InvalidResponse("webhook response was absent")
    if resp.get("uid") != uid:
        raise InvalidResponse(f'expected response.uid="{uid}", got "{resp.get("uid") or ""}"')
    allowed = resp.get("allowed")
    if not isinstance(allowed, bool):
        raise InvalidResponse(f"response.allowed must be true or false, not {json_type(allowed)}")
    warnings = resp.get("warnings") or []
    if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
        raise InvalidResponse("response.warnings must be a list of strings")
    patch_type = resp.get("patchType") or ""
    raw_patch = resp.get("patch") or ""
    if not isinstance(raw_patch, str):
        raise InvalidResponse(f"response.patch must be a base64 string, not {json_type(raw_patch)}")
    try:
        patch_bytes = base64.b64decode(raw_patch, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidResponse("response.patch is not valid base64") from None
    if not mutating:
        if patch_type or patch_bytes:
            raise InvalidResponse("validating webhook may not return response.patch or response.patchType")
    elif bool(patch_type) != bool(patch_bytes) or patch_type not in ("", "JSONPatch"):
        raise InvalidResponse(f'response.patchType="{patch_type}" is not allowed with response.patch of '
                              f"length {len(patch_bytes)}")
    ops = None
    if patch_bytes and allowed:
        try:
            ops = json.loads(patch_bytes)
        except (ValueError, UnicodeDecodeError) as e:
            raise InvalidResponse(f"response.patch is not a JSON patch: {e}") from None
        if not isinstance(ops, list):
            raise InvalidResponse(f"response.patch must be a JSON array of operations, not {json_type(ops)}")
    status = resp.get("status")
    return Response(allowed=allowed, patch=ops or None,
                    status=status if isinstance(status, dict) else None, warnings=tuple(warnings))


def apply_patch(obj: Mapping[str, Any], ops: list[Any]) -> dict[str, Any]:
    """The object with the webhook's JSON patch applied; raises PatchFailed."""
    try:
        out = patching.json_patch(dict(obj), ops)
    except patching.PatchError as e:
        raise PatchFailed(str(e)) from None
    if not isinstance(out, dict):
        raise PatchFailed(f"the patched object is {json_type(out)}, not an object")
    return out


# --------------------------------------------------------------------------- outcomes as Status


@dataclass(frozen=True, slots=True)
class Status:
    """A failed request's Kubernetes Status: code, reason, message, details."""

    code: int
    reason: str
    message: str
    details: Mapping[str, Any] | None = None


def denial(webhook: Webhook, response: Response) -> Status:
    """What the API server answers when the webhook says allowed: false (kube-apiserver's ToStatusErr)."""
    st = response.status or {}
    denied_by = f'admission webhook "{webhook.name}" denied the request'
    code = st.get("code")
    code = code if isinstance(code, int) and not isinstance(code, bool) and code >= 400 else 400
    message, reason = st.get("message"), st.get("reason")
    if isinstance(message, str) and message:
        text = f"{denied_by}: {message}"
    elif isinstance(reason, str) and reason:
        text = f"{denied_by}: {reason}"
    else:
        text = f"{denied_by} without explanation"
    details = st.get("details")
    return Status(code, reason if isinstance(reason, str) else "", text,
                  details if isinstance(details, dict) else None)


def call_failure(webhook: Webhook, reason: str) -> Status | None:
    """The answer when calling the webhook failed: None to go on without it (failurePolicy Ignore)."""
    if webhook.failure_policy == "Ignore":
        return None
    text = f'failed calling webhook "{webhook.name}": {reason}'
    return Status(500, "InternalError", f"Internal error occurred: {text}", {"causes": [{"message": text}]})


def dry_run_refusal(webhook: Webhook, req: Request) -> Status | None:
    """A dry-run request may only go to webhooks without side effects (or none on dry run)."""
    if req.dry_run and webhook.side_effects not in _SIDE_EFFECTS:
        return Status(400, "BadRequest", f'admission webhook "{webhook.name}" does not support dry run')
    return None


def patch_failure(webhook: Webhook, what: str) -> Status:
    """The answer when a webhook's patch cannot be applied or leaves an invalid object."""
    text = f'admission webhook "{webhook.name}" {what}'
    return Status(500, "InternalError", f"Internal error occurred: {text}", {"causes": [{"message": text}]})


# --------------------------------------------------------------------------- reaching the webhook


class ResolveError(ValueError):
    """The webhook's service has no address to call (the message is kube-apiserver's)."""


def is_loopback_host(host: str) -> bool:
    """Whether a URL host is on the loopback network (the only one the embedded cluster uses)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def service_endpoints(ref: ServiceRef, service: Mapping[str, Any] | None,
                      endpoints: Mapping[str, Any] | None) -> list[tuple[str, int]]:
    """The ready (ip, port) pairs that serve `ref`'s port; raises ResolveError when there are none.

    The service port is found by number; the Endpoints port by that service
    port's name, so named target ports resolve as the Endpoints recorded them.
    """
    if service is None:
        raise ResolveError(f'service "{ref.name}" not found')
    spec = service.get("spec") or {}
    stype = spec.get("type") or "ClusterIP"
    if stype not in ("ClusterIP", "LoadBalancer", "NodePort"):
        raise ResolveError(f'unsupported service type "{stype}"')
    port = next((p for p in spec.get("ports") or [] if p.get("port") == ref.port), None)
    if port is None:
        raise ResolveError(f'no service port {ref.port} found for service "{ref.name}"')
    if endpoints is None:
        raise ResolveError(f'endpoints "{ref.name}" not found')
    port_name = port.get("name") or ""
    out: list[tuple[str, int]] = []
    for subset in endpoints.get("subsets") or []:
        ep_port = next((p for p in subset.get("ports") or [] if (p.get("name") or "") == port_name), None)
        if ep_port is None or not isinstance(ep_port.get("port"), int):
            continue
        out += [(a["ip"], ep_port["port"]) for a in subset.get("addresses") or [] if a.get("ip")]
    if not out:
        raise ResolveError(f'no endpoints available for service "{ref.name}"')
    return out
