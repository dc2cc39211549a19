"""`isthmus demo`: the two-region walkthrough in one command; `isthmus demo down` undoes it.

`isthmus demo` makes what the README's tutorial makes by hand, with the same
commands (the `isthmus` CLI and the real `kubectl`, each shown as it runs):
clusters west (sfo3) and east (syd1) with 3 nodes each, one trust anchor and
an issuer per cluster, the CRDs, the control plane, multicluster and viz on
both, emojivoto on both, west linked to east, `web-svc` exported from east and
west's vote-bot pointed at `web-svc-east`. Then it shows what matters: the
mirrored service and its endpoints, east's gateway address, live tap lines
from west's vote-bot to that gateway (`tls=true`), `multicluster gateways`,
and the two dashboards' URLs.

Promises:

* every step says what it does and how long it took: rich output on a
  terminal (a spinner, then one line per step), plain lines otherwise;
* running it again reuses what is there: each step first asks the clusters
  whether its result exists (a tutorial done by hand counts) and is skipped
  when it does; nothing is re-created;
* `--detach` leaves the dashboards running in the background (their pids
  under `$ISTHMUS_HOME/demo/`); `--serve` serves them until Ctrl-C. Without
  either, a terminal gets `--serve` and anything else (a script, CI) gets
  `--detach`, so a script never hangs;
* `--wan-latency` sets the emulated WAN round trip between regions
  (`auto`: typical values, sfo3-syd1 150 ms; a number of ms; `0`: off),
  written to `$ISTHMUS_HOME/wan.json` for the clusters' service proxies
  (`isthmus.core.wan`); without it the file is left as it is;
* `isthmus demo down` stops the dashboards, deletes both clusters (their
  processes and pods), the demo's certificates and settings, then looks for
  any process still running from `$ISTHMUS_HOME` and stops it: nothing the
  demo made is left running or on disk.

`isthmus demo-cluster` (`run`) is the single-cluster variant: one cluster,
the mesh, emojivoto meshed.

This module holds the steps and the commands; `demo_shell` how each step is
shown and run, `demo_processes` the dashboards and `demo down`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from isthmus.adapters import kubeconfig
from isthmus.adapters.clusterdir import ClusterDir, isthmus_home
from isthmus.cli.demo_processes import alive, dashboards, down, pid_file, stop_group
from isthmus.cli.demo_shell import CLUSTERS, DemoError, Reporter, Shell, demo_dir, wait_for
from isthmus.components import cluster as clusters
from isthmus.components.cluster import ClusterError
from isthmus.components.serviceproxy.wan import read_setting, write_setting
from isthmus.core.network import HTTP_PROXY_PORT, ClusterNetwork
from isthmus.core.wan import WanSettingError, parse_setting

ROOT = Path(__file__).resolve().parents[3]
EMOJIVOTO = ROOT / "deploy" / "emojivoto.yml"

DEPLOYMENTS = ("emoji", "voting", "web", "vote-bot")
MC = "isthmus-multicluster"
VIZ = "isthmus-viz"
DASHBOARD_PORT = 50750  # west's; east's is 10 higher, as in the walkthrough
TAP_LINES = 6
TAP_WAIT = 30.0
PROBE_PERIOD = 3.0  # `multicluster install`'s gateway probe period


# ---------------------------------------------------------------------------- the steps


def has_command(env: dict[str, str], *words: str) -> bool:
    """Whether this build's `isthmus` has the command `words` (viz came after multicluster)."""
    isthmus = str(Path(sys.executable).parent / "isthmus")
    proc = subprocess.run([isthmus, *words, "--help"], env=env, capture_output=True, text=True, timeout=60)
    return proc.returncode == 0


