"""The proxy injector: the mutating admission webhook that meshes pods (`isthmus proxy-injector`).

- `server.InjectorServer` answers AdmissionReview v1 over HTTPS with the
  JSON patch of `isthmus.core.inject`, looking up namespaces and the
  control plane's Service addresses through the cluster API;
- `pod.run_injector` runs it in the control plane's pod, configured from
  the environment the install manifests set.
"""

from isthmus.components.injector.pod import InjectorPodConfig, run_injector
from isthmus.components.injector.server import (
    InjectorServer,
    InjectorSettings,
    LookupFailed,
    kube_lookups,
    kube_tls_source,
    server_tls_context,
)

__all__ = [
    "InjectorPodConfig",
    "InjectorServer",
    "InjectorSettings",
    "LookupFailed",
    "kube_lookups",
    "kube_tls_source",
    "run_injector",
    "server_tls_context",
]
