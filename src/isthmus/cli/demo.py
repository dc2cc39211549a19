"""`isthmus demo-cluster`: one embedded cluster with the mesh installed and emojivoto meshed.

The README's main command at this stage (the two-region `isthmus demo` comes
with multicluster). Every step is a real command a user could type — the
`isthmus` CLI and the real `kubectl` — printed before it runs, with its
time. Running it again reuses the cluster, the certificates and whatever is
already applied (`kubectl apply` is idempotent).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console

from isthmus.adapters import kubeconfig
from isthmus.adapters.clusterdir import ClusterDir, isthmus_home
from isthmus.components import cluster as clusters
from isthmus.components.cluster import ClusterError
from isthmus.core.network import HTTP_PROXY_PORT, ClusterNetwork

ROOT = Path(__file__).resolve().parents[3]
EMOJIVOTO = ROOT / "deploy" / "emojivoto.yml"


class DemoError(Exception):
    pass


class Steps:
    """Runs and prints the demo's commands; a failing required step stops the demo with its output."""

    def __init__(self, out: Console, env: dict[str, str]) -> None:
        self.out = out
        self.env = env
        self.isthmus = str(Path(sys.executable).parent / "isthmus")
        self.kubectl = shutil.which("kubectl") or "/usr/bin/kubectl"

    def show(self, argv: list[str], *, stdin: str | None = None, shown: str | None = None,
             check: bool = True, capture: bool = False, timeout: float = 180) -> str:
        self.out.print(f"$ {shown or shlex.join(argv)}", style="bold", highlight=False)
        start = time.monotonic()
        proc = subprocess.run(argv, input=stdin, text=True, env=self.env, timeout=timeout,
                              capture_output=True)
        if not capture and proc.stdout:
            self.out.print(proc.stdout.rstrip(), highlight=False, markup=False)
        if proc.returncode != 0 and check:
            raise DemoError(f"`{shown or shlex.join(argv)}` failed ({proc.returncode}):\n"
                            f"{proc.stderr.strip()}")
        if proc.stderr.strip() and not capture:
            self.out.print(proc.stderr.rstrip(), style="yellow", highlight=False, markup=False)
        self.out.print(f"  ({time.monotonic() - start:.1f} s)", style="dim", highlight=False)
        return proc.stdout

    def cli(self, *args: str, **kw: object) -> str:
        return self.show([self.isthmus, *args], shown="isthmus " + shlex.join(args), **kw)  # type: ignore[arg-type]

    def kc(self, context: str, *args: str, **kw: object) -> str:
        return self.show([self.kubectl, f"--context={context}", *args],
                         shown=f"kubectl --context={context} " + shlex.join(args), **kw)  # type: ignore[arg-type]


def _certs(steps: Steps, home: Path) -> tuple[Path, Path, Path]:
    d = home / "demo" / "certs"
    root, issuer, key = d / "root.crt", d / "issuer.crt", d / "issuer.key"
    if not root.exists():
        d.mkdir(parents=True, exist_ok=True)
        steps.cli("certs", "create", "root", str(root), str(d / "root.key"))
        steps.cli("certs", "create", "issuer", str(issuer), str(key), "--ca", str(root),
                  "--ca-key", str(d / "root.key"))
    return root, issuer, key


