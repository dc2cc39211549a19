"""The service mirror's parts without a cluster: gateway prober, metrics, credentials, write expectations."""

from __future__ import annotations

import base64

import pytest
import yaml
from lightkube import ApiError
from lightkube.models.meta_v1 import Status

from isthmus.components.mirror.gateway import GatewayProber, resolve_addresses
from isthmus.components.mirror.metrics import MirrorMetrics
from isthmus.components.mirror.remote import CredentialsError, describe_failure, remote_config
from isthmus.core import mirror as core

LINK = core.LinkSpec.from_object({
    "metadata": {"name": "east", "namespace": "isthmus-multicluster"},
    "spec": {"targetClusterName": "east", "gatewayAddress": "gw.east.test,127.9.192.9",
             "gatewayIdentity": "gw", "probeSpec": {"period": "3s", "timeout": "1s", "failureThreshold": 2}}})


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class World:
    """Names, answers and time as a prober sees them, all set by the test."""

    def __init__(self) -> None:
        self.names: dict[str, list[str]] = {"gw.east.test": ["127.9.192.1"]}
        self.up: set[str] = {"127.9.192.1", "127.9.192.9"}
        self.probed: list[str] = []
        self.resolved = 0
        self.clock = Clock()
        self.changes: list[core.Gateway] = []

    async def resolve(self, host: str) -> list[str]:
        self.resolved += 1
        if host in self.names:
            return self.names[host]
        if host.startswith("127."):
            return [host]
        raise OSError(f"{host}: unknown host")

    async def probe(self, address: str, port: int, path: str, timeout: float, identity: str) -> None:
        assert (port, path, timeout, identity) == (4191, "/ready", 1.0, "gw")
        self.probed.append(address)
        self.clock.now += 0.004
        if address not in self.up:
            raise ConnectionRefusedError("connection refused")

    def prober(self, link: core.LinkSpec = LINK, metrics: MirrorMetrics | None = None) -> GatewayProber:
        return GatewayProber(link, metrics=metrics or MirrorMetrics("east"), on_change=self.changes.append,
                             resolver=self.resolve, probe=self.probe, resolve_period=30.0, clock=self.clock)


async def test_addresses_of_every_host_are_resolved_in_order_without_repeats() -> None:
    w = World()
    w.names["b.test"] = ["127.9.192.1", "127.9.192.3"]
    found, failures = await resolve_addresses(["gw.east.test", "b.test", "nowhere.test"], w.resolve)
    assert found == ("127.9.192.1", "127.9.192.3")
    assert failures == ["nowhere.test: nowhere.test: unknown host"]


async def test_the_gateway_is_alive_until_failure_threshold_probes_fail_in_a_row() -> None:
    w = World()
    metrics = MirrorMetrics("east")
    p = w.prober(metrics=metrics)
    await p.resolve()
    assert p.gateway == core.Gateway(("127.9.192.1", "127.9.192.9"), alive=True)
    assert await p.probe_once()
    assert w.probed == ["127.9.192.1"]  # the first answer is enough
    assert metrics.gateway_latency_ms == pytest.approx(4.0)

    w.up.clear()
    assert not await p.probe_once()
    assert p.gateway.alive  # one failure is not enough
    assert not await p.probe_once()
    assert not p.gateway.alive
    assert "failed 2 probes in a row" in p.message and "connection refused" in p.message
    assert w.changes[-1] == core.Gateway(("127.9.192.1", "127.9.192.9"), alive=False)
    assert metrics.gateway_alive == 0
    assert metrics.probes == {"true": 1, "false": 2}

    w.up.add("127.9.192.9")
    assert await p.probe_once()
    assert p.gateway.alive and w.changes[-1].alive
    assert metrics.gateway_alive == 1


async def test_addresses_are_resolved_again_after_a_failure_and_every_resolve_period() -> None:
    w = World()
    p = w.prober(core.LinkSpec.from_object({"metadata": {"name": "east"}, "spec": {
        "targetClusterName": "east", "gatewayAddress": "gw.east.test", "gatewayIdentity": "gw",
        "probeSpec": {"timeout": "1s"}}}))
    await p.resolve()
    assert await p.probe_once()
    assert w.resolved == 1

    # The gateway moves: the failed probe makes the prober look again.
    w.names["gw.east.test"] = ["127.9.192.2"]
    w.up = {"127.9.192.2"}
    assert not await p.probe_once()
    assert p.addresses == ("127.9.192.2",)
    assert w.changes == [core.Gateway(("127.9.192.1",)), core.Gateway(("127.9.192.2",))]
    assert await p.probe_once()

    # A period later, resolved again before probing, even while everything works.
    before = w.resolved
    w.clock.now += 31
    assert await p.probe_once()
    assert w.resolved == before + 1


async def test_addresses_are_kept_while_the_name_does_not_resolve_at_all() -> None:
    w = World()
    link = core.LinkSpec.from_object({"metadata": {"name": "east"}, "spec": {
        "targetClusterName": "east", "gatewayAddress": "gw.east.test", "gatewayIdentity": "gw"}})
    p = w.prober(link)
    await p.resolve()
    del w.names["gw.east.test"]
    await p.resolve()
    assert p.addresses == ("127.9.192.1",)


