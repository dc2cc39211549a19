"""``isthmus multicluster install|link|unlink|allow``: manifests for ``kubectl apply -f -`` / ``delete -f -``.

As in the Linkerd walkthrough:

    for ctx in west east; do
      isthmus --context=$ctx multicluster install | kubectl --context=$ctx apply -f -
    done
    isthmus --context=east multicluster link --cluster-name east | kubectl --context=west apply -f -
    isthmus --context=west multicluster unlink --cluster-name east | kubectl --context=west delete -f -
    isthmus multicluster allow --cluster-name west | kubectl --context=east apply -f -

``install``, ``link`` and ``unlink`` read the cluster of ``--context`` (the
kubeconfig's current context without it) through its API, as ``linkerd
multicluster`` does, and never write to it, with one exception: ``link``
asks for a token of the remote-access service account (TokenRequest) when
its token Secret holds none, which is always the case on an embedded
cluster (it has no token controller). ``allow`` only prints.

- ``install`` takes the proxy's settings the injector would use (image,
  version, trust anchors, trust and cluster domain, log level from the
  ``isthmus-config`` and trust-roots ConfigMaps) and the identity and
  destination Services' cluster IPs, and prints the gateway with them, so
  the gateway works without cluster DNS (as injected proxies do). Applying
  it again after the control plane was re-created rolls the gateway onto
  the new addresses.
- ``link`` reads the gateway Service (LoadBalancer addresses, the
  ``mc-gateway`` and ``mc-probe`` ports, the identity and probe annotations),
  ``isthmus-config`` (cluster domain, trust domain, image), the API server's
  address and CA from the kubeconfig, and a token of
  ``isthmus-service-mirror-remote-access-default`` (``--service-account-name``).
- ``unlink`` reads what ``link`` made and the mirrored Services and
  Endpoints (label ``mirror.isthmus.io/cluster-name=<cluster>``) of the local
  cluster and prints references to those that exist.

Promises (as ``isthmus install``): stdout carries manifests and nothing else;
every check — options, then what is read from the cluster — comes before
anything is printed, so a refused command gives kubectl nothing; a refusal
is one line ``error: <problem>`` on stderr, exit status 1. Notes go to stderr.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import os
import ssl
import sys
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Protocol

import typer
import yaml
from lightkube import ApiError, Client, KubeConfig
from lightkube.core.exceptions import ConfigError
from lightkube.generic_resource import create_namespaced_resource
from lightkube.models.authentication_v1 import TokenRequestSpec
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import ConfigMap, Endpoints, Pod, Secret, Service, ServiceAccount
from lightkube.resources.rbac_authorization_v1 import (
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
)

from isthmus import __version__
from isthmus.adapters import kubeconfig
from isthmus.adapters.clusterdir import isthmus_home
from isthmus.cli.check import OUTPUTS, run_and_print
from isthmus.components.checks import multicluster as mccheck
from isthmus.core import mirror as core
from isthmus.core.identity import parse_workload_identity
from isthmus.core.inject import InjectConfig
from isthmus.core.names import validate_dns1123_label, validate_dns1123_subdomain
from isthmus.core.proxy.retry import parse_duration
from isthmus.core.selectors import SelectorError
from isthmus.resources import manifests
from isthmus.resources import multicluster_manifests as mc

__all__ = ["ClusterReader", "KubeReader", "MulticlusterError", "make_multicluster_app", "multicluster_app"]

TOKEN_SECONDS = 365 * 24 * 3600  # asked of TokenRequest; the API server may give less
CONTROL_PLANE_NS = manifests.NAMESPACE

Obj = dict[str, Any]


class MulticlusterError(Exception):
    """Input or cluster state the multicluster commands refuse; the message says what to do."""


class ClusterReader(Protocol):
    """What the commands need of the `--context` cluster; `KubeReader` is the real one."""

    context: str
    server: str
    ca_pem: bytes | None

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        """The object, or None when it does not exist; `MulticlusterError` when it cannot be read."""

    def list(self, kind: str, labels: dict[str, str]) -> list[Obj]:
        """Objects of `kind` with `labels` in every namespace."""

    def request_token(self, service_account: str, namespace: str, seconds: int) -> tuple[str, str | None]:
        """(token, expirationTimestamp) from the TokenRequest API."""


# ------------------------------------------------------------------ the real cluster

_Link = create_namespaced_resource(core.LINK_GROUP, core.LINK_VERSION, core.LINK_KIND, core.LINK_PLURAL)
_KINDS: dict[str, Any] = {
    "Service": Service, "Endpoints": Endpoints, "ConfigMap": ConfigMap, "Secret": Secret,
    "ServiceAccount": ServiceAccount, "Deployment": Deployment, "Role": Role, "RoleBinding": RoleBinding,
    "ClusterRole": ClusterRole, "ClusterRoleBinding": ClusterRoleBinding, core.LINK_KIND: _Link,
    "Pod": Pod,
}


def kubeconfig_path() -> Path:
    """The kubeconfig the isthmus commands use: `$KUBECONFIG`, else isthmus's own, else `~/.kube/config`."""
    path = kubeconfig.default_path(isthmus_home())
    fallback = Path.home() / ".kube" / "config"
    if os.environ.get("KUBECONFIG") or path.exists() or not fallback.exists():
        return path
    return fallback


