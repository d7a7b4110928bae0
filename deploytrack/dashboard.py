"""Read side of the DORA dashboard and the incident list: stored daily snapshots and incidents.

The metrics themselves are computed elsewhere (the daily job writes `metric_snapshots`); this module
only reads what is stored, so a page view never computes a metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from deploytrack.db import Database
from deploytrack.errors import BadRequest

DAY_US = 86_400_000_000
WINDOWS = (7, 30, 90)
TREND_DAYS = 90
BAND_ORDER = ("elite", "high", "medium", "low")


@dataclass(frozen=True)
class MetricInfo:
    key: str
    title: str
    unit: str  # how `value` is measured: per_week, seconds or ratio
    bands: tuple[str, str, str, str]  # the thresholds of elite, high, medium, low, as text


METRICS = (
    MetricInfo("deployment_frequency", "Deployment frequency", "per_week",
               ("deploy days ≥ 5 a week", "≥ 1 a week", "≥ 1 a month", "less than once a month")),
    MetricInfo("lead_time", "Lead time for changes", "seconds",
               ("< 1 day", "< 1 week", "< 30 days", "30 days or more")),
    MetricInfo("change_failure_rate", "Change failure rate", "ratio",
               ("≤ 5%", "≤ 10%", "≤ 15%", "more than 15%")),
    MetricInfo("time_to_restore", "Time to restore service", "seconds",
               ("< 1 hour", "< 1 day", "< 1 week", "1 week or more")),
)
BANDS_SOURCE = "2023 DORA report bands, as Apache DevLake encodes them"


@dataclass
class Reading:
    """One metric on one day: its value (None = no data), band, and how many data points it rests on."""

    value: float | None
    band: str | None
    points: int | None
    note: str | None = None


@dataclass
class Dashboard:
    day: int | None  # the newest snapshot's day (µs), None when nothing is stored yet
    window: int
    latest: dict[str, Reading] = field(default_factory=dict)
    series: dict[str, list[tuple[int, float | None]]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return self.day is None


def reading(data: Any) -> Reading:
    """Read one metric out of a snapshot's JSON, tolerating absent or malformed parts (shown as no data)."""
    if isinstance(data, (int, float)) and not isinstance(data, bool):
        return Reading(float(data), None, None)
    if not isinstance(data, dict):
        return Reading(None, None, None)
    value = data.get("value")
    value = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    band = data.get("band")
    band = band if band in BAND_ORDER else None
    points = next((data[k] for k in ("points", "data_points", "count") if isinstance(data.get(k), int)), None)
    note = data.get("measured_from") or data.get("note")
    return Reading(value, band, points, str(note)[:200] if isinstance(note, str) else None)


def parse_window(raw: str | None) -> int:
    if not raw:
        return 30
    text = raw.strip().removesuffix("d")
    if not text.isdigit() or int(text) not in WINDOWS:
        raise BadRequest(f"query parameter 'window' must be one of {', '.join(f'{w}d' for w in WINDOWS)}", "window")
    return int(text)


async def load(db: Database, product: str | None, environment: str | None, window: int) -> Dashboard:
    """The newest snapshot for this scope and window, and the daily series of the last 90 days."""
    key = (product or "", environment or "", window)
    newest = await db.fetchone(
        "SELECT MAX(day) FROM metric_snapshots WHERE product = ? AND environment = ? AND window_days = ?", key)
    if newest is None or newest[0] is None:
        return Dashboard(None, window)
    day = int(newest[0])
    rows = await db.fetchall(
        "SELECT day, scope, data FROM metric_snapshots WHERE product = ? AND environment = ? AND window_days = ? "
        "AND day > ? ORDER BY day, scope", (*key, day - TREND_DAYS * DAY_US))
    by_day: dict[int, dict[str, Any]] = {}
    for row in rows:
        if row["day"] in by_day:
            continue  # one row per day; several scopes for the same key would be a writer's bug
        try:
            parsed = orjson.loads(row["data"])
        except orjson.JSONDecodeError:
            parsed = {}
        by_day[row["day"]] = parsed if isinstance(parsed, dict) else {}
    board = Dashboard(day, window)
    for metric in METRICS:
        points = [(d, reading(data.get(metric.key)).value) for d, data in sorted(by_day.items())]
        board.series[metric.key] = points
        board.latest[metric.key] = reading(by_day.get(day, {}).get(metric.key))
    return board


async def list_incidents(db: Database, state: str | None, product: str | None, limit: int = 50,
                         cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Incidents newest first (by opened time), keyset-paged; `state` is open, resolved or None for both."""
    where: list[str] = []
    params: list[Any] = []
    if state == "open":
        where.append("resolved_at IS NULL")
    elif state == "resolved":
        where.append("resolved_at IS NOT NULL")
    if product is not None:
        where.append("product = ?")
        params.append(product)
    if cursor:
        at, _, ident = cursor.partition(".")
        if not (at.isdigit() and ident.isdigit()):
            raise BadRequest("query parameter 'cursor' is not a cursor this server issued", "cursor")
        where.append("opened_at <= ? AND (opened_at < ? OR id < ?)")
        params.extend([int(at), int(at), int(ident)])
    sql = "SELECT * FROM incidents"
    if where:
        sql += " WHERE " + " AND ".join(where)
    rows = [dict(r) for r in await db.fetchall(sql + " ORDER BY opened_at DESC, id DESC LIMIT ?", [*params, limit + 1])]
    for row in rows:
        end = row["resolved_at"]
        row["duration"] = end - row["opened_at"] if end is not None else None
    next_cursor = f"{rows[limit - 1]['opened_at']}.{rows[limit - 1]['id']}" if len(rows) > limit else None
    return rows[:limit], next_cursor