def run(name: str, region: str, out: Console, progress: Callable[[str], None]) -> None:
    home = isthmus_home()
    kc_path = kubeconfig.default_path(home)
    cdir = ClusterDir(home, name)
    try:
        if cdir.exists():
            progress(f'cluster "{name}" exists; starting it if needed')
            clusters.start(cdir, kubeconfig_path=kc_path, progress=progress)
        else:
            clusters.create(home, name, region, 3, kubeconfig_path=kc_path, progress=progress)
    except ClusterError as e:
        raise DemoError(str(e)) from None
    steps = Steps(out, dict(os.environ, KUBECONFIG=str(kc_path)))
    steps.kc(name, "get", "nodes", "-L", "topology.kubernetes.io/region")

    out.rule("the mesh: one trust anchor, an issuer, the control plane")
    root, issuer, key = _certs(steps, home)
    steps.kc(name, "apply", "-f", "-", stdin=steps.cli("install", "--crds", capture=True))
    control_plane = steps.cli("install", "--identity-trust-anchors-file", str(root),
                              "--identity-issuer-certificate-file", str(issuer),
                              "--identity-issuer-key-file", str(key), capture=True)
    steps.kc(name, "apply", "-f", "-", stdin=control_plane)
    steps.kc(name, "-n", "isthmus", "wait", "--for=condition=Available", "deploy", "--all",
             "--timeout=150s")
    steps.kc(name, "-n", "isthmus", "get", "pods", "-o", "wide")

    out.rule("emojivoto, meshed: every pod gets a sidecar proxy")
    steps.kc(name, "apply", "-f", "-", stdin=steps.cli("inject", str(EMOJIVOTO), capture=True))
    for deployment in ("emoji", "voting", "web", "vote-bot"):
        steps.kc(name, "-n", "emojivoto", "rollout", "status", f"deploy/{deployment}",
                 "--timeout=150s")
    steps.kc(name, "-n", "emojivoto", "get", "pods", "-o", "wide")
    time.sleep(3)  # let vote-bot cast a few votes

    net = ClusterNetwork(cdir.load().index)
    proxy = f"http://{net.proxy_ip}:{HTTP_PROXY_PORT}"
    steps.show(["curl", "-sS", "-m", "5", "-x", proxy, "http://web-svc.emojivoto/api/leaderboard"],
               check=False)

    out.rule("mutual TLS between the workloads: tap vote-bot's proxy")
    bot = steps.kc(name, "-n", "emojivoto", "get", "pods", "-l", "app=vote-bot", "-o",
                   "jsonpath={.items[0].status.podIP}", capture=True).strip()
    if bot:
        steps.show(["curl", "-sS", "-N", "-m", "15", "--noproxy", "*",
                    f"http://{bot}:4191/tap?namespace=emojivoto&resource=deploy/vote-bot&max=6"],
                   check=False)
        metrics = subprocess.run(["curl", "-sS", "-m", "5", "--noproxy", "*",
                                  f"http://{bot}:4191/metrics"], capture_output=True, text=True,
                                 timeout=10).stdout
        lines = [m for m in metrics.splitlines() if m.startswith("request_total{")]
        out.print(f"$ curl http://{bot}:4191/metrics | grep ^request_total", style="bold",
                  highlight=False)
        out.print("\n".join(lines) or "(no requests counted yet)", highlight=False, markup=False)
    out.print(f"\nThe cluster keeps running. `export KUBECONFIG={kc_path}` and use kubectl; "
              f"`isthmus cluster stop {name}` stops it, `isthmus cluster delete {name}` removes it.",
              highlight=False)


# ---------------------------------------------------------------------------- two regions

CLUSTERS = (("west", "sfo3"), ("east", "syd1"))


def _ensure_cluster(home: Path, name: str, region: str, kc_path: Path,
                    progress: Callable[[str], None]) -> ClusterDir:
    cdir = ClusterDir(home, name)
    try:
        if cdir.exists():
            progress(f'cluster "{name}" exists; starting it if needed')
            clusters.start(cdir, kubeconfig_path=kc_path, progress=progress)
        else:
            clusters.create(home, name, region, 3, kubeconfig_path=kc_path, progress=progress)
    except ClusterError as e:
        raise DemoError(str(e)) from None
    return cdir


def _issuer(steps: Steps, home: Path, cluster: str) -> tuple[Path, Path, Path]:
    """The shared trust anchor and this cluster's own issuer (made once, kept under $ISTHMUS_HOME/demo)."""
    d = home / "demo" / "certs"
    root, root_key = d / "root.crt", d / "root.key"
    if not root.exists():
        d.mkdir(parents=True, exist_ok=True)
        steps.cli("certs", "create", "root", str(root), str(root_key))
    issuer, key = d / f"issuer-{cluster}.crt", d / f"issuer-{cluster}.key"
    if not issuer.exists():
        steps.cli("certs", "create", "issuer", str(issuer), str(key), "--ca", str(root),
                  "--ca-key", str(root_key))
    return root, issuer, key


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise DemoError(f"{what} did not happen within {timeout:.0f} s")
        time.sleep(1)