def _clusters(report: Reporter, home: Path, kc_path: Path) -> None:
    for name, region in CLUSTERS:
        with report.step(f"cluster {name} in region {region}, 3 nodes") as step:
            cdir = ClusterDir(home, name)
            try:
                if cdir.exists():
                    config = cdir.load()
                    if config.region != region:
                        raise DemoError(f'cluster "{name}" exists in region {config.region}, not {region}; '
                                        f"delete it (`isthmus cluster delete {name}`) or use another "
                                        "ISTHMUS_HOME")
                    running = clusters.status(cdir).state == "Running"
                    if not running:
                        report.command(f"isthmus cluster start {name}")
                    clusters.start(cdir, kubeconfig_path=kc_path)
                    step.reused = running
                else:
                    report.command(f"isthmus cluster create {name} --region {region} --nodes 3")
                    clusters.create(home, name, region, 3, kubeconfig_path=kc_path)
            except ClusterError as e:
                raise DemoError(str(e)) from None
            config = cdir.load()
            step.note = f"API {clusters.api_url(config)}, addresses 127.{config.index}.0.0/16"


def _wan(report: Reporter, home: Path, wan_latency: str | None) -> None:
    with report.step("emulated WAN latency between the regions") as step:
        try:
            if wan_latency is not None:
                write_setting(home, parse_setting(wan_latency))
            else:
                step.reused = True  # nothing to make: the home's setting (or the default) applies
            setting = read_setting(home)
        except WanSettingError as e:
            raise DemoError(str(e)) from None
        (a, ra), (b, rb) = CLUSTERS
        rtt = setting.rtt_ms(ra, rb)
        step.note = (f"{a} ({ra}) <-> {b} ({rb}): {rtt:g} ms round trip" if rtt
                     else "off: the regions are as close as loopback")


def _mesh_installed(sh: Shell, context: str) -> bool:
    return sh.has(context, "-n", "isthmus", "get", "deploy", "isthmus-identity", "-o", "name")


def _issuer(sh: Shell, home: Path, cluster: str) -> tuple[Path, Path, Path]:
    """The shared trust anchor and this cluster's own issuer (made once, kept under $ISTHMUS_HOME/demo)."""
    d = home / "demo" / "certs"
    root, root_key = d / "root.crt", d / "root.key"
    if not root.exists():
        d.mkdir(parents=True, exist_ok=True)
        sh.cli("certs", "create", "root", str(root), str(root_key))
    issuer, key = d / f"issuer-{cluster}.crt", d / f"issuer-{cluster}.key"
    if not issuer.exists():
        sh.cli("certs", "create", "issuer", str(issuer), str(key), "--ca", str(root), "--ca-key", str(root_key))
    return root, issuer, key


def _mesh(report: Reporter, sh: Shell, home: Path) -> None:
    installed = {name: _mesh_installed(sh, name) for name, _ in CLUSTERS}
    missing = [name for name, done in installed.items() if not done]
    anchor = home / "demo" / "certs" / "root.crt"
    if missing and len(missing) < len(CLUSTERS) and not anchor.exists():
        raise DemoError(f"{', '.join(n for n in installed if installed[n])} has the mesh with a trust anchor "
                        f"this demo did not make, {', '.join(missing)} has none; install it there with the "
                        "same anchor (README, the tutorial) or delete the clusters")
    with report.step("one trust anchor, one issuer per cluster") as step:
        if not missing:
            step.reused = True
            step.note = "the mesh is installed on both clusters"
        for name in missing:
            _issuer(sh, home, name)
    for name, _ in CLUSTERS:
        with report.step(f"{name}: CRDs and the control plane (identity, destination, injector)") as step:
            if installed[name]:
                step.reused = True
            else:
                root, issuer, key = _issuer(sh, home, name)
                sh.pipe(name, "install", "--crds")
                sh.pipe(name, "install", "--identity-trust-anchors-file", str(root),
                        "--identity-issuer-certificate-file", str(issuer), "--identity-issuer-key-file", str(key))
    _available(report, sh, "the control plane", "isthmus", "deploy", "--all", reused=installed)


def _available(report: Reporter, sh: Shell, what: str, namespace: str, *resources: str,
               reused: dict[str, bool]) -> None:
    """One step: `kubectl wait --for=condition=Available` on both clusters."""
    with report.step(f"{what}: available on " + " and ".join(n for n, _ in CLUSTERS)) as step:
        step.reused = all(reused.values())
        for name, _ in CLUSTERS:
            sh.kc(name, "-n", namespace, "wait", "--for=condition=Available", *resources, "--timeout=200s",
                  show=not reused[name])


