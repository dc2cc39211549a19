"""`isthmus multicluster install|link|unlink|allow` as a user runs them, against a scripted cluster.

The commands run in-process (typer's runner) under a root command with the
real `--context` option; the cluster they read is a `FakeCluster` holding
the objects a test gives it. Every refusal is checked for its message, exit
status 1 and an empty stdout (nothing reaches `kubectl apply -f -`); refusals
of options are also checked to happen before the cluster is contacted.
"""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from isthmus.adapters.x509 import new_root
from isthmus.cli.multicluster import KubeReader, MulticlusterError, make_multicluster_app

ROOT = new_root(now=datetime.now(UTC))
CA_PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
GATEWAY_ID = "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.east.example"
REMOTE_ACCESS = "isthmus-service-mirror-remote-access-default"


def obj(kind: str, namespace: str, name: str, **fields: Any) -> dict[str, Any]:
    api = "v1"
    return {"apiVersion": api, "kind": kind, "metadata": {"name": name, "namespace": namespace}, **fields}


def control_plane() -> list[dict[str, Any]]:
    return [
        obj("ConfigMap", "isthmus", "isthmus-config", data={
            "trustDomain": "east.example", "clusterDomain": "east.local", "image": "reg.example/isthmus:9",
            "version": "9.0.0", "proxyLogLevel": "debug"}),
        obj("ConfigMap", "isthmus", "isthmus-identity-trust-roots", data={"ca-bundle.crt": ROOT.cert_pem.decode()}),
        obj("Service", "isthmus", "isthmus-identity", spec={"clusterIP": "127.9.128.3"}),
        obj("Service", "isthmus", "isthmus-dst", spec={"clusterIP": "127.9.128.4"}),
    ]


def gateway_service(**changes: Any) -> dict[str, Any]:
    svc = obj("Service", "isthmus-multicluster", "isthmus-gateway", spec={
        "type": "LoadBalancer",
        "ports": [{"name": "mc-gateway", "port": 4143}, {"name": "mc-probe", "port": 4191}]},
        status={"loadBalancer": {"ingress": [{"ip": "127.9.192.1"}, {"hostname": "gw.east.example"}]}})
    svc["metadata"]["annotations"] = {"mirror.isthmus.io/gateway-identity": GATEWAY_ID,
                                      "mirror.isthmus.io/probe-path": "/ready",
                                      "mirror.isthmus.io/probe-period": "3s"}
    for path, value in changes.items():
        node = svc
        *parents, last = path.split("__")
        for p in parents:
            node = node[p]
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return svc


def multicluster_installed(**gateway_changes: Any) -> list[dict[str, Any]]:
    return [*control_plane(), gateway_service(**gateway_changes),
            obj("ServiceAccount", "isthmus-multicluster", REMOTE_ACCESS),
            obj("Secret", "isthmus-multicluster", f"{REMOTE_ACCESS}-token",
                type="kubernetes.io/service-account-token")]


class FakeCluster:
    """A `ClusterReader` over a list of objects; counts what it is asked."""

    def __init__(self, objects: list[dict[str, Any]], *, context: str = "east",
                 unreachable: bool = False) -> None:
        self.objects = copy.deepcopy(objects)
        self.context, self.server, self.ca_pem = context, "https://127.9.0.1:6443", CA_PEM
        self.unreachable = unreachable
        self.calls: list[tuple[str, ...]] = []
        self.tokens: list[tuple[str, str, int]] = []

    def _check(self) -> None:
        if self.unreachable:
            raise MulticlusterError(f"cannot reach the API of context {self.context!r} at {self.server}: "
                                    f"ConnectError: [Errno 111] Connection refused")

    def get(self, kind: str, name: str, namespace: str = "") -> dict[str, Any] | None:
        self.calls.append(("get", kind, namespace, name))
        self._check()
        for o in self.objects:
            meta = o["metadata"]
            if o["kind"] == kind and meta["name"] == name and meta.get("namespace", "") == namespace:
                return copy.deepcopy(o)
        return None

    def list(self, kind: str, labels: dict[str, str]) -> list[dict[str, Any]]:
        self.calls.append(("list", kind))
        self._check()
        return [copy.deepcopy(o) for o in self.objects if o["kind"] == kind
                and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())]

    def request_token(self, service_account: str, namespace: str, seconds: int) -> tuple[str, str | None]:
        self._check()
        self.tokens.append((service_account, namespace, seconds))
        return "requested-token", "2026-12-01T00:00:00+00:00"


