"""The GitOps health checks as Argo CD and Flux run them: the Lua scripts through lupa (Lua 5.4), the Flux CEL
expressions through cel-python. One answer per object: Healthy, Progressing or Degraded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import celpy
import lupa
import yaml

GITOPS = Path(__file__).resolve().parents[1] / "charts" / "optischema" / "gitops"
FILES = {
    "PostgresTarget": "health-postgrestarget.lua",
    "TuningRecommendation": "health-tuningrecommendation.lua",
    "IndexChange": "health-indexchange.lua",
}


def argocd(obj: dict[str, Any]) -> str:
    """Argo CD passes the object as the global ``obj`` (JSON decoded into Lua tables) and reads ``status``."""
    runtime = lupa.LuaRuntime(unpack_returned_tuples=True)
    runtime.globals().obj = _lua(runtime, json.loads(json.dumps(obj)))
    result = runtime.execute((GITOPS / FILES[obj["kind"]]).read_text())
    return str(result["status"])


def _lua(runtime: Any, value: Any) -> Any:
    if isinstance(value, dict):
        return runtime.table_from({k: _lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([_lua(runtime, v) for v in value])
    return value


def flux(obj: dict[str, Any]) -> str:
    """Flux's rule (RFC-0009, kustomize-controller): a ``status.observedGeneration`` other than
    ``metadata.generation`` is in progress; else ``inProgress``, ``failed``, ``current`` in that order, the first
    true one wins; else in progress."""
    status, metadata = obj.get("status") or {}, obj.get("metadata") or {}
    if "observedGeneration" in status and status["observedGeneration"] != metadata.get("generation"):
        return "Progressing"
    return flux_expressions(obj)


def flux_expressions(obj: dict[str, Any]) -> str:
    """The expressions alone, without Flux's own generation rule (what another CEL evaluator would make of them)."""
    rules = yaml.safe_load((GITOPS / "flux-kustomization.yaml").read_text())["healthCheckExprs"]
    rule = next(r for r in rules if r["kind"] == obj["kind"])
    environment = celpy.Environment()
    activation = {key: celpy.json_to_cel(value) for key, value in obj.items()}
    activation.setdefault("status", celpy.json_to_cel({}))
    for verdict, key in (("Progressing", "inProgress"), ("Degraded", "failed"), ("Healthy", "current")):
        if key not in rule:
            continue
        program = environment.program(environment.compile(rule[key]))
        if bool(program.evaluate(activation)):
            return verdict
    return "Progressing"
