"""The embedded cluster's service proxy: Services reachable by cluster IP and by name.

`ServiceProxy` is what kube-proxy and cluster DNS are to a real cluster, for
pods that run as local processes on loopback addresses: TCP listeners on the
cluster IPs (`tcp`) and one unprivileged HTTP/1.1 forward proxy per cluster
(`http`), both fed by `ServiceProxy.update` (`proxy`). The decisions (what to
listen on, what a name means, which backend is next) live in
`isthmus.core.servicemap`.
"""

from __future__ import annotations

from .proxy import PodNamespace, ServiceProxy, ServiceProxyError

__all__ = ["PodNamespace", "ServiceProxy", "ServiceProxyError"]