def run(cluster: FakeCluster | None, *args: str) -> Any:
    """`isthmus <args>` with the multicluster group reading `cluster`; the runner's result."""
    contexts: list[str | None] = []

    def connect(context: str | None) -> FakeCluster:
        contexts.append(context)
        if cluster is None:
            raise AssertionError("the command contacted a cluster")
        return cluster

    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context, context: str = typer.Option(None, "--context")) -> None:
        ctx.obj = {"context": context, "namespace": None}

    app.add_typer(make_multicluster_app(connect=connect), name="multicluster")
    result = CliRunner().invoke(app, list(args))
    result.contexts = contexts
    return result


def refused(result: Any, message: str) -> None:
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert result.stderr == f"error: {message}\n"


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name)


# ------------------------------------------------------------------ install


def test_install_gives_the_gateway_the_control_planes_settings_and_addresses() -> None:
    cluster = FakeCluster(control_plane())
    result = run(cluster, "--context", "east", "multicluster", "install")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    assert result.contexts == ["east"]
    objects = docs(result.stdout)
    assert [o["kind"] for o in objects][:2] == ["Namespace", "CustomResourceDefinition"]
    container = named(objects, "Deployment", "isthmus-gateway")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == "reg.example/isthmus:9"
    assert env["ISTHMUS_PROXY_GATEWAY"] == "1"
    assert env["ISTHMUS_PROXY_IDENTITY_SVC_ADDR"] == "127.9.128.3:8080"
    assert env["ISTHMUS_PROXY_DESTINATION_SVC_ADDR"] == "127.9.128.4:8086"
    assert env["ISTHMUS_PROXY_IDENTITY_TRUST_ANCHORS"] == ROOT.cert_pem.decode()
    assert env["ISTHMUS_PROXY_IDENTITY_LOCAL_NAME"] == GATEWAY_ID
    assert env["ISTHMUS_PROXY_CLUSTER_DOMAIN"] == "east.local"
    assert env["ISTHMUS_PROXY_LOG"] == "debug"
    svc = named(objects, "Service", "isthmus-gateway")
    assert svc["metadata"]["annotations"]["mirror.isthmus.io/gateway-identity"] == GATEWAY_ID
    assert cluster.tokens == []  # install only reads


def test_install_options_set_the_gateway_services_ports_and_probe_period() -> None:
    result = run(FakeCluster(control_plane()), "multicluster", "install", "--gateway-port", "443",
                 "--gateway-probe-port", "8191", "--gateway-probe-seconds", "10")
    assert result.exit_code == 0, result.stderr
    assert result.contexts == [None]  # the kubeconfig's current context
    svc = named(docs(result.stdout), "Service", "isthmus-gateway")
    assert [(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]] == [
        ("mc-gateway", 443, 4143), ("mc-probe", 8191, 4192)]
    assert svc["metadata"]["annotations"]["mirror.isthmus.io/probe-period"] == "10s"


@pytest.mark.parametrize(("args", "message"), [
    (["--gateway-port", "0"], "--gateway-port 0 is not a port number (1-65535)"),
    (["--gateway-probe-port", "70000"], "--gateway-probe-port 70000 is not a port number (1-65535)"),
    (["--gateway-probe-seconds", "0"], "--gateway-probe-seconds 0 is not between 1 and 3600"),
])
def test_install_refuses_bad_options_before_reading_the_cluster(args: list[str], message: str) -> None:
    result = run(None, "multicluster", "install", *args)
    refused(result, message)
    assert result.contexts == []


def without(objects: list[dict[str, Any]], kind: str, name: str) -> list[dict[str, Any]]:
    return [o for o in objects if not (o["kind"] == kind and o["metadata"]["name"] == name)]