def _extension(report: Reporter, sh: Shell, what: str, why: str, namespace: str, group: str) -> None:
    done = {name: sh.has(name, "-n", namespace, "get", "deploy", "-o", "name") for name, _ in CLUSTERS}
    for name, _ in CLUSTERS:
        with report.step(f"{name}: {what} ({why})") as step:
            step.reused = done[name]
            if not done[name]:
                sh.pipe(name, f"--context={name}", group, "install")
    _available(report, sh, what, namespace, "deploy", "--all", reused=done)


def _emojivoto(report: Reporter, sh: Shell) -> None:
    done = {name: sh.has(name, "-n", "emojivoto", "get", "deploy", *DEPLOYMENTS, "-o", "name")
            for name, _ in CLUSTERS}
    for name, _ in CLUSTERS:
        with report.step(f"{name}: emojivoto, meshed (every pod gets a sidecar proxy)") as step:
            step.reused = done[name]
            if not done[name]:
                report.command(f"isthmus inject deploy/emojivoto.yml | kubectl --context={name} apply -f -")
                sh.kc(name, "apply", "-f", "-", stdin=sh.cli("inject", str(EMOJIVOTO), show=False), show=False)
    _available(report, sh, "emojivoto", "emojivoto", "deploy", "--all", reused=done)


def _link_and_export(report: Reporter, sh: Shell) -> None:
    with report.step("link west to east (west mirrors east's exported services)") as step:
        step.reused = sh.has("west", "-n", MC, "get", "links.multicluster.isthmus.io", "east", "-o", "name")
        if not step.reused:
            report.command("isthmus --context=east multicluster link --cluster-name east | "
                           "kubectl --context=west apply -f -")
            link = sh.cli("--context=east", "multicluster", "link", "--cluster-name", "east", show=False)
            sh.kc("west", "apply", "-f", "-", stdin=link, show=False)
    with report.step("export web-svc from east") as step:
        label = sh.probe("east", "-n", "emojivoto", "get", "svc", "web-svc", "-o",
                         "jsonpath={.metadata.labels.mirror\\.isthmus\\.io/exported}")
        step.reused = (label or "").strip() == "true"
        if not step.reused:
            sh.kc("east", "label", "svc", "-n", "emojivoto", "web-svc", "mirror.isthmus.io/exported=true")
    with report.step("web-svc-east mirrored into west, east's gateway its endpoint") as step:
        def mirrored() -> bool:
            return sh.has("west", "-n", "emojivoto", "get", "endpoints", "web-svc-east", "-o",
                          "jsonpath={.subsets[*].addresses[*].ip}")
        step.reused = mirrored()
        wait_for("web-svc-east with endpoints in west", mirrored)


def _traffic(report: Reporter, sh: Shell) -> None:
    with report.step("west's vote-bot calls web-svc-east (through east's gateway)") as step:
        current = (sh.probe("west", "-n", "emojivoto", "get", "deploy", "vote-bot", "-o",
                            "jsonpath={.spec.template.spec.containers[0].env[?(@.name==\"WEB_HOST\")].value}")
                   or "").strip()
        cluster_ip = (sh.probe("west", "-n", "emojivoto", "get", "svc", "web-svc-east", "-o",
                               "jsonpath={.spec.clusterIP}") or "").strip()
        step.reused = current in {f"{cluster_ip}:80", "web-svc-east.emojivoto:80",
                                  "web-svc-east.emojivoto.svc.cluster.local:80"}
        if not step.reused:
            sh.kc("west", "set", "env", "deployment/vote-bot", "-n", "emojivoto", f"WEB_HOST={cluster_ip}:80")
        sh.kc("west", "-n", "emojivoto", "rollout", "status", "deploy/vote-bot", "--timeout=200s",
              show=not step.reused)


# ---------------------------------------------------------------------------- showing it


def _gateway_ip(sh: Shell) -> str:
    ip = ""

    def found() -> bool:
        nonlocal ip
        ip = (sh.probe("east", "-n", MC, "get", "svc", "isthmus-gateway", "-o",
                       "jsonpath={.status.loadBalancer.ingress[0].ip}") or "").strip()
        return bool(ip)

    wait_for("a load-balancer address for east's gateway", found)
    return ip


