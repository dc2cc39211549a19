"""The checks of `isthmus check`, grouped as `linkerd check` groups them.

`pre_install()` (`--pre`): kubernetes-api, kubernetes-version,
pre-kubernetes-setup. `installed(proxy=...)`: kubernetes-api,
kubernetes-version, isthmus-existence, isthmus-config, isthmus-identity,
isthmus-webhooks, control-plane-version, and with `proxy` isthmus-data-plane.
Each check fetches what it needs through the `CheckEnv` (the cluster of
the context, the probes, the clock) and leaves the judgement to
`isthmus.core.checks` where there is one to make. What the checks of a run
share (the cluster client, the `/version` answer, `isthmus-config`, the
identity material) is fetched once per run; what may settle while a check
is retried (pods, endpoints, proxies) is fetched on every attempt.

The control plane's names come from `isthmus.resources.manifests`: the
objects `isthmus uninstall` lists are exactly those install makes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509 as crypto_x509

from isthmus import __version__
from isthmus.adapters import x509
from isthmus.adapters.x509 import X509Error
from isthmus.components.checks.cluster import Cluster, KubeCluster
from isthmus.components.checks.probes import ProbeError, Probes, SocketProbes
from isthmus.components.checks.runner import Problem
from isthmus.core import checks as core
from isthmus.core.checks import Category, CertFacts, Check, Outcome, fail, ok
from isthmus.core.identity import DEFAULT_TRUST_DOMAIN, workload_identity
from isthmus.core.inject import ADMIN_PORT, INBOUND_PORT, PROXY_CONTAINER, PROXY_VERSION_ANNOTATION
from isthmus.resources import manifests
from isthmus.resources.manifests import (
    COMPONENT_LABEL,
    CONFIG_CONFIGMAP,
    INJECTOR_SERVICE,
    INJECTOR_TLS_SECRET,
    ISSUER_CRT_KEY,
    ISSUER_KEY_KEY,
    ISSUER_SECRET,
    NAMESPACE,
    TRUST_ROOTS_CONFIGMAP,
    TRUST_ROOTS_KEY,
    WEBHOOK_CONFIGURATION,
)

__all__ = ["CheckEnv", "installed", "pre_install"]

Obj = dict[str, Any]


@dataclass
class IdentityMaterial:
    anchors_pem: bytes
    anchors: list[CertFacts]
    issuer_pem: bytes
    issuer: CertFacts


@dataclass
class CheckEnv:
    """What one run of checks works with, and what its checks share once fetched."""

    kubeconfig: Path
    context: str | None
    now: Callable[[], datetime]
    data_plane_namespace: str | None = None
    connect: Callable[[Path, str | None], Cluster] = KubeCluster
    probes: Probes = field(default_factory=SocketProbes)
    cli_version: str = __version__
    cluster: Cluster | None = None
    version_info: Obj | None = None
    config: dict[str, str] | None = None
    identity: IdentityMaterial | None = None

    def kube(self) -> Cluster:
        if self.cluster is None:  # a fatal check comes first; this is for checks run alone
            self.cluster = self.connect(self.kubeconfig, self.context)
        return self.cluster


def _facts(cert: crypto_x509.Certificate) -> CertFacts:
    d = x509.describe(cert)
    return CertFacts(subject=d["subject"], not_before=cert.not_valid_before_utc,
                     not_after=cert.not_valid_after_utc, key_type=d["key_type"],
                     dns_names=tuple(s[4:] for s in d["sans"] if s.startswith("DNS:")))


def _b64(data: Obj, key: str, where: str) -> bytes:
    value = (data.get("data") or {}).get(key)
    if not value:
        raise Problem(f"{where} has no {key!r}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise Problem(f"{where}: {key!r} is not base64") from None


# ------------------------------------------------------------------ kubernetes-api, kubernetes-version

_KUBECONFIG_HINT = ("give a context of `kubectl config get-contexts` with --context, or point KUBECONFIG "
                    "at the cluster's kubeconfig")


def _init_client(env: CheckEnv) -> Outcome:
    env.cluster = env.connect(env.kubeconfig, env.context)
    return ok()


def _query_api(env: CheckEnv) -> Outcome:
    env.version_info = env.kube().version()
    return ok()


def _k8s_version(env: CheckEnv) -> Outcome:
    return core.kubernetes_version(env.version_info or {})


def _kubernetes() -> list[Category[CheckEnv]]:
    return [
        Category("kubernetes-api", (
            Check("can initialize the client", _init_client, _KUBECONFIG_HINT, fatal=True),
            Check("can query the Kubernetes API", _query_api,
                  "is the cluster running? `kubectl get --raw /version` should answer with the same "
                  "context; an embedded cluster: `isthmus cluster list`, `isthmus cluster start NAME`",
                  fatal=True),
        )),
        Category("kubernetes-version", (
            Check("is running the minimum Kubernetes API version", _k8s_version,
                  "upgrade the cluster to a supported Kubernetes version"),
        )),
    ]


# ------------------------------------------------------------------ pre-kubernetes-setup

_CLUSTER_SCOPED = (("", "namespaces"), ("rbac.authorization.k8s.io", "clusterroles"),
                   ("rbac.authorization.k8s.io", "clusterrolebindings"),
                   ("apiextensions.k8s.io", "customresourcedefinitions"),
                   ("admissionregistration.k8s.io", "mutatingwebhookconfigurations"))
_NAMESPACED = (("ServiceAccounts", "", "serviceaccounts"), ("Services", "", "services"),
               ("Deployments", "apps", "deployments"), ("ConfigMaps", "", "configmaps"),
               ("Secrets", "", "secrets"), ("Roles", "rbac.authorization.k8s.io", "roles"),
               ("RoleBindings", "rbac.authorization.k8s.io", "rolebindings"))
_ACCESS_HINT = ("use a kubeconfig user that may create them (such as one bound to cluster-admin), "
                "or ask the cluster's administrator to install isthmus")


def _access(verb: str, resources: Iterable[tuple[str, str]], namespace: str) -> Callable[[CheckEnv], Outcome]:
    def check(env: CheckEnv) -> Outcome:
        answers = []
        for group, resource in resources:
            allowed, reason = env.kube().can_i(verb, group, resource, namespace)
            name = f"{resource}.{group}" if group else resource
            answers.append(core.AccessAnswer(verb, name, namespace, allowed, reason))
        return core.access_outcome(answers)
    return check


def _namespace_absent(env: CheckEnv) -> Outcome:
    if env.kube().get("Namespace", NAMESPACE) is not None:
        return fail(f'the "{NAMESPACE}" namespace already exists')
    return ok()


def pre_install() -> list[Category[CheckEnv]]:
    """`isthmus check --pre`: can isthmus be installed on this cluster by this user?"""
    setup: list[Check[CheckEnv]] = [
        Check("control plane namespace does not already exist", _namespace_absent,
              "isthmus is installed already: check it with `isthmus check`, or remove it with "
              "`isthmus uninstall | kubectl delete -f -`"),
        Check("can create non-namespaced resources", _access("create", _CLUSTER_SCOPED, ""), _ACCESS_HINT),
    ]
    setup += [Check(f"can create {label}", _access("create", [(group, resource)], NAMESPACE), _ACCESS_HINT)
              for label, group, resource in _NAMESPACED]
    setup.append(Check("can read Secrets", _access("get", [("", "secrets")], NAMESPACE), _ACCESS_HINT))
    return [*_kubernetes(), Category("pre-kubernetes-setup", tuple(setup))]


# ------------------------------------------------------------------ isthmus-existence, isthmus-config

_INSTALL_HINT = ("install the control plane: `isthmus install --crds | kubectl apply -f -`, then "
                 "`isthmus install ... | kubectl apply -f -`")


def _expected(kind: str) -> list[str]:
    return [o["metadata"]["name"] for o in manifests.uninstall_objects() if o["kind"] == kind]


def _deployments() -> dict[str, str]:
    """Component label value -> Deployment name (install names Deployments `isthmus-<component>`)."""
    return {name.removeprefix("isthmus-"): name for name in _expected("Deployment")}


def _config_exists(env: CheckEnv) -> Outcome:
    cm = env.kube().get("ConfigMap", CONFIG_CONFIGMAP, NAMESPACE)
    if cm is None:
        return fail(f'the "{CONFIG_CONFIGMAP}" config map does not exist in namespace "{NAMESPACE}"')
    env.config = {str(k): str(v) for k, v in (cm.get("data") or {}).items()}
    return ok()


def _replicas(deployment: Obj) -> int:
    wanted = (deployment.get("spec") or {}).get("replicas")
    return 1 if wanted is None else int(wanted)  # Kubernetes' default


def _pods_ready(env: CheckEnv) -> Outcome:
    kube = env.kube()
    pods = [core.pod_facts(p) for p in kube.list("Pod", NAMESPACE)]
    replicas = {str(d["metadata"]["name"]): _replicas(d) for d in kube.list("Deployment", NAMESPACE)}
    return core.control_plane_pods_ready(pods, _deployments(), replicas, component_label=COMPONENT_LABEL)


def _objects_exist(kind: str, namespaced: bool) -> Callable[[CheckEnv], Outcome]:
    def check(env: CheckEnv) -> Outcome:
        expected = _expected(kind)
        found = [n for n in expected
                 if env.kube().get(kind, n, NAMESPACE if namespaced else "") is not None]
        return core.missing_objects(kind + "s", expected, found)
    return check


def _existence() -> list[Category[CheckEnv]]:
    ns = NAMESPACE
    reapply = "re-apply the control plane: `isthmus install ... | kubectl apply -f -`"
    return [
        Category("isthmus-existence", (
            Check(f"'{CONFIG_CONFIGMAP}' config map exists", _config_exists, _INSTALL_HINT, fatal=True),
            Check("control plane pods are ready", _pods_ready,
                  f"`kubectl -n {ns} get deploy,pods`; a Deployment scaled to 0 needs `kubectl -n {ns} "
                  f"scale deploy/NAME --replicas=1`; `kubectl -n {ns} describe pod NAME` and "
                  f"`kubectl -n {ns} logs NAME` say why a pod is not ready", retry=True),
        )),
        Category("isthmus-config", (
            Check("control plane Namespace exists", _objects_exist("Namespace", False), _INSTALL_HINT),
            Check("control plane ClusterRoles exist", _objects_exist("ClusterRole", False), reapply),
            Check("control plane ClusterRoleBindings exist", _objects_exist("ClusterRoleBinding", False),
                  reapply),
            Check("control plane ServiceAccounts exist", _objects_exist("ServiceAccount", True), reapply),
            Check("control plane CustomResourceDefinitions exist",
                  _objects_exist("CustomResourceDefinition", False),
                  "install the CRDs: `isthmus install --crds | kubectl apply -f -`"),
            Check("control plane MutatingWebhookConfigurations exist",
                  _objects_exist("MutatingWebhookConfiguration", False), reapply),
        )),
    ]


# ------------------------------------------------------------------ isthmus-identity

_IDENTITY_FILES_HINT = ("re-apply the control plane with your trust anchor and issuer: `isthmus install "
                        "--identity-trust-anchors-file ROOT.crt --identity-issuer-certificate-file "
                        "ISSUER.crt --identity-issuer-key-file ISSUER.key | kubectl apply -f -`")
_ISSUER_HINT = ("make a new issuer from the trust anchor: `isthmus certs create issuer issuer.crt issuer.key "
                "--ca ROOT.crt --ca-key ROOT.key`, and re-apply `isthmus install` with it")
_ANCHOR_HINT = ("rotate the trust anchor as docs/architecture.md describes (\"Rotating the trust anchor "
                "and the issuer\"): new root, both trusted, new issuer, then the new root alone")


def _load_identity(env: CheckEnv) -> IdentityMaterial:
    kube = env.kube()
    where_secret = f'Secret "{ISSUER_SECRET}" in namespace "{NAMESPACE}"'
    where_cm = f'ConfigMap "{TRUST_ROOTS_CONFIGMAP}" in namespace "{NAMESPACE}"'
    secret = kube.get("Secret", ISSUER_SECRET, NAMESPACE)
    if secret is None:
        raise Problem(f"the issuer's {where_secret} does not exist")
    cm = kube.get("ConfigMap", TRUST_ROOTS_CONFIGMAP, NAMESPACE)
    if cm is None:
        raise Problem(f"the trust anchors' {where_cm} does not exist")
    anchors_pem = str((cm.get("data") or {}).get(TRUST_ROOTS_KEY) or "").encode()
    crt_pem = _b64(secret, ISSUER_CRT_KEY, where_secret)
    key_pem = _b64(secret, ISSUER_KEY_KEY, where_secret)
    try:
        anchors = x509.load_certificates(anchors_pem, what=f"{TRUST_ROOTS_KEY} of the {where_cm}")
    except X509Error as e:
        raise Problem(str(e)) from None
    try:
        issuer, _ = x509.load_credentials(crt_pem, key_pem, what="the issuer")
    except X509Error as e:
        raise Problem(f"{where_secret}: {e}") from None
    return IdentityMaterial(anchors_pem, [_facts(a) for a in anchors], crt_pem, _facts(issuer))


def _identity(env: CheckEnv) -> IdentityMaterial:
    if env.identity is None:
        env.identity = _load_identity(env)
    return env.identity


def _cert_config(env: CheckEnv) -> Outcome:
    env.identity = _load_identity(env)
    return ok()


def _issued_by_anchor(env: CheckEnv) -> Outcome:
    ident = _identity(env)
    try:
        x509.verify_ca_chain(ident.issuer_pem, roots_pem=ident.anchors_pem, now=env.now())
    except X509Error as e:
        return fail(str(e))
    return ok()


def _identity_category() -> Category[CheckEnv]:
    def anchors(judge: Callable[[list[CertFacts], datetime], Outcome]) -> Callable[[CheckEnv], Outcome]:
        return lambda env: judge(_identity(env).anchors, env.now())

    def issuer(judge: Callable[[list[CertFacts], datetime], Outcome]) -> Callable[[CheckEnv], Outcome]:
        return lambda env: judge([_identity(env).issuer], env.now())

    return Category("isthmus-identity", (
        Check("certificate config is valid", _cert_config, _IDENTITY_FILES_HINT, fatal=True),
        Check("trust anchors are using supported crypto algorithm",
              anchors(lambda c, now: core.supported_algorithm(c, "trust anchor")),
              "create trust anchors with `isthmus certs create root` (ECDSA P-256)"),
        Check("trust anchors are within their validity period",
              anchors(lambda c, now: core.certificates_within_validity(c, "trust anchor", now=now)), _ANCHOR_HINT),
        Check("trust anchors are valid for at least 60 days",
              anchors(lambda c, now: core.certificates_valid_for(c, "trust anchor", now=now)), _ANCHOR_HINT,
              warning=True),
        Check("issuer cert is using supported crypto algorithm",
              issuer(lambda c, now: core.supported_algorithm(c, "issuer certificate")), _ISSUER_HINT),
        Check("issuer cert is within its validity period",
              issuer(lambda c, now: core.certificates_within_validity(c, "issuer certificate", now=now)),
              _ISSUER_HINT),
        Check("issuer cert is valid for at least 60 days",
              issuer(lambda c, now: core.certificates_valid_for(c, "issuer certificate", now=now)),
              _ISSUER_HINT, warning=True),
        Check("issuer cert is issued by the trust anchor", _issued_by_anchor, _ISSUER_HINT),
    ))


# ------------------------------------------------------------------ isthmus-webhooks

_WEBHOOK_CERT_HINT = ("re-apply the control plane (`isthmus install ... | kubectl apply -f -`): it makes "
                      "the webhook's certificate and caBundle together")


@dataclass
class _Webhook:
    ca_pem: bytes
    service: Obj  # clientConfig.service
    server_name: str


def _webhook(env: CheckEnv) -> _Webhook:
    config = env.kube().get("MutatingWebhookConfiguration", WEBHOOK_CONFIGURATION)
    if config is None:
        raise Problem(f"the MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION} does not exist")
    hooks = [h for h in config.get("webhooks") or [] if h.get("name") == manifests.WEBHOOK_NAME]
    if not hooks:
        raise Problem(f"the MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION} has no webhook "
                      f"{manifests.WEBHOOK_NAME}")
    client = hooks[0].get("clientConfig") or {}
    try:
        ca_pem = base64.b64decode(client.get("caBundle") or "", validate=True)
    except (binascii.Error, ValueError):
        raise Problem(f"the caBundle of webhook {manifests.WEBHOOK_NAME} is not base64") from None
    if not ca_pem:
        raise Problem(f"webhook {manifests.WEBHOOK_NAME} has no caBundle")
    service = client.get("service") or {}
    if not service.get("name"):
        raise Problem(f"webhook {manifests.WEBHOOK_NAME} does not call a Service (clientConfig: {client})")
    server_name = f"{service['name']}.{service.get('namespace') or NAMESPACE}.svc"
    return _Webhook(ca_pem, service, server_name)


def _webhook_serving_cert(env: CheckEnv) -> tuple[_Webhook, bytes]:
    hook = _webhook(env)
    secret = env.kube().get("Secret", INJECTOR_TLS_SECRET, NAMESPACE)
    if secret is None:
        raise Problem(f'the injector\'s Secret "{INJECTOR_TLS_SECRET}" does not exist in namespace "{NAMESPACE}"')
    return hook, _b64(secret, "tls.crt", f'Secret "{INJECTOR_TLS_SECRET}"')


def _webhook_cert_valid(env: CheckEnv) -> Outcome:
    hook, crt = _webhook_serving_cert(env)
    try:
        x509.verify_chain(crt, intermediates=b"", roots_pem=hook.ca_pem, now=env.now(),
                          dns_name=hook.server_name)
    except X509Error as e:
        return fail(f"the injector's certificate in Secret {INJECTOR_TLS_SECRET} does not verify with the "
                    f"caBundle of {WEBHOOK_CONFIGURATION} for {hook.server_name}: {e}")
    return ok()


def _webhook_cert_lasting(env: CheckEnv) -> Outcome:
    _, crt = _webhook_serving_cert(env)
    try:
        leaf = _facts(x509.load_certificates(crt, what=f"tls.crt of Secret {INJECTOR_TLS_SECRET}")[0])
    except X509Error as e:
        return fail(str(e))
    return core.certificates_valid_for([leaf], "proxy-injector certificate", now=env.now())


def _endpoint_addresses(env: CheckEnv, service: Obj) -> tuple[list[str], int]:
    """Ready addresses and the port of the webhook's Service, resolved as the API server resolves them."""
    name, namespace = str(service["name"]), str(service.get("namespace") or NAMESPACE)
    port = int(service.get("port") or 443)
    svc = env.kube().get("Service", name, namespace)
    if svc is None:
        raise Problem(f"the Service {namespace}/{name} does not exist")
    svc_port = next((p for p in (svc.get("spec") or {}).get("ports") or [] if p.get("port") == port), None)
    if svc_port is None:
        raise Problem(f"the Service {namespace}/{name} has no port {port}")
    endpoints = env.kube().get("Endpoints", name, namespace) or {}
    for subset in endpoints.get("subsets") or []:
        ports = subset.get("ports") or []
        match = next((p for p in ports if p.get("name") == svc_port.get("name")), None)
        if match is None and len(ports) == 1:
            match = ports[0]
        addresses = [str(a["ip"]) for a in subset.get("addresses") or [] if a.get("ip")]
        if match is not None and addresses:
            return addresses, int(match["port"])
    raise Problem(f"the Service {namespace}/{name} has no ready endpoints: no {name} pod is ready to "
                  f"answer the API server")


