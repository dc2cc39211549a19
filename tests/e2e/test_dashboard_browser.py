"""`isthmus viz dashboard` in a real browser, on two embedded clusters with emojivoto running.

The two regions are the `walkthrough` session fixture's (tests/e2e/walkthrough.py:
the README's tutorial, then `isthmus demo --detach`): west and east, linked,
web-svc exported from east, west's vote-bot calling web-svc-east through
east's gateway, viz on both. The dashboard is the real command, in its own
process; the browser is Debian's Chromium, headless, driven by Playwright
(no browser download). The test asserts on what a person sees, and saves a
screenshot under the test's tmp dir (and as docs/dashboard.png with
ISTHMUS_SAVE_SCREENSHOT=1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

playwright_sync = pytest.importorskip("playwright.sync_api")

pytestmark = pytest.mark.e2e

ISTHMUS = str(Path(sys.executable).parent / "isthmus")
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "dashboard.png"
GATEWAY_ID = "isthmus-gateway.isthmus-multicluster.serviceaccount.identity.isthmus.cluster.local"
# metrics need a few scrapes (10 s apart) and a failed doughnut vote; the demo may have just started
SETTLE = 240.0

T = TypeVar("T")


@dataclass
class Dashboard:
    proc: subprocess.Popen[str] | None
    url: str

    def get(self, path: str) -> tuple[int, Any]:
        try:
            with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())


@pytest.fixture
def dashboard(walkthrough: Any) -> Iterator[Callable[[str], Dashboard]]:
    procs: list[subprocess.Popen[str]] = []

    def start(context: str) -> Dashboard:
        proc = subprocess.Popen([ISTHMUS, "viz", "dashboard", "--context", context, "--port", "0",
                                 "--show-url-only"], env=walkthrough.env(), text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        procs.append(proc)
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        if not url.startswith("http://127.0.0.1:"):
            proc.kill()
            raise AssertionError(f"isthmus viz dashboard printed {url!r}: {proc.communicate()[1]}")
        return Dashboard(proc, url)

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = SETTLE) -> T:
    """`probe()` once it is not None, polled every second; fails naming `what` and the last answer."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            value = probe()
        except Exception as e:  # the page redraws under us: try again
            value, last = None, e
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen in {timeout:.0f} s (last: {last!r})")
        time.sleep(1.0)


def percent(text: str) -> float | None:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)%", text.strip())
    return float(m.group(1)) if m else None


def test_the_dashboard_shows_both_regions_in_a_browser(dashboard: Callable[[str], Dashboard],
                                                        tmp_path: Path) -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (bash scripts/install-system-deps)")
    west = dashboard("west")
    expect = playwright_sync.expect
    expect.set_options(timeout=SETTLE * 1000)
    with playwright_sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1600})
            page.set_default_timeout(60_000)
            requests: list[str] = []
            page.on("request", lambda r: requests.append(r.url))
            page.goto(west.url)
            expect(page.get_by_test_id("cluster-west")).to_have_attribute("aria-pressed", "true")
            page.get_by_test_id("window").select_option("10m")  # doughnut votes are rare: a wide window

            # the multi-cluster view: east's gateway alive, the cross-cluster edge secured, both identities
            link = page.get_by_test_id("link-east")
            expect(link.get_by_test_id("gateway-status")).to_have_text("gateway alive")
            expect(link.get_by_test_id("mirrored-emojivoto-web-svc-east")).to_contain_text("ready")
            edge = link.get_by_test_id("mc-edge-vote-bot-web-svc-east")
            expect(edge).to_have_attribute("data-secured", "true")
            expect(edge.get_by_test_id("secured")).to_have_text("secured")
            expect(edge.get_by_test_id("client-id")).to_have_text(
                re.compile(r"^[a-z0-9-]+\.emojivoto\.serviceaccount\.identity\.isthmus\.cluster\.local$"))
            expect(edge.get_by_test_id("server-id")).to_have_text(GATEWAY_ID)
            latency = link.get_by_test_id("gateway-latency").inner_text()
            assert re.fullmatch(r"\d+(\.\d+)? ms", latency), latency

            # vote-bot: what it saw as a client of web-svc-east, below 100% (votes for :doughnut: fail)
            page.get_by_test_id("deploy-row-emojivoto-vote-bot").click()
            expect(page.get_by_test_id("detail-name")).to_have_text("emojivoto/vote-bot")
            out = page.get_by_test_id("outbound").get_by_test_id("out-row-web-svc-east").get_by_test_id("success")

            def below_100() -> float | None:
                value = percent(out.inner_text())
                return value if value is not None and value < 100 else None

            success = wait_for("vote-bot's success rate to web-svc-east below 100%", below_100)
            assert 0 < success < 100

            # live calls from tap: vote-bot's requests leave for east over mTLS
            call = page.get_by_test_id("call-row").filter(has_text="web-svc-east @ east").first
            expect(call.get_by_test_id("call-tls")).to_have_text("mTLS")
            expect(call).to_have_attribute("data-dir", "out")
            expect(page.get_by_test_id("error-banner")).to_be_hidden()
            shot = tmp_path / "dashboard-west.png"
            page.screenshot(path=str(shot), full_page=True)
            if os.environ.get("ISTHMUS_SAVE_SCREENSHOT") == "1":
                shutil.copyfile(shot, DOCS_SCREENSHOT)

            # the switcher: east, its own deployments; web answers below 100% there too
            page.get_by_test_id("cluster-east").click()
            expect(page.get_by_test_id("cluster-east")).to_have_attribute("aria-pressed", "true")
            expect(page.get_by_test_id("no-links")).to_have_text(
                "cluster east has no Links: it mirrors no other cluster's services")
            expect(page.get_by_test_id("deploy-row-emojivoto-web").get_by_test_id("success")).to_have_text(
                re.compile(r"^\d+\.\d\d%$"))
            page.screenshot(path=str(tmp_path / "dashboard-east.png"), full_page=True)
            assert requests and all(r.startswith(west.url) for r in requests), [
                r for r in requests if not r.startswith(west.url)]
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000


def test_a_cluster_that_is_not_linked_is_refused_by_name(dashboard: Callable[[str], Dashboard],
                                                         walkthrough: Any) -> None:
    # the dashboards `isthmus demo` left running know both clusters
    for cluster, url in walkthrough.dashboards.items():
        status, body = Dashboard(None, url).get("/api/clusters")
        assert (status, body["current"]) == (200, cluster)
    west = dashboard("west")
    status, body = west.get("/api/clusters")
    assert status == 200
    assert [(c["name"], c["local"], c["error"]) for c in body["clusters"]] == [("west", True, None),
                                                                               ("east", False, None)]
    status, body = west.get("/api/clusters/north/api/stat?resource=deploy&namespace=emojivoto")
    assert (status, body) == (404, {"error": "cluster 'north' is neither this cluster nor linked to it; "
                                             "known clusters: west, east"})
    # east links to nobody: from its dashboard, west is not a cluster it knows
    east = dashboard("east")
    status, body = east.get("/api/clusters/west/api/stat?resource=deploy&namespace=emojivoto")
    assert (status, body) == (404, {"error": "cluster 'west' is neither this cluster nor linked to it; "
                                             "known clusters: east"})
    status, body = east.get("/api/clusters/east/api/stat?resource=deploy&namespace=emojivoto")
    assert status == 200
    assert {r["name"] for r in body["rows"]} >= {"web", "emoji", "voting"}
