"""How far a sandbox's speed-up can be trusted against production, said in one place for the status, the CLI and the
report. Pure.

A ``sample`` sandbox holds ``samplePercent`` of each table's rows (10 % by default). What that does to a speed-up
depends on how each side of the comparison grows with the table:

- *Before* an index, the statements it is for scan the table (a sequential scan, or a sort of everything that
  matched): their time grows with the rows, so the sandbox's "before" is about ``fraction`` of production's.
- *After*, an index descent costs about the same at any size (its depth grows with the logarithm of the rows), plus
  the rows it returns. For a lookup that returns a few rows, the sandbox's "after" is about production's.

So the sample's speed-up of a scan-replacing index understates production's by up to ``1 / fraction`` (tenfold for a
10 % sample): the sandbox figure is a **lower bound**. A statement whose matched rows grow with the table as well (a
range whose share of rows the sample keeps) grows on both sides, and its speed-up is about the same at any size, still
not more than the sandbox shows. Scaling the figure itself is not sound in general (the planner may choose another
plan at the real size, caches hold a sample and not the table): the CLI and the report show the sandbox figure as a
lower bound, the scan-bound estimate ``speedup / fraction`` beside it, and, once applied, production's own speed-up
from verification, so that people learn from their own changes how far the sandbox is to be trusted
(``bench/run.py sandbox`` measures the sample-versus-full ratio on the shop workload).

A ``full`` copy measures at the real size; ``synthetic`` data has the table's row count but not its distribution:
neither is scaled, neither is called a bound.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any


def sample_fraction(data_mode: str | None, sample_percent: float | None) -> float | None:
    """Share of each table's rows the sandbox held, when it held a sample; ``None`` otherwise."""
    if data_mode != "sample" or not sample_percent or not 0 < sample_percent < 100:
        return None
    return sample_percent / 100.0


def is_lower_bound(data_mode: str | None, speedup: float | None) -> bool:
    """A speed-up measured on a sample (of whatever size) is a lower bound of production's (see the module's
    docstring); a slowdown on a sample is not a bound of anything and is shown as measured."""
    return data_mode == "sample" and speedup is not None and speedup >= 1.0


def scan_bound_estimate(speedup: float | None, fraction: float | None) -> float | None:
    """The speed-up at the table's real size if the statements scanned the table before and look up a few rows
    after: ``speedup / fraction``. An estimate for the scan-replacing case, not a promise."""
    if speedup is None or fraction is None or speedup < 1.0:
        return None
    return round(speedup / fraction, 1)


def production_speedup(before_ms: float | None, after_ms: float | None) -> float | None:
    """Production's speed-up from verification: the affected statements' mean before over their mean after."""
    if before_ms is None or after_ms is None or before_ms <= 0 or after_ms <= 0:
        return None
    return round(before_ms / after_ms, 2)


def production_over_sandbox(production: float | None, sandbox: float | None) -> float | None:
    """How many times production's speed-up was the sandbox's (above 1: the sandbox understated it)."""
    if production is None or sandbox is None or sandbox <= 0:
        return None
    return round(production / sandbox, 2)


def describe(benchmark: Mapping[str, Any]) -> str | None:
    """One line on a benchmark's speed-up and how far to trust it (``kubectl optischema show``)."""
    speedup = benchmark.get("speedup")
    if speedup is None:
        return None
    mode, percent = benchmark.get("dataMode"), benchmark.get("samplePercent")
    if mode != "sample":
        return f"{speedup:g}× measured on {mode or 'unknown'} data at the table's size"
    sample = f"a {percent:g} % sample" if percent else "a sample"
    if not is_lower_bound(mode, speedup):
        return f"{speedup:g}× measured on {sample} (slower there; production may differ either way)"
    estimate = scan_bound_estimate(speedup, sample_fraction(mode, percent))
    scanned = (
        f"; a statement that scanned the whole table before gains about {estimate:g}× at its real size"
        if (estimate is not None)
        else ""
    )
    return f"at least {speedup:g}× (measured on {sample}: a lower bound{scanned})"


def trust(pairs: Iterable[tuple[float | None, float | None]]) -> tuple[int, float | None, float | None, float | None]:
    """Over (sandbox, production) speed-ups of applied changes: how many had both, and the smallest, median and
    largest production-over-sandbox ratio."""
    ratios = sorted(r for s, p in pairs if (r := production_over_sandbox(p, s)) is not None)
    if not ratios:
        return 0, None, None, None
    return len(ratios), ratios[0], round(statistics.median(ratios), 2), ratios[-1]
