"""Charts as inline SVG: static, script-free, readable in any browser without a network.

Hand-written rather than from a chart library: the three shapes a report needs (paired bars, a line over time, a
step line) are a few dozen lines each, whereas matplotlib would add ~40 MB (with numpy) to the operator's image and
pygal's interactive output loads its JavaScript from a CDN. Every text is escaped; numbers are formatted here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from xml.sax.saxutils import escape

BEFORE, AFTER, LINE, GRID, INK = "#9aa5b1", "#1f9d55", "#2f6fde", "#e4e7eb", "#323f4b"
FONT = 'font-family="system-ui,-apple-system,Segoe UI,Roboto,sans-serif" font-size="12"'


def _svg(width: int, height: int, title: str, body: list[str]) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" {FONT}><title>{escape(title)}</title>' + "".join(body) + "</svg>"
    )


def milliseconds(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.2f} ms" if value >= 0.1 else f"{value * 1000:.0f} µs"


def seconds(value: float) -> str:
    if abs(value) >= 3600:
        return f"{value / 3600:.1f} h"
    if abs(value) >= 60:
        return f"{value / 60:.1f} min"
    return f"{value:.1f} s"


def size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def paired_bars(
    title: str, rows: Sequence[tuple[str, float | None, float | None]], fmt: Callable[[float], str] = milliseconds
) -> str:
    """Horizontal bars, a grey "before" above a green "after" for each label; values written beside them."""
    width, right, row_height = 720, 110, 34
    left = min(200, 16 + 7 * max((len(label) for label, *_ in rows), default=4))
    height = 50 + row_height * max(len(rows), 1) + 10
    top = max((v for _, *values in rows for v in values if v is not None), default=0.0) or 1.0
    scale = (width - left - right) / top
    body = [
        f'<text x="8" y="16" fill="{INK}" font-weight="600">{escape(title)}</text>',
        f'<rect x="8" y="26" width="10" height="10" fill="{BEFORE}"/>'
        f'<text x="23" y="35" fill="{INK}">before</text>'
        f'<rect x="78" y="26" width="10" height="10" fill="{AFTER}"/>'
        f'<text x="93" y="35" fill="{INK}">after</text>',
    ]
    for number, (label, before, after) in enumerate(rows):
        y = 46 + number * row_height
        body.append(f'<text x="{left - 8}" y="{y + 16}" text-anchor="end" fill="{INK}">{escape(label)}</text>')
        for offset, value, colour in ((0, before, BEFORE), (14, after, AFTER)):
            if value is None:
                continue
            length = max(value * scale, 1.0)
            body.append(
                f'<rect class="bar" x="{left}" y="{y + offset}" width="{length:.1f}" height="12" fill="{colour}">'
                f"<title>{escape(label)}: {escape(fmt(value))}</title></rect>"
                f'<text x="{left + length + 6:.1f}" y="{y + offset + 10}" fill="{INK}">{escape(fmt(value))}</text>'
            )
    if not rows:
        body.append(f'<text x="{left}" y="60" fill="{INK}">nothing recorded in the period</text>')
    return _svg(width, height, title, body)


def line(
    title: str,
    series: Sequence[tuple[datetime, float]],
    fmt: Callable[[float], str],
    *,
    step: bool = False,
    marks: Sequence[tuple[datetime, str]] = (),
) -> str:
    """A line over time (a step line for levels such as storage), with the first and last values written and
    vertical marks (e.g. when changes were applied)."""
    width, height, left, right, top, bottom = 720, 240, 80, 30, 30, 40
    body = [f'<text x="{left}" y="16" fill="{INK}" font-weight="600">{escape(title)}</text>']
    if len(series) < 2:
        body.append(
            f'<text x="{left}" y="{height / 2:.0f}" fill="{INK}">needs two snapshots or more in the period</text>'
        )
        return _svg(width, height, title, body)
    times = [t.timestamp() for t, _ in series]
    values = [v for _, v in series]
    t0, t1 = min(times), max(times)
    low, high = min(0.0, *values), max(values)
    high = high if high > low else low + 1

    def x(t: float) -> float:
        return left + (t - t0) / ((t1 - t0) or 1) * (width - left - right)

    def y(v: float) -> float:
        return top + (high - v) / (high - low) * (height - top - bottom)

    for fraction in (0.0, 0.5, 1.0):
        value = low + fraction * (high - low)
        body.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="{GRID}"/>'
            f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" fill="{INK}">{escape(fmt(value))}</text>'
        )
    for when, label in marks:
        if t0 <= when.timestamp() <= t1:
            mx = x(when.timestamp())
            body.append(
                f'<line class="mark" x1="{mx:.1f}" x2="{mx:.1f}" y1="{top}" y2="{height - bottom}" stroke="{AFTER}" '
                f'stroke-dasharray="4 3"><title>{escape(label)}</title></line>'
            )
    path: list[str] = []
    for index, (t, v) in enumerate(zip(times, values, strict=True)):
        if index and step:
            path.append(f"L{x(t):.1f},{y(values[index - 1]):.1f}")
        path.append(f"{'L' if index else 'M'}{x(t):.1f},{y(v):.1f}")
    body.append(f'<path class="series" d="{" ".join(path)}" fill="none" stroke="{LINE}" stroke-width="2"/>')
    for t, v in zip(times, values, strict=True):
        body.append(
            f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="{LINE}"><title>{escape(fmt(v))}</title></circle>'
        )
    body.append(
        f'<text x="{left}" y="{height - 12}" fill="{INK}">{escape(series[0][0].strftime("%Y-%m-%d %H:%M"))}</text>'
        f'<text x="{width - right}" y="{height - 12}" text-anchor="end" fill="{INK}">'
        f"{escape(series[-1][0].strftime('%Y-%m-%d %H:%M'))} UTC</text>"
    )
    return _svg(width, height, title, body)


def sparkline(values: Sequence[float | None]) -> str:
    """A statement's mean per interval in Unicode blocks, for Markdown tables."""
    known = [v for v in values if v is not None]
    if len(known) < 2:
        return ""
    low, high = min(known), max(known)
    blocks = "▁▂▃▄▅▆▇█"
    return "".join(
        " " if v is None else blocks[int((v - low) / ((high - low) or 1) * (len(blocks) - 1))] for v in values
    )