@pytest.mark.parametrize(("objects", "message"), [
    ([], "isthmus is not installed on context 'east' (there is no ConfigMap isthmus/isthmus-config): install the "
         "control plane first with `isthmus install --crds | kubectl --context=east apply -f -` and "
         "`isthmus install ... | kubectl --context=east apply -f -`"),
    (without(control_plane(), "ConfigMap", "isthmus-identity-trust-roots"),
     "the control plane on context 'east' is incomplete: ConfigMap isthmus/isthmus-identity-trust-roots holds no "
     "trust anchors; apply `isthmus install` there again"),
    (without(control_plane(), "Service", "isthmus-dst"),
     "the control plane on context 'east' is incomplete: Service isthmus/isthmus-dst does not exist; apply "
     "`isthmus install` there again"),
])
def test_install_refuses_a_cluster_without_the_control_plane(objects: list[dict[str, Any]], message: str) -> None:
    refused(run(FakeCluster(objects), "--context", "east", "multicluster", "install"), message)


def test_install_says_when_the_cluster_cannot_be_reached() -> None:
    refused(run(FakeCluster(control_plane(), unreachable=True), "--context", "east", "multicluster", "install"),
            "cannot reach the API of context 'east' at https://127.9.0.1:6443: ConnectError: [Errno 111] "
            "Connection refused")


# ------------------------------------------------------------------ link


def link_output(result: Any) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    assert result.exit_code == 0, result.stderr
    objects = docs(result.stdout)
    secret = named(objects, "Secret", "cluster-credentials-east")
    kubeconfig = yaml.safe_load(base64.b64decode(secret["data"]["kubeconfig"]))
    return kubeconfig, named(objects, "Link", "east"), objects


def test_link_fills_the_link_from_the_gateway_service_and_requests_a_token() -> None:
    cluster = FakeCluster(multicluster_installed())
    result = run(cluster, "--context", "east", "multicluster", "link", "--cluster-name", "east")
    kubeconfig, link, objects = link_output(result)
    assert result.contexts == ["east"]
    assert kubeconfig["clusters"][0]["cluster"] == {
        "server": "https://127.9.0.1:6443", "certificate-authority-data": base64.b64encode(CA_PEM).decode()}
    assert kubeconfig["users"] == [{"name": REMOTE_ACCESS, "user": {"token": "requested-token"}}]
    assert cluster.tokens == [(REMOTE_ACCESS, "isthmus-multicluster", 365 * 24 * 3600)]
    assert link["metadata"]["namespace"] == "isthmus-multicluster"
    assert link["spec"] == {
        "targetClusterName": "east", "targetClusterDomain": "east.local",
        "clusterCredentialsSecret": "cluster-credentials-east",
        "gatewayAddress": "127.9.192.1,gw.east.example", "gatewayPort": 4143, "gatewayIdentity": GATEWAY_ID,
        "probeSpec": {"path": "/ready", "port": 4191, "period": "3s", "timeout": "3s", "failureThreshold": 3},
        "selector": {"matchLabels": {"mirror.isthmus.io/exported": "true"}},
    }
    deployment = named(objects, "Deployment", "isthmus-service-mirror-east")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["isthmus", "service-mirror", "--link", "east", "--namespace",
                                    "isthmus-multicluster"]
    assert container["image"] == "reg.example/isthmus:9"
    assert result.stderr == (
        "note: the token in Secret cluster-credentials-east (from TokenRequest for ServiceAccount "
        f"isthmus-multicluster/{REMOTE_ACCESS} on context 'east') expires at 2026-12-01T00:00:00+00:00; "
        "run link again before then\n")


def test_link_uses_the_token_kubernetes_put_in_the_service_account_secret() -> None:
    objects = multicluster_installed()
    named(objects, "Secret", f"{REMOTE_ACCESS}-token")["data"] = {
        "token": base64.b64encode(b"long-lived").decode()}
    cluster = FakeCluster(objects)
    kubeconfig, _, _ = link_output(run(cluster, "--context", "east", "multicluster", "link", "--cluster-name", "east"))
    assert kubeconfig["users"][0]["user"] == {"token": "long-lived"}
    assert cluster.tokens == []


