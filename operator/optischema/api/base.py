"""The base every API model derives from, and the small value types the CRDs share.

One configuration for all models keeps the wire format uniform: camelCase on the wire, snake_case in Python,
unknown fields rejected (a typo in a spec must fail loudly, not be silently ignored), and each attribute's
docstring becomes the field's ``description`` in the generated CRD, which is what ``kubectl explain`` shows.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict

from .quantity import parse_quantity

#: Kubernetes object names (RFC 1123 subdomain), as the API server checks them.
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
#: Keys inside a Secret's ``data``.
SECRET_KEY = r"^[-._a-zA-Z0-9]+$"


class ApiModel(BaseModel):
    """Base of every spec and status model."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_assignment=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The object as the API server stores it: camelCase keys, unset optional fields left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def cel_rules(*rules: tuple[str, str]) -> ConfigDict:
    """A model configuration adding CEL rules, as ``(rule, message)`` pairs, to the model's CRD schema.

    A rule belongs here when the API server must enforce it for every client, kubectl included; the same rule is
    also written as a pydantic validator so that the CLI and tests reject the object before it reaches a server.
    """
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": [{"rule": r, "message": m} for r, m in rules]})


def immutable(why: str) -> JsonDict:
    """Field schema extras making a field immutable after creation (a CEL transition rule), saying ``why``."""
    return {"x-kubernetes-validations": [{"rule": "self == oldSelf", "message": f"is immutable: {why}"}]}


def _k8s_name(value: str) -> str:
    if len(value) > 253:
        raise ValueError("must be at most 253 characters")
    if not re.match(DNS_SUBDOMAIN, value):
        raise ValueError("must be a lowercase RFC 1123 name (a-z, 0-9, '-', '.'; start and end alphanumeric)")
    return value


def _secret_key(value: str) -> str:
    if not re.match(SECRET_KEY, value):
        raise ValueError("must be a Secret key: letters, digits, '-', '_' or '.'")
    return value


def _quantity(value: str | int) -> str | int:
    parse_quantity(value)  # raises ValueError with a message naming the rule
    return value


def _non_negative_quantity(value: str | int) -> str | int:
    if parse_quantity(value) < 0:
        raise ValueError("must not be negative")
    return value


#: A Kubernetes object name.
K8sName = Annotated[
    str,
    AfterValidator(_k8s_name),
    Field(min_length=1, json_schema_extra={"maxLength": 253, "pattern": DNS_SUBDOMAIN}),
]
#: A key in a Secret.
SecretKey = Annotated[str, AfterValidator(_secret_key), Field(min_length=1, json_schema_extra={"pattern": SECRET_KEY})]
#: A Kubernetes resource quantity (``512Mi``, ``1G``, ``250m``, or a plain number), never negative.
Quantity = Annotated[
    str | int,
    AfterValidator(_quantity),
    AfterValidator(_non_negative_quantity),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True}),
]


class LocalObjectReference(ApiModel):
    """A reference to an object in the same namespace."""

    name: K8sName
    """Name of the referenced object, in the namespace of the referring one."""


class SecretKeySelector(ApiModel):
    """A key of a Secret in the same namespace."""

    name: K8sName
    """Name of the Secret, in the namespace of the resource that refers to it."""
    key: SecretKey
    """Key inside the Secret's data."""


class ResourceRequirements(ApiModel):
    """CPU and memory for a Pod the operator starts, with the meaning of a container's ``resources``."""

    requests: dict[str, Quantity] = Field(default_factory=dict)
    """Minimum resources reserved, e.g. ``{cpu: 250m, memory: 256Mi}``."""
    limits: dict[str, Quantity] = Field(default_factory=dict)
    """Maximum resources allowed, e.g. ``{cpu: "1", memory: 1Gi}``."""
