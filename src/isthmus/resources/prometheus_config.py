"""The Prometheus scrape configuration `isthmus viz prometheus-config` prints.

With it a Prometheus scrapes what viz's embedded collector scrapes and labels
the series the same way (docs/viz.md, "Scrape targets"), so `isthmus viz-api
--prometheus-url ...` answers like the embedded collector:

- job `isthmus-proxy`: Kubernetes pod discovery (`role: pod`); keeps the
  running pods labelled `isthmus.io/control-plane-ns` (set by injection, and
  on the gateway) at their proxy's admin port 4191 and scrapes `/metrics`;
- job `isthmus-service-mirror`: the service-mirror pods of
  `isthmus-multicluster` (label `app=isthmus-service-mirror`) on their admin
  port 9999 (`gateway_alive`, `gateway_latency`, `gateway_probes`).

Both relabel to the target labels viz reads: `namespace`, `pod`,
`deployment` (pod label `isthmus.io/proxy-deployment`, absent when unset) and
`serviceaccount`. Prometheus' pod discovery does not expose a pod's service
account, so `serviceaccount` comes from the pod label
`isthmus.io/proxy-serviceaccount`, which injection sets (and the gateway's
template has); a pod without it has no `serviceaccount` label. Prometheus adds its own `job` and `instance`.

`kubeconfig_file` is for a Prometheus outside the cluster (an embedded
cluster's, or a laptop's against a remote cluster): discovery then uses that
kubeconfig's current context. Without it Prometheus uses its in-cluster
service account, which needs get/list/watch on pods.

`targets_file` replaces Kubernetes discovery with file discovery, for a
Prometheus built without Kubernetes discovery (Debian's package is): the file
holds `file_sd_groups(pods)` — every pod container port labelled as
Prometheus' pod discovery labels it (`__meta_kubernetes_pod_*`), so the
relabelling is the same in both modes — and `isthmus viz prometheus-targets`
keeps it up to date from the cluster's pods.

Pure: no I/O. `render(options)` is the text; `scrape_configs(options)` and
`prometheus_yml(options)` the same as plain data.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from isthmus.core.inject import (
    ADMIN_PORT,
    CONTROL_PLANE_NS_LABEL,
    PROXY_CONTAINER,
    PROXY_DEPLOYMENT_LABEL,
    PROXY_SERVICEACCOUNT_LABEL,
)
from isthmus.resources.multicluster_manifests import MIRROR_ADMIN_PORT, MIRROR_CONTAINER
from isthmus.resources.multicluster_manifests import NAMESPACE as MULTICLUSTER_NAMESPACE

__all__ = [
    "MIRROR_JOB",
    "PROXY_JOB",
    "SERVICEACCOUNT_LABEL",
    "PrometheusConfigError",
    "PrometheusOptions",
    "file_sd_groups",
    "format_duration",
    "prometheus_yml",
    "render",
    "scrape_configs",
]

PROXY_JOB = "isthmus-proxy"
MIRROR_JOB = "isthmus-service-mirror"
MIRROR_APP = "isthmus-service-mirror"
# The pod label `serviceaccount` is read from (Prometheus' pod discovery has no service-account label).
SERVICEACCOUNT_LABEL = PROXY_SERVICEACCOUNT_LABEL
DEFAULT_SCRAPE_TIMEOUT = 10.0
MIN_INTERVAL, MAX_INTERVAL = 1.0, 3600.0
_META = "__meta_kubernetes_pod_"
_INVALID = re.compile(r"[^a-zA-Z0-9_]")


class PrometheusConfigError(ValueError):
    """An option the configuration cannot be made with; the message says which and why."""


@dataclass(frozen=True, slots=True)
class PrometheusOptions:
    scrape_interval: float = 10.0
    """Seconds between scrapes of one target (1 s .. 1 h)."""
    kubeconfig_file: str | None = None
    """Absolute path of the kubeconfig Prometheus discovers pods with; None: in-cluster."""
    targets_file: str | None = None
    """Absolute path of a file_sd targets file (`isthmus viz prometheus-targets` writes it) to use
    instead of Kubernetes discovery."""
    whole: bool = True
    """A whole prometheus.yml (global + scrape_configs); False: only the scrape_configs list."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.scrape_interval) and MIN_INTERVAL <= self.scrape_interval <= MAX_INTERVAL):
            raise PrometheusConfigError(
                f"scrape interval {self.scrape_interval:g}s is out of range: use 1s to 1h")
        if self.scrape_interval * 1000 != int(self.scrape_interval * 1000):
            raise PrometheusConfigError(
                f"scrape interval {self.scrape_interval!r}s is finer than a millisecond")
        if self.kubeconfig_file is not None and self.targets_file is not None:
            raise PrometheusConfigError(
                "give a kubeconfig file (Kubernetes discovery) or a targets file (file discovery), not both")
        for what, path in (("kubeconfig file", self.kubeconfig_file), ("targets file", self.targets_file)):
            if path is not None and not path.startswith("/"):
                raise PrometheusConfigError(
                    f"{what} {path!r} must be an absolute path "
                    "(Prometheus would read it relative to its own configuration file)")


