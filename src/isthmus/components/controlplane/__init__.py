"""The control plane's own pods: what `isthmus identity` and `isthmus destination` run.

Each reads its settings from the environment the install manifests give it
(`env.Env`, names in `isthmus.resources.manifests`), reaches the cluster API
with the pod's service account (`isthmus.adapters.incluster`) and runs the
component of the same name until SIGTERM. The proxy injector's pod is in
`isthmus.components.injector`.
"""

from isthmus.components.controlplane.destination import DestinationPodConfig, run_destination
from isthmus.components.controlplane.env import ControlPlaneConfigError, Env, log_level
from isthmus.components.controlplane.identity import IdentityPodConfig, run_identity

__all__ = [
    "ControlPlaneConfigError",
    "DestinationPodConfig",
    "Env",
    "IdentityPodConfig",
    "log_level",
    "run_destination",
    "run_identity",
]
