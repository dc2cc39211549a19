"""The multicluster service mirror: one per Link, mirroring a remote cluster's exported Services.

- `ServiceMirror` (controller): leader election, the Link and its credentials, the Link's status;
- `ClusterMirror` (cluster): informers on both clusters, the work queue, writes;
- `RemoteCluster` (remote): the remote API through the Link's kubeconfig, and whether it answers;
- `GatewayProber` (gateway): the gateway's addresses and liveness, probed over mTLS (`MtlsProbe`)
  with the mirror's own certificate (`MirrorIdentity`, identity);
- `LeaderElector` (lease), `MirrorMetrics` (metrics), `run` (run): the process around them.

Decisions are `isthmus.core.mirror`'s; the Link CRD is `isthmus.resources.multicluster`'s.
"""

from isthmus.components.mirror.cluster import ClusterMirror
from isthmus.components.mirror.controller import ServiceMirror
from isthmus.components.mirror.gateway import GatewayProber, MtlsProbe, StaticCredentials
from isthmus.components.mirror.identity import MirrorIdentity
from isthmus.components.mirror.informer import Link, WatchedInformer
from isthmus.components.mirror.lease import LeaderElector
from isthmus.components.mirror.metrics import MirrorMetrics
from isthmus.components.mirror.remote import CredentialsError, RemoteCluster, client_from_kubeconfig
from isthmus.components.mirror.run import AdminServer, run

__all__ = [
    "AdminServer",
    "ClusterMirror",
    "CredentialsError",
    "GatewayProber",
    "LeaderElector",
    "Link",
    "MirrorIdentity",
    "MirrorMetrics",
    "MtlsProbe",
    "RemoteCluster",
    "ServiceMirror",
    "StaticCredentials",
    "WatchedInformer",
    "client_from_kubeconfig",
    "run",
]
