"""Small server-rendered SVG charts: a daily trend line and a per-lane timeline.

Both read without JavaScript: the y axis starts at zero with labelled ticks, the x axis has dated
ticks, every point carries a <title> with its date and value, and the whole chart has role="img"
and an aria-label that sums it up. Text is drawn at 14 units in a viewBox about as wide as the
chart is shown, so it stays at 12 px or more on a phone. Every piece of text that reaches the SVG
is escaped here; colours come from CSS classes in static/app.css (the Content-Security-Policy
forbids inline styles, not presentation attributes).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from html import escape

from markupsafe import Markup

from deploytrack.timeutil import DAY, to_iso

Point = tuple[int, "float | None"]
# Each unit an axis may count in, smallest first: (size, name, from): a value is told in the largest unit
# it reaches `from` for (durations: 90 s is told as 2 min, 5,400 s as 1.5 h).
Units = Sequence[tuple[float, str, float]]
BANDS = ("elite", "high", "medium", "low")
_EPOCH = datetime(1970, 1, 1)


def _e(text: object) -> str:
    return escape(str(text), quote=True)


def _day(us: int) -> str:
    return (to_iso(us) or "")[:10]


def _short_day(us: int) -> str:
    """'3 Nov' — a tick label that fits under a narrow chart."""
    dt = _EPOCH + timedelta(microseconds=us)
    return f"{dt.day} {dt.strftime('%b')}"


def _anchor(x: float, left: float, right: float) -> str:
    """Tick labels near an edge hang inwards instead of being cut off."""
    return "start" if x - left < 24 else "end" if right - x < 24 else "middle"


def nice_ticks(high: float, count: int = 4) -> list[float]:
    """0 and round steps (1, 2, 2.5 or 5 × 10^n) up to at least `high`."""
    if high <= 0:
        return [0.0, 1.0]
    raw = high / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return [i * step for i in range(int(math.ceil(high / step - 1e-9)) + 1)]


def unit_for(value: float, units: Units) -> tuple[float, str]:
    """The unit `value` is told in: the largest whose `from` it reaches (the smallest if none)."""
    return max(((size, name) for size, name, start in units if value >= start), default=units[0][:2])


def day_ticks(start: int, end: int, count: int = 4) -> list[int]:
    """About `count` midnight-UTC days between start and end, evenly spread."""
    first = start - start % DAY + (DAY if start % DAY else 0)
    days = max(1, (end - first) // DAY)
    step = max(1, math.ceil(days / count))
    return [first + i * step * DAY for i in range(days // step + 1) if first + i * step * DAY <= end]


def trend(points: Sequence[Point], *, title: str, fmt: Callable[[float], str],
          thresholds: Sequence[tuple[float, str]] = (), live: Point | None = None,
          axis_fmt: Callable[[float], str] | None = None, units: Units = (), width: int = 320,
          height: int = 170) -> Markup:
    """A line chart of a daily series; days without data break the line instead of dropping to zero.

    `thresholds` are the band edges (elite/high, high/medium, medium/low, lower is better): the bands
    are shaded regions. `live` is today's live value, drawn last and marked as such. `axis_fmt`
    writes the y tick labels (default `fmt`) when the value's text is too wide for the axis. With `units`
    (durations: seconds, minutes, hours, days), the ticks are round numbers of one unit, all labelled in it.
    """
    series = list(points) + ([live] if live is not None and (not points or live[0] > points[-1][0]) else [])
    values = [v for _, v in series if v is not None]
    peak = max(values, default=0.0)
    if peak <= 0:  # a flat zero line: scale to the band edges (or 1) so it sits on the floor, labelled truly
        peak = max((v for v, _ in thresholds), default=1.0)
    if units:
        peak = max(peak, units[0][0])  # (never ticks finer than one of the smallest unit)
        size, name = unit_for(peak, units)
        ticks = [tick * size for tick in nice_ticks(peak / size)]
        axis_fmt = lambda v: f"{round(v / size, 6):g} {name}"  # noqa: E731 - (rounded: 0.1 + 0.2 steps)
    else:
        ticks = nice_ticks(peak)
    axis_labels = [(axis_fmt or fmt)(tick) for tick in ticks]
    # The y labels sit left of the plot, right-aligned: as wide as the widest, at about 8 units a character.
    left, right, top, bottom = max(58, 10 + 8 * max(len(text) for text in axis_labels)), 8, 10, 26
    plot_w, plot_h = width - left - right, height - top - bottom
    label = f"{title}: no data" if not values else (
        f"{title}: latest {fmt(values[-1])}, {len(values)} of {len(series)} days with data, from "
        f"{_day(series[0][0])} to {_day(series[-1][0])}")
    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(label)}" '
             f'xmlns="http://www.w3.org/2000/svg">', f"<title>{_e(label)}</title>",
             f'<rect class="plot" x="{left}" y="{top}" width="{plot_w}" height="{plot_h}"/>']
    if not values:
        parts.append(f'<text class="nodata" x="{left + plot_w / 2:.0f}" y="{top + plot_h / 2 + 5:.0f}" '
                     f'text-anchor="middle">no data yet</text></svg>')
        return Markup("".join(parts))
    high = ticks[-1]
    first, last = series[0][0], series[-1][0]
    span = max(last - first, 1)

    def x(day: int) -> float:
        return left + (day - first) / span * plot_w if len(series) > 1 else left + plot_w / 2

    def y(value: float) -> float:
        return top + plot_h - min(value, high) / high * plot_h

    edges = [0.0, *(v for v, _ in thresholds), math.inf]
    names = [t for _, t in thresholds]
    for index, (low_edge, high_edge) in enumerate(zip(edges, edges[1:], strict=False)):
        if not thresholds or low_edge >= high:
            continue
        band = BANDS[index] if index < len(thresholds) else "low"
        what = f"below {names[0]}" if index == 0 else f"above {names[-1]}" if index == len(names) else \
            f"{names[index - 1]} to {names[index]}"
        y1, y2 = y(min(high_edge, high)), y(low_edge)
        parts.append(f'<rect class="zone zone-{band}" x="{left}" y="{y1:.1f}" width="{plot_w}" '
                     f'height="{max(y2 - y1, 0):.1f}"><title>{band}: {_e(what)}</title></rect>')
        if y2 - y1 >= 16:
            # (at the left: the right edge holds today's live point)
            parts.append(f'<text class="zlabel" x="{left + 4}" y="{y1 + 14:.1f}" text-anchor="start">{band}</text>')
    for tick, text in zip(ticks, axis_labels, strict=True):
        parts.append(f'<line class="grid" x1="{left}" x2="{left + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}"/>'
                     f'<text class="axis" x="{left - 4}" y="{y(tick) + 5:.1f}" text-anchor="end">{_e(text)}</text>')
    for tick_day in day_ticks(first, last, 3):
        parts.append(f'<line class="xtick" x1="{x(tick_day):.1f}" x2="{x(tick_day):.1f}" y1="{top + plot_h}" '
                     f'y2="{top + plot_h + 4}"/><text class="axis" x="{x(tick_day):.1f}" y="{height - 6}" '
                     f'text-anchor="{_anchor(x(tick_day), left, width)}">{_e(_short_day(tick_day))}</text>')
    segment: list[str] = []
    for day, value in [*series, (last + 1, None)]:
        if value is None:
            if len(segment) > 1:
                parts.append(f'<polyline class="line" points="{" ".join(segment)}"/>')
            segment = []
        else:
            segment.append(f"{x(day):.1f},{y(value):.1f}")
    for index, (day, value) in enumerate(series):
        if value is None:
            continue
        today = live is not None and index == len(series) - 1 and day == live[0]
        when = f"{_day(day)} (today, live)" if today else _day(day)
        parts.append(f'<circle class="pt{" live" if today else ""}" cx="{x(day):.1f}" cy="{y(value):.1f}" '
                     f'r="{4.5 if today else 3}"><title>{_e(when)}: {_e(fmt(value))}</title></circle>')
    parts.append("</svg>")
    return Markup("".join(parts))


TimelineItem = tuple[int, str, str, "str | None"]  # (time µs, status, tooltip text, internal href)


def _linked(mark: str, text: str, href: str | None) -> str:
    if href and href.startswith("/") and not href.startswith("//"):
        return f'<a href="{_e(href)}" aria-label="{_e(text)}">{mark}</a>'
    return mark


def timeline(lanes: Sequence[tuple[str, Sequence[TimelineItem]]], start: int, end: int,
             title: str, width: int = 700) -> Markup:
    """Lanes of marks over time (builds, then one lane per environment, then incidents), coloured by status.

    A status of "incident" draws a diamond; a status with " rollback" appended draws a ringed dot.
    `href`s must be paths this server made (e.g. /deployments/12); anything else is not linked.
    """
    label_w = 96 if width < 500 else 120
    lane_h, axis_h = 32, 26
    height = lane_h * max(len(lanes), 1) + axis_h
    plot_w = width - label_w - 12
    span = max(end - start, 1)
    parts = [f'<svg class="timeline" viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}" '
             f'xmlns="http://www.w3.org/2000/svg"><title>{_e(title)}</title>']
    for index, (name, items) in enumerate(lanes):
        mid = index * lane_h + lane_h / 2
        limit = 10 if width < 500 else 14
        shown = name if len(name) <= limit else name[:limit - 1] + "…"
        parts.append(f'<text class="lane" x="4" y="{mid + 5:.0f}">{_e(shown)}<title>{_e(name)}</title></text>'
                     f'<line class="laneline" x1="{label_w}" x2="{label_w + plot_w}" y1="{mid:.0f}" y2="{mid:.0f}"/>')
        for at, status, text, href in items:
            if not start <= at <= end:
                continue
            cx = label_w + (at - start) / span * plot_w
            base, _, extra = status.partition(" ")
            if base == "incident":
                mark = (f'<path class="incident" d="M{cx:.1f} {mid - 7:.0f} l7 7 l-7 7 l-7 -7 z">'
                        f"<title>{_e(text)}</title></path>")
            else:
                ring = " rollback" if extra == "rollback" else ""
                mark = (f'<circle class="dot status-{_e(base)}{ring}" cx="{cx:.1f}" cy="{mid:.0f}" r="6">'
                        f"<title>{_e(text)}</title></circle>")
            parts.append(_linked(mark, text, href))
    base_y = height - axis_h
    for tick in day_ticks(start, end, 3 if width < 500 else 6):
        tx = label_w + (tick - start) / span * plot_w
        parts.append(f'<line class="xtick" x1="{tx:.1f}" x2="{tx:.1f}" y1="0" y2="{base_y + 4}"/>'
                     f'<text class="axis" x="{tx:.1f}" y="{base_y + 20}" text-anchor="{_anchor(tx, label_w, width)}">'
                     f"{_e(_short_day(tick))}</text>")
    parts.append("</svg>")
    return Markup("".join(parts))