def format_duration(seconds: float) -> str:
    """A Prometheus duration: 10.0 → ``10s``, 90.0 → ``90s``, 1.5 → ``1500ms``."""
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def _sanitize(name: str) -> str:
    """A Kubernetes label or annotation key as part of a Prometheus label name (Prometheus' rule)."""
    return _INVALID.sub("_", name)


def _meta_label(kubernetes_label: str) -> str:
    """The `__meta_kubernetes_pod_label_*` name Prometheus gives a pod label."""
    return _META + "label_" + _sanitize(kubernetes_label)


def _present(kubernetes_label: str) -> str:
    return _META + "labelpresent_" + _sanitize(kubernetes_label)


def _target_labels() -> list[dict[str, Any]]:
    """namespace, pod, deployment, serviceaccount: the labels docs/viz.md gives every scraped series."""
    return [
        {"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"},
        {"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"},
        # An unset pod label is an empty value, and an empty value leaves the target without the label.
        {"source_labels": [_meta_label(PROXY_DEPLOYMENT_LABEL)], "target_label": "deployment"},
        {"source_labels": [_meta_label(SERVICEACCOUNT_LABEL)], "target_label": "serviceaccount"},
    ]


def _running() -> dict[str, Any]:
    return {"source_labels": ["__meta_kubernetes_pod_phase"], "action": "keep", "regex": "Running"}


def _discovery(options: PrometheusOptions) -> dict[str, Any]:
    if options.targets_file is not None:
        return {"file_sd_configs": [{"files": [options.targets_file], "refresh_interval": "30s"}]}
    sd: dict[str, Any] = {"role": "pod"}
    if options.kubeconfig_file is not None:
        sd["kubeconfig_file"] = options.kubeconfig_file
    return {"kubernetes_sd_configs": [sd]}


def _job(name: str, options: PrometheusOptions, keep: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "job_name": name,
        "scrape_interval": format_duration(options.scrape_interval),
        "scrape_timeout": format_duration(min(options.scrape_interval, DEFAULT_SCRAPE_TIMEOUT)),
        "metrics_path": "/metrics",
        "scheme": "http",
        **_discovery(options),
        "relabel_configs": [*keep, _running(), *_target_labels()],
    }


def scrape_configs(options: PrometheusOptions) -> list[dict[str, Any]]:
    """The two jobs, as the list that goes under `scrape_configs:`."""
    proxy_keep = [{
        # One target per declared container port: keep the proxy container's admin port of meshed pods.
        "source_labels": [_present(CONTROL_PLANE_NS_LABEL), "__meta_kubernetes_pod_container_name",
                          "__meta_kubernetes_pod_container_port_number"],
        "action": "keep",
        "regex": f"true;{PROXY_CONTAINER};{ADMIN_PORT}",
    }]
    mirror_keep = [{
        "source_labels": ["__meta_kubernetes_namespace", _meta_label("app"),
                          "__meta_kubernetes_pod_container_name",
                          "__meta_kubernetes_pod_container_port_number"],
        "action": "keep",
        "regex": f"{MULTICLUSTER_NAMESPACE};{MIRROR_APP};{MIRROR_CONTAINER};{MIRROR_ADMIN_PORT}",
    }]
    return [_job(PROXY_JOB, options, proxy_keep), _job(MIRROR_JOB, options, mirror_keep)]