class KubeReader:
    """`ClusterReader` through lightkube, for one context of a kubeconfig file."""

    def __init__(self, path: Path, context: str | None) -> None:
        if not path.is_file():
            raise MulticlusterError(f"the kubeconfig {path} does not exist; create a cluster with "
                                    f"`isthmus cluster create`, or set KUBECONFIG")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise MulticlusterError(f"cannot read the kubeconfig {path}: {e}") from None
        contexts = {c.get("name"): c.get("context") or {} for c in data.get("contexts") or []}
        name = context or data.get("current-context") or ""
        if not name:
            raise MulticlusterError(f"no --context given and the kubeconfig {path} has no current context")
        if name not in contexts:
            known = ", ".join(sorted(str(c) for c in contexts)) or "none"
            raise MulticlusterError(f"context {name!r} is not in the kubeconfig {path} (its contexts: {known})")
        cluster_name = contexts[name].get("cluster")
        cluster = next((c.get("cluster") or {} for c in data.get("clusters") or []
                        if c.get("name") == cluster_name), None)
        if cluster is None or not cluster.get("server"):
            raise MulticlusterError(f"context {name!r} of {path} names cluster {cluster_name!r}, "
                                    f"which the kubeconfig does not describe")
        self.context, self.server = name, str(cluster["server"])
        self.ca_pem = self._ca(cluster, path)
        try:
            config = KubeConfig.from_file(path).get(context_name=name)
            self._client = Client(config=config, trust_env=False)
        except (ConfigError, ssl.SSLError, OSError) as e:
            raise MulticlusterError(f"context {name!r} of {path} is not usable: {e}") from None

    def _ca(self, cluster: Obj, path: Path) -> bytes | None:
        if cluster.get("certificate-authority-data"):
            try:
                return base64.b64decode(cluster["certificate-authority-data"])
            except (binascii.Error, ValueError):
                raise MulticlusterError(f"context {self.context!r} of {path}: certificate-authority-data "
                                        f"is not base64") from None
        if cluster.get("certificate-authority"):
            ca = path.parent / str(cluster["certificate-authority"])
            try:
                return ca.read_bytes()
            except OSError as e:
                raise MulticlusterError(f"context {self.context!r} of {path}: cannot read its "
                                        f"certificate-authority {ca}: {e.strerror or e}") from None
        return None

    def __repr__(self) -> str:
        return f"<KubeReader context={self.context!r} server={self.server}>"

    def _unreachable(self, e: Exception) -> MulticlusterError:
        return MulticlusterError(f"cannot reach the API of context {self.context!r} at {self.server}: "
                                 f"{type(e).__name__}: {e}")

    def get(self, kind: str, name: str, namespace: str = "") -> Obj | None:
        resource = _KINDS[kind]
        try:
            obj = (self._client.get(resource, name, namespace=namespace) if namespace
                   else self._client.get(resource, name))
        except ApiError as e:
            if e.status.code == 404:
                return None
            where = f"{namespace}/{name}" if namespace else name
            raise MulticlusterError(f"cannot read {kind} {where} on context {self.context!r}: "
                                    f"{e.status.message}") from None
        except Exception as e:
            if not _transport_failure(e):
                raise
            raise self._unreachable(e) from None
        return dict(obj.to_dict()) if hasattr(obj, "to_dict") else dict(obj)

    def list(self, kind: str, labels: dict[str, str]) -> list[Obj]:
        try:
            items = list(self._client.list(_KINDS[kind], namespace="*", labels=labels))  # type: ignore[arg-type]
        except ApiError as e:
            raise MulticlusterError(f"cannot list {kind} on context {self.context!r}: {e.status.message}") from None
        except Exception as e:
            if not _transport_failure(e):
                raise
            raise self._unreachable(e) from None
        return [{**(i.to_dict() if hasattr(i, "to_dict") else dict(i)), "apiVersion": "v1", "kind": kind}
                for i in items]

    def request_token(self, service_account: str, namespace: str, seconds: int) -> tuple[str, str | None]:
        request = ServiceAccount.Token(metadata=ObjectMeta(name=service_account, namespace=namespace),
                                       spec=TokenRequestSpec(audiences=[], expirationSeconds=seconds))
        try:
            answer = self._client.create(request, service_account, namespace=namespace)
        except ApiError as e:
            raise MulticlusterError(f"cannot get a token for ServiceAccount {namespace}/{service_account} on "
                                    f"context {self.context!r}: {e.status.message}") from None
        except Exception as e:
            if not _transport_failure(e):
                raise
            raise self._unreachable(e) from None
        status = answer.status
        if status is None or not status.token:
            raise MulticlusterError(f"the API of context {self.context!r} gave no token for ServiceAccount "
                                    f"{namespace}/{service_account}")
        expiry = status.expirationTimestamp
        return status.token, (expiry.isoformat() if expiry is not None else None)


