"""Kubernetes resource quantities (``1Gi``, ``500M``, ``250m``, ``1e3``).

Written here rather than imported: ``kubernetes.utils.parse_quantity`` does the same, but importing it loads the
whole generated client (about a second) into a layer that must stay pure and light. The grammar is the API
server's (``k8s.io/apimachinery/pkg/api/resource``), minus nothing we accept.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?[0-9]+)?$")


def parse_quantity(value: str | int | float) -> Decimal:
    """The quantity's value in base units (bytes for memory, cores for CPU).

    Raises ``ValueError`` with a message that says what a quantity looks like.
    """
    if isinstance(value, bool):
        raise ValueError("must be a quantity such as 512Mi or 1Gi, not a boolean")
    if isinstance(value, int | float):
        return Decimal(str(value))
    match = _QUANTITY.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a quantity: use a number with an optional suffix such as Mi, Gi, M, G")
    number, suffix = match.groups()
    try:
        base = Decimal(number)
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} is not a quantity: {number!r} is not a number") from exc
    if not suffix:
        return base
    if suffix in _BINARY:
        return base * _BINARY[suffix]
    if suffix in _DECIMAL:
        return base * _DECIMAL[suffix]
    return base * Decimal(10) ** int(suffix[1:])


def quantity_bytes(value: str | int) -> int:
    """A quantity as a whole number of bytes (rounded up, as the API server does)."""
    exact = parse_quantity(value)
    return int(exact.to_integral_value(rounding="ROUND_CEILING"))
