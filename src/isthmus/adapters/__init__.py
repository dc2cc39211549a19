"""Layer 3, I/O adapters: the store, TLS material, kubeconfig files, the Kubernetes client."""
