"""The only Kubernetes client: Secrets, our custom resources, status patches (and, later, Jobs and sandbox pods)."""
