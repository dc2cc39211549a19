"""Admission webhooks without I/O: configuration checks, matching, the review, reading answers, outcomes."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

import pytest

from isthmus.core import admission as core
from isthmus.core.rbac import User

ADMIN = User("admin", ("system:masters", "system:authenticated"))


def hook(**over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": "inject.isthmus.io",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "clientConfig": {"service": {"namespace": "isthmus", "name": "injector", "path": "/"},
                         "caBundle": base64.b64encode(b"PEM").decode()},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
    }
    out.update(over)
    return out


def config(*hooks: dict[str, Any], name: str = "isthmus-injector") -> dict[str, Any]:
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": name}, "webhooks": list(hooks)}


def webhook(**over: Any) -> core.Webhook:
    cfg = config(hook(**over))
    core.defaults(cfg, mutating=True)
    assert core.validate_configuration(cfg, mutating=True) == []
    return core.webhooks_of(cfg, mutating=True)[0]


def pod(labels: dict[str, str] | None = None, name: str = "web") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop",
                                                            "labels": labels or {}},
            "spec": {"containers": [{"name": "web", "image": "web:1"}]}}


def request(**over: Any) -> core.Request:
    base: dict[str, Any] = dict(operation="CREATE", group="", version="v1", resource="pods", kind="Pod",
                                namespaced=True, namespace="shop", name="web", user=ADMIN, object=pod())
    base.update(over)
    return core.Request(**base)


# --------------------------------------------------------------------------- defaults and validation


def test_defaults_are_kubernetes_defaults() -> None:
    cfg = config(hook())
    core.defaults(cfg, mutating=True)
    h = cfg["webhooks"][0]
    assert (h["failurePolicy"], h["matchPolicy"], h["timeoutSeconds"], h["reinvocationPolicy"]) == \
        ("Fail", "Equivalent", 10, "Never")
    assert h["namespaceSelector"] == {} and h["objectSelector"] == {}
    assert h["rules"][0]["scope"] == "*"
    assert h["clientConfig"]["service"]["port"] == 443
    validating = config(hook())
    core.defaults(validating, mutating=False)
    assert "reinvocationPolicy" not in validating["webhooks"][0]


def test_defaults_keep_what_is_given() -> None:
    cfg = config(hook(failurePolicy="Ignore", timeoutSeconds=3,
                      clientConfig={"service": {"namespace": "a", "name": "b", "port": 8443}}))
    core.defaults(cfg, mutating=True)
    h = cfg["webhooks"][0]
    assert (h["failurePolicy"], h["timeoutSeconds"], h["clientConfig"]["service"]["port"]) == ("Ignore", 3, 8443)


@pytest.mark.parametrize(("over", "cause"), [
    ({"name": "inject"}, ("webhooks[0].name", 'Invalid value: "inject": should be a domain with at least three '
                                              "segments separated by dots")),
    ({"name": "Bad_Name.x.y"}, ("webhooks[0].name", 'Invalid value: "Bad_Name.x.y": a lowercase RFC 1123 '
                                                    "subdomain must consist of")),
    ({"admissionReviewVersions": None}, ("webhooks[0].admissionReviewVersions",
                                         "Required value: must specify one of v1, v1beta1")),
    ({"admissionReviewVersions": ["v1beta1"]}, ("webhooks[0].admissionReviewVersions",
                                                'Invalid value: []string{"v1beta1"}: must include v1')),
    ({"sideEffects": None}, ("webhooks[0].sideEffects", "Required value: must specify one of None, NoneOnDryRun")),
    ({"sideEffects": "Some"}, ("webhooks[0].sideEffects",
                               'Unsupported value: "Some": supported values: "None", "NoneOnDryRun"')),
    ({"failurePolicy": "Maybe"}, ("webhooks[0].failurePolicy",
                                  'Unsupported value: "Maybe": supported values: "Fail", "Ignore"')),
    ({"matchPolicy": "Loose"}, ("webhooks[0].matchPolicy",
                                'Unsupported value: "Loose": supported values: "Equivalent", "Exact"')),
    ({"reinvocationPolicy": "Always"}, ("webhooks[0].reinvocationPolicy",
                                        'Unsupported value: "Always": supported values: "IfNeeded", "Never"')),
    ({"timeoutSeconds": 31}, ("webhooks[0].timeoutSeconds",
                              "Invalid value: 31: the timeout value must be between 1 and 30 seconds")),
    ({"timeoutSeconds": 0}, ("webhooks[0].timeoutSeconds",
                             "Invalid value: 0: the timeout value must be between 1 and 30 seconds")),
    ({"clientConfig": {}}, ("webhooks[0].clientConfig", "Required value: exactly one of url or service is required")),
    ({"clientConfig": {"url": "https://127.0.0.1/", "service": {"namespace": "a", "name": "b"}}},
     ("webhooks[0].clientConfig", "Required value: exactly one of url or service is required")),
    ({"clientConfig": {"url": "http://127.0.0.1/hook"}},
     ("webhooks[0].clientConfig.url", "Invalid value: \"http://127.0.0.1/hook\": 'https' is the only allowed URL "
                                      "scheme")),
    ({"clientConfig": {"url": "https://127.0.0.1/hook?x=1"}},
     ("webhooks[0].clientConfig.url", 'Invalid value: "https://127.0.0.1/hook?x=1": query parameters are not '
                                      "permitted in the URL")),
    ({"clientConfig": {"url": "https://u:p@127.0.0.1/"}},
     ("webhooks[0].clientConfig.url", 'Invalid value: "https://u:p@127.0.0.1/": user information is not permitted '
                                      "in the URL")),
    ({"clientConfig": {"url": "https://127.0.0.1/#x"}},
     ("webhooks[0].clientConfig.url", 'Invalid value: "https://127.0.0.1/#x": fragments are not permitted in the '
                                      "URL")),
    ({"clientConfig": {"service": {"name": "b"}}},
     ("webhooks[0].clientConfig.service.namespace", "Required value: service namespace is required")),
    ({"clientConfig": {"service": {"namespace": "a", "name": "b", "port": 70000}}},
     ("webhooks[0].clientConfig.service.port", "Invalid value: 70000: port is not valid: must be between 1 and "
                                               "65535, inclusive")),
    ({"clientConfig": {"service": {"namespace": "a", "name": "b", "path": "mutate"}}},
     ("webhooks[0].clientConfig.service.path", "Invalid value: \"mutate\": must start with a '/'")),
    ({"clientConfig": {"service": {"namespace": "a", "name": "b"}, "caBundle": "not base64!"}},
     ("webhooks[0].clientConfig.caBundle", "Invalid value: must be base64 encoded")),
    ({"rules": [{"operations": ["MUTATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]},
     ("webhooks[0].rules[0].operations", 'Unsupported value: "MUTATE": supported values: "*", "CONNECT", "CREATE", '
                                         '"DELETE", "UPDATE"')),
    ({"rules": [{"operations": ["*", "CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]},
     ("webhooks[0].rules[0].operations", 'Invalid value: []string{"*", "CREATE"}: if \'*\' is present, must not '
                                         "specify other operations")),
    ({"rules": [{"operations": ["CREATE"], "apiVersions": ["v1"], "resources": ["pods"]}]},
     ("webhooks[0].rules[0].apiGroups", "Required value")),
    ({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": []}]},
     ("webhooks[0].rules[0].resources", "Required value")),
    ({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["*/*", "pods"]}]},
     ("webhooks[0].rules[0].resources", 'Invalid value: []string{"*/*", "pods"}: if \'*/*\' is present, must not '
                                        "specify other resources")),
    ({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["*", "pods"]}]},
     ("webhooks[0].rules[0].resources", 'Invalid value: []string{"*", "pods"}: if \'*\' is present, must not '
                                        "specify other resources without subresources")),
    ({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                 "resources": ["pods/*", "pods/status"]}]},
     ("webhooks[0].rules[0].resources", 'Invalid value: []string{"pods/*", "pods/status"}: if \'pods/*\' is present, '
                                        "must not specify pods/subresource")),
    ({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods/a/b"]}]},
     ("webhooks[0].rules[0].resources[0]", 'Invalid value: "pods/a/b": must be "resource", '
                                           '"resource/subresource", "resource/*", "*/subresource" or "*/*"')),
    ({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"],
                 "scope": "Everywhere"}]},
     ("webhooks[0].rules[0].scope", 'Unsupported value: "Everywhere": supported values: "*", "Cluster", '
                                    '"Namespaced"')),
    ({"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "Near"}]}},
     ("webhooks[0].namespaceSelector", 'Invalid value: matchExpressions[0]: "Near" is not a valid label selector '
                                       "operator")),
    ({"objectSelector": {"matchLabels": {"a": "b c"}}}, ("webhooks[0].objectSelector", 'Invalid value: matchLabels["a"]')),
    ({"matchConditions": [{"name": "x", "expression": "true"}]},
     ("webhooks[0].matchConditions", "Forbidden: matchConditions (CEL expressions) are not supported by isthmus")),
])
def test_invalid_webhooks_are_refused_with_kubernetes_wording(over: dict[str, Any], cause: tuple[str, str]) -> None:
    cfg = config(hook(**over))
    before = copy.deepcopy(cfg)
    causes = core.validate_configuration(cfg, mutating=True)
    assert cfg == before, "validation changed the object"
    assert any(f == cause[0] and m.startswith(cause[1]) for f, m in causes), causes


def test_duplicate_names_and_a_valid_configuration() -> None:
    assert core.validate_configuration(config(hook()), mutating=True) == []
    assert core.validate_configuration(config(hook(clientConfig={"url": "https://127.0.0.1:9443/m"})),
                                       mutating=False) == []
    assert core.validate_configuration(config(hook(), hook()), mutating=True) == \
        [("webhooks[1].name", 'Duplicate value: "inject.isthmus.io"')]
    assert core.validate_configuration({"metadata": {"name": "empty"}}, mutating=True) == []


def test_webhooks_are_read_and_ordered_by_configuration_name() -> None:
    b = config(hook(name="one.b.io"), hook(name="two.b.io"), name="b")
    a = config(hook(name="only.a.io", failurePolicy="Ignore", timeoutSeconds=2,
                    clientConfig={"url": "https://127.0.0.1:9443/m"}), name="a")
    for c in (a, b):
        core.defaults(c, mutating=True)
    hooks = core.ordered([b, a], mutating=True)
    assert [(h.configuration, h.name) for h in hooks] == [("a", "only.a.io"), ("b", "one.b.io"), ("b", "two.b.io")]
    first, second = hooks[0], hooks[1]
    assert (first.failure_policy, first.timeout_seconds, first.client.url, first.client.service) == \
        ("Ignore", 2, "https://127.0.0.1:9443/m", None)
    assert second.client.service == core.ServiceRef("isthmus", "injector", 443, "/")
    assert second.client.ca_bundle == b"PEM"
    assert second.client.display_url(10) == "https://injector.isthmus.svc:443/?timeout=10s"
    assert first.client.display_url(2) == "https://127.0.0.1:9443/m?timeout=2s"


# --------------------------------------------------------------------------- matching


@pytest.mark.parametrize(("rule", "over", "want"), [
    ({}, {}, True),
    ({"operations": ["UPDATE"]}, {}, False),
    ({"operations": ["*"]}, {"operation": "UPDATE"}, True),
    ({"apiGroups": ["apps"]}, {}, False),
    ({"apiGroups": ["*"], "apiVersions": ["*"]}, {}, True),
    ({"apiVersions": ["v2"]}, {}, False),
    ({"resources": ["deployments"]}, {}, False),
    ({"resources": ["*"]}, {}, True),
    ({"resources": ["*"]}, {"subresource": "status", "operation": "CREATE"}, False),
    ({"resources": ["pods"]}, {"subresource": "status"}, False),
    ({"resources": ["pods/status"]}, {"subresource": "status"}, True),
    ({"resources": ["pods/status"]}, {}, False),
    ({"resources": ["pods/*"]}, {}, True),
    ({"resources": ["pods/*"]}, {"subresource": "status"}, True),
    ({"resources": ["*/status"]}, {"subresource": "status"}, True),
    ({"resources": ["*/status"]}, {}, False),
    ({"resources": ["*/*"]}, {"subresource": "log"}, True),
    ({"scope": "Namespaced"}, {}, True),
    ({"scope": "Cluster"}, {}, False),
    ({"scope": "Cluster", "resources": ["*"], "apiGroups": ["*"]},
     {"resource": "nodes", "kind": "Node", "namespaced": False, "namespace": ""}, True),
    ({"scope": "Namespaced", "resources": ["*"]},
     {"resource": "namespaces", "kind": "Namespace", "namespaced": False, "namespace": ""}, False),
])
def test_rules_match_as_in_kubernetes(rule: dict[str, Any], over: dict[str, Any], want: bool) -> None:
    full = {"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"], **rule}
    w = webhook(rules=[full])
    assert core.matches_rules(w, request(**over)) is want
    assert core.matches(w, request(**over)) is want


def test_any_rule_of_several_matches() -> None:
    w = webhook(rules=[{"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]},
                       {"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"],
                        "resources": ["deployments"]}])
    assert core.matches(w, request(operation="UPDATE"))
    assert core.matches(w, request(group="apps", resource="deployments", kind="Deployment"))
    assert not core.matches(w, request())


def test_webhook_configurations_never_go_to_webhooks() -> None:
    w = webhook(rules=[{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"]}])
    req = request(group="admissionregistration.k8s.io", resource="mutatingwebhookconfigurations",
                  kind="MutatingWebhookConfiguration", namespaced=False, namespace="")
    assert not core.matches_rules(w, req)
    assert core.matches_rules(w, request())


def test_namespace_selector_uses_the_namespaces_labels() -> None:
    w = webhook(namespaceSelector={"matchLabels": {"mesh": "on"}})
    assert core.namespace_to_look_up(request()) == "shop"
    assert core.matches(w, request(), {"mesh": "on", "team": "a"})
    assert not core.matches(w, request(), {"mesh": "off"})
    assert not core.matches(w, request(), {})
    assert not core.matches(w, request(), None)  # the namespace is gone: its labels are none


def test_namespace_selector_knows_every_namespaces_name_label() -> None:
    w = webhook(namespaceSelector={"matchExpressions": [
        {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["kube-system"]}]})
    assert core.matches(w, request(), {})
    assert not core.matches(w, request(namespace="kube-system"), {})
    named = webhook(namespaceSelector={"matchLabels": {"kubernetes.io/metadata.name": "shop"}})
    assert core.matches(named, request(), {})


def test_namespace_selector_on_namespaces_and_cluster_scoped_objects() -> None:
    w = webhook(namespaceSelector={"matchLabels": {"mesh": "on"}},
                rules=[{"operations": ["*"], "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*"]}])
    ns_obj = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "new", "labels": {"mesh": "on"}}}
    ns_req = request(resource="namespaces", kind="Namespace", namespaced=False, namespace="", name="new",
                     object=ns_obj)
    assert core.namespace_to_look_up(ns_req) == ""
    assert core.matches(w, ns_req, None)
    unlabelled = request(resource="namespaces", kind="Namespace", namespaced=False, namespace="", name="new",
                         object={**ns_obj, "metadata": {"name": "new"}})
    assert not core.matches(w, unlabelled, None)
    status = request(resource="namespaces", kind="Namespace", namespaced=False, namespace="", name="new",
                     subresource="status", operation="UPDATE", object=ns_obj)
    assert core.namespace_to_look_up(status) == "new"
    node = request(resource="nodes", kind="Node", namespaced=False, namespace="", name="n1",
                   object={"metadata": {"name": "n1"}})
    assert core.namespace_to_look_up(node) == ""
    assert core.matches(w, node, None)  # cluster-scoped objects are never skipped by the namespaceSelector


def test_object_selector_matches_new_or_old_labels() -> None:
    w = webhook(objectSelector={"matchExpressions": [{"key": "inject", "operator": "NotIn", "values": ["off"]}]})
    assert core.matches(w, request(object=pod({"app": "web"})))
    assert not core.matches(w, request(object=pod({"inject": "off"})))
    picky = webhook(objectSelector={"matchLabels": {"app": "web"}})
    assert not core.matches(picky, request(object=pod({"app": "db"})))
    update = request(operation="UPDATE", object=pod({"app": "db"}), old_object=pod({"app": "web"}))
    assert not core.matches(picky, update)  # its rule covers CREATE only
    both = webhook(objectSelector={"matchLabels": {"app": "web"}},
                   rules=[{"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}])
    assert core.matches(both, request(operation="UPDATE", object=pod({"app": "db"}), old_object=pod({"app": "web"})))
    assert not core.matches(both, request(operation="UPDATE", object=pod({"app": "db"}),
                                          old_object=pod({"app": "db"})))


# --------------------------------------------------------------------------- the review


def test_review_carries_what_kube_apiserver_sends() -> None:
    user = User("system:serviceaccount:shop:deployer", ("system:serviceaccounts", "system:authenticated"), uid="u-1")
    opts = {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl"}
    r = core.review(webhook(), request(user=user, options=opts), "uid-1")
    assert r["apiVersion"] == "admission.k8s.io/v1" and r["kind"] == "AdmissionReview"
    req = r["request"]
    assert req == {
        "uid": "uid-1",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "requestKind": {"group": "", "version": "v1", "kind": "Pod"},
        "requestResource": {"group": "", "version": "v1", "resource": "pods"},
        "name": "web", "namespace": "shop", "operation": "CREATE",
        "userInfo": {"username": "system:serviceaccount:shop:deployer", "uid": "u-1",
                     "groups": ["system:serviceaccounts", "system:authenticated"]},
        "object": pod(), "oldObject": None, "dryRun": False, "options": opts,
    }
    json.dumps(r)  # it is JSON


def test_review_of_a_status_update_names_the_subresource_and_omits_an_empty_name() -> None:
    r = core.review(webhook(), request(operation="UPDATE", subresource="status", old_object=pod(), dry_run=True),
                    "u")["request"]
    assert (r["subResource"], r["requestSubResource"], r["oldObject"], r["dryRun"]) == ("status", "status", pod(),
                                                                                        True)
    unnamed = core.review(webhook(), request(name=""), "u")["request"]
    assert "name" not in unnamed


# --------------------------------------------------------------------------- answers


def answer(uid: str = "uid-1", **response: Any) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                       "response": {"uid": uid, **response}}).encode()


def b64(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


ADD_LABEL = [{"op": "add", "path": "/metadata/labels/injected", "value": "yes"}]


def test_an_allowed_answer_with_a_patch_and_warnings() -> None:
    resp = core.parse_response(answer(allowed=True, patchType="JSONPatch", patch=b64(ADD_LABEL),
                                      warnings=["proxy added"]), uid="uid-1", mutating=True)
    assert resp == core.Response(allowed=True, patch=ADD_LABEL, status=None, warnings=("proxy added",))
    obj = pod({"app": "web"})
    before = copy.deepcopy(obj)
    patched = core.apply_patch(obj, ADD_LABEL)
    assert patched["metadata"]["labels"] == {"app": "web", "injected": "yes"}
    assert obj == before, "the patch changed its input"


def test_a_plain_allow_and_a_denial() -> None:
    assert core.parse_response(answer(allowed=True), uid="uid-1", mutating=False) == core.Response(allowed=True)
    denied = core.parse_response(answer(allowed=False, status={"code": 403, "reason": "Forbidden",
                                                               "message": "pods need an owner"}),
                                 uid="uid-1", mutating=True)
    assert not denied.allowed and denied.status == {"code": 403, "reason": "Forbidden", "message": "pods need an owner"}


@pytest.mark.parametrize(("body", "message"), [
    (b"<html>", "the response is not JSON"),
    (b"[]", "the response is array, not an AdmissionReview object"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview",
                 "response": {"uid": "uid-1", "allowed": True}}).encode(),
     "expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, got admission.k8s.io/v1beta1, "
     "Kind=AdmissionReview"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(),
     "webhook response was absent"),
    (answer(uid="other", allowed=True), 'expected response.uid="uid-1", got "other"'),
    (answer(allowed="yes"), "response.allowed must be true or false, not string"),
    (answer(allowed=True, patch=b64(ADD_LABEL)), 'response.patchType="" is not allowed with response.patch of length'),
    (answer(allowed=True, patchType="JSONPatch"), 'response.patchType="JSONPatch" is not allowed with response.patch '
                                                  "of length 0"),
    (answer(allowed=True, patchType="MergePatch", patch=b64({"a": 1})), 'response.patchType="MergePatch" is not '
                                                                        "allowed"),
    (answer(allowed=True, patchType="JSONPatch", patch="%%%"), "response.patch is not valid base64"),
    (answer(allowed=True, patchType="JSONPatch", patch=b64({"op": "add"})),
     "response.patch must be a JSON array of operations, not object"),
    (answer(allowed=True, warnings="one"), "response.warnings must be a list of strings"),
])
def test_bad_answers_are_invalid_responses(body: bytes, message: str) -> None:
    with pytest.raises(core.InvalidResponse) as e:
        core.parse_response(body, uid="uid-1", mutating=True)
    assert str(e.value).startswith(message)


def test_validating_webhooks_may_not_patch() -> None:
    with pytest.raises(core.InvalidResponse, match=r"validating webhook may not return response\.patch"):
        core.parse_response(answer(allowed=True, patchType="JSONPatch", patch=b64(ADD_LABEL)), uid="uid-1",
                            mutating=False)


def test_a_patch_that_does_not_apply() -> None:
    obj = pod()
    before = copy.deepcopy(obj)
    with pytest.raises(core.PatchFailed, match=r"json patch operation 0 .*/spec/missing/x"):
        core.apply_patch(obj, [{"op": "add", "path": "/spec/missing/x", "value": 1}])
    with pytest.raises(core.PatchFailed, match="the patched object is string, not an object"):
        core.apply_patch(obj, [{"op": "replace", "path": "", "value": "x"}])
    assert obj == before


# --------------------------------------------------------------------------- outcomes


def test_denial_status_follows_kube_apiserver() -> None:
    w = webhook()
    st = core.denial(w, core.Response(False, status={"code": 403, "reason": "Forbidden", "message": "no root"}))
    assert (st.code, st.reason, st.message) == (403, "Forbidden",
                                                'admission webhook "inject.isthmus.io" denied the request: no root')
    low = core.denial(w, core.Response(False, status={"code": 200, "reason": "NotAllowed"}))
    assert (low.code, low.message) == (400, 'admission webhook "inject.isthmus.io" denied the request: NotAllowed')
    bare = core.denial(w, core.Response(False))
    assert (bare.code, bare.reason, bare.message) == (
        400, "", 'admission webhook "inject.isthmus.io" denied the request without explanation')


def test_call_failures_follow_the_failure_policy() -> None:
    st = core.call_failure(webhook(), "failed to call webhook: boom")
    assert st is not None and (st.code, st.reason) == (500, "InternalError")
    assert st.message == 'Internal error occurred: failed calling webhook "inject.isthmus.io": failed to call ' \
                         "webhook: boom"
    assert core.call_failure(webhook(failurePolicy="Ignore"), "boom") is None


def test_dry_run_goes_only_to_webhooks_without_side_effects() -> None:
    assert core.dry_run_refusal(webhook(), request(dry_run=True)) is None
    assert core.dry_run_refusal(webhook(sideEffects="NoneOnDryRun"), request(dry_run=True)) is None
    some = core.Webhook("x.y.io", "c", True, core.ClientConfig(url="https://127.0.0.1/"), (), side_effects="Some")
    assert core.dry_run_refusal(some, request()) is None
    st = core.dry_run_refusal(some, request(dry_run=True))
    assert st is not None and (st.code, st.message) == (400, 'admission webhook "x.y.io" does not support dry run')


# --------------------------------------------------------------------------- reaching the webhook


SVC = core.ServiceRef("isthmus", "injector", 443, "/")


def service(ports: list[dict[str, Any]], type_: str = "ClusterIP") -> dict[str, Any]:
    return {"metadata": {"name": "injector", "namespace": "isthmus"}, "spec": {"type": type_, "ports": ports}}


def test_service_resolves_to_ready_endpoints_by_port_name() -> None:
    svc = service([{"name": "https", "port": 443, "targetPort": "webhook"}, {"name": "admin", "port": 9995}])
    eps = {"subsets": [
        {"addresses": [{"ip": "127.9.64.1"}, {"ip": "127.9.64.2"}], "notReadyAddresses": [{"ip": "127.9.64.3"}],
         "ports": [{"name": "admin", "port": 9995}, {"name": "https", "port": 8443}]},
        {"notReadyAddresses": [{"ip": "127.9.64.4"}], "ports": [{"name": "https", "port": 8443}]}]}
    assert core.service_endpoints(SVC, svc, eps) == [("127.9.64.1", 8443), ("127.9.64.2", 8443)]
    unnamed = service([{"port": 443, "targetPort": 8443}])
    assert core.service_endpoints(SVC, unnamed, {"subsets": [{"addresses": [{"ip": "127.0.0.9"}],
                                                              "ports": [{"port": 8443}]}]}) == [("127.0.0.9", 8443)]


@pytest.mark.parametrize(("svc", "eps", "message"), [
    (None, None, 'service "injector" not found'),
    (service([{"port": 443}], "ExternalName"), None, 'unsupported service type "ExternalName"'),
    (service([{"port": 8443}]), None, 'no service port 443 found for service "injector"'),
    (service([{"port": 443}]), None, 'endpoints "injector" not found'),
    (service([{"port": 443}]), {"subsets": []}, 'no endpoints available for service "injector"'),
    (service([{"port": 443}]), {"subsets": [{"notReadyAddresses": [{"ip": "127.0.0.9"}], "ports": [{"port": 1}]}]},
     'no endpoints available for service "injector"'),
    (service([{"name": "https", "port": 443}]), {"subsets": [{"addresses": [{"ip": "127.0.0.9"}],
                                                              "ports": [{"name": "other", "port": 1}]}]},
     'no endpoints available for service "injector"'),
])
def test_unresolvable_services_say_why(svc: Any, eps: Any, message: str) -> None:
    with pytest.raises(core.ResolveError) as e:
        core.service_endpoints(SVC, svc, eps)
    assert str(e.value) == message


@pytest.mark.parametrize(("host", "want"), [
    ("127.0.0.1", True), ("127.200.64.9", True), ("localhost", True), ("[::1]", True),
    ("10.0.0.1", False), ("example.com", False), ("", False),
])
def test_only_loopback_hosts_are_called(host: str, want: bool) -> None:
    assert core.is_loopback_host(host) is want
