"""The API server's admission webhooks against a real HTTPS webhook server on 127.0.0.1.

The API server's write path (`Admission` over `Objects` and a SQLite store in
a temporary directory) calls a small aiohttp webhook whose answers each test
scripts; the webhook is reached through a Service without selector and
hand-written Endpoints, and its certificate is checked against the
configuration's caBundle for `hook.hooks.svc`. Every refused write is checked
for its Status and for an unchanged store.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from isthmus.adapters.pki import KeyPair, issue, new_ca
from isthmus.adapters.store import SQLiteStore, make_key
from isthmus.components.apiserver.admission import Admission, request_options
from isthmus.components.apiserver.errors import ApiError
from isthmus.components.apiserver.objects import Objects
from isthmus.components.apiserver.strategies import Allocators
from isthmus.core.network import ClusterNetwork
from isthmus.core.rbac import User
from isthmus.resources.registry import Registry

NOW = dt.datetime.now(dt.UTC)
CA = new_ca("webhook-test-ca", now=NOW)
OTHER_CA = new_ca("some-other-ca", now=NOW)
HOOK_CERT = issue(CA, "hook", dns=("hook.hooks.svc",), server=True, now=NOW)
WRONG_NAME_CERT = issue(CA, "hook", dns=("elsewhere.hooks.svc",), server=True, now=NOW)
ALICE = User("alice", ("devs", "system:authenticated"), uid="alice-uid")

Handler = Callable[[dict[str, Any]], Awaitable[web.StreamResponse]]


def allow(review: dict[str, Any], **response: Any) -> web.Response:
    return web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                              "response": {"uid": review["request"]["uid"], "allowed": True, **response}})


def patch_response(review: dict[str, Any], ops: list[dict[str, Any]], **extra: Any) -> web.Response:
    return allow(review, patchType="JSONPatch", patch=base64.b64encode(json.dumps(ops).encode()).decode(), **extra)


ADD_LABEL = [{"op": "add", "path": "/metadata/labels/injected", "value": "true"}]


class WebhookServer:
    """An HTTPS webhook on 127.0.0.1 that records what it was sent and answers with `handler`."""

    def __init__(self, cert: KeyPair, tmp: Path) -> None:
        self.cert = cert
        self.tmp = tmp
        self.reviews: list[dict[str, Any]] = []
        self.hosts: list[str] = []
        self.paths: list[str] = []
        self.handler: Handler = self._allow
        self.port = 0
        self._runner: web.AppRunner | None = None

    @staticmethod
    async def _allow(review: dict[str, Any]) -> web.StreamResponse:
        return allow(review)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        review = await request.json()
        self.reviews.append(review)
        self.hosts.append(request.headers.get("Host", ""))
        self.paths.append(request.path_qs)
        return await self.handler(review)

    async def start(self) -> None:
        import ssl

        (self.tmp / "hook.crt").write_bytes(self.cert.cert_pem)
        (self.tmp / "hook.key").write_bytes(self.cert.key_pem)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.tmp / "hook.crt", self.tmp / "hook.key")
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx, reuse_address=False)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class Cluster:
    """Objects over a SQLite store, the write path with webhooks, and helpers to configure them."""

    def __init__(self, tmp: Path, server: WebhookServer) -> None:
        self.store = SQLiteStore(tmp / "store.db")
        self.registry = Registry()
        self.objects = Objects(store=self.store, registry=self.registry, clock=lambda: NOW,
                               allocators=Allocators.for_network(ClusterNetwork(250)))
        uids = iter(range(1, 10_000))
        self.admission = Admission(self.objects, new_uid=lambda: f"uid-{next(uids)}")
        self.server = server
        for ns, labels in (("hooks", {}), ("shop", {"mesh": "on"}), ("plain", {})):
            self.create("", "namespaces", "", {"metadata": {"name": ns, "labels": labels}})
        self.create("", "services", "hooks", {"metadata": {"name": "hook"}, "spec": {
            "ports": [{"name": "https", "port": 443, "targetPort": "webhook"}]}})
        self.create("", "endpoints", "hooks", {"metadata": {"name": "hook"}, "subsets": [
            {"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": server.port}]}]})

    def rt(self, group: str, plural: str) -> Any:
        return self.registry.lookup(group, "v1", plural)

    def create(self, group: str, plural: str, ns: str, obj: dict[str, Any]) -> dict[str, Any]:
        rt = self.rt(group, plural)
        obj = {"apiVersion": rt.api_version, "kind": rt.kind, **obj}
        return self.objects.create(rt, ns, obj).obj

    def configure(self, *hooks: dict[str, Any], kind: str = "MutatingWebhookConfiguration",
                  name: str = "test") -> None:
        plural = kind.lower() + "s"
        rt = self.rt("admissionregistration.k8s.io", plural)
        key = make_key(rt.key, "", name)
        if self.store.get(key) is not None:
            self.store.delete(key)
        self.create("admissionregistration.k8s.io", plural, "", {"metadata": {"name": name}, "webhooks": list(hooks)})

    def state(self) -> tuple[int, dict[str, int]]:
        return self.store.revision, {r.key: r.rev for res in ("pods", "services", "configmaps")
                                     for r in self.store.list(res)}

    async def create_pod(self, ns: str = "shop", labels: dict[str, str] | None = None, name: str = "web",
                         dry_run: bool = False) -> Any:
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1", "command": ["sleep", "9"]}]}}
        return await self.admission.create(self.rt("", "pods"), ns, body, user=ALICE, field_validation="Strict",
                                           dry_run=dry_run,
                                           options=request_options("CreateOptions", {"fieldManager": "kubectl"}))

    def stored(self, ns: str, name: str, plural: str = "pods") -> dict[str, Any] | None:
        rec = self.store.get(make_key(plural, ns, name))
        return rec.obj() if rec else None


def webhook(**over: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": "label.test.isthmus.io",
        "admissionReviewVersions": ["v1"],
        "sideEffects": "None",
        "timeoutSeconds": 5,
        "clientConfig": {"service": {"namespace": "hooks", "name": "hook", "path": "/mutate"},
                         "caBundle": base64.b64encode(CA.cert_pem).decode()},
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "namespaceSelector": {"matchLabels": {"mesh": "on"}},
    }
    out.update(over)
    return out


@pytest.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Cluster]]]:
    started: list[tuple[WebhookServer, Cluster | None]] = []

    async def make(cert: KeyPair = HOOK_CERT) -> Cluster:
        server = WebhookServer(cert, tmp_path)
        await server.start()
        cluster = Cluster(tmp_path, server)
        started.append((server, cluster))
        return cluster

    yield make
    for server, cluster in started:
        if cluster is not None:
            await cluster.admission.close()
            cluster.store.close()
        await server.close()


def refused(e: pytest.ExceptionInfo[ApiError], code: int, message: str) -> None:
    assert e.value.code == code, e.value.message
    assert e.value.message == message


# --------------------------------------------------------------------------- mutating


async def test_a_patch_is_applied_and_stored_and_the_review_is_complete(harness: Any) -> None:
    c = await harness()
    c.configure(webhook())
    c.server.handler = lambda r: _async(patch_response(r, ADD_LABEL, warnings=["labelled by the test"]))
    result = await c.create_pod()
    assert result.obj["metadata"]["labels"] == {"app": "web", "injected": "true"}
    assert "labelled by the test" in result.warnings
    assert c.stored("shop", "web")["metadata"]["labels"] == {"app": "web", "injected": "true"}  # type: ignore[index]
    [review] = c.server.reviews
    req = review["request"]
    assert (review["apiVersion"], review["kind"]) == ("admission.k8s.io/v1", "AdmissionReview")
    assert req["uid"] == "uid-1" and req["operation"] == "CREATE"
    assert (req["name"], req["namespace"]) == ("web", "shop")
    assert req["kind"] == req["requestKind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert req["resource"] == req["requestResource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert req["userInfo"] == {"username": "alice", "uid": "alice-uid", "groups": ["devs", "system:authenticated"]}
    assert req["options"] == {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1", "fieldManager": "kubectl"}
    assert req["dryRun"] is False and req["oldObject"] is None
    assert "uid" not in req["object"]["metadata"]  # webhooks see the object before it is given one
    assert req["object"]["spec"]["containers"][0]["image"] == "web:1"
    assert c.server.hosts == ["hook.hooks.svc:443"]
    assert c.server.paths == ["/mutate?timeout=5s"]


async def test_objects_outside_the_selectors_are_not_sent(harness: Any) -> None:
    c = await harness()
    c.configure(webhook(objectSelector={"matchExpressions": [{"key": "inject", "operator": "NotIn",
                                                              "values": ["off"]}]}))
    c.server.handler = lambda r: _async(patch_response(r, ADD_LABEL))
    await c.create_pod(ns="plain")
    await c.create_pod(labels={"app": "web", "inject": "off"}, name="opted-out")
    c.create("", "configmaps", "shop", {"metadata": {"name": "cfg"}})
    assert c.server.reviews == []
    assert c.stored("plain", "web")["metadata"]["labels"] == {"app": "web"}  # type: ignore[index]
    assert c.stored("shop", "opted-out")["metadata"]["labels"] == {"app": "web", "inject": "off"}  # type: ignore[index]


async def test_webhooks_run_in_order_each_seeing_the_last_ones_patch(harness: Any) -> None:
    c = await harness()
    second = webhook(name="second.test.isthmus.io", clientConfig={
        "service": {"namespace": "hooks", "name": "hook", "path": "/second"},
        "caBundle": base64.b64encode(CA.cert_pem).decode()})
    c.configure(webhook(), second)

    async def handler(review: dict[str, Any]) -> web.Response:
        labels = review["request"]["object"]["metadata"]["labels"]
        if "injected" not in labels:
            return patch_response(review, ADD_LABEL)
        return patch_response(review, [{"op": "add", "path": "/metadata/labels/seen", "value": labels["injected"]}])

    c.server.handler = handler
    await c.create_pod()
    assert c.server.paths == ["/mutate?timeout=5s", "/second?timeout=5s"]
    assert c.stored("shop", "web")["metadata"]["labels"] == {  # type: ignore[index]
        "app": "web", "injected": "true", "seen": "true"}


async def test_a_denial_carries_the_webhooks_message_and_stores_nothing(harness: Any) -> None:
    c = await harness()
    c.configure(webhook())
    c.server.handler = lambda r: _async(allow(r, allowed=False, status={
        "code": 403, "reason": "Forbidden", "message": "pods in shop need an owner label"}))
    before = c.state()
    with pytest.raises(ApiError) as e:
        await c.create_pod()
    refused(e, 403, 'admission webhook "label.test.isthmus.io" denied the request: pods in shop need an owner label')
    assert e.value.reason == "Forbidden"
    assert c.state() == before


@pytest.mark.parametrize(("ops", "message"), [
    ([{"op": "add", "path": "/spec/nothing/here", "value": 1}],
     'Internal error occurred: admission webhook "label.test.isthmus.io" returned a JSON patch that does not apply: '
     "json patch operation 0 (add '/spec/nothing/here')"),
    ([{"op": "replace", "path": "/spec/containers", "value": "none"}],
     'Internal error occurred: admission webhook "label.test.isthmus.io" made the object invalid: Pod in version '
     '"v1" cannot be handled as a Pod: spec.containers: Invalid value: "none": must be of type array'),
    ([{"op": "replace", "path": "/metadata/namespace", "value": "plain"}],
     'Internal error occurred: admission webhook "label.test.isthmus.io" moved the object to namespace "plain"; '
     'it must stay in "shop"'),
    ([{"op": "replace", "path": "/kind", "value": "ConfigMap"}],
     'Internal error occurred: admission webhook "label.test.isthmus.io" changed the object\'s apiVersion/kind to '
     "v1/ConfigMap"),
])
async def test_a_bad_patch_is_refused_naming_the_webhook(harness: Any, ops: list[dict[str, Any]],
                                                         message: str) -> None:
    c = await harness()
    c.configure(webhook(failurePolicy="Ignore"))  # a patch that is wrong is not a failed call: never ignored
    c.server.handler = lambda r: _async(patch_response(r, ops))
    before = c.state()
    with pytest.raises(ApiError) as e:
        await c.create_pod()
    assert e.value.code == 500 and e.value.reason == "InternalError"
    assert e.value.message.startswith(message), e.value.message
    assert c.state() == before


async def test_fields_a_webhook_adds_that_the_schema_does_not_know_are_dropped(harness: Any) -> None:
    c = await harness()
    c.configure(webhook())
    c.server.handler = lambda r: _async(patch_response(r, [{"op": "add", "path": "/spec/sidecarz", "value": 1}]))
    result = await c.create_pod()  # fieldValidation=Strict applies to what the client sent, not to the webhook
    assert "sidecarz" not in c.stored("shop", "web")["spec"]  # type: ignore[index]
    assert result.warnings == []


async def test_dry_run_is_patched_but_not_stored(harness: Any) -> None:
    c = await harness()
    c.configure(webhook(sideEffects="NoneOnDryRun"))
    c.server.handler = lambda r: _async(patch_response(r, ADD_LABEL))
    before = c.state()
    result = await c.create_pod(dry_run=True)
    assert result.obj["metadata"]["labels"]["injected"] == "true"
    assert c.server.reviews[0]["request"]["dryRun"] is True
    assert c.state() == before


async def test_updates_go_to_webhooks_whose_rules_say_update(harness: Any) -> None:
    c = await harness()
    c.configure(webhook(rules=[{"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"],
                                "resources": ["pods"]}]))
    await c.create_pod()
    assert c.server.reviews == []
    c.server.handler = lambda r: _async(patch_response(r, ADD_LABEL))
    pods = c.rt("", "pods")
    await c.admission.patch(pods, "shop", "web", "application/merge-patch+json",
                            b'{"metadata": {"labels": {"tier": "front"}}}', subresource="", user=ALICE,
                            field_validation="Strict", dry_run=False,
                            options=request_options("UpdateOptions", {}))
    [review] = c.server.reviews
    req = review["request"]
    assert req["operation"] == "UPDATE"
    assert req["oldObject"]["metadata"]["labels"] == {"app": "web"}
    assert req["object"]["metadata"]["labels"] == {"app": "web", "tier": "front"}
    assert req["options"]["kind"] == "UpdateOptions"
    assert c.stored("shop", "web")["metadata"]["labels"] == {  # type: ignore[index]
        "app": "web", "tier": "front", "injected": "true"}


# --------------------------------------------------------------------------- validating


async def test_validating_webhooks_see_the_final_object_and_may_refuse_it(harness: Any) -> None:
    c = await harness()
    c.configure(webhook())
    c.configure(webhook(name="check.test.isthmus.io", clientConfig={
        "service": {"namespace": "hooks", "name": "hook", "path": "/validate"},
        "caBundle": base64.b64encode(CA.cert_pem).decode()}), kind="ValidatingWebhookConfiguration")

    async def handler(review: dict[str, Any]) -> web.Response:
        if not c.server.paths[-1].startswith("/validate"):
            return patch_response(review, ADD_LABEL)
        if review["request"]["object"]["metadata"]["name"] == "refuse-me":
            return allow(review, allowed=False, status={"message": "no"})
        return allow(review, warnings=["checked"])

    c.server.handler = handler
    result = await c.create_pod()
    assert [p.split("?")[0] for p in c.server.paths] == ["/mutate", "/validate"]
    final = c.server.reviews[1]["request"]["object"]
    assert final["metadata"]["labels"]["injected"] == "true"
    assert final["metadata"]["uid"] and final["spec"]["restartPolicy"] == "Always"  # after the strategy ran
    assert result.warnings == ["checked"]
    before = c.state()
    with pytest.raises(ApiError) as e:
        await c.create_pod(name="refuse-me")
    refused(e, 400, 'admission webhook "check.test.isthmus.io" denied the request: no')
    assert c.state() == before


async def test_a_validating_webhook_may_not_patch(harness: Any) -> None:
    c = await harness()
    c.configure(webhook(), kind="ValidatingWebhookConfiguration")
    c.server.handler = lambda r: _async(patch_response(r, ADD_LABEL))
    before = c.state()
    with pytest.raises(ApiError) as e:
        await c.create_pod()
    refused(e, 500, 'Internal error occurred: failed calling webhook "label.test.isthmus.io": received invalid '
                    "webhook response: validating webhook may not return response.patch or response.patchType")
    assert c.state() == before


# --------------------------------------------------------------------------- failures and the failure policy


async def _refused_then_ignored(c: Cluster, message: str, **hook: Any) -> None:
    c.configure(webhook(**hook))
    before = c.state()
    with pytest.raises(ApiError) as e:
        await c.create_pod()
    refused(e, 500, message)
    assert e.value.reason == "InternalError"
    assert c.state() == before
    c.configure(webhook(failurePolicy="Ignore", **hook))
    result = await c.create_pod()
    assert result.obj["metadata"]["labels"] == {"app": "web"}
    assert c.stored("shop", "web") is not None


async def test_an_unreachable_webhook(harness: Any) -> None:
    c = await harness()
    await c.server.close()
    await _refused_then_ignored(
        c, 'Internal error occurred: failed calling webhook "label.test.isthmus.io": failed to call webhook: Post '
           f'"https://hook.hooks.svc:443/mutate?timeout=5s": dial tcp 127.0.0.1:{c.server.port}: connect: '
           "connection refused")


async def test_a_service_that_does_not_exist(harness: Any) -> None:
    c = await harness()
    await _refused_then_ignored(
        c, 'Internal error occurred: failed calling webhook "label.test.isthmus.io": failed to call webhook: Post '
           '"https://nothing.hooks.svc:443/?timeout=5s": service "nothing" not found',
        clientConfig={"service": {"namespace": "hooks", "name": "nothing"}})


async def test_a_service_without_ready_endpoints(harness: Any) -> None:
    c = await harness()
    c.create("", "services", "hooks", {"metadata": {"name": "idle"}, "spec": {"ports": [{"port": 443}]}})
    c.create("", "endpoints", "hooks", {"metadata": {"name": "idle"}, "subsets": [
        {"notReadyAddresses": [{"ip": "127.0.0.1"}], "ports": [{"port": c.server.port}]}]})
    await _refused_then_ignored(
        c, 'Internal error occurred: failed calling webhook "label.test.isthmus.io": failed to call webhook: Post '
           '"https://idle.hooks.svc:443/?timeout=5s": no endpoints available for service "idle"',
        clientConfig={"service": {"namespace": "hooks", "name": "idle"}})


async def test_a_ca_bundle_that_did_not_sign_the_webhooks_certificate_fails_closed(harness: Any) -> None:
    c = await harness()
    await _refused_then_ignored(
        c, 'Internal error occurred: failed calling webhook "label.test.isthmus.io": failed to call webhook: Post '
           '"https://hook.hooks.svc:443/mutate?timeout=5s": tls: failed to verify certificate: x509: certificate '
           "signed by unknown authority (unable to get local issuer certificate; clientConfig.caBundle does not hold "
           "the CA that signed the webhook's certificate)",
        clientConfig={"service": {"namespace": "hooks", "name": "hook", "path": "/mutate"},
                      "caBundle": base64.b64encode(OTHER_CA.cert_pem).decode()})
    assert c.server.reviews == []


async def test_a_certificate_for_another_name_fails_closed(harness: Any) -> None:
    c = await harness(WRONG_NAME_CERT)
    c.configure(webhook())
    before = c.state()
    with pytest.raises(ApiError) as e:
        await c.create_pod()
    assert e.value.code == 500
    assert e.value.message.startswith(
        'Internal error occurred: failed calling webhook "label.test.isthmus.io": failed to call webhook: Post '
        '"https://hook.hooks.svc:443/mutate?timeout=5s": tls: failed to verify certificate: Hostname mismatch')
    assert "hook.hooks.svc" in e.value.message
    assert c.state() == before and c.server.reviews == []


async def test_a_webhook_that_does_not_answer_in_time(harness: Any) -> None:
    c = await harness()
    gate = asyncio.Event()

    async def stall(review: dict[str, Any]) -> web.Response:
        await gate.wait()
        return allow(review)

    c.server.handler = stall
    try:
        await _refused_then_ignored(
            c, 'Internal error occurred: failed calling webhook "label.test.isthmus.io": failed to call webhook: '
               'Post "https://hook.hooks.svc:443/mutate?timeout=1s": context deadline exceeded (no answer within '
               "timeoutSeconds=1)", timeoutSeconds=1)
    finally:
        gate.set()


@pytest.mark.parametrize(("answer", "reason"), [
    (lambda r: web.Response(status=404, text="no such hook"),
     'failed to call webhook: Post "https://hook.hooks.svc:443/mutate?timeout=5s": the webhook answered HTTP 404 '
     "Not Found: no such hook"),
    (lambda r: web.Response(text="not json"), "received invalid webhook response: the response is not JSON"),
    (lambda r: web.json_response({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                  "response": {"uid": "someone-else", "allowed": True}}),
     'received invalid webhook response: expected response.uid="uid-1", got "someone-else"'),
])
async def test_bad_answers_follow_the_failure_policy(harness: Any, answer: Any, reason: str) -> None:
    c = await harness()
    c.server.handler = lambda r: _async(answer(r))
    c.configure(webhook())
    before = c.state()
    with pytest.raises(ApiError) as e:
        await c.create_pod()
    assert e.value.code == 500
    assert e.value.message.startswith(f'Internal error occurred: failed calling webhook "label.test.isthmus.io": '
                                      f"{reason}"), e.value.message
    assert c.state() == before


async def test_urls_must_be_loopback(harness: Any) -> None:
    c = await harness()
    await _refused_then_ignored(
        c, 'Internal error occurred: failed calling webhook "label.test.isthmus.io": failed to call webhook: Post '
           '"https://192.0.2.1:9443/mutate?timeout=5s": 192.0.2.1 is not a loopback address; the embedded cluster '
           "calls webhooks on 127.0.0.0/8 only",
        clientConfig={"url": "https://192.0.2.1:9443/mutate", "caBundle": base64.b64encode(CA.cert_pem).decode()})


async def test_a_url_webhook_is_verified_for_its_host(harness: Any) -> None:
    c = await harness(issue(CA, "hook", ips=("127.0.0.1",), server=True, now=NOW))
    c.configure(webhook(clientConfig={"url": f"https://127.0.0.1:{c.server.port}/by-url",
                                      "caBundle": base64.b64encode(CA.cert_pem).decode()}))
    c.server.handler = lambda r: _async(patch_response(r, ADD_LABEL))
    await c.create_pod()
    assert c.server.paths == ["/by-url?timeout=5s"]
    assert c.stored("shop", "web")["metadata"]["labels"]["injected"] == "true"  # type: ignore[index]


async def test_configuration_changes_apply_to_the_next_write(harness: Any) -> None:
    c = await harness()
    c.server.handler = lambda r: _async(patch_response(r, ADD_LABEL))
    await c.create_pod(name="before")
    c.configure(webhook())
    await c.create_pod(name="during")
    rt = c.rt("admissionregistration.k8s.io", "mutatingwebhookconfigurations")
    c.objects.delete(rt, "", "test")
    await c.create_pod(name="after")
    labels = {n: c.stored("shop", n)["metadata"]["labels"] for n in ("before", "during", "after")}  # type: ignore[index]
    assert labels == {"before": {"app": "web"}, "during": {"app": "web", "injected": "true"}, "after": {"app": "web"}}
    assert "mutating=0" in repr(c.admission)


async def test_an_invalid_configuration_is_refused_and_not_stored(harness: Any) -> None:
    c = await harness()
    before = c.state()
    with pytest.raises(ApiError) as e:
        c.configure(webhook(sideEffects="Some", timeoutSeconds=60))
    assert e.value.code == 422
    assert e.value.message == (
        'MutatingWebhookConfiguration.admissionregistration.k8s.io "test" is invalid: webhooks[0].sideEffects: '
        'Unsupported value: "Some": supported values: "None", "NoneOnDryRun"; webhooks[0].timeoutSeconds: Invalid '
        "value: 60: the timeout value must be between 1 and 30 seconds")
    assert c.state() == before
    assert c.store.list("admissionregistration.k8s.io/mutatingwebhookconfigurations") == []


async def test_stored_configurations_carry_kubernetes_defaults(harness: Any) -> None:
    c = await harness()
    c.configure(webhook())
    rec = c.store.get(make_key("admissionregistration.k8s.io/mutatingwebhookconfigurations", "", "test"))
    assert rec is not None
    stored = rec.obj()["webhooks"][0]
    assert (stored["failurePolicy"], stored["matchPolicy"], stored["reinvocationPolicy"],
            stored["objectSelector"], stored["rules"][0]["scope"], stored["clientConfig"]["service"]["port"]) == \
        ("Fail", "Equivalent", "Never", {}, "*", 443)


async def _async(value: web.StreamResponse) -> web.StreamResponse:
    return value
