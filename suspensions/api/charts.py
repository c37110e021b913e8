"""Charts drawn on the server as SVG: no script, no library, no build step.

Colour is never the only cue: every series also has a pattern (solid, stripes, dots, cross-hatch, ...) or,
on a line chart, a dash and a marker of its own, and its name in the legend; every bar and point carries its
number in a ``<title>`` (a tooltip), and the pages put the same numbers in a table beside each chart. A bar
may link to the list behind it. Everything interpolated is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from markupsafe import Markup

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 44  # room for the axes' labels and the legend
COLOURS = ("#3b5bdb", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#0c8599", "#5c940d", "#495057")
PATTERNS = ("solid", "stripes", "dots", "cross", "rows", "columns", "solid", "stripes")
DASHES = ("", "6 4", "2 3", "10 3 2 3")
MARKERS = ("circle", "square", "diamond", "triangle")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]
    links: Sequence[str | None] | None = None  # per label: the list behind the figure


def _attr(text: object) -> str:
    return escape(str(text), quote=True)


def nice_ceiling(value: float) -> float:
    """The top of an axis of four equal steps at or above ``value``: each step 1, 2 or 5 times a power of ten
    (at least 1), so every gridline's label is a round number."""
    if value <= 4:
        return 4.0
    quarter = value / 4
    power = 10 ** math.floor(math.log10(quarter))
    for step in (1, 2, 5, 10):
        if quarter <= step * power:
            return float(4 * step * power)
    return float(40 * power)


def _number(value: float) -> str:
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _pattern(chart: str, index: int) -> str:
    colour, kind = COLOURS[index % len(COLOURS)], PATTERNS[index % len(PATTERNS)]
    marks = {
        "solid": "",
        "stripes": '<path d="M0,6 L6,0 M-1,1 L1,-1 M5,7 L7,5" stroke="#fff" stroke-width="1.6"/>',
        "dots": '<circle cx="3" cy="3" r="1.3" fill="#fff"/>',
        "cross": '<path d="M0,0 L6,6 M6,0 L0,6" stroke="#fff" stroke-width="1.1"/>',
        "rows": '<path d="M0,3 L6,3" stroke="#fff" stroke-width="1.6"/>',
        "columns": '<path d="M3,0 L3,6" stroke="#fff" stroke-width="1.6"/>',
    }[kind]
    return (f'<pattern id="{chart}-p{index}" width="6" height="6" patternUnits="userSpaceOnUse">'
            f'<rect width="6" height="6" fill="{colour}"/>{marks}</pattern>')


def _frame(chart: str, title: str, top: float, unit: str, labels: Sequence[str], defs: str) -> list[str]:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-labelledby="{chart}-title {chart}-desc" xmlns="http://www.w3.org/2000/svg">',
             f'<title id="{chart}-title">{_attr(title)}</title>',
             f'<desc id="{chart}-desc">The numbers are in the table beside the chart.</desc>',
             f"<defs>{defs}</defs>"]
    for step in range(5):
        value = top * step / 4
        y = TOP + plot_h - plot_h * step / 4
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
                     f'<text class="axis" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
                     f"{_attr(_number(value))}{_attr(unit) if step == 4 and unit else ''}</text>")
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    every = max(1, math.ceil(len(labels) / 8))
    for index, label in enumerate(labels):
        if index % every == 0 or index == len(labels) - 1 and len(labels) <= 8:
            x = LEFT + slot * (index + 0.5)
            parts.append(f'<text class="axis" x="{x:.1f}" y="{HEIGHT - BOTTOM + 15}" text-anchor="middle">'
                         f"{_attr(label)}</text>")
    return parts


def _legend(chart: str, series: Sequence[Series], line: bool = False) -> str:
    items, x = [], LEFT
    for index, entry in enumerate(series):
        if line:
            swatch = (f'<line x1="{x}" x2="{x + 18}" y1="{HEIGHT - 9}" y2="{HEIGHT - 9}" '
                      f'stroke="{COLOURS[index % len(COLOURS)]}" stroke-width="2.5" '
                      f'stroke-dasharray="{DASHES[index % len(DASHES)]}"/>'
                      + _marker(index, x + 9, HEIGHT - 9, ""))
            width = 22
        else:
            swatch = (f'<rect x="{x}" y="{HEIGHT - 16}" width="14" height="14" fill="url(#{chart}-p{index})" '
                      'stroke="#1d2430" stroke-width=".5"/>')
            width = 18
        items.append(f'{swatch}<text class="legend" x="{x + width}" y="{HEIGHT - 5}">{_attr(entry.name)}</text>')
        x += width + 10 + 7 * len(entry.name)
    return "".join(items)