def test_link_options_override_what_the_gateway_service_says() -> None:
    objects = [*multicluster_installed(), obj("ServiceAccount", "isthmus-multicluster", "remote-west")]
    cluster = FakeCluster(objects)
    result = run(cluster, "--context", "east", "multicluster", "link", "--cluster-name", "east",
                 "--selector", "app in (web,api),tier!=test", "--gateway-addresses", "203.0.113.7, gw.example",
                 "--gateway-port", "443", "--api-server-address", "https://api.east.example:6443",
                 "--service-account-name", "remote-west")
    kubeconfig, link, _ = link_output(result)
    assert link["spec"]["gatewayAddress"] == "203.0.113.7,gw.example"
    assert link["spec"]["gatewayPort"] == 443
    assert link["spec"]["selector"] == {"matchExpressions": [
        {"key": "app", "operator": "In", "values": ["api", "web"]},
        {"key": "tier", "operator": "NotIn", "values": ["test"]}]}
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://api.east.example:6443"
    assert kubeconfig["users"][0]["name"] == "remote-west"
    assert cluster.tokens == [("remote-west", "isthmus-multicluster", 365 * 24 * 3600)]


def test_link_takes_seconds_as_linkerd_writes_the_probe_period_and_a_missing_identity_from_the_trust_domain() -> None:
    svc_annotations = {"mirror.isthmus.io/probe-period": "7"}
    result = run(FakeCluster(multicluster_installed(metadata__annotations=svc_annotations)),
                 "multicluster", "link", "--cluster-name", "east")
    _, link, _ = link_output(result)
    assert link["spec"]["probeSpec"]["period"] == "7s"
    assert link["spec"]["gatewayIdentity"] == GATEWAY_ID