def _webhook_reachable(env: CheckEnv) -> Outcome:
    hook = _webhook(env)
    addresses, port = _endpoint_addresses(env, hook.service)
    problems = []
    for ip in addresses:
        try:
            answer = env.probes.webhook_review(ip, port, ca_pem=hook.ca_pem, server_name=hook.server_name,
                                               path=str(hook.service.get("path") or "/"), namespace=NAMESPACE)
        except ProbeError as e:
            problems.append(str(e))
            continue
        if answer.get("allowed") is not True:
            problems.append(f"{ip}:{port} refused a pod it should admit: {answer.get('status')}")
        problems += [f"{ip}:{port} warns: {w}" for w in answer.get("warnings") or []]
    return fail("\n".join(problems)) if problems else ok()


def _webhooks_category() -> Category[CheckEnv]:
    ns = NAMESPACE
    return Category("isthmus-webhooks", (
        Check("proxy-injector webhook has valid cert", _webhook_cert_valid, _WEBHOOK_CERT_HINT),
        Check("proxy-injector cert is valid for at least 60 days", _webhook_cert_lasting, _WEBHOOK_CERT_HINT,
              warning=True),
        Check("proxy-injector webhook is reachable", _webhook_reachable,
              f"`kubectl -n {ns} get pods,endpoints -l {COMPONENT_LABEL}=proxy-injector`; "
              f"`kubectl -n {ns} logs deploy/{INJECTOR_SERVICE}`", retry=True),
    ))


