"""Controllers of the embedded cluster (they use the cluster API through lightkube)."""
