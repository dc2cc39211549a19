"""The proxy's configuration, read from its environment as the injector sets it.

Names follow linkerd2-proxy's `LINKERD2_PROXY_*` variables with an
`ISTHMUS_PROXY_` prefix:

| variable | default | meaning |
| --- | --- | --- |
| `ISTHMUS_PROXY_INBOUND_LISTEN_ADDR` | `$POD_IP:4143` | mTLS (and plain) from other proxies and clients |
| `ISTHMUS_PROXY_OUTBOUND_LISTEN_ADDR` | `$POD_IP:4140` | the app's HTTP proxy |
| `ISTHMUS_PROXY_ADMIN_LISTEN_ADDR` | `$POD_IP:4191` | `/metrics`, `/ready`, `/live`, `/tap`, `/shutdown` |
| `ISTHMUS_PROXY_INBOUND_FORWARD_HOST` | `$POD_IP` | where the app listens |
| `ISTHMUS_PROXY_INBOUND_PORTS_REQUIRE_IDENTITY` | (none) | app ports that refuse clients without mTLS, e.g. `8080,9090` |
| `ISTHMUS_PROXY_IDENTITY_LOCAL_NAME` | — | this workload's identity |
| `ISTHMUS_PROXY_IDENTITY_TRUST_ANCHORS` / `_FILE` | — | PEM trust anchors (the text, or a file) |
| `ISTHMUS_PROXY_IDENTITY_TOKEN_FILE` | the pod's service-account token | the service-account token the identity service checks |
| `ISTHMUS_PROXY_IDENTITY_SVC_ADDR` | — | `host:port` of the identity service |
| `ISTHMUS_PROXY_IDENTITY_DISABLED` | unset | no identity: no mTLS either way (tls=no_identity) |
| `ISTHMUS_PROXY_DESTINATION_SVC_ADDR` | unset | `host:port` of the destination service; unset: only IP:port authorities, sent as they are |
| `ISTHMUS_PROXY_DESTINATION_SVC_NAME` | `isthmus-destination.isthmus.serviceaccount.identity.isthmus.<domain>` | the identity the destination service must prove |
| `ISTHMUS_PROXY_CLUSTER_DOMAIN` | `cluster.local` | |
| `ISTHMUS_PROXY_GATEWAY` | unset | `1`: accept requests for service authorities on the inbound port (the multicluster gateway) |
| `ISTHMUS_PROXY_GATEWAY_PROBE_LISTEN_ADDR` | `$POD_IP:4192` (gateways only) | the gateway's probe listener: mTLS only (a client certificate from the trust anchors), `GET /ready` only |
| `ISTHMUS_PROXY_POD_NAMESPACE`, `ISTHMUS_PROXY_POD_NAME`, `ISTHMUS_PROXY_WORKLOAD` | — | this proxy's own workload, for tap filters (`deploy/web`) |
| `ISTHMUS_PROXY_CONNECT_TIMEOUT` | `3s` | |
| `ISTHMUS_PROXY_HEADER_TIMEOUT` / `_IDLE_TIMEOUT` | `10s` / `90s` | a client must finish a request head within the first, and an idle connection is closed after the second |
| `ISTHMUS_PROXY_LOG` | `info` | |
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from isthmus.core.identity import parse_workload_identity, workload_identity
from isthmus.core.inject import ADMIN_PORT, GATEWAY_PROBE_PORT, INBOUND_PORT, OUTBOUND_PORT
from isthmus.core.proxy.retry import parse_duration


class ConfigError(ValueError):
    """The environment does not describe a proxy that can run; the message says which variable."""


def _addr(text: str, name: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ConfigError(f"{name}={text!r} is not host:port")
    return host, int(port)


def _seconds(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name)
    if not text:
        return default
    seconds = parse_duration(text)
    if seconds is None or seconds <= 0:
        raise ConfigError(f"{name}={text!r} is not a positive duration (like 500ms, 10s, 1m)")
    return seconds


@dataclass(frozen=True)
class ProxyConfig:
    inbound: tuple[str, int]
    outbound: tuple[str, int]
    admin: tuple[str, int]
    forward_host: str
    require_identity_ports: frozenset[int] = frozenset()
    identity: str | None = None
    trust_anchors_pem: bytes = b""
    token_file: Path | None = None
    identity_addr: tuple[str, int] | None = None
    destination_addr: tuple[str, int] | None = None
    destination_name: str = ""
    cluster_domain: str = "cluster.local"
    gateway: bool = False
    gateway_probe: tuple[str, int] | None = None  # gateways only: the mTLS probe listener
    namespace: str = ""
    pod: str = ""
    workload: tuple[str, str] | None = None  # ("deploy", "web")
    connect_timeout: float = 3.0
    header_timeout: float = 10.0
    idle_timeout: float = 90.0
    log_level: str = "info"
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def trust_domain(self) -> str:
        parsed = parse_workload_identity(self.identity) if self.identity else None
        return parsed[2] if parsed else "cluster.local"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ProxyConfig:
        env = os.environ if env is None else env
        pod_ip = env.get("POD_IP", "127.0.0.1")
        p = "ISTHMUS_PROXY_"

        def addr(name: str, port: int) -> tuple[str, int]:
            return _addr(env.get(p + name) or f"{pod_ip}:{port}", p + name)

        ports: set[int] = set()
        for part in (env.get(p + "INBOUND_PORTS_REQUIRE_IDENTITY") or "").split(","):
            part = part.strip()
            if not part:
                continue
            if not part.isdigit() or not 0 < int(part) < 65536:
                raise ConfigError(f"{p}INBOUND_PORTS_REQUIRE_IDENTITY: {part!r} is not a port")
            ports.add(int(part))
        disabled = bool(env.get(p + "IDENTITY_DISABLED"))
        identity = None if disabled else env.get(p + "IDENTITY_LOCAL_NAME")
        anchors = b""
        token_file = None
        identity_addr = None
        if not disabled:
            if not identity:
                raise ConfigError(f"{p}IDENTITY_LOCAL_NAME is not set: set it to this workload's "
                                  f"identity, or set {p}IDENTITY_DISABLED=1")
            if parse_workload_identity(identity) is None:
                raise ConfigError(f"{p}IDENTITY_LOCAL_NAME={identity!r} is not a workload identity "
                                  f"(<sa>.<ns>.serviceaccount.identity.isthmus.<domain>); "
                                  f"set it, or {p}IDENTITY_DISABLED=1")
            anchors = (env.get(p + "IDENTITY_TRUST_ANCHORS") or "").encode()
            if not anchors and env.get(p + "IDENTITY_TRUST_ANCHORS_FILE"):
                try:
                    anchors = Path(env[p + "IDENTITY_TRUST_ANCHORS_FILE"]).read_bytes()
                except OSError as e:
                    raise ConfigError(f"{p}IDENTITY_TRUST_ANCHORS_FILE: {e}") from None
            if b"BEGIN CERTIFICATE" not in anchors:
                raise ConfigError(f"{p}IDENTITY_TRUST_ANCHORS(_FILE) holds no PEM certificate")
            token = env.get(p + "IDENTITY_TOKEN_FILE")
            if not token:
                # The embedded runner writes the pod's token into its directory; Kubernetes
                # projects it at the usual path.
                pod_dir = env.get("ISTHMUS_POD_DIR")
                token = (f"{pod_dir}/serviceaccount/token" if pod_dir
                         else "/var/run/secrets/kubernetes.io/serviceaccount/token")
            token_file = Path(token)
            if not env.get(p + "IDENTITY_SVC_ADDR"):
                raise ConfigError(f"{p}IDENTITY_SVC_ADDR is not set")
            identity_addr = _addr(env[p + "IDENTITY_SVC_ADDR"], p + "IDENTITY_SVC_ADDR")
        domain = env.get(p + "CLUSTER_DOMAIN") or "cluster.local"
        parsed = parse_workload_identity(identity) if identity else None
        trust_domain = parsed[2] if parsed else "cluster.local"
        dest = env.get(p + "DESTINATION_SVC_ADDR")
        gateway = env.get(p + "GATEWAY", "") in ("1", "true")
        workload = None
        if env.get(p + "WORKLOAD"):
            kind, _, name = env[p + "WORKLOAD"].partition("/")
            if not name:
                raise ConfigError(f"{p}WORKLOAD={env[p + 'WORKLOAD']!r} is not kind/name (deploy/web)")
            workload = (kind, name)
        return cls(
            inbound=addr("INBOUND_LISTEN_ADDR", INBOUND_PORT),
            outbound=addr("OUTBOUND_LISTEN_ADDR", OUTBOUND_PORT),
            admin=addr("ADMIN_LISTEN_ADDR", ADMIN_PORT),
            forward_host=env.get(p + "INBOUND_FORWARD_HOST") or pod_ip,
            require_identity_ports=frozenset(ports),
            identity=identity,
            trust_anchors_pem=anchors,
            token_file=token_file,
            identity_addr=identity_addr,
            destination_addr=_addr(dest, p + "DESTINATION_SVC_ADDR") if dest else None,
            destination_name=env.get(p + "DESTINATION_SVC_NAME")
            or workload_identity("isthmus-destination", "isthmus", trust_domain),
            cluster_domain=domain,
            gateway=gateway,
            gateway_probe=addr("GATEWAY_PROBE_LISTEN_ADDR", GATEWAY_PROBE_PORT) if gateway else None,
            namespace=env.get(p + "POD_NAMESPACE", ""),
            pod=env.get(p + "POD_NAME", ""),
            workload=workload,
            connect_timeout=_seconds(env, p + "CONNECT_TIMEOUT", 3.0),
            header_timeout=_seconds(env, p + "HEADER_TIMEOUT", 10.0),
            idle_timeout=_seconds(env, p + "IDLE_TIMEOUT", 90.0),
            log_level=env.get(p + "LOG", "info"),
        )
