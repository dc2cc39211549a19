"""Layer 4, components: the API server and (later) the pod runner and mesh components."""