def _transport_failure(e: BaseException) -> bool:
    """Whether `e` says the API gave no answer (refused, TLS, timeout) rather than a bug of ours."""
    return isinstance(e, OSError | ssl.SSLError) or type(e).__module__.startswith(("httpx", "httpcore"))


def kube_reader(context: str | None) -> ClusterReader:
    return KubeReader(kubeconfig_path(), context)


# ------------------------------------------------------------------ checks of options


def _port(option: str, value: int | None) -> int | None:
    if value is not None and not 1 <= value <= 65535:
        raise MulticlusterError(f"{option} {value} is not a port number (1-65535)")
    return value


def _cluster_name(value: str, option: str = "--cluster-name") -> str:
    problems = validate_dns1123_label(value)
    if problems:
        raise MulticlusterError(f"{option} {value!r} is not a valid cluster name (it names mirrored "
                                f"services, <service>-<cluster>): {'; '.join(problems)}")
    return value


def _addresses(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(","))
    if not text.strip() or not all(parts):
        raise MulticlusterError(f"--gateway-addresses {text!r} is not a comma-separated list of IP "
                                f"addresses or host names")
    for part in parts:
        try:
            ipaddress.ip_address(part)
        except ValueError:
            if validate_dns1123_subdomain(part.rstrip(".")):
                raise MulticlusterError(f"--gateway-addresses: {part!r} is neither an IP address nor "
                                        f"a host name") from None
    return parts