# ------------------------------------------------------------------ control-plane-version


def _cp_version(env: CheckEnv) -> Outcome:
    return core.versions_match(env.cli_version, (env.config or {}).get("version"))


def _version_category() -> Category[CheckEnv]:
    return Category("control-plane-version", (
        Check("control plane and cli versions match", _cp_version,
              "install the control plane of this cli's version: `isthmus install ... | kubectl apply -f -`, "
              "or use the cli of the control plane's version", warning=True),
    ))


# ------------------------------------------------------------------ isthmus-data-plane


def _where(env: CheckEnv) -> str:
    ns = env.data_plane_namespace
    return f'in the "{ns}" namespace' if ns else "in any namespace"


def _meshed_pods(env: CheckEnv) -> list[core.PodFacts]:
    pods = [core.pod_facts(p) for p in env.kube().list("Pod", env.data_plane_namespace)]
    return [p for p in pods if PROXY_CONTAINER in p.containers and not p.terminating
            and p.phase not in ("Succeeded", "Failed")]


def _dp_namespace(env: CheckEnv) -> Outcome:
    ns = env.data_plane_namespace
    if ns and env.kube().get("Namespace", ns) is None:
        return fail(f'the "{ns}" namespace does not exist')
    return ok()


def _dp_ready(env: CheckEnv) -> Outcome:
    answers = []
    for pod in _meshed_pods(env):
        if not pod.ip:
            answers.append(core.ProxyAnswer(pod, None, error="no pod IP"))
            continue
        try:
            status, body = env.probes.admin_ready(pod.ip, ADMIN_PORT)
        except ProbeError as e:
            answers.append(core.ProxyAnswer(pod, None, error=str(e)))
            continue
        answers.append(core.ProxyAnswer(pod, status, body))
    return core.proxies_ready(answers, proxy_container=PROXY_CONTAINER, where=_where(env))


