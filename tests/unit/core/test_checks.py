"""The judgements of `isthmus check` on fetched facts, and the shape of its report."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from isthmus.core.checks import (
    AccessAnswer,
    CertFacts,
    Check,
    CheckResult,
    PresentedCert,
    ProxyAnswer,
    Status,
    access_outcome,
    certificates_valid_for,
    certificates_within_validity,
    control_plane_pods_ready,
    data_plane_versions,
    fail,
    kubernetes_version,
    missing_objects,
    ok,
    pod_facts,
    proxies_ready,
    proxy_certificates,
    report,
    result_of,
    succeeded,
    supported_algorithm,
    versions_match,
    warn,
)

NOW = datetime(2025, 6, 1, tzinfo=UTC)
LABEL = "isthmus.io/control-plane-component"
DEPLOYMENTS = {"identity": "isthmus-identity", "destination": "isthmus-destination"}
REPLICAS = {"isthmus-identity": 1, "isthmus-destination": 1}
WEB = "web.emojivoto.serviceaccount.identity.isthmus.cluster.local"


def pod(name: str, component: str | None = None, *, phase: str = "Running", ready: bool = True,
        containers: tuple[str, ...] = ("main",), state: dict[str, Any] | None = None, restarts: int = 0,
        namespace: str = "isthmus", ip: str = "127.1.64.1", deleting: bool = False,
        annotations: dict[str, str] | None = None, sa: str | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": namespace,
                            "labels": {LABEL: component} if component else {},
                            "annotations": annotations or {}}
    if deleting:
        meta["deletionTimestamp"] = "2025-06-01T00:00:00Z"
    spec: dict[str, Any] = {"containers": [{"name": c} for c in containers]}
    if sa:
        spec["serviceAccountName"] = sa
    return {"metadata": meta, "spec": spec, "status": {
        "phase": phase, "podIP": ip,
        "containerStatuses": [{"name": c, "ready": ready, "restartCount": restarts,
                               "state": state or {"running": {}}} for c in containers]}}


# ------------------------------------------------------------------ results and the report


def test_result_of_downgrades_a_warning_checks_error_and_keeps_hints_for_problems() -> None:
    plain = Check("a check", lambda env: ok(), "do this")
    warning = Check("a warning check", lambda env: ok(), "renew it", warning=True)
    assert result_of("cat", plain, ok()) == CheckResult("cat", "a check", Status.SUCCESS)
    assert result_of("cat", plain, fail("broken")) == CheckResult("cat", "a check", Status.ERROR, "broken", "do this")
    assert result_of("cat", plain, fail("broken", "do that")).hint == "do that"
    assert result_of("cat", warning, fail("expires soon")).status is Status.WARNING
    assert result_of("cat", plain, warn("meh")).status is Status.WARNING


def test_report_groups_checks_by_category_in_order_and_warnings_pass() -> None:
    results = [CheckResult("kubernetes-api", "can query the Kubernetes API", Status.SUCCESS),
               CheckResult("isthmus-identity", "issuer cert is valid for at least 60 days", Status.WARNING,
                           "expires soon", "renew")]
    assert succeeded(results)
    assert report(results) == {"success": True, "categories": [
        {"categoryName": "kubernetes-api", "checks": [
            {"description": "can query the Kubernetes API", "result": "success", "error": "", "hint": ""}]},
        {"categoryName": "isthmus-identity", "checks": [
            {"description": "issuer cert is valid for at least 60 days", "result": "warning",
             "error": "expires soon", "hint": "renew"}]}]}
    failed = [*results, CheckResult("isthmus-identity", "x", Status.ERROR, "bad", "fix")]
    assert not succeeded(failed)
    assert report(failed)["success"] is False
    assert len(report(failed)["categories"]) == 2


# ------------------------------------------------------------------ the API


@pytest.mark.parametrize(("info", "good"), [
    ({"major": "1", "minor": "32", "gitVersion": "v1.32.0"}, True),
    ({"major": "1", "minor": "27+", "gitVersion": "v1.27.3-gke.100"}, True),
    ({"major": "1", "minor": "21", "gitVersion": "v1.21.14"}, False),
    ({"gitVersion": "v1.30.1"}, True),
    ({"gitVersion": "v1.19.0"}, False),
])
def test_kubernetes_version(info: dict[str, str], good: bool) -> None:
    outcome = kubernetes_version(info)
    assert (outcome.status is Status.SUCCESS) is good
    if not good:
        assert "needs 1.22 or newer" in outcome.cause


def test_kubernetes_version_that_cannot_be_read() -> None:
    assert "cannot tell the Kubernetes version" in kubernetes_version({"platform": "x"}).cause


def test_access_outcome_names_each_refusal_with_its_namespace_and_reason() -> None:
    assert access_outcome([AccessAnswer("create", "namespaces", "", True)]) == ok()
    outcome = access_outcome([
        AccessAnswer("create", "namespaces", "", True),
        AccessAnswer("create", "clusterroles.rbac.authorization.k8s.io", "", False, "RBAC: no rule"),
        AccessAnswer("create", "secrets", "isthmus", False)])
    assert outcome.status is Status.ERROR
    assert outcome.cause.splitlines() == [
        "cannot create clusterroles.rbac.authorization.k8s.io: RBAC: no rule",
        "cannot create secrets in namespace 'isthmus'"]


def test_missing_objects_lists_what_is_missing_sorted() -> None:
    assert missing_objects("CRDs", ["a", "b"], ["b", "a", "c"]) == ok()
    assert missing_objects("CRDs", ["z", "a", "b"], ["b"]).cause == "missing CRDs: a, z"


# ------------------------------------------------------------------ pods


def test_pod_facts_reads_containers_states_and_defaults() -> None:
    facts = pod_facts(pod("p", "identity", ready=False, restarts=3,
                          state={"waiting": {"reason": "CrashLoopBackOff"}}))
    assert facts.ref == "isthmus/p"
    assert facts.service_account == "default"
    assert not facts.ready
    assert facts.why_not_ready() == "container main waiting: CrashLoopBackOff (3 restarts)"
    assert pod_facts({"metadata": {"name": "bare"}}).why_not_ready() == "phase unknown"
    done = pod_facts(pod("p", state={"terminated": {"reason": "Error", "exitCode": 2}}, ready=False))
    assert done.why_not_ready() == "container main terminated: Error (exit code 2)"
    assert pod_facts(pod("p", ready=False)).why_not_ready() == "container main running, not ready"


def test_control_plane_ready_when_every_deployment_has_ready_pods() -> None:
    pods = [pod_facts(pod("id-1", "identity")), pod_facts(pod("dst-1", "destination")),
            pod_facts(pod("old", "identity", ready=False, deleting=True))]
    assert control_plane_pods_ready(pods, DEPLOYMENTS, REPLICAS, component_label=LABEL) == ok()


def test_control_plane_not_ready_says_which_pods_and_why() -> None:
    pods = [pod_facts(pod("id-1", "identity", ready=False, restarts=1,
                          state={"waiting": {"reason": "CrashLoopBackOff"}})),
            pod_facts(pod("dst-1", "destination", phase="Pending"))]
    outcome = control_plane_pods_ready(pods, DEPLOYMENTS, REPLICAS, component_label=LABEL)
    assert outcome.status is Status.ERROR
    assert outcome.cause.splitlines() == [
        "pod dst-1 is not ready: phase Pending",
        "pod id-1 is not ready: container main waiting: CrashLoopBackOff (1 restart)"]


def test_control_plane_without_pods_says_whether_the_deployment_is_scaled_down_or_gone() -> None:
    pods = [pod_facts(pod("dst-1", "destination"))]
    assert (control_plane_pods_ready(pods, DEPLOYMENTS, {"isthmus-identity": 0}, component_label=LABEL).cause
            == "no pods of Deployment isthmus-identity: it is scaled to 0 replicas")
    assert (control_plane_pods_ready(pods, DEPLOYMENTS, {}, component_label=LABEL).cause
            == "Deployment isthmus-identity does not exist")
    assert (control_plane_pods_ready(pods, DEPLOYMENTS, REPLICAS, component_label=LABEL).cause
            == "no pods of Deployment isthmus-identity (it asks for 1)")


# ------------------------------------------------------------------ certificates


def cert(days_left: float, *, key: str = "ECDSA P-256", subject: str = "CN=identity.isthmus.cluster.local",
         started_days_ago: float = 30) -> CertFacts:
    return CertFacts(subject=subject, not_before=NOW - timedelta(days=started_days_ago),
                     not_after=NOW + timedelta(days=days_left), key_type=key)


def test_supported_algorithm() -> None:
    assert supported_algorithm([cert(100)], "issuer certificate") == ok()
    outcome = supported_algorithm([cert(100), cert(100, key="RSA 2048", subject="CN=old")], "trust anchor")
    assert outcome.cause == "trust anchor CN=old has a RSA 2048 key; the mesh uses ECDSA P-256"


def test_validity_period() -> None:
    assert certificates_within_validity([cert(1)], "issuer certificate", now=NOW) == ok()
    assert (certificates_within_validity([cert(-1)], "issuer certificate", now=NOW).cause
            == "issuer certificate CN=identity.isthmus.cluster.local expired at 2025-05-31T00:00:00Z")
    future = cert(100, started_days_ago=-2)
    assert "is not valid before 2025-06-03T00:00:00Z" in certificates_within_validity(
        [future], "issuer certificate", now=NOW).cause


def test_certificates_expiring_within_60_days_are_reported_and_expired_ones_left_to_validity() -> None:
    assert certificates_valid_for([cert(61)], "issuer certificate", now=NOW) == ok()
    soon = certificates_valid_for([cert(30)], "issuer certificate", now=NOW)
    assert soon.status is Status.ERROR  # the check that uses it is flagged `warning`
    assert soon.cause == ("issuer certificate CN=identity.isthmus.cluster.local will expire on "
                          "2025-07-01T00:00:00Z, in less than 60 days")
    assert certificates_valid_for([cert(-1)], "issuer certificate", now=NOW) == ok()
    assert certificates_valid_for([cert(10)], "x", now=NOW, at_least=timedelta(days=5)) == ok()


# ------------------------------------------------------------------ the data plane


def meshed(name: str, *, proxy_ready: bool = True, ip: str = "127.1.64.9") -> Any:
    return pod_facts(pod(name, namespace="emojivoto", containers=("app", "isthmus-proxy"), ip=ip,
                         ready=proxy_ready))


def test_proxies_ready() -> None:
    where = 'in the "emojivoto" namespace'
    assert proxies_ready([ProxyAnswer(meshed("web"), 200, "ready\n")], proxy_container="isthmus-proxy",
                         where=where) == ok()
    outcome = proxies_ready([
        ProxyAnswer(meshed("web"), 200, "ready\n"),
        ProxyAnswer(meshed("vote", proxy_ready=False), 503, "not ready: waiting for a certificate\n"),
        ProxyAnswer(meshed("emoji", proxy_ready=False), None, error="connection refused"),
        ProxyAnswer(meshed("new", proxy_ready=False, ip=""), None, error="no pod IP"),
        ProxyAnswer(meshed("slow", proxy_ready=False), 200, "ready\n"),
    ], proxy_container="isthmus-proxy", where=where)
    assert outcome.cause.splitlines() == [
        "emojivoto/emoji: its proxy's admin port does not answer: connection refused; "
        "container isthmus-proxy running",
        "emojivoto/new: the pod has no IP yet (container app running, not ready; "
        "container isthmus-proxy running, not ready)",
        "emojivoto/slow: container isthmus-proxy is not Ready yet",
        "emojivoto/vote: its proxy answers /ready with 503: not ready: waiting for a certificate"]


def test_no_meshed_pods_is_an_error_with_a_hint() -> None:
    outcome = proxies_ready([], proxy_container="isthmus-proxy", where='in the "x" namespace')
    assert outcome.cause == 'no "isthmus-proxy" containers found in the "x" namespace'
    assert "isthmus.io/inject=enabled" in outcome.hint


def leaf(names: tuple[str, ...] = (WEB,), days_left: float = 0.5) -> CertFacts:
    return CertFacts("", NOW - timedelta(hours=1), NOW + timedelta(days=days_left), "ECDSA P-256", names)


def test_proxy_certificates() -> None:
    assert proxy_certificates([PresentedCert("emojivoto/web", WEB, leaf())], now=NOW) == ok()
    outcome = proxy_certificates([
        PresentedCert("emojivoto/a", WEB, leaf(), "unable to get local issuer certificate"),
        PresentedCert("emojivoto/b", WEB, None, "TLS handshake with 127.1.64.3:4143 failed: reset"),
        PresentedCert("emojivoto/c", WEB, leaf(("other.emojivoto.serviceaccount.identity.isthmus.cluster.local",))),
        PresentedCert("emojivoto/d", WEB, leaf(days_left=-1)),
    ], now=NOW)
    assert outcome.cause.splitlines() == [
        f"emojivoto/a: its certificate (for {WEB}, valid until 2025-06-01T12:00:00Z) does not verify "
        f"against the trust anchors: unable to get local issuer certificate",
        "emojivoto/b: no certificate: TLS handshake with 127.1.64.3:4143 failed: reset",
        f"emojivoto/c: its certificate names other.emojivoto.serviceaccount.identity.isthmus.cluster.local, "
        f"expected {WEB}",
        "emojivoto/d: its certificate is valid from 2025-05-31T23:00:00Z to 2025-05-31T00:00:00Z, not now"]


# ------------------------------------------------------------------ versions


def test_versions() -> None:
    assert versions_match("0.1.0", "0.1.0") == ok()
    assert versions_match("0.2.0", "0.1.0").cause == "control plane running 0.1.0 but cli running 0.2.0"
    assert "does not record its version" in versions_match("0.1.0", None).cause
    annotation = "isthmus.io/proxy-version"
    pods = [pod_facts(pod("a", namespace="ns", annotations={annotation: "0.1.0"})),
            pod_facts(pod("b", namespace="ns", annotations={annotation: "0.0.9"})),
            pod_facts(pod("c", namespace="ns"))]
    assert data_plane_versions(pods[:1], "0.1.0", annotation=annotation) == ok()
    assert data_plane_versions(pods, "0.1.0", annotation=annotation).cause.splitlines() == [
        "ns/b running 0.0.9 but cli running 0.1.0", "ns/c running an unknown version but cli running 0.1.0"]
