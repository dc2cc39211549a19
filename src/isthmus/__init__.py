"""isthmus: a multi-cluster, multi-region service mesh with an embedded Kubernetes-compatible cluster."""

__version__ = "0.1.0"