def _dp_certificates(env: CheckEnv) -> Outcome:
    ident = _identity(env)
    trust_domain = (env.config or {}).get("trustDomain") or DEFAULT_TRUST_DOMAIN
    presented = []
    for pod in _meshed_pods(env):
        container = pod.status_of(PROXY_CONTAINER)
        if not pod.ip or container is None or not container.ready:
            continue  # not ready: the readiness check reports it
        identity = workload_identity(pod.service_account, pod.namespace, trust_domain)
        seen = env.probes.presented_certificate(pod.ip, INBOUND_PORT, anchors_pem=ident.anchors_pem,
                                                identity=identity)
        leaf = None
        if seen.leaf_der is not None:
            leaf = _facts(crypto_x509.load_der_x509_certificate(seen.leaf_der))
        presented.append(core.PresentedCert(pod.ref, identity, leaf, seen.error))
    return core.proxy_certificates(presented, now=env.now())


def _dp_versions(env: CheckEnv) -> Outcome:
    return core.data_plane_versions(_meshed_pods(env), env.cli_version, annotation=PROXY_VERSION_ANNOTATION)


def _data_plane_category(env_namespace: str | None) -> Category[CheckEnv]:
    ns = f"-n {env_namespace} " if env_namespace else "-n NAMESPACE "
    checks: list[Check[CheckEnv]] = []
    if env_namespace:
        checks.append(Check("data plane namespace exists", _dp_namespace,
                            "give the namespace of meshed workloads with -n", fatal=True))
    checks += [
        Check("data plane proxies are ready", _dp_ready,
              f"`kubectl {ns}describe pod NAME`; `kubectl {ns}logs NAME -c {PROXY_CONTAINER}`", retry=True),
        Check("data plane proxies certificate match CA", _dp_certificates,
              f"restart the workload so its proxy gets a certificate from the current issuer and trust "
              f"anchors: `kubectl {ns}rollout restart deploy/NAME`"),
        Check("data plane and cli versions match", _dp_versions,
              f"restart meshed workloads so the injector gives them this version's proxy: "
              f"`kubectl {ns}rollout restart deploy/NAME`", warning=True),
    ]
    return Category("isthmus-data-plane", tuple(checks))


def installed(*, proxy: bool = False, namespace: str | None = None) -> list[Category[CheckEnv]]:
    """`isthmus check` (with `proxy`: `--proxy`, its data-plane checks limited to `namespace` when given)."""
    categories = [*_kubernetes(), *_existence(), _identity_category(), _webhooks_category(),
                  _version_category()]
    if proxy:
        categories.append(_data_plane_category(namespace))
    return categories