@pytest.mark.parametrize(("args", "message"), [
    ([], "Missing option"),
    (["--cluster-name", "East_1"], "--cluster-name 'East_1' is not a valid cluster name (it names mirrored services, "
                                   "<service>-<cluster>): a lowercase RFC 1123 label must consist of lower case "
                                   "alphanumeric characters or '-', and must start and end with an alphanumeric "
                                   "character (e.g. 'my-name',  or '123-abc', regex used for validation is "
                                   "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
    (["--cluster-name", "east", "--selector", "app in (web"],
     "--selector 'app in (web' is not a label selector: unable to parse requirement: \"app in (web\": found end of "
     "selector, expected ',' or ')'"),
    (["--cluster-name", "east", "--selector", "version>2"],
     "--selector 'version>2' is not a label selector: version>2: a Link's selector cannot compare numbers (> and "
     "<); a LabelSelector holds =, ==, !=, in, notin, exists and !"),
    (["--cluster-name", "east", "--selector", ""],
     "--selector '' is not a label selector: the selector is empty (it would mirror every Service); give one such "
     "as mirror.isthmus.io/exported=true"),
    (["--cluster-name", "east", "--gateway-addresses", "1.2.3.4,,5.6.7.8"],
     "--gateway-addresses '1.2.3.4,,5.6.7.8' is not a comma-separated list of IP addresses or host names"),
    (["--cluster-name", "east", "--gateway-addresses", "gw_1.example"],
     "--gateway-addresses: 'gw_1.example' is neither an IP address nor a host name"),
    (["--cluster-name", "east", "--gateway-port", "65536"], "--gateway-port 65536 is not a port number (1-65535)"),
    (["--cluster-name", "east", "--api-server-address", "127.0.0.1:6443"],
     "--api-server-address '127.0.0.1:6443' is not a URL (like https://203.0.113.7:6443)"),
    (["--cluster-name", "east", "--service-account-name", "Not/Valid"],
     "--service-account-name 'Not/Valid' is not a service account name"),
])
def test_link_refuses_bad_options_before_reading_the_cluster(args: list[str], message: str) -> None:
    result = run(None, "--context", "east", "multicluster", "link", *args)
    assert result.contexts == []
    if message == "Missing option":  # typer's own usage error
        assert result.exit_code == 2 and result.stdout == ""
        assert "Missing option '--cluster-name'" in result.stderr
        return
    refused(result, message)


@pytest.mark.parametrize(("objects", "message"), [
    (control_plane(),
     "context 'east' has no multicluster gateway (no Service isthmus-multicluster/isthmus-gateway): install it "
     "there first with `isthmus --context=east multicluster install | kubectl --context=east apply -f -`"),
    (multicluster_installed(status={}),
     "the gateway Service isthmus-multicluster/isthmus-gateway on context 'east' has no external address yet "
     "(status.loadBalancer.ingress is empty): wait for one (`kubectl --context=east -n isthmus-multicluster get "
     "svc isthmus-gateway -w`) or pass --gateway-addresses"),
    (without(multicluster_installed(), "ConfigMap", "isthmus-config"),
     "isthmus is not installed on context 'east' (there is no ConfigMap isthmus/isthmus-config): install the "
     "control plane first with `isthmus install --crds | kubectl --context=east apply -f -` and "
     "`isthmus install ... | kubectl --context=east apply -f -`"),
    (without(multicluster_installed(), "ServiceAccount", REMOTE_ACCESS),
     f"context 'east' has no ServiceAccount isthmus-multicluster/{REMOTE_ACCESS} for remote service mirrors: apply "
     f"`isthmus --context=east multicluster install` (for {REMOTE_ACCESS}) or `isthmus multicluster allow "
     f"--cluster-name NAME` there"),
    (multicluster_installed(spec__ports=[{"name": "http", "port": 80}]),
     "the gateway Service on context 'east' has no port named mc-gateway: apply `isthmus multicluster install` "
     "there again or pass --gateway-port"),
    (multicluster_installed(metadata__annotations={"mirror.isthmus.io/probe-period": "soon"}),
     "the gateway Service on context 'east' has annotation mirror.isthmus.io/probe-period='soon', which is not a "
     "duration (like 3s); apply `isthmus multicluster install` there again"),
    (multicluster_installed(metadata__annotations={"mirror.isthmus.io/gateway-identity": "gateway"}),
     "the gateway Service on context 'east' has annotation mirror.isthmus.io/gateway-identity='gateway', which is "
     "not a workload identity; apply `isthmus multicluster install` there again"),
])
def test_link_refuses_a_target_cluster_that_cannot_be_linked(objects: list[dict[str, Any]], message: str) -> None:
    cluster = FakeCluster(objects)
    refused(run(cluster, "--context", "east", "multicluster", "link", "--cluster-name", "east"), message)
    assert cluster.tokens == []  # nothing was asked of the cluster's API but reads


def test_link_with_gateway_addresses_needs_no_ingress_address() -> None:
    result = run(FakeCluster(multicluster_installed(status={})), "multicluster", "link", "--cluster-name", "east",
                 "--gateway-addresses", "127.9.0.99")
    _, link, _ = link_output(result)
    assert link["spec"]["gatewayAddress"] == "127.9.0.99"


# ------------------------------------------------------------------ unlink and allow


def mirrored(kind: str, namespace: str, name: str, cluster: str = "east") -> dict[str, Any]:
    o = obj(kind, namespace, name)
    o["metadata"]["labels"] = {"mirror.isthmus.io/mirrored-service": "true", "mirror.isthmus.io/cluster-name": cluster}
    return o


def test_unlink_lists_what_exists_of_the_link_and_every_mirror_of_that_cluster() -> None:
    objects = [
        {"apiVersion": "multicluster.isthmus.io/v1alpha1", "kind": "Link",
         "metadata": {"name": "east", "namespace": "isthmus-multicluster"}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "isthmus-service-mirror-east", "namespace": "isthmus-multicluster"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "isthmus-service-mirror-access-local-resources-east"}},
        mirrored("Service", "emojivoto", "web-svc-east"), mirrored("Endpoints", "emojivoto", "web-svc-east"),
        mirrored("Service", "emojivoto", "web-svc-north", cluster="north"),
        obj("Service", "emojivoto", "web-svc"),
    ]
    result = run(FakeCluster(objects, context="west"), "--context", "west", "multicluster", "unlink",
                 "--cluster-name", "east")
    assert result.exit_code == 0, result.stderr
    assert result.stderr == ""
    (listing,) = docs(result.stdout)
    assert listing["kind"] == "List"
    assert [(i["kind"], i["metadata"]["name"]) for i in listing["items"]] == [
        ("Deployment", "isthmus-service-mirror-east"), ("Link", "east"),
        ("ClusterRole", "isthmus-service-mirror-access-local-resources-east"),
        ("Endpoints", "web-svc-east"), ("Service", "web-svc-east")]