async def test_without_any_address_there_is_nothing_to_probe_and_probes_fail() -> None:
    w = World()
    link = core.LinkSpec.from_object({"metadata": {"name": "east"}, "spec": {
        "targetClusterName": "east", "gatewayAddress": "nowhere.test", "gatewayIdentity": "gw",
        "probeSpec": {"failureThreshold": 1}}})
    p = w.prober(link)
    assert not await p.probe_once()
    assert p.gateway == core.Gateway((), alive=False)
    assert "no address to probe" in p.message


async def test_a_changed_link_address_is_resolved_before_the_next_probe() -> None:
    w = World()
    p = w.prober()
    await p.resolve()
    changed = core.LinkSpec.from_object({"metadata": {"name": "east"}, "spec": {
        "targetClusterName": "east", "gatewayAddress": "127.9.192.9", "gatewayIdentity": "gw",
        "probeSpec": {"timeout": "1s"}}})
    p.update_link(changed)
    assert await p.probe_once()
    assert p.addresses == ("127.9.192.9",)


def test_metrics_are_labelled_with_the_target_cluster() -> None:
    m = MirrorMetrics("east")
    m.probe(True, 3.5)
    m.probe(False, None)
    m.gateway_alive = 0
    m.writes[("create", "Service")] += 2
    text = m.render()
    assert 'gateway_alive{target_cluster="east"} 0' in text
    assert 'gateway_latency{target_cluster="east"} 3.5' in text
    assert 'gateway_probes{target_cluster="east",probe_successful="true"} 1' in text
    assert 'gateway_probes{target_cluster="east",probe_successful="false"} 1' in text
    assert 'gateway_probe_latency_ms_bucket{target_cluster="east",le="5"} 1' in text
    assert 'gateway_probe_latency_ms_count{target_cluster="east"} 1' in text
    assert 'service_mirror_writes_total{target_cluster="east",verb="create",kind="Service"} 2' in text
    assert "# TYPE gateway_probes counter" in text


def kubeconfig(server: str = "https://127.9.0.1:6443") -> bytes:
    return yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "east",
        "clusters": [{"name": "east", "cluster": {"server": server,
                                                  "certificate-authority-data": base64.b64encode(b"x").decode()}}],
        "users": [{"name": "m", "user": {"token": "t"}}],
        "contexts": [{"name": "east", "context": {"cluster": "east", "user": "m"}}]}).encode()


def test_the_credentials_kubeconfig_is_read_with_its_current_context() -> None:
    config = remote_config(kubeconfig())
    assert config.cluster.server == "https://127.9.0.1:6443"
    assert config.user.token == "t"


@pytest.mark.parametrize("data", [b"", b"[1, 2", b"just text", b"clusters: []\n"])
def test_unusable_credentials_are_refused_with_a_reason(data: bytes) -> None:
    with pytest.raises(CredentialsError) as e:
        remote_config(data, secret="Secret ns/creds")
    assert e.value.reason == "CredentialsInvalid"
    assert "Secret ns/creds" in str(e.value)


def api_error(code: int, message: str) -> ApiError:
    err = ApiError.__new__(ApiError)
    err.status = Status(code=code, message=message)
    return err


@pytest.mark.parametrize(("error", "reason"), [
    (api_error(401, "Unauthorized"), "Unauthorized"),
    (api_error(403, "services is forbidden"), "Forbidden"),
    (api_error(500, "boom"), "Error"),
    (ConnectionRefusedError("refused"), "Unreachable"),
    (ValueError("odd"), "Error"),
])
def test_remote_failures_are_named(error: BaseException, reason: str) -> None:
    got, message = describe_failure(error, "https://127.9.0.1:6443")
    assert got == reason
    assert "https://127.9.0.1:6443" in message


# --------------------------------------------------------------------------- the controller's small parts


def test_what_was_written_is_seen_until_the_watch_shows_it() -> None:
    from isthmus.components.mirror.cluster import _Expectations

    clock = Clock()
    exp = _Expectations(5.0, clock)
    cached = {"metadata": {"name": "a-east", "namespace": "ns", "resourceVersion": "1"}}
    written = {"metadata": {"name": "a-east", "namespace": "ns", "resourceVersion": "2"}}
    exp.wrote("Service", written)
    assert exp.view("Service", "ns", "a-east", cached) is written
    exp.seen("Service", "MODIFIED", cached)  # an older event: still ours
    assert exp.view("Service", "ns", "a-east", cached) is written
    exp.seen("Service", "MODIFIED", written)
    assert exp.view("Service", "ns", "a-east", written) is written
    assert len(exp) == 0

    exp.deleted("Endpoints", "ns", "a-east")
    assert exp.view("Endpoints", "ns", "a-east", cached) is None
    exp.seen("Endpoints", "DELETED", cached)
    assert exp.view("Endpoints", "ns", "a-east", None) is None and len(exp) == 0

    exp.wrote("Service", written)
    clock.now += 6  # never seen (a watch that re-listed past it): the cache wins again
    assert exp.view("Service", "ns", "a-east", cached) is cached


def test_the_kubeconfig_of_the_credentials_secret() -> None:
    from isthmus.components.mirror.controller import _kubeconfig_of

    assert _kubeconfig_of(None) is None
    assert _kubeconfig_of({"data": {"kubeconfig": base64.b64encode(b"k").decode()}}) == b"k"
    assert _kubeconfig_of({"data": {}}) == b""
    assert _kubeconfig_of({"data": {"kubeconfig": "%%%"}}) == b""
