"""Small server-rendered SVG charts: a daily trend line and a per-lane timeline.

Every piece of text that reaches the SVG is escaped here; colours come from CSS classes in
static/app.css (the Content-Security-Policy forbids inline styles, not presentation attributes).
"""

from __future__ import annotations

from html import escape
from typing import Callable, Sequence

from markupsafe import Markup

from deploytrack.timeutil import to_iso

Point = tuple[int, "float | None"]


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _day(us: int) -> str:
    return (to_iso(us) or "")[:10]


def trend(points: Sequence[Point], *, title: str, fmt: Callable[[float], str],
          thresholds: Sequence[tuple[float, str]] = (), width: int = 360, height: int = 140) -> Markup:
    """A line chart of a daily series; days without data break the line instead of dropping to zero.

    `thresholds` are (value, label) lines such as band edges, drawn when they fall inside the scale.
    """
    values = [v for _, v in points if v is not None]
    left, right, top, bottom = 8, 8, 12, 22
    plot_w, plot_h = width - left - right, height - top - bottom
    label = f"{title}: no data" if not values else (
        f"{title}: latest {fmt(values[-1])}, {len(values)} of {len(points)} days with data")
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}" '
             f'xmlns="http://www.w3.org/2000/svg">', f"<title>{_e(label)}</title>"]
    parts.append(f'<rect class="plot" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>')
    if not values or len(points) < 1:
        parts.append(f'<text class="nodata" x="{width / 2:.0f}" y="{top + plot_h / 2 + 4:.0f}" '
                     f'text-anchor="middle">no data yet</text></svg>')
        return Markup("".join(parts))
    first, last = points[0][0], points[-1][0]
    span = max(last - first, 1)
    peak = max(values)
    if peak <= 0:  # a flat zero line: scale to the band edges (or 1) so it sits on the floor, labelled truly
        peak = max((v for v, _ in thresholds), default=1.0)
    high = peak * 1.15
    visible = [(v, t) for v, t in thresholds if 0 < v <= high]

    def x(day: int) -> float:
        return left + (day - first) / span * plot_w if len(points) > 1 else left + plot_w / 2

    def y(value: float) -> float:
        return top + plot_h - value / high * plot_h

    for value, text in visible:
        parts.append(f'<line class="threshold" x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}"/>'
                     f'<text class="tlabel" x="{left + plot_w - 2}" y="{y(value) - 2:.1f}" '
                     f'text-anchor="end">{_e(text)}</text>')
    segment: list[str] = []
    segments: list[list[str]] = []
    for day, value in points:
        if value is None:
            if segment:
                segments.append(segment)
            segment = []
        else:
            segment.append(f"{x(day):.1f},{y(value):.1f}")
    if segment:
        segments.append(segment)
    for seg in segments:
        if len(seg) > 1:
            parts.append(f'<polyline class="line" points="{" ".join(seg)}"/>')
    for day, value in points:
        if value is not None:
            parts.append(f'<circle class="pt" cx="{x(day):.1f}" cy="{y(value):.1f}" r="2.2">'
                         f"<title>{_e(_day(day))}: {_e(fmt(value))}</title></circle>")
    parts.append(f'<text class="axis" x="{left}" y="{height - 6}">{_e(_day(first))}</text>')
    parts.append(f'<text class="axis" x="{left + plot_w}" y="{height - 6}" text-anchor="end">{_e(_day(last))}</text>')
    parts.append(f'<text class="axis" x="{left + 2}" y="{top + 10}">{_e(fmt(peak))}</text>')
    parts.append("</svg>")
    return Markup("".join(parts))


TimelineItem = tuple[int, str, str, "str | None"]  # (time µs, status, tooltip text, internal href)


def timeline(lanes: Sequence[tuple[str, Sequence[TimelineItem]]], start: int, end: int,
             title: str, width: int = 700) -> Markup:
    """Lanes of dots over time (builds, then one lane per environment), coloured by status.

    `href`s must be paths this server made (e.g. /deployments/12); anything else is not linked.
    """
    label_w, lane_h, axis_h = 110, 30, 24
    height = lane_h * max(len(lanes), 1) + axis_h
    plot_w = width - label_w - 12
    span = max(end - start, 1)
    parts = [f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>']
    for index, (name, items) in enumerate(lanes):
        mid = index * lane_h + lane_h / 2
        shown = name if len(name) <= 16 else name[:15] + "…"
        parts.append(f'<text class="lane" x="4" y="{mid + 4:.0f}">{_e(shown)}</text>'
                     f'<line class="laneline" x1="{label_w}" x2="{label_w + plot_w}" y1="{mid:.0f}" y2="{mid:.0f}"/>')
        for at, status, text, href in items:
            if not start <= at <= end:
                continue
            cx = label_w + (at - start) / span * plot_w
            dot = (f'<circle class="dot status-{_e(status)}" cx="{cx:.1f}" cy="{mid:.0f}" r="5">'
                   f"<title>{_e(text)}</title></circle>")
            if href and href.startswith("/") and not href.startswith("//"):
                dot = f'<a href="{_e(href)}" aria-label="{_e(text)}">{dot}</a>'
            parts.append(dot)
    base = height - axis_h + 16
    parts.append(f'<text class="axis" x="{label_w}" y="{base}">{_e(_day(start))}</text>'
                 f'<text class="axis" x="{label_w + plot_w}" y="{base}" text-anchor="end">{_e(_day(end))}</text>'
                 "</svg>")
    return Markup("".join(parts))