def _selector(text: str) -> dict[str, Any]:
    try:
        return mc.selector_object(text)
    except SelectorError as e:
        raise MulticlusterError(f"--selector {text!r} is not a label selector: {e}") from None


# ------------------------------------------------------------------ reading a cluster


def _config(reader: ClusterReader) -> dict[str, str]:
    config = reader.get("ConfigMap", manifests.CONFIG_CONFIGMAP, CONTROL_PLANE_NS)
    if config is None:
        raise MulticlusterError(
            f"isthmus is not installed on context {reader.context!r} (there is no ConfigMap "
            f"{CONTROL_PLANE_NS}/{manifests.CONFIG_CONFIGMAP}): install the control plane first with "
            f"`isthmus install --crds | kubectl --context={reader.context} apply -f -` and "
            f"`isthmus install ... | kubectl --context={reader.context} apply -f -`")
    return {str(k): str(v) for k, v in (config.get("data") or {}).items()}


def _service_address(reader: ClusterReader, name: str, port: int) -> str:
    svc = reader.get("Service", name, CONTROL_PLANE_NS)
    ip = ((svc or {}).get("spec") or {}).get("clusterIP")
    if not ip or ip == "None":
        raise MulticlusterError(f"the control plane on context {reader.context!r} is incomplete: Service "
                                f"{CONTROL_PLANE_NS}/{name} " + ("has no cluster IP" if svc else "does not exist")
                                + "; apply `isthmus install` there again")
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def gateway_values(reader: ClusterReader, *, port: int, probe_port: int, probe_seconds: int) -> mc.GatewayValues:
    """The gateway's settings from the control plane installed on `reader`'s cluster."""
    config = _config(reader)
    roots = reader.get("ConfigMap", manifests.TRUST_ROOTS_CONFIGMAP, CONTROL_PLANE_NS)
    anchors = str(((roots or {}).get("data") or {}).get(manifests.TRUST_ROOTS_KEY) or "")
    if "BEGIN CERTIFICATE" not in anchors:
        raise MulticlusterError(f"the control plane on context {reader.context!r} is incomplete: ConfigMap "
                                f"{CONTROL_PLANE_NS}/{manifests.TRUST_ROOTS_CONFIGMAP} holds no trust anchors; "
                                f"apply `isthmus install` there again")
    proxy = InjectConfig(
        image=config.get("image") or manifests.default_image(__version__),
        version=config.get("version") or __version__,
        trust_anchors_pem=anchors,
        identity_addr=_service_address(reader, manifests.IDENTITY_SERVICE, manifests.IDENTITY_PORT),
        destination_addr=_service_address(reader, manifests.DESTINATION_SERVICE, manifests.DESTINATION_PORT),
        trust_domain=config.get("trustDomain") or "cluster.local",
        cluster_domain=config.get("clusterDomain") or "cluster.local",
        control_plane_namespace=CONTROL_PLANE_NS,
        log_level=config.get("proxyLogLevel") or "info")
    return mc.GatewayValues(proxy=proxy, port=port, probe_port=probe_port, probe_path=core.DEFAULT_PROBE_PATH,
                            probe_period_seconds=probe_seconds)


def _gateway_service(reader: ClusterReader) -> Obj:
    svc = reader.get("Service", mc.GATEWAY_NAME, mc.NAMESPACE)
    if svc is None:
        raise MulticlusterError(
            f"context {reader.context!r} has no multicluster gateway (no Service "
            f"{mc.NAMESPACE}/{mc.GATEWAY_NAME}): install it there first with "
            f"`isthmus --context={reader.context} multicluster install | "
            f"kubectl --context={reader.context} apply -f -`")
    return svc


