"""Layer 2, resources: typed resource descriptions, schemas, validation of manifests."""
