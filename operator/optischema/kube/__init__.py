"""The only Kubernetes client: Jobs, sandbox pods, status patches and Events."""