def _ingress_addresses(svc: Obj) -> tuple[str, ...]:
    ingress = (((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress")) or []
    return tuple(str(i.get("ip") or i.get("hostname")) for i in ingress
                 if isinstance(i, dict) and (i.get("ip") or i.get("hostname")))


def _named_port(svc: Obj, name: str) -> int | None:
    for p in (svc.get("spec") or {}).get("ports") or []:
        if p.get("name") == name and isinstance(p.get("port"), int):
            return int(p["port"])
    return None


def _period(text: str, context: str) -> str:
    value = text.strip()
    if value.isdigit():  # seconds, as Linkerd writes it
        value = f"{value}s"
    try:
        seconds = core.parse_duration(value)
    except ValueError:
        seconds = 0
    if seconds <= 0:
        raise MulticlusterError(f"the gateway Service on context {context!r} has annotation "
                                f"{mc.PROBE_PERIOD_ANNOTATION}={text!r}, which is not a duration (like 3s); "
                                f"apply `isthmus multicluster install` there again")
    return value


def _token(reader: ClusterReader, account: str, cluster_name: str, notes: list[str]) -> str:
    if reader.get("ServiceAccount", account, mc.NAMESPACE) is None:
        raise MulticlusterError(
            f"context {reader.context!r} has no ServiceAccount {mc.NAMESPACE}/{account} for remote service "
            f"mirrors: apply `isthmus --context={reader.context} multicluster install` (for "
            f"{mc.remote_access_name(mc.DEFAULT_REMOTE_ACCESS)}) or `isthmus multicluster allow "
            f"--cluster-name NAME` there")
    secret = reader.get("Secret", f"{account}-token", mc.NAMESPACE)
    stored = ((secret or {}).get("data") or {}).get("token")
    if stored:  # filled by Kubernetes' token controller; does not expire
        try:
            return base64.b64decode(stored).decode()
        except (binascii.Error, ValueError):
            pass
    token, expiry = reader.request_token(account, mc.NAMESPACE, TOKEN_SECONDS)
    notes.append(f"note: the token in Secret {core.credentials_secret_name(cluster_name)} (from TokenRequest "
                 f"for ServiceAccount {mc.NAMESPACE}/{account} on context {reader.context!r}) expires at "
                 f"{expiry or 'a time the API did not say'}; run link again before then")
    return token


def link_values(reader: ClusterReader, *, cluster_name: str, selector: dict[str, Any],
                addresses: tuple[str, ...] | None, port: int | None, api_server: str | None,
                service_account: str, notes: list[str]) -> mc.LinkValues:
    """A Link to `reader`'s cluster, from its gateway Service and control plane (module docstring)."""
    svc = _gateway_service(reader)
    config = _config(reader)
    if addresses is None:
        addresses = _ingress_addresses(svc)
        if not addresses:
            raise MulticlusterError(
                f"the gateway Service {mc.NAMESPACE}/{mc.GATEWAY_NAME} on context {reader.context!r} has no "
                f"external address yet (status.loadBalancer.ingress is empty): wait for one (`kubectl "
                f"--context={reader.context} -n {mc.NAMESPACE} get svc {mc.GATEWAY_NAME} -w`) or pass "
                f"--gateway-addresses")
    if port is None:
        port = _named_port(svc, mc.GATEWAY_PORT_NAME)
        if port is None:
            raise MulticlusterError(f"the gateway Service on context {reader.context!r} has no port named "
                                    f"{mc.GATEWAY_PORT_NAME}: apply `isthmus multicluster install` there again "
                                    f"or pass --gateway-port")
    annotations = {str(k): str(v) for k, v in ((svc.get("metadata") or {}).get("annotations") or {}).items()}
    trust_domain = config.get("trustDomain") or "cluster.local"
    identity = annotations.get(mc.GATEWAY_IDENTITY_ANNOTATION) or mc.gateway_identity(trust_domain)
    if parse_workload_identity(identity) is None:
        raise MulticlusterError(f"the gateway Service on context {reader.context!r} has annotation "
                                f"{mc.GATEWAY_IDENTITY_ANNOTATION}={identity!r}, which is not a workload "
                                f"identity; apply `isthmus multicluster install` there again")
    probe_path = annotations.get(mc.PROBE_PATH_ANNOTATION) or core.DEFAULT_PROBE_PATH
    if not probe_path.startswith("/"):
        raise MulticlusterError(f"the gateway Service on context {reader.context!r} has annotation "
                                f"{mc.PROBE_PATH_ANNOTATION}={probe_path!r}, which is not a path")
    period = _period(annotations.get(mc.PROBE_PERIOD_ANNOTATION) or "3s", reader.context)
    probe_port = _named_port(svc, mc.PROBE_PORT_NAME) or core.DEFAULT_PROBE_PORT
    token = _token(reader, service_account, cluster_name, notes)
    return mc.LinkValues(
        cluster_name=cluster_name, api_server=api_server or reader.server, token=token,
        ca_pem=reader.ca_pem, gateway_addresses=addresses, gateway_identity=identity,
        image=config.get("image") or manifests.default_image(__version__),
        cluster_domain=config.get("clusterDomain") or "cluster.local", gateway_port=port,
        probe_path=probe_path, probe_port=probe_port, probe_period=period, selector=selector,
        service_account=service_account)


def unlink_list(reader: ClusterReader, cluster_name: str) -> Obj:
    """References to what exists on `reader`'s cluster of the Link to `cluster_name` and its mirrors."""
    existing = [ref for ref in mc.link_references(cluster_name)
                if reader.get(ref["kind"], ref["metadata"]["name"], ref["metadata"].get("namespace", ""))
                is not None]
    labels = {core.MIRRORED_SERVICE_LABEL: "true", core.CLUSTER_NAME_LABEL: cluster_name}
    mirrored = [*reader.list("Endpoints", labels), *reader.list("Service", labels)]
    if not existing and not mirrored:
        raise MulticlusterError(f"context {reader.context!r} has no link to cluster {cluster_name!r}: no Link "
                                f"{mc.NAMESPACE}/{cluster_name}, no service mirror and no mirrored services")
    return mc.unlink_objects(cluster_name, existing, mirrored)


# ------------------------------------------------------------------ the commands


def _fail(message: object) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise typer.Exit(1)


def _context(ctx: typer.Context) -> str | None:
    obj = ctx.find_root().obj
    return obj.get("context") if isinstance(obj, dict) else None


def make_multicluster_app(connect: Callable[[str | None], ClusterReader] = kube_reader) -> typer.Typer:
    """The `multicluster` command group; `connect(context)` opens the cluster a command reads."""
    app = typer.Typer(no_args_is_help=True,
                      help="Multicluster: gateways, links between clusters and mirrored services.")

    @app.command("install")
    def install_cmd(
            ctx: typer.Context,
            gateway_port: Annotated[int, typer.Option(
                "--gateway-port", help="the gateway Service's port for other clusters' proxies (mc-gateway)")
            ] = core.DEFAULT_GATEWAY_PORT,
            probe_port: Annotated[int, typer.Option(
                "--gateway-probe-port", help="the gateway Service's probe port (mc-probe)")] = core.DEFAULT_PROBE_PORT,
            probe_seconds: Annotated[int, typer.Option(
                "--gateway-probe-seconds", help="how often remote mirrors probe the gateway")] = 3,
    ) -> None:
        """Print the multicluster extension for this cluster (namespace, Link CRD, gateway, remote access).

        Reads the control plane of --context for the gateway proxy's settings.
        """
        try:
            _port("--gateway-port", gateway_port)
            _port("--gateway-probe-port", probe_port)
            if not 1 <= probe_seconds <= 3600:
                raise MulticlusterError(f"--gateway-probe-seconds {probe_seconds} is not between 1 and 3600")
            values = gateway_values(connect(_context(ctx)), port=gateway_port, probe_port=probe_port,
                                    probe_seconds=probe_seconds)
        except MulticlusterError as e:
            _fail(e)
            return
        print(manifests.dump(mc.install(values)), end="")

    @app.command("link")
    def link_cmd(
            ctx: typer.Context,
            cluster_name: Annotated[str, typer.Option(
                "--cluster-name", show_default=False,
                help="the name of the --context cluster, as the linking cluster will call it")],
            selector: Annotated[str, typer.Option(
                "--selector", help="which of its Services to mirror (a label selector)")
            ] = f"{core.EXPORTED_LABEL}=true",
            gateway_addresses: Annotated[str | None, typer.Option(
                "--gateway-addresses", show_default=False,
                help="comma-separated gateway addresses (default: the gateway Service's load-balancer "
                     "addresses)")] = None,
            gateway_port: Annotated[int | None, typer.Option(
                "--gateway-port", show_default=False,
                help="the gateway's port (default: the gateway Service's mc-gateway port)")] = None,
            api_server: Annotated[str | None, typer.Option(
                "--api-server-address", show_default=False,
                help="the API address the linking cluster uses (default: the kubeconfig's)")] = None,
            service_account: Annotated[str, typer.Option(
                "--service-account-name", help="the remote-access service account whose token is used")
            ] = mc.remote_access_name(mc.DEFAULT_REMOTE_ACCESS),
    ) -> None:
        """Print, for the OTHER cluster, the credentials, Link and service mirror that mirror --context's services."""
        notes: list[str] = []
        try:
            _cluster_name(cluster_name)
            wanted = _selector(selector)
            addresses = _addresses(gateway_addresses) if gateway_addresses is not None else None
            _port("--gateway-port", gateway_port)
            if api_server is not None and not api_server.startswith(("https://", "http://")):
                raise MulticlusterError(f"--api-server-address {api_server!r} is not a URL "
                                        f"(like https://203.0.113.7:6443)")
            if validate_dns1123_subdomain(service_account):
                raise MulticlusterError(f"--service-account-name {service_account!r} is not a service "
                                        f"account name")
            values = link_values(connect(_context(ctx)), cluster_name=cluster_name, selector=wanted,
                                 addresses=addresses, port=gateway_port, api_server=api_server,
                                 service_account=service_account, notes=notes)
        except MulticlusterError as e:
            _fail(e)
            return
        print(manifests.dump(mc.link(values)), end="")
        for note in notes:
            print(note, file=sys.stderr)

    @app.command("unlink")
    def unlink_cmd(
            ctx: typer.Context,
            cluster_name: Annotated[str, typer.Option("--cluster-name", show_default=False,
                                                      help="the linked cluster to forget")],
    ) -> None:
        """Print the Link, its service mirror and the services it mirrored, for `kubectl delete -f -`."""
        try:
            _cluster_name(cluster_name)
            listing = unlink_list(connect(_context(ctx)), cluster_name)
        except MulticlusterError as e:
            _fail(e)
            return
        print(manifests.dump([listing]), end="")

    @app.command("allow")
    def allow_cmd(
            cluster_name: Annotated[str, typer.Option(
                "--cluster-name",
                help="the cluster whose service mirror may read this one (names the service account)")
            ] = mc.DEFAULT_REMOTE_ACCESS,
    ) -> None:
        """Print the service account and RBAC that let a remote service mirror read this cluster."""
        try:
            _cluster_name(cluster_name)
        except MulticlusterError as e:
            _fail(e)
            return
        print(manifests.dump(mc.allow(cluster_name)), end="")

    @app.command("check")
    def check_cmd(
            ctx: typer.Context,
            output: Annotated[str, typer.Option("-o", "--output", help="table, json or short")] = "table",
            wait: Annotated[str, typer.Option(
                "--wait", help="how long to retry checks of states that settle (mirror pods, gateways), "
                               "e.g. 5m, 30s, 0")] = "5m0s",
    ) -> None:
        """Check every Link of the cluster: credentials, shared trust anchor, mirrors, gateways (exit 1 on failure)."""
        check_links(_context(ctx), output=output, wait=wait)

    @app.command("gateways")
    def gateways_cmd(
            ctx: typer.Context,
            output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
    ) -> None:
        """Each linked cluster's gateway: alive or not (and why), mirrored services, probe latency."""
        if output not in ("table", "json"):
            _fail(MulticlusterError(f"unknown output format {output!r}: use table or json"))
            return
        try:
            rows = gateway_rows(connect(_context(ctx)))
        except MulticlusterError as e:
            _fail(e)
            return
        if output == "json":
            print(json.dumps(rows, indent=2))
            return
        if not rows:
            print("no Links in this cluster: `isthmus --context=<remote> multicluster link "
                  "--cluster-name <remote>` makes one")
            return
        print(f"{'CLUSTER':<16}{'ALIVE':<8}{'NUM_SVC':<10}LATENCY")
        for r in rows:
            latency = f"{r['latencyMs']:.0f}ms" if r["latencyMs"] is not None else "-"
            print(f"{r['cluster']:<16}{'True' if r['alive'] else 'False':<8}{r['numServices']:<10}"
                  f"{latency}")
            if not r["alive"] and r["reason"]:
                print(f"  {r['reason']}")

    return app


def check_links(context: str | None, *, output: str, wait: str) -> None:
    """`multicluster check`: the checks of `components.checks.multicluster`, printed as `isthmus check` prints."""
    if output not in OUTPUTS:
        _fail(MulticlusterError(f"-o/--output must be one of {', '.join(OUTPUTS)}, not {output!r}"))
    seconds = parse_duration(wait)
    if seconds is None or seconds < 0:
        _fail(MulticlusterError(f"--wait {wait!r} is not a duration (like 5m, 30s, 1m30s or 0)"))
        return
    env = mccheck.MulticlusterEnv(kubeconfig=kubeconfig_path(), context=context, now=lambda: datetime.now(UTC))
    run_and_print(mccheck.categories(), env, output, seconds)


def _mirror_latency(pods: list[Obj], cluster: str) -> float | None:
    """The last probe latency the Link's mirror reports on its admin port (None if unknown)."""
    for pod in pods:
        ip = (pod.get("status") or {}).get("podIP")
        if not ip:
            continue
        try:
            with urllib.request.urlopen(f"http://{ip}:{mc.MIRROR_ADMIN_PORT}/metrics",
                                        timeout=2) as r:
                text = r.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("gateway_latency{") and f'target_cluster="{cluster}"' in line:
                return float(line.rsplit(" ", 1)[1])
    return None


def gateway_rows(reader: ClusterReader) -> list[dict[str, Any]]:
    """One row per Link: from its status (kept by its service mirror) and its mirrored Services."""
    rows = []
    for link in sorted(reader.list(core.LINK_KIND, {}),
                       key=lambda o: str((o.get("spec") or {}).get("targetClusterName"))):
        cluster = str((link.get("spec") or {}).get("targetClusterName", ""))
        conditions = {c.get("type"): c for c in (link.get("status") or {}).get("conditions") or []}
        alive = conditions.get("GatewayAlive", {})
        reachable = conditions.get("RemoteReachable", {})
        services = reader.list("Service", {"mirror.isthmus.io/cluster-name": cluster,
                                           "mirror.isthmus.io/mirrored-service": "true"})
        pods = reader.list("Pod", {"app": "isthmus-service-mirror", mc.LINK_LABEL: cluster})
        is_alive = alive.get("status") == "True"
        reason = alive.get("message") if not is_alive else ""
        if not alive:
            reason = "no probe result yet: is the Link's service mirror running?"
        if reachable.get("status") == "False":
            reason = f"{reason}; {reachable.get('message')}" if reason else reachable.get("message")
        rows.append({"cluster": cluster, "alive": is_alive, "numServices": len(services),
                     "latencyMs": _mirror_latency(pods, cluster) if is_alive else None,
                     "reason": reason or ""})
    return rows


multicluster_app = make_multicluster_app()