def test_unlink_refuses_a_cluster_that_is_not_linked() -> None:
    refused(run(FakeCluster([obj("Service", "emojivoto", "web-svc")], context="west"), "--context", "west",
                "multicluster", "unlink", "--cluster-name", "east"),
            "context 'west' has no link to cluster 'east': no Link isthmus-multicluster/east, no service mirror and "
            "no mirrored services")


def test_unlink_refuses_a_bad_cluster_name_before_reading_the_cluster() -> None:
    result = run(None, "multicluster", "unlink", "--cluster-name", "-east")
    refused(result, "--cluster-name '-east' is not a valid cluster name (it names mirrored services, "
                    "<service>-<cluster>): a lowercase RFC 1123 label must consist of lower case alphanumeric "
                    "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
                    "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')")


def test_allow_prints_remote_access_on_its_own_without_a_cluster() -> None:
    result = run(None, "multicluster", "allow", "--cluster-name", "west")
    assert result.exit_code == 0 and result.stderr == ""
    assert [(o["kind"], o["metadata"]["name"]) for o in docs(result.stdout)] == [
        ("ServiceAccount", "isthmus-service-mirror-remote-access-west"),
        ("ClusterRole", "isthmus-service-mirror-remote-access-west"),
        ("ClusterRoleBinding", "isthmus-service-mirror-remote-access-west"),
        ("Secret", "isthmus-service-mirror-remote-access-west-token")]
    default = run(None, "multicluster", "allow")
    assert docs(default.stdout)[0]["metadata"]["name"] == REMOTE_ACCESS


def test_allow_refuses_a_bad_cluster_name() -> None:
    result = run(None, "multicluster", "allow", "--cluster-name", "x" * 64)
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: --cluster-name '{'x' * 64}' is not a valid cluster name")
    assert "must be no more than 63 characters" in result.stderr


# ------------------------------------------------------------------ the kubeconfig


def write_kubeconfig(path: Path, east_ca: bytes = ROOT.cert_pem) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "east",
        "clusters": [{"name": "east", "cluster": {"server": "https://127.9.0.1:6443",
                                                  "certificate-authority-data": base64.b64encode(east_ca).decode()}},
                     {"name": "north", "cluster": {"server": "https://127.8.0.1:6443",
                                                   "certificate-authority": "north-ca.crt"}}],
        "users": [{"name": "admin", "user": {"token": "x"}}],
        "contexts": [{"name": "east", "context": {"cluster": "east", "user": "admin"}},
                     {"name": "north", "context": {"cluster": "north", "user": "admin"}},
                     {"name": "lost", "context": {"cluster": "gone", "user": "admin"}}],
    }))
    return path