def prometheus_yml(options: PrometheusOptions) -> dict[str, Any]:
    """A whole prometheus.yml: global intervals and the two jobs."""
    interval = format_duration(options.scrape_interval)
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval,
                   "scrape_timeout": format_duration(min(options.scrape_interval, DEFAULT_SCRAPE_TIMEOUT))},
        "scrape_configs": scrape_configs(options),
    }


def _pod_ready(status: Mapping[str, Any]) -> str:
    for condition in status.get("conditions") or ():
        if condition.get("type") == "Ready":
            return "true" if condition.get("status") == "True" else "false"
    return "unknown"


def _pod_labels(pod: Mapping[str, Any]) -> dict[str, str]:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    labels = {
        "__meta_kubernetes_namespace": str(meta.get("namespace") or ""),
        _META + "name": str(meta.get("name") or ""),
        _META + "ip": str(status.get("podIP") or ""),
        _META + "ready": _pod_ready(status),
        _META + "phase": str(status.get("phase") or ""),
        _META + "node_name": str(spec.get("nodeName") or ""),
        _META + "host_ip": str(status.get("hostIP") or ""),
        _META + "uid": str(meta.get("uid") or ""),
    }
    for field, kind in (("labels", "label"), ("annotations", "annotation")):
        for key, value in (meta.get(field) or {}).items():
            labels[f"{_META}{kind}_{_sanitize(key)}"] = str(value)
            labels[f"{_META}{kind}present_{_sanitize(key)}"] = "true"
    for owner in meta.get("ownerReferences") or ():
        if owner.get("controller"):
            if owner.get("kind"):
                labels[_META + "controller_kind"] = str(owner["kind"])
            if owner.get("name"):
                labels[_META + "controller_name"] = str(owner["name"])
    return labels


def file_sd_groups(pods: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Target groups for Prometheus' file discovery, one per pod container port, labelled as
    Prometheus' own Kubernetes pod discovery labels them (so the same relabelling applies): pods
    without an IP are left out, a container without ports is one target at the pod's IP."""
    groups: list[dict[str, Any]] = []
    for pod in pods:
        ip = str((pod.get("status") or {}).get("podIP") or "")
        if not ip:
            continue
        base = _pod_labels(pod)
        spec = pod.get("spec") or {}
        containers = [(c, "false") for c in spec.get("containers") or ()]
        containers += [(c, "true") for c in spec.get("initContainers") or ()]
        for container, init in containers:
            common = {**base, _META + "container_name": str(container.get("name") or ""),
                      _META + "container_image": str(container.get("image") or ""),
                      _META + "container_init": init}
            ports = container.get("ports") or ()
            if not ports:
                groups.append({"targets": [ip], "labels": common})
            for port in ports:
                number = str(port.get("containerPort") or "")
                groups.append({"targets": [f"{ip}:{number}"], "labels": {
                    **common, _META + "container_port_number": number,
                    _META + "container_port_name": str(port.get("name") or ""),
                    _META + "container_port_protocol": str(port.get("protocol") or "TCP")}})
    return groups


_HEADER = """\
# Prometheus scrape configuration for isthmus viz (`isthmus viz prometheus-config`).
# Jobs: {proxy} (every meshed pod's proxy, admin port {admin}) and {mirror}
# (service mirrors, port {mirror_port}); target labels namespace, pod, deployment, serviceaccount.
# Discovery: {discovery}.
"""


class _Dumper(yaml.SafeDumper):
    pass


def render(options: PrometheusOptions) -> str:
    """The YAML text: a prometheus.yml, or the scrape_configs list alone (`whole=False`)."""
    if options.targets_file is not None:
        discovery = (f"the file {options.targets_file}, kept up to date by "
                     "`isthmus viz prometheus-targets`")
    elif options.kubeconfig_file is not None:
        discovery = f"pods through the kubeconfig {options.kubeconfig_file} (its current context)"
    else:
        discovery = "pods through Prometheus' in-cluster service account"
    header = _HEADER.format(proxy=PROXY_JOB, admin=ADMIN_PORT, mirror=MIRROR_JOB,
                            mirror_port=MIRROR_ADMIN_PORT, discovery=discovery)
    data: Any = prometheus_yml(options) if options.whole else scrape_configs(options)
    return header + yaml.dump(data, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