def bar_chart(chart: str, title: str, labels: Sequence[str], series: Sequence[Series], *,
              stacked: bool = True, unit: str = "") -> Markup:
    """Bars per label: stacked, or side by side; each segment titled with its number and linked when the
    series gives a link."""
    totals = [sum((s.values[i] or 0) for s in series) if stacked else max([s.values[i] or 0 for s in series] or [0])
              for i in range(len(labels))]
    top = nice_ceiling(max(totals or [0]))
    plot_h = HEIGHT - TOP - BOTTOM
    parts = _frame(chart, title, top, unit, labels, "".join(_pattern(chart, i) for i in range(len(series))))
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    gap = min(2.0, slot * 0.2)
    for i, label in enumerate(labels):
        base = float(TOP + plot_h)
        for index, entry in enumerate(series):
            value = float(entry.values[i] or 0)
            if value <= 0:
                continue
            height = plot_h * value / top
            if stacked:
                x, width, y = LEFT + slot * i + gap / 2, slot - gap, base - height
                base = y
            else:
                width = (slot - gap) / len(series)
                x, y = LEFT + slot * i + gap / 2 + width * index, TOP + plot_h - height
            bar = (f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(width, 0.6):.2f}" height="{height:.2f}" '
                   f'fill="url(#{chart}-p{index})" stroke="#fff" stroke-width=".4">'
                   f"<title>{_attr(label)} · {_attr(entry.name)}: {_attr(_number(value))}{_attr(unit)}</title></rect>")
            link = entry.links[i] if entry.links else None
            parts.append(f'<a href="{_attr(link)}">{bar}</a>' if link else bar)
    parts.append(_legend(chart, series))
    parts.append("</svg>")
    return Markup("".join(parts))


def _marker(index: int, x: float, y: float, title: str) -> str:
    colour = COLOURS[index % len(COLOURS)]
    shape = MARKERS[index % len(MARKERS)]
    tip = f"<title>{_attr(title)}</title>" if title else ""
    if shape == "circle":
        return f'<circle cx="{x:.2f}" cy="{y:.2f}" r="3.2" fill="{colour}">{tip}</circle>'
    if shape == "square":
        return f'<rect x="{x - 3:.2f}" y="{y - 3:.2f}" width="6" height="6" fill="{colour}">{tip}</rect>'
    if shape == "diamond":
        return (f'<path d="M{x:.2f},{y - 4:.2f} L{x + 4:.2f},{y:.2f} L{x:.2f},{y + 4:.2f} L{x - 4:.2f},{y:.2f} Z" '
                f'fill="{colour}">{tip}</path>')
    return (f'<path d="M{x:.2f},{y - 4:.2f} L{x + 4:.2f},{y + 3:.2f} L{x - 4:.2f},{y + 3:.2f} Z" '
            f'fill="{colour}">{tip}</path>')


def line_chart(chart: str, title: str, labels: Sequence[str], series: Sequence[Series], *, unit: str = "") -> Markup:
    """Lines with a dash and a marker per series; a missing value (None) breaks the line."""
    values = [v for s in series for v in s.values if v is not None]
    top = nice_ceiling(max(values or [0]))
    plot_h = HEIGHT - TOP - BOTTOM
    parts = _frame(chart, title, top, unit, labels, "")
    slot = (WIDTH - LEFT - RIGHT) / max(1, len(labels))
    for index, entry in enumerate(series):
        runs: list[list[tuple[float, float]]] = [[]]
        markers = []
        for i, value in enumerate(entry.values):
            if value is None:
                runs.append([])
                continue
            x, y = LEFT + slot * (i + 0.5), TOP + plot_h - plot_h * value / top
            runs[-1].append((x, y))
            markers.append(_marker(index, x, y, f"{labels[i]} · {entry.name}: {_number(value)}{unit}"))
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{x:.2f},{y:.2f}" for x, y in run)
                parts.append(f'<polyline points="{points}" fill="none" stroke="{COLOURS[index % len(COLOURS)]}" '
                             f'stroke-width="2" stroke-dasharray="{DASHES[index % len(DASHES)]}"/>')
        parts.extend(markers)
    parts.append(_legend(chart, series, line=True))
    parts.append("</svg>")
    return Markup("".join(parts))