def test_the_reader_takes_server_and_ca_from_the_context(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kubeconfig")
    reader = KubeReader(path, None)
    assert (reader.context, reader.server, reader.ca_pem) == ("east", "https://127.9.0.1:6443", ROOT.cert_pem)
    (tmp_path / "north-ca.crt").write_bytes(ROOT.cert_pem)
    north = KubeReader(path, "north")
    assert (north.server, north.ca_pem) == ("https://127.8.0.1:6443", ROOT.cert_pem)


@pytest.mark.parametrize(("context", "message"), [
    ("west", "context 'west' is not in the kubeconfig {path} (its contexts: east, lost, north)"),
    ("lost", "context 'lost' of {path} names cluster 'gone', which the kubeconfig does not describe"),
    ("north", "context 'north' of {path}: cannot read its certificate-authority {dir}/north-ca.crt: "
              "No such file or directory"),
])
def test_the_reader_refuses_contexts_it_cannot_use(tmp_path: Path, context: str, message: str) -> None:
    path = write_kubeconfig(tmp_path / "kubeconfig")
    with pytest.raises(MulticlusterError) as e:
        KubeReader(path, context)
    assert str(e.value) == message.format(path=path, dir=tmp_path)


def test_the_reader_refuses_a_ca_that_is_not_a_certificate(tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "kubeconfig", east_ca=CA_PEM)
    with pytest.raises(MulticlusterError) as e:
        KubeReader(path, "east")
    assert str(e.value).startswith(f"context 'east' of {path} is not usable: [X509] PEM lib")


def test_link_through_the_real_reader_refuses_an_unknown_context_and_prints_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write_kubeconfig(tmp_path / "kubeconfig")
    monkeypatch.setenv("KUBECONFIG", str(path))
    app = typer.Typer()

    @app.callback()
    def root(ctx: typer.Context, context: str = typer.Option(None, "--context")) -> None:
        ctx.obj = {"context": context}

    app.add_typer(make_multicluster_app(), name="multicluster")
    result = CliRunner().invoke(app, ["--context", "west", "multicluster", "link", "--cluster-name", "west"])
    refused(result, f"context 'west' is not in the kubeconfig {path} (its contexts: east, lost, north)")
    missing = tmp_path / "none"
    monkeypatch.setenv("KUBECONFIG", str(missing))
    result = CliRunner().invoke(app, ["multicluster", "install"])
    refused(result, f"the kubeconfig {missing} does not exist; create a cluster with `isthmus cluster create`, "
                    f"or set KUBECONFIG")


# ------------------------------------------------------------------ gateways


def link(cluster: str, *conditions: tuple[str, str, str]) -> dict[str, Any]:
    return obj("Link", "isthmus-multicluster", cluster, spec={"targetClusterName": cluster},
               status={"conditions": [{"type": t, "status": s, "message": m} for t, s, m in conditions]})


def mirrored_service(name: str, cluster: str) -> dict[str, Any]:
    svc = obj("Service", "emojivoto", f"{name}-{cluster}")
    svc["metadata"]["labels"] = {"mirror.isthmus.io/cluster-name": cluster,
                                 "mirror.isthmus.io/mirrored-service": "true"}
    return svc


def test_gateways_lists_each_link_with_why_a_gateway_is_not_alive() -> None:
    cluster = FakeCluster([
        link("east", ("GatewayAlive", "True", "the gateway has not failed a probe"),
             ("RemoteReachable", "True", "ok")),
        link("north", ("GatewayAlive", "False", "3 probes in a row failed: GET https://127.3.192.1:4191/ready: "
                                                "connection refused"),
             ("RemoteReachable", "False", "cannot reach the API at https://127.3.0.1:6443")),
        mirrored_service("web-svc", "east"), mirrored_service("emoji-svc", "east"),
        mirrored_service("web-svc", "north"),
    ], context="west")
    result = run(cluster, "--context", "west", "multicluster", "gateways")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["CLUSTER", "ALIVE", "NUM_SVC", "LATENCY"]
    assert lines[1].split() == ["east", "True", "2", "-"]  # no mirror pod to report a latency
    assert lines[2].split() == ["north", "False", "1", "-"]
    assert lines[3].strip() == ("3 probes in a row failed: GET https://127.3.192.1:4191/ready: connection "
                                "refused; cannot reach the API at https://127.3.0.1:6443")
    data = json.loads(run(cluster, "multicluster", "gateways", "-o", "json").output)
    assert [(r["cluster"], r["alive"], r["numServices"]) for r in data] == [("east", True, 2),
                                                                            ("north", False, 1)]


def test_gateways_without_links_or_with_a_bad_format() -> None:
    result = run(FakeCluster([]), "multicluster", "gateways")
    assert result.exit_code == 0
    assert "no Links in this cluster" in result.output
    bad = run(None, "multicluster", "gateways", "-o", "yaml")
    assert bad.exit_code == 1
    assert "unknown output format 'yaml': use table or json" in bad.output
