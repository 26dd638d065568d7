"""A :class:`Report` as Markdown (for a pull request or a wiki), one self-contained HTML file (inline CSS and SVG,
no script, no network) or JSON. Templates live beside this module; Jinja2 escapes everything in the HTML one."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Literal

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markupsafe import Markup

from . import charts
from .model import Report

Format = Literal["md", "html", "json"]
FORMATS: tuple[Format, ...] = ("md", "html", "json")


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("optischema.reports", "templates"),
        autoescape=select_autoescape(["html.j2"]),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters |= {
        "ms": lambda v: "–" if v is None else charts.milliseconds(v),
        "seconds": lambda v: "–" if v is None else charts.seconds(v),
        "size": lambda v: "–" if v is None else charts.size(v),
        "percent": lambda v: "–" if v is None else f"{v:+.1f} %",
        "speedup": lambda v: "–" if v is None else f"{v:.1f}×",
        "when": lambda v: "–" if v is None else v.strftime("%Y-%m-%d %H:%M UTC"),
        "spark": charts.sparkline,
        "cell": lambda v: str(v).replace("|", "\\|").replace("\n", " "),
    }
    return env


ENVIRONMENT = _environment()


def _charts(report: Report) -> dict[str, Markup]:
    marks = [(c.applied_at, c.name) for c in report.applied if c.applied_at is not None]
    return {
        "statements": Markup(
            charts.paired_bars(
                "Top statements: mean time, first vs last interval of the period",
                [(s.label, s.first_mean_ms, s.last_mean_ms) for s in report.top_statements],
            )
        ),
        "changes": Markup(
            charts.paired_bars(
                "Applied changes: affected statements' mean time in production, before vs after",
                [(c.subject[:24], c.production_before_ms, c.production_after_ms) for c in report.applied],
            )
        ),
        "saved": Markup(
            charts.line(
                "Cumulative time saved",
                [(p.at, p.value) for p in report.time_saved_series],
                charts.seconds,
                marks=marks,
            )
        ),
        "storage": Markup(
            charts.line(
                "Index storage of the database",
                [(p.at, p.value) for p in report.storage_series],
                charts.size,
                step=True,
                marks=marks,
            )
        ),
    }


def render(report: Report, fmt: Format) -> str:
    if fmt == "json":
        return json.dumps(report.model_dump(mode="json", by_alias=True), indent=2) + "\n"
    if fmt == "html":
        return ENVIRONMENT.get_template("report.html.j2").render(r=report, charts=_charts(report))
    if fmt == "md":
        return ENVIRONMENT.get_template("report.md.j2").render(r=report)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def default_name(report: Report, fmt: Format, now: datetime) -> str:
    return f"optischema-report-{report.namespace}-{report.target}-{now.strftime('%Y%m%d-%H%M')}.{fmt}"