def run_two_regions(out: Console, progress: Callable[[str], None]) -> None:
    """The walkthrough: west (sfo3) and east (syd1), one anchor, linked, web-svc exported from east."""
    home = isthmus_home()
    kc_path = kubeconfig.default_path(home)
    started = time.monotonic()
    for name, region in CLUSTERS:
        _ensure_cluster(home, name, region, kc_path, progress)
    steps = Steps(out, dict(os.environ, KUBECONFIG=str(kc_path)))
    for name, _ in CLUSTERS:
        steps.kc(name, "get", "nodes", "-L", "topology.kubernetes.io/region")

    out.rule("one trust anchor, one issuer per cluster, the mesh on both")
    for name, _ in CLUSTERS:
        root, issuer, key = _issuer(steps, home, name)
        steps.kc(name, "apply", "-f", "-", stdin=steps.cli("install", "--crds", capture=True))
        steps.kc(name, "apply", "-f", "-", stdin=steps.cli(
            "install", "--identity-trust-anchors-file", str(root),
            "--identity-issuer-certificate-file", str(issuer), "--identity-issuer-key-file", str(key),
            capture=True))
    for name, _ in CLUSTERS:
        steps.kc(name, "-n", "isthmus", "wait", "--for=condition=Available", "deploy", "--all",
                 "--timeout=150s")

    out.rule("multicluster on both: a gateway each")
    for name, _ in CLUSTERS:
        steps.kc(name, "apply", "-f", "-",
                 stdin=steps.cli("--context", name, "multicluster", "install", capture=True))
    for name, _ in CLUSTERS:
        steps.kc(name, "-n", "isthmus-multicluster", "rollout", "status", "deploy/isthmus-gateway",
                 "--timeout=150s")
        steps.kc(name, "-n", "isthmus-multicluster", "get", "svc", "isthmus-gateway")

    out.rule("emojivoto on both, meshed")
    for name, _ in CLUSTERS:
        steps.kc(name, "apply", "-f", "-", stdin=steps.cli("inject", str(EMOJIVOTO), capture=True))
    for name, _ in CLUSTERS:
        for deployment in ("emoji", "voting", "web", "vote-bot"):
            steps.kc(name, "-n", "emojivoto", "rollout", "status", f"deploy/{deployment}",
                     "--timeout=150s")

    out.rule("link west to east, export web-svc from east")
    steps.kc("west", "apply", "-f", "-", stdin=steps.cli(
        "--context", "east", "multicluster", "link", "--cluster-name", "east", capture=True))
    steps.kc("east", "-n", "emojivoto", "label", "svc", "web-svc", "mirror.isthmus.io/exported=true",
             "--overwrite")

    def mirrored() -> bool:
        proc = subprocess.run([steps.kubectl, "--context=west", "-n", "emojivoto", "get", "endpoints",
                               "web-svc-east", "-o", "jsonpath={.subsets[*].addresses[*].ip}"],
                              env=steps.env, capture_output=True, text=True, timeout=30)
        return proc.returncode == 0 and bool(proc.stdout.strip())

    _wait_for("web-svc-east with endpoints in west", mirrored)
    steps.kc("west", "-n", "emojivoto", "get", "svc,endpoints", "web-svc-east", "-o", "wide")
    steps.kc("east", "-n", "isthmus-multicluster", "get", "svc", "isthmus-gateway", "-o", "wide")

    out.rule("west's vote-bot calls web-svc-east, through east's gateway, over mTLS")
    steps.kc("west", "-n", "emojivoto", "set", "env", "deploy/vote-bot",
             "WEB_HOST=web-svc-east.emojivoto:80")
    steps.kc("west", "-n", "emojivoto", "rollout", "status", "deploy/vote-bot", "--timeout=150s")
    time.sleep(3)
    bot = steps.kc("west", "-n", "emojivoto", "get", "pods", "-l", "app=vote-bot", "-o",
                   "jsonpath={.items[0].status.podIP}", capture=True).strip()
    steps.show(["curl", "-sS", "-N", "-m", "15", "--noproxy", "*",
                f"http://{bot}:4191/tap?namespace=emojivoto&resource=deploy/vote-bot&max=6"],
               check=False)
    steps.cli("--context", "west", "multicluster", "gateways", check=False)
    out.print(f"\nTwo regions up in {time.monotonic() - started:.0f} s. `export KUBECONFIG={kc_path}`; "
              f"`isthmus demo down` removes both clusters.", highlight=False)


def down(out: Console, progress: Callable[[str], None]) -> None:
    """Remove what `isthmus demo` made: both clusters (processes included) and the demo certificates."""
    home = isthmus_home()
    for name, _ in CLUSTERS:
        cdir = ClusterDir(home, name)
        if cdir.exists():
            clusters.delete(cdir, kubeconfig_path=kubeconfig.default_path(home))
            progress(f'cluster "{name}" deleted')
    certs = home / "demo"
    if certs.exists():
        shutil.rmtree(certs)
        progress(f"removed {certs}")
