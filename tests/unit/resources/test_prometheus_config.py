"""`isthmus viz prometheus-config`: the configuration (checked by the real promtool), the
file-discovery targets, and the command's options and refusals; `prometheus-targets`' refusals
(it runs against a cluster in tests/e2e/test_viz_prometheus.py).

Debian's promtool and prometheus are built without Kubernetes discovery, so
promtool checks the file-discovery form; the Kubernetes form differs only in
the discovery block, whose shape is checked here (and the relabelling both
share runs in a real Prometheus in tests/e2e/test_viz_prometheus.py).
"""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from typer.testing import CliRunner

from isthmus.cli.viz_prometheus import prometheus_config_cmd, prometheus_targets_cmd
from isthmus.components.viz.prometheus_targets import write_atomically
from isthmus.resources.prometheus_config import (
    MIRROR_JOB,
    PROXY_JOB,
    PrometheusConfigError,
    PrometheusOptions,
    file_sd_groups,
    format_duration,
    render,
    scrape_configs,
)

PROMTOOL = "/usr/bin/promtool"


def promtool_check(config: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "prometheus.yml"
    path.write_text(config)
    return subprocess.run([PROMTOOL, "check", "config", str(path)], capture_output=True, text=True,
                          timeout=60)


def job(configs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(c for c in configs if c["job_name"] == name)


def test_whole_file_with_file_discovery_passes_promtool(tmp_path: Path) -> None:
    targets = tmp_path / "targets.json"
    targets.write_text("[]\n")
    text = render(PrometheusOptions(scrape_interval=2, targets_file=str(targets)))
    out = promtool_check(text, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout + out.stderr
    data = yaml.safe_load(text)
    assert data["global"] == {"scrape_interval": "2s", "evaluation_interval": "2s", "scrape_timeout": "2s"}
    assert [c["job_name"] for c in data["scrape_configs"]] == [PROXY_JOB, MIRROR_JOB]
    for c in data["scrape_configs"]:
        assert c["file_sd_configs"] == [{"files": [str(targets)], "refresh_interval": "30s"}]
        assert c["metrics_path"] == "/metrics"
        assert "kubernetes_sd_configs" not in c


def test_scrape_configs_only_is_the_list_and_fits_under_scrape_configs(tmp_path: Path) -> None:
    text = render(PrometheusOptions(whole=False, targets_file="/nonexistent/targets.json"))
    listed = yaml.safe_load(text)
    assert isinstance(listed, list) and [c["job_name"] for c in listed] == [PROXY_JOB, MIRROR_JOB]
    # Pasted under `scrape_configs:` of an existing prometheus.yml, indented as YAML wants it.
    pasted = "global:\n  scrape_interval: 15s\nscrape_configs:\n" + "".join(
        f"  {line}\n" for line in text.splitlines())
    out = promtool_check(pasted, tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    # A 10 s interval keeps the default 10 s timeout; longer intervals too.
    assert listed[0]["scrape_interval"] == "10s" and listed[0]["scrape_timeout"] == "10s"
    slow = scrape_configs(PrometheusOptions(scrape_interval=60))
    assert slow[0]["scrape_interval"] == "60s" and slow[0]["scrape_timeout"] == "10s"


def test_kubernetes_discovery_block_in_cluster_and_with_a_kubeconfig() -> None:
    in_cluster = scrape_configs(PrometheusOptions())
    assert all(c["kubernetes_sd_configs"] == [{"role": "pod"}] for c in in_cluster)
    outside = scrape_configs(PrometheusOptions(kubeconfig_file="/etc/prometheus/west.kubeconfig"))
    assert all(c["kubernetes_sd_configs"] == [{"role": "pod", "kubeconfig_file": "/etc/prometheus/west.kubeconfig"}]
               for c in outside)
    # The relabelling is the same whatever the discovery.
    files = scrape_configs(PrometheusOptions(targets_file="/t.json"))
    assert [c["relabel_configs"] for c in outside] == [c["relabel_configs"] for c in files]
    assert "in-cluster service account" in render(PrometheusOptions())


def test_relabelling_keeps_proxies_and_mirrors_and_makes_the_target_labels() -> None:
    configs = scrape_configs(PrometheusOptions())
    proxy = job(configs, PROXY_JOB)["relabel_configs"]
    assert proxy[0] == {
        "source_labels": ["__meta_kubernetes_pod_labelpresent_isthmus_io_control_plane_ns",
                          "__meta_kubernetes_pod_container_name",
                          "__meta_kubernetes_pod_container_port_number"],
        "action": "keep", "regex": "true;isthmus-proxy;4191"}
    assert {"source_labels": ["__meta_kubernetes_pod_phase"], "action": "keep", "regex": "Running"} in proxy
    made = {r["target_label"]: r["source_labels"] for r in proxy if "target_label" in r}
    assert made == {
        "namespace": ["__meta_kubernetes_namespace"],
        "pod": ["__meta_kubernetes_pod_name"],
        "deployment": ["__meta_kubernetes_pod_label_isthmus_io_proxy_deployment"],
        "serviceaccount": ["__meta_kubernetes_pod_label_isthmus_io_proxy_serviceaccount"],
    }
    mirror = job(configs, MIRROR_JOB)["relabel_configs"]
    assert mirror[0]["regex"] == "isthmus-multicluster;isthmus-service-mirror;service-mirror;9999"
    assert {r["target_label"] for r in mirror if "target_label" in r} == set(made)


@pytest.mark.parametrize(("options", "message"), [
    ({"scrape_interval": 0.5}, "scrape interval 0.5s is out of range: use 1s to 1h"),
    ({"scrape_interval": 7200}, "out of range"),
    ({"scrape_interval": float("nan")}, "out of range"),
    ({"scrape_interval": 1.0001}, "finer than a millisecond"),
    ({"kubeconfig_file": "west.kubeconfig"}, "must be an absolute path"),
    ({"targets_file": "t.json"}, "must be an absolute path"),
    ({"kubeconfig_file": "/a", "targets_file": "/b"}, "not both"),
])
def test_bad_options_are_refused_with_the_reason(options: dict[str, Any], message: str) -> None:
    with pytest.raises(PrometheusConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        PrometheusOptions(**options)


def test_durations() -> None:
    assert [format_duration(s) for s in (1, 2.0, 10, 90, 1.5, 0.25)] == ["1s", "2s", "10s", "90s",
                                                                          "1500ms", "250ms"]


def meshed_pod(**overrides: Any) -> dict[str, Any]:
    pod: dict[str, Any] = {
        "metadata": {"name": "web-5d8f-x1", "namespace": "emojivoto", "uid": "u-1",
                     "labels": {"app": "web", "isthmus.io/control-plane-ns": "isthmus",
                                "isthmus.io/proxy-deployment": "web",
                                "isthmus.io/proxy-serviceaccount": "web"},
                     "annotations": {"isthmus.io/proxy-version": "0.1.0"},
                     "ownerReferences": [{"kind": "Deployment", "name": "web", "controller": True}]},
        "spec": {"nodeName": "west-node-1", "serviceAccountName": "web", "containers": [
            {"name": "web", "image": "web:1"},
            {"name": "isthmus-proxy", "image": "isthmus:0.1.0",
             "ports": [{"name": "isthmus-proxy", "containerPort": 4143, "protocol": "TCP"},
                       {"name": "isthmus-admin", "containerPort": 4191}]}]},
        "status": {"podIP": "127.9.64.3", "hostIP": "127.9.0.11", "phase": "Running",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }
    pod.update(overrides)
    return pod


def test_file_targets_are_labelled_as_prometheus_pod_discovery_labels_them() -> None:
    groups = file_sd_groups([meshed_pod(), meshed_pod(status={"phase": "Pending"})])
    assert [g["targets"] for g in groups] == [["127.9.64.3"], ["127.9.64.3:4143"], ["127.9.64.3:4191"]]
    admin = groups[2]["labels"]
    assert admin == {
        "__meta_kubernetes_namespace": "emojivoto",
        "__meta_kubernetes_pod_name": "web-5d8f-x1",
        "__meta_kubernetes_pod_ip": "127.9.64.3",
        "__meta_kubernetes_pod_ready": "true",
        "__meta_kubernetes_pod_phase": "Running",
        "__meta_kubernetes_pod_node_name": "west-node-1",
        "__meta_kubernetes_pod_host_ip": "127.9.0.11",
        "__meta_kubernetes_pod_uid": "u-1",
        "__meta_kubernetes_pod_label_app": "web",
        "__meta_kubernetes_pod_labelpresent_app": "true",
        "__meta_kubernetes_pod_label_isthmus_io_control_plane_ns": "isthmus",
        "__meta_kubernetes_pod_labelpresent_isthmus_io_control_plane_ns": "true",
        "__meta_kubernetes_pod_label_isthmus_io_proxy_deployment": "web",
        "__meta_kubernetes_pod_labelpresent_isthmus_io_proxy_deployment": "true",
        "__meta_kubernetes_pod_label_isthmus_io_proxy_serviceaccount": "web",
        "__meta_kubernetes_pod_labelpresent_isthmus_io_proxy_serviceaccount": "true",
        "__meta_kubernetes_pod_annotation_isthmus_io_proxy_version": "0.1.0",
        "__meta_kubernetes_pod_annotationpresent_isthmus_io_proxy_version": "true",
        "__meta_kubernetes_pod_controller_kind": "Deployment",
        "__meta_kubernetes_pod_controller_name": "web",
        "__meta_kubernetes_pod_container_name": "isthmus-proxy",
        "__meta_kubernetes_pod_container_image": "isthmus:0.1.0",
        "__meta_kubernetes_pod_container_init": "false",
        "__meta_kubernetes_pod_container_port_number": "4191",
        "__meta_kubernetes_pod_container_port_name": "isthmus-admin",
        "__meta_kubernetes_pod_container_port_protocol": "TCP",
    }
    # The app container has no ports: one target at the pod's IP, as Prometheus makes it.
    assert "__meta_kubernetes_pod_container_port_number" not in groups[0]["labels"]
    json.dumps(groups)  # what the file holds


def test_pods_without_ip_or_not_ready_yet() -> None:
    assert file_sd_groups([meshed_pod(status={})]) == []
    starting = file_sd_groups([meshed_pod(status={"podIP": "127.9.64.4", "phase": "Pending"})])
    assert starting[0]["labels"]["__meta_kubernetes_pod_ready"] == "unknown"
    assert starting[0]["labels"]["__meta_kubernetes_pod_phase"] == "Pending"


# ------------------------------------------------------------------ the command


def app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def root(ctx: typer.Context, context: str = typer.Option(None, "--context")) -> None:
        ctx.obj = {"context": context, "namespace": None}

    a.command("prometheus-config")(prometheus_config_cmd)
    return a


def run(*args: str) -> Any:
    return CliRunner().invoke(app(), list(args))


def test_command_prints_a_config_promtool_accepts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "targets.json").write_text("[]")
    result = run("prometheus-config", "--targets-file", "targets.json", "--scrape-interval", "1s")
    assert result.exit_code == 0, result.stderr
    assert promtool_check(result.stdout, tmp_path).returncode == 0
    data = yaml.safe_load(result.stdout)
    # A relative path is made absolute: Prometheus would read it relative to its config file.
    assert data["scrape_configs"][0]["file_sd_configs"][0]["files"] == [str(tmp_path / "targets.json")]
    assert data["global"]["scrape_interval"] == "1s"
    only = run("prometheus-config", "--scrape-configs-only")
    assert only.exit_code == 0 and isinstance(yaml.safe_load(only.stdout), list)


def kubeconfig(path: Path, current: str, *contexts: str) -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": current,
        "clusters": [{"name": c, "cluster": {"server": "https://127.9.0.1:6443"}} for c in contexts],
        "users": [{"name": c, "user": {"token": "t"}} for c in contexts],
        "contexts": [{"name": c, "context": {"cluster": c, "user": c}} for c in contexts]}))
    return path


def test_kubeconfig_file_must_have_the_context_as_its_current_one(tmp_path: Path) -> None:
    kc = kubeconfig(tmp_path / "kc", "west", "west", "east")
    ok = run("--context", "west", "prometheus-config", "--kubeconfig-file", str(kc))
    assert ok.exit_code == 0, ok.stderr
    assert yaml.safe_load(ok.stdout)["scrape_configs"][0]["kubernetes_sd_configs"] == [
        {"role": "pod", "kubeconfig_file": str(kc)}]
    other = run("--context", "east", "prometheus-config", "--kubeconfig-file", str(kc))
    assert other.exit_code == 1 and other.stdout == ""
    assert other.stderr.strip() == (
        f"error: Prometheus uses the current context of {kc}, which is 'west', not 'east': make a "
        "file for 'east' with `kubectl config view --minify --flatten --context=east > "
        "east.kubeconfig` and give that")
    # Without --context the file's current context is the one; a file not here gets a note only.
    assert run("prometheus-config", "--kubeconfig-file", str(kc)).exit_code == 0
    elsewhere = run("prometheus-config", "--kubeconfig-file", "/etc/prometheus/kc")
    assert elsewhere.exit_code == 0 and "does not exist here" in elsewhere.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--scrape-interval", "soon"], "error: --scrape-interval 'soon' is not a duration (like 10s, 2s or 1m)"),
    (["--scrape-interval", "100ms"], "error: --scrape-interval 0.1s is out of range: use 1s to 1h"),
    (["--targets-file", "/a.json", "--kubeconfig-file", "/b"],
     "error: give --kubeconfig-file (Kubernetes discovery) or --targets-file (file discovery), not both"),
])
def test_command_refusals_are_one_line_and_print_nothing(args: list[str], message: str) -> None:
    result = run("prometheus-config", *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.strip() == message


# ------------------------------------------------------------------ prometheus-targets


def targets_app() -> typer.Typer:
    a = typer.Typer()

    @a.callback()
    def root(ctx: typer.Context, context: str = typer.Option(None, "--context")) -> None:
        ctx.obj = {"context": context, "namespace": None}

    a.command("prometheus-targets")(prometheus_targets_cmd)
    return a


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_targets_command_refusals_write_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kc = tmp_path / "kc"
    kc.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "gone",
        "clusters": [{"name": "gone", "cluster": {"server": f"https://127.0.0.1:{closed_port()}",
                                                  "insecure-skip-tls-verify": True}}],
        "users": [{"name": "gone", "user": {"token": "t"}}],
        "contexts": [{"name": "gone", "context": {"cluster": "gone", "user": "gone"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kc))
    target = tmp_path / "targets.json"

    def run_targets(*args: str) -> Any:
        return CliRunner().invoke(targets_app(), list(args))

    down = run_targets("prometheus-targets", str(target), "--once")
    assert down.exit_code == 1
    assert down.stderr.startswith("error: cannot reach the API of context 'gone': ")
    assert down.stderr.strip().endswith("`kubectl --context=gone get pods -A` should answer")
    assert len(down.stderr.strip().splitlines()) == 1
    unknown = run_targets("--context", "west", "prometheus-targets", str(target))
    assert unknown.stderr.strip() == f"error: context 'west' is not in the kubeconfig {kc} (its contexts: gone)"
    no_dir = run_targets("prometheus-targets", str(tmp_path / "no" / "targets.json"))
    assert no_dir.stderr.strip() == (f"error: cannot write {tmp_path / 'no' / 'targets.json'}: "
                                     f"the directory {tmp_path / 'no'} does not exist")
    a_dir = run_targets("prometheus-targets", str(tmp_path))
    assert a_dir.exit_code == 1 and "it is a directory" in a_dir.stderr
    assert not target.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["kc"]


def test_the_targets_file_is_replaced_whole(tmp_path: Path) -> None:
    path = tmp_path / "targets.json"
    write_atomically(path, "[]\n")
    write_atomically(path, json.dumps(file_sd_groups([meshed_pod()])))
    assert len(json.loads(path.read_text())) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["targets.json"]  # no temporary file left
