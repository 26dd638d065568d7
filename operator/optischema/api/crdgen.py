"""CustomResourceDefinitions generated from the pydantic models, so the models stay the single source of truth.

Pydantic writes JSON Schema (2020-12); the API server wants a *structural* OpenAPI v3 schema. The conversion is
small and mechanical, done here rather than with a library because none of the pydantic-to-CRD packages is kept up:
inline ``$ref``s, turn ``Optional[X]`` into ``X`` (absence means null in Kubernetes), drop what structural schemas
forbid (``additionalProperties: false`` beside ``properties``, ``title``), and keep the ``x-kubernetes-*``
extensions the models declare (CEL rules, int-or-string, list types).

Run ``python -m optischema.api.crdgen DIR`` (``make crds``) to write ``DIR/<group>_<plural>.yaml``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from .reports import RECORDS
from .resources import CATEGORY, GROUP, RESOURCES, VERSION, ResourceInfo

_DROP = {"title", "examples", "$defs", "discriminator"}
#: The fields every object has, described by the API server rather than by our models.
_ENVELOPE = {"api_version", "kind", "metadata"}
#: Every kind we define a CRD for: those the operator reconciles, and the records it only writes.
KINDS: tuple[ResourceInfo, ...] = RESOURCES + RECORDS


def crd_for(info: ResourceInfo) -> dict[str, Any]:
    """The CRD of one resource kind, as a plain dict ready to dump as YAML."""
    properties: dict[str, Any] = {
        "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this object."},
        "kind": {"type": "string", "description": "Kind is the REST resource this object represents."},
        "metadata": {"type": "object"},
    }
    required = []
    for name, declared in info.model.model_fields.items():  # spec and status, or a record's own field
        if name in _ENVELOPE:
            continue
        wire = declared.alias or name
        properties[wire] = _model_schema(_annotation(declared.annotation))
        if declared.is_required():
            required.append(wire)
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": info.crd_name, "labels": {"app.kubernetes.io/part-of": "optischema"}},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": info.kind,
                "listKind": f"{info.kind}List",
                "plural": info.plural,
                "singular": info.singular,
                "shortNames": list(info.short_names),
                "categories": [CATEGORY],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    **({"subresources": {"status": {}}} if info.status else {}),
                    "additionalPrinterColumns": [column.to_crd() for column in info.columns],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": _text(info.model.__doc__ or info.kind),
                            "properties": properties,
                            "required": required,
                        }
                    },
                }
            ],
        },
    }


def _annotation(annotation: Any) -> type[BaseModel]:
    """The model inside ``Model`` or ``Model | None``."""
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    raise TypeError(f"{annotation!r} is not a model")


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    converted: dict[str, Any] = _convert(schema, schema.get("$defs", {}))
    return converted


def _convert(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_convert(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    while True:
        resolved = _unwrap_optional(_inline_ref(node, defs))
        if resolved == node:
            break
        node = resolved
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "description":
            out[key] = _text(value)
        elif key in ("properties", "patternProperties"):
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _convert(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key == "exclusiveMinimum" and not isinstance(value, bool):
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum" and not isinstance(value, bool):
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key in ("x-kubernetes-validations", "x-kubernetes-list-map-keys", "enum", "required", "default"):
            out[key] = value
        else:
            out[key] = _convert(value, defs)
    if out.get("x-kubernetes-int-or-string"):
        # The only anyOf a structural schema allows here, and no type beside it.
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in out:
        out["type"] = "object"
    return out


def _inline_ref(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "$ref" not in node:
        return node
    target = defs[node["$ref"].rsplit("/", 1)[-1]]
    merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return _inline_ref(merged, defs)


def _unwrap_optional(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [X, {type: null}]`` → ``X`` with the outer keys (description, default) kept."""
    variants = node.get("anyOf")
    if not variants:
        return node
    non_null = [v for v in variants if v != {"type": "null"}]
    if len(non_null) == len(variants):
        return node
    rest = {k: v for k, v in node.items() if k != "anyOf"}
    if len(non_null) == 1:
        return {**non_null[0], **rest}
    return {**rest, "anyOf": non_null}


def _text(doc: str) -> str:
    """A docstring as a CRD description: reST double backticks become single ones, paragraphs one line."""
    lines = [line.strip() for line in doc.strip().splitlines()]
    return " ".join(line for line in lines if line).replace("``", "`")


class _PlainDumper(yaml.SafeDumper):
    """Writes a value shared by two places (one ``required`` list, say) out twice: never an anchor (``&id001``) and
    an alias (``*id001``), which kubectl reads but many GitOps tools, policy engines and reviewers do not."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def render(info: ResourceInfo) -> str:
    """The CRD as YAML text, exactly as ``make crds`` writes it."""
    header = "# Generated by `make crds` from operator/optischema/api; do not edit.\n"
    return header + yaml.dump(crd_for(info), Dumper=_PlainDumper, sort_keys=False, width=120, allow_unicode=True)


def file_name(info: ResourceInfo) -> str:
    """``<group>_<plural>.yaml``, the name controller-gen would give it."""
    return f"{GROUP}_{info.plural}.yaml"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out = Path(args[0] if args else "crds")
    out.mkdir(parents=True, exist_ok=True)
    for info in KINDS:
        (out / file_name(info)).write_text(render(info))
        print(f"wrote {out / file_name(info)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