def tap_lines(argv: list[str], env: dict[str, str], *, needle: str, count: int,
              timeout: float) -> list[str]:
    """The first `count` lines of a tap stream that contain `needle` (fewer after `timeout` s)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
                            start_new_session=True)
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        import selectors

        with selectors.DefaultSelector() as sel:
            assert proc.stdout is not None
            sel.register(proc.stdout, selectors.EVENT_READ)
            while len(lines) < count and time.monotonic() < deadline:
                if not sel.select(timeout=max(0.1, deadline - time.monotonic())):
                    continue
                line = proc.stdout.readline()
                if not line:
                    break
                if needle in line:
                    lines.append(line.rstrip())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return lines


def _show(report: Reporter, sh: Shell, *, viz: bool) -> str:
    report.heading("what the two regions look like now")
    report.command("kubectl --context=west -n emojivoto get svc,endpoints web-svc-east")
    report.output(sh.kc("west", "-n", "emojivoto", "get", "svc,endpoints", "web-svc-east", show=False))
    report.command("kubectl --context=east -n isthmus-multicluster get svc isthmus-gateway")
    report.output(sh.kc("east", "-n", MC, "get", "svc", "isthmus-gateway", show=False))
    gateway = _gateway_ip(sh)
    report.line(f"  east's gateway: {gateway}:4143 (mTLS), probes on {gateway}:4191")

    if viz:
        shown = "isthmus --context=west -n emojivoto viz tap deploy/vote-bot"
        argv = [sh.isthmus, "--context=west", "-n", "emojivoto", "viz", "tap", "deploy/vote-bot"]
    else:
        bot = (sh.probe("west", "-n", "emojivoto", "get", "pods", "-l", "app=vote-bot", "-o",
                        "jsonpath={.items[0].status.podIP}") or "").strip()
        url = f"http://{bot}:4191/tap?namespace=emojivoto&resource=deploy/vote-bot"
        shown = f"curl -N '{url}'"
        argv = ["curl", "-sS", "-N", "--noproxy", "*", url]
    report.command(f"{shown} | grep {gateway}")
    lines = tap_lines(argv, sh.env, needle=f"dst={gateway}:", count=TAP_LINES, timeout=TAP_WAIT)
    report.output("\n".join(lines) if lines else f"(no requests to {gateway} within {TAP_WAIT:.0f} s)")

    _settle_gateway(sh)
    report.command("isthmus --context=west multicluster gateways")
    report.output(sh.cli("--context=west", "multicluster", "gateways", show=False, check=False))
    return gateway


def _settle_gateway(sh: Shell) -> None:
    """Wait until west sees east's gateway alive, then one probe period more.

    The latency `multicluster gateways` shows is the last probe's; the first
    probe also pays TCP and TLS handshakes across the WAN, the next ones go
    over the mirror's kept connection (one round trip), which is the figure to
    show. Gives up quietly after 30 s: the table then says what there is.
    """
    def seen_alive() -> bool:
        out = sh.cli("--context=west", "multicluster", "gateways", "-o", "json", show=False, check=False)
        try:
            rows = json.loads(out)
        except ValueError:
            return False
        return any(isinstance(r, dict) and r.get("alive") and r.get("latencyMs") is not None for r in rows)

    with contextlib.suppress(DemoError):
        wait_for("east's gateway alive from west", seen_alive, timeout=30)
        time.sleep(PROBE_PERIOD + 0.5)


# ---------------------------------------------------------------------------- the commands


def _env(home: Path, kc_path: Path) -> dict[str, str]:
    return dict(os.environ, ISTHMUS_HOME=str(home), KUBECONFIG=str(kc_path))


def run_two_regions(out: Console, *, detach: bool, wan_latency: str | None = None,
                    dashboard_port: int = DASHBOARD_PORT) -> None:
    """The walkthrough (see the module docstring); returns once detached, or when interrupted."""
    home = isthmus_home()
    kc_path = kubeconfig.default_path(home)
    report = Reporter(out)
    env = _env(home, kc_path)
    sh = Shell(report, env)
    report.heading("two clusters, two regions")
    _clusters(report, home, kc_path)
    _wan(report, home, wan_latency)
    viz = has_command(env, "viz", "install")
    dashboard = viz and has_command(env, "viz", "dashboard")
    report.heading("one trust anchor; the mesh, multicluster" + (" and viz" if viz else "") + " on both")
    _mesh(report, sh, home)
    _extension(report, sh, "multicluster", "a gateway, the link's RBAC", MC, "multicluster")
    if viz:
        _extension(report, sh, "viz", "metrics, tap, the dashboard's API", VIZ, "viz")
    report.heading("emojivoto on both; west linked to east")
    _emojivoto(report, sh)
    _link_and_export(report, sh)
    _traffic(report, sh)
    _show(report, sh, viz=viz)
    running: list[tuple[int, str]] = []
    if dashboard:
        report.heading("dashboards")
        running = dashboards(report, sh, home, dashboard_port)
    report.line("")
    report.line(f"Two regions up in {report.elapsed():.0f} s. export KUBECONFIG={kc_path}", "bold")
    for (name, _), (_, url) in zip(CLUSTERS, running, strict=False):
        report.line(f"  {name}'s dashboard: {url}")
    if not dashboard:
        report.line("  (no dashboards: this build has no `isthmus viz dashboard` yet)")
    report.line("`isthmus demo down` removes everything the demo made.")
    if detach or not running:
        return
    report.line("Serving the dashboards; Ctrl-C stops them (the clusters keep running).", "bold")

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)  # a SIGTERM stops the dashboards too, as Ctrl-C does
    try:
        while all(alive(pid) for pid, _ in running):
            time.sleep(0.5)
        report.line("a dashboard exited; see its log under " + str(demo_dir(home)))
    except KeyboardInterrupt:
        report.line("")
    finally:
        for (name, _), (pid, _) in zip(CLUSTERS, running, strict=False):
            stop_group(pid)
            pid_file(home, name).unlink(missing_ok=True)
        report.line("dashboards stopped")


# ---------------------------------------------------------------------------- typer


demo_app = typer.Typer(help="The two-region walkthrough: west (sfo3) and east (syd1), linked.")
_out = Console(soft_wrap=True)
_err = Console(stderr=True, soft_wrap=True)


def _progress(msg: str) -> None:
    _err.print(f"[dim]•[/dim] {escape(msg)}" if _err.is_terminal else f"- {msg}", highlight=False,
               markup=_err.is_terminal)


def _fail(e: Exception) -> None:
    _err.print(f"error: {e}", style="red" if _err.is_terminal else None, highlight=False, markup=False)
    raise typer.Exit(1)


@demo_app.callback(invoke_without_command=True)
def demo_main(
    ctx: typer.Context,
    detach: bool = typer.Option(
        None, "--detach/--serve", show_default=False,
        help="--detach: leave the dashboards running in the background and return; --serve: serve "
             "them until Ctrl-C. Default: --serve on a terminal, --detach otherwise."),
    wan_latency: str = typer.Option(
        None, "--wan-latency", metavar="MS|auto",
        help="emulated round trip between the regions: auto (sfo3-syd1 150 ms), a number of ms, or 0 "
             "(off). Kept in $ISTHMUS_HOME/wan.json; unchanged when not given."),
    dashboard_port: int = typer.Option(
        DASHBOARD_PORT, "--dashboard-port", help="west's dashboard port; east's is 10 higher"),
) -> None:
    """Create west (sfo3) and east (syd1), one trust anchor, the mesh, multicluster and viz on both,
    emojivoto on both, west linked to east, web-svc exported from east and called from west through
    east's gateway over mTLS. Running it again reuses what is there."""
    if ctx.invoked_subcommand is not None:
        return
    if wan_latency is not None:
        try:
            parse_setting(wan_latency)
        except WanSettingError as e:
            _fail(e)
    if not 1024 <= dashboard_port <= 65525:
        _fail(DemoError(f"--dashboard-port {dashboard_port} is out of range; use 1024-65525"))
    if detach is None:
        detach = not (sys.stdin.isatty() and _out.is_terminal)
    try:
        run_two_regions(_out, detach=detach, wan_latency=wan_latency, dashboard_port=dashboard_port)
    except DemoError as e:
        _fail(e)


