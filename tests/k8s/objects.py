"""Manifests the k8s tests create, built by name instead of spelled out in every test."""

from __future__ import annotations

from typing import Any


def pod(
    name: str,
    namespace: str,
    image: str,
    *,
    command: list[str] | None = None,
    env: dict[str, str] | None = None,
    deadline: int | None = None,
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "main", "image": image}
    if command:
        container["command"] = command
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def postgres_pod(name: str, namespace: str, password: str, database: str | None = None) -> dict[str, Any]:
    env = {"POSTGRES_PASSWORD": password} | ({"POSTGRES_DB": database} if database else {})
    return pod(name, namespace, "postgres:15", env=env)


def job(name: str, namespace: str, command: list[str], *, env: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A Job of our image that runs ``command`` once."""
    template = pod(name, namespace, "ghcr.io/example/optischema:dev", command=command)
    if env:
        template["spec"]["containers"][0]["env"] = env
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"backoffLimit": 0, "template": {"spec": template["spec"]}},
    }
