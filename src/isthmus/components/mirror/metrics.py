"""The service mirror's metrics, in the Prometheus text format (0.0.4).

Linkerd's names for the gateway probes, every series labelled
`target_cluster` (the Link's targetClusterName):

- `gateway_alive` (gauge): 1 while the gateway passes its probes, 0 after
  `failureThreshold` consecutive failures;
- `gateway_latency` (gauge, milliseconds): the latency of the last
  successful probe;
- `gateway_probe_latency_ms` (histogram): every successful probe's latency;
- `gateway_probes{probe_successful="true|false"}` (counter): probes made;

and the mirror's own:

- `service_mirror_mirrored_services` (gauge): exported remote services mirrored;
- `service_mirror_remote_reachable` (gauge): 1 while the remote API answers;
- `service_mirror_is_leader` (gauge): 1 while this replica holds the Lease;
- `service_mirror_writes_total{verb,kind}` (counter): writes to the local API.
"""

from __future__ import annotations

import math
from collections import defaultdict

LATENCY_BUCKETS_MS = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0)


def _num(v: float) -> str:
    if v == math.inf:
        return "+Inf"
    return str(int(v)) if float(v).is_integer() else repr(float(v))


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**pairs: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in pairs.items()) + "}"


class MirrorMetrics:
    """The numbers of one service mirror (one target cluster). Plain attributes; rendered on scrape."""

    def __init__(self, target_cluster: str = "") -> None:
        self.target_cluster = target_cluster
        self.gateway_alive = 1.0
        self.gateway_latency_ms = 0.0
        self.probes = {"true": 0, "false": 0}
        self._bucket_counts = [0] * (len(LATENCY_BUCKETS_MS) + 1)
        self._latency_sum = 0.0
        self.mirrored_services = 0
        self.remote_reachable = 0.0
        self.is_leader = 0.0
        self.writes: dict[tuple[str, str], int] = defaultdict(int)

    def probe(self, success: bool, latency_ms: float | None) -> None:
        self.probes["true" if success else "false"] += 1
        if success and latency_ms is not None:
            self.gateway_latency_ms = latency_ms
            self._latency_sum += latency_ms
            for i, bound in enumerate((*LATENCY_BUCKETS_MS, math.inf)):
                if latency_ms <= bound:
                    self._bucket_counts[i] += 1
                    break

    def render(self) -> str:
        tc = self.target_cluster
        lines = [
            "# HELP gateway_alive Whether the target cluster's gateway passes its probes.",
            "# TYPE gateway_alive gauge",
            f"gateway_alive{_labels(target_cluster=tc)} {_num(self.gateway_alive)}",
            "# HELP gateway_latency The latency of the last successful gateway probe, in milliseconds.",
            "# TYPE gateway_latency gauge",
            f"gateway_latency{_labels(target_cluster=tc)} {_num(self.gateway_latency_ms)}",
            "# HELP gateway_probe_latency_ms Latencies of successful gateway probes, in milliseconds.",
            "# TYPE gateway_probe_latency_ms histogram",
        ]
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS_MS, math.inf), self._bucket_counts, strict=True):
            cumulative += count
            lines.append(f"gateway_probe_latency_ms_bucket{_labels(target_cluster=tc, le=_num(bound))} "
                         f"{cumulative}")
        lines += [
            f"gateway_probe_latency_ms_sum{_labels(target_cluster=tc)} {_num(self._latency_sum)}",
            f"gateway_probe_latency_ms_count{_labels(target_cluster=tc)} {cumulative}",
            "# HELP gateway_probes Gateway probes made, by whether they succeeded.",
            "# TYPE gateway_probes counter",
        ]
        for ok, n in self.probes.items():
            lines.append(f"gateway_probes{_labels(target_cluster=tc, probe_successful=ok)} {n}")
        lines += [
            "# HELP service_mirror_mirrored_services Exported remote services mirrored in this cluster.",
            "# TYPE service_mirror_mirrored_services gauge",
            f"service_mirror_mirrored_services{_labels(target_cluster=tc)} {self.mirrored_services}",
            "# HELP service_mirror_remote_reachable Whether the remote cluster's API answers.",
            "# TYPE service_mirror_remote_reachable gauge",
            f"service_mirror_remote_reachable{_labels(target_cluster=tc)} {_num(self.remote_reachable)}",
            "# HELP service_mirror_is_leader Whether this replica holds the service mirror's Lease.",
            "# TYPE service_mirror_is_leader gauge",
            f"service_mirror_is_leader{_labels(target_cluster=tc)} {_num(self.is_leader)}",
            "# HELP service_mirror_writes_total Writes to the local cluster's API.",
            "# TYPE service_mirror_writes_total counter",
        ]
        for (verb, kind), n in sorted(self.writes.items()):
            lines.append(f"service_mirror_writes_total{_labels(target_cluster=tc, verb=verb, kind=kind)} {n}")
        return "\n".join(lines) + "\n"

    def __repr__(self) -> str:
        return (f"<MirrorMetrics {self.target_cluster or '?'} alive={int(self.gateway_alive)} "
                f"probes={self.probes} mirrored={self.mirrored_services}>")