@demo_app.command("down")
def demo_down() -> None:
    """Remove what `isthmus demo` made: its dashboards, both clusters (their processes too), its
    certificates and settings."""
    try:
        down(_out, _progress)
    except DemoError as e:
        _fail(e)


# ---------------------------------------------------------------------------- one cluster


def _certs(steps: Shell, home: Path) -> tuple[Path, Path, Path]:
    d = home / "demo" / "certs"
    root, issuer, key = d / "root.crt", d / "issuer.crt", d / "issuer.key"
    if not root.exists():
        d.mkdir(parents=True, exist_ok=True)
        steps.cli("certs", "create", "root", str(root), str(d / "root.key"))
        steps.cli("certs", "create", "issuer", str(issuer), str(key), "--ca", str(root),
                  "--ca-key", str(d / "root.key"))
    return root, issuer, key


def run(name: str, region: str, out: Console, progress: Callable[[str], None]) -> None:
    """`isthmus demo-cluster`: one cluster, the mesh, emojivoto meshed, tap showing tls=true."""
    home = isthmus_home()
    kc_path = kubeconfig.default_path(home)
    report = Reporter(out)
    sh = Shell(report, _env(home, kc_path))
    with report.step(f"cluster {name} in region {region}") as step:
        cdir = ClusterDir(home, name)
        try:
            step.reused = cdir.exists()
            if cdir.exists():
                clusters.start(cdir, kubeconfig_path=kc_path, progress=progress)
            else:
                report.command(f"isthmus cluster create {name} --region {region} --nodes 3")
                clusters.create(home, name, region, 3, kubeconfig_path=kc_path, progress=progress)
        except ClusterError as e:
            raise DemoError(str(e)) from None
    installed = _mesh_installed(sh, name)
    with report.step("the mesh: one trust anchor, an issuer, the control plane") as step:
        step.reused = installed
        if not installed:
            root, issuer, key = _certs(sh, home)
            sh.pipe(name, "install", "--crds")
            sh.pipe(name, "install", "--identity-trust-anchors-file", str(root),
                    "--identity-issuer-certificate-file", str(issuer), "--identity-issuer-key-file", str(key))
        sh.kc(name, "-n", "isthmus", "wait", "--for=condition=Available", "deploy", "--all",
              "--timeout=200s", show=not installed)
    with report.step("emojivoto, meshed: every pod gets a sidecar proxy") as step:
        step.reused = sh.has(name, "-n", "emojivoto", "get", "deploy", *DEPLOYMENTS, "-o", "name")
        if not step.reused:
            report.command(f"isthmus inject deploy/emojivoto.yml | kubectl --context={name} apply -f -")
            sh.kc(name, "apply", "-f", "-", stdin=sh.cli("inject", str(EMOJIVOTO), show=False), show=False)
        for deployment in DEPLOYMENTS:
            sh.kc(name, "-n", "emojivoto", "rollout", "status", f"deploy/{deployment}", "--timeout=200s",
                  show=not step.reused)
    report.command(f"kubectl --context={name} -n emojivoto get pods -o wide")
    report.output(sh.kc(name, "-n", "emojivoto", "get", "pods", "-o", "wide", show=False))
    proxy = f"http://{ClusterNetwork(cdir.load().index).proxy_ip}:{HTTP_PROXY_PORT}"
    report.command(f"curl -x {proxy} http://web-svc.emojivoto/api/leaderboard")
    report.output(sh.run(["curl", "-sS", "-m", "5", "-x", proxy, "http://web-svc.emojivoto/api/leaderboard"],
                         shown="curl", show=False, check=False))
    bot = (sh.probe(name, "-n", "emojivoto", "get", "pods", "-l", "app=vote-bot", "-o",
                    "jsonpath={.items[0].status.podIP}") or "").strip()
    if bot:
        url = f"http://{bot}:4191/tap?namespace=emojivoto&resource=deploy/vote-bot"
        report.command(f"curl -N '{url}'")
        lines = tap_lines(["curl", "-sS", "-N", "--noproxy", "*", url], sh.env, needle="tls=", count=TAP_LINES,
                          timeout=TAP_WAIT)
        report.output("\n".join(lines) or "(no requests within 30 s)")
    report.line(f"\nThe cluster keeps running. `export KUBECONFIG={kc_path}` and use kubectl; "
                f"`isthmus cluster stop {name}` stops it, `isthmus cluster delete {name}` removes it.")
