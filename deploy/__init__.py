"""The stack sfops operates: nginx config, API service, manifests, and the local lab."""
