"""What the DORA dashboard and the incident list show, shaped from the metrics module's report.

The numbers come from `deploytrack.metrics` (live for the window ending today, and the stored daily
snapshots for the trend charts); this module only reads and labels them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from deploytrack.errors import BadRequest
from deploytrack.metrics import compute as metrics
from deploytrack.model import whole_number
from deploytrack.storage.database import Database
from deploytrack.storage.event_queries import newest_first
from deploytrack.timeutil import parse_timestamp

WINDOWS = (7, 30, 90)
TREND_DAYS = 90
GLANCE_WINDOW = 30  # days: a product's four numbers on the home page and on its own page
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


@dataclass
class Reading:
    """One metric: its value (None = no data), band, how many data points it rests on, and a note."""

    value: float | None
    band: str | None
    points: int | None
    note: str | None = None


@dataclass
class Dashboard:
    day: int | None  # the day the latest numbers are for (µs)
    window: int
    latest: dict[str, Reading] = field(default_factory=dict)
    series: dict[str, list[tuple[int, float | None]]] = field(default_factory=dict)
    snapshot_days: int = 0  # how many daily snapshots the trend charts rest on

    @property
    def empty(self) -> bool:
        """Nothing to show at all: no data points now and no stored snapshots (a new install)."""
        return self.snapshot_days == 0 and not any(r.points for r in self.latest.values())


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _note(key: str, data: dict[str, Any]) -> str | None:
    """What a reader needs to trust the number: how it was measured."""
    if key == "deployment_frequency" and _number(data.get("deploy_days_per_week")) is not None:
        return f"{data['deploy_days_per_week']:.1f} deploy days a week (the band counts deploy days)"
    if key == "lead_time" and data.get("measured_from_build"):
        sources = data.get("sources") if isinstance(data.get("sources"), dict) else {}
        return f"measured from the first build for {sources.get('build', 'some')} of its data points (no commit time)"
    failures = data.get("failures")
    if key == "change_failure_rate" and isinstance(failures, int) and _number(data.get("value")) is not None:
        return f"{data['failures']} deployment{'s' if data['failures'] != 1 else ''} led to a failure"
    if key == "time_to_restore" and data.get("unresolved_incidents"):
        return f"{data['unresolved_incidents']} incident(s) still open, not counted until resolved"
    return None


def reading(key: str, data: Any) -> Reading:
    """One metric out of the metrics module's JSON (a live report or a snapshot); malformed parts are no data."""
    if not isinstance(data, dict):
        return Reading(None, None, None)
    value = _number(data.get("per_week") if key == "deployment_frequency" else data.get("value"))
    band = data.get("band") if data.get("band") in BAND_ORDER else None
    points = data.get("data_points") if isinstance(data.get("data_points"), int) else None
    return Reading(value, band if value is not None else None, points, _note(key, data))


def product_scores(conn: Any, settings: Any, products: list[str], now: int) -> dict[str, dict[str, Reading]]:
    """Each product's four readings in production over the GLANCE_WINDOW days ending today, counted live
    as /dora does."""
    out = {}
    for name in products:
        report = metrics.live(conn, settings, metrics.Scope.of(name, None), GLANCE_WINDOW, now)
        out[name] = {m.key: reading(m.key, report.get(m.key)) for m in METRICS}
    return out


def from_report(report: dict[str, Any], window: int) -> Dashboard:
    """The dashboard of a metrics report (`views.metrics_api.metrics_report`: live numbers + snapshot series)."""
    latest = report.get("latest") or {}
    day = latest.get("day")
    board = Dashboard(parse_timestamp(day, "day") if isinstance(day, str) else None, window)
    series = [s for s in report.get("series") or [] if isinstance(s, dict) and isinstance(s.get("day"), str)]
    board.snapshot_days = len(series)
    for metric in METRICS:
        board.latest[metric.key] = reading(metric.key, latest.get(metric.key))
        board.series[metric.key] = [(parse_timestamp(s["day"], "day"), reading(metric.key, s.get(metric.key)).value)
                                    for s in series]
    return board


def parse_window(raw: str | None) -> int:
    if not raw:
        return 30
    window = whole_number(raw.strip().removesuffix("d"))
    if window is None or window not in WINDOWS:
        raise BadRequest(f"query parameter 'window' must be one of {', '.join(f'{w}d' for w in WINDOWS)}", "window")
    return window


async def list_incidents(db: Database, state: str | None, product: str | None, limit: int = 50,
                         cursor: str | None = None, environment: str | None = None
                         ) -> tuple[list[dict[str, Any]], str | None]:
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
    if environment is not None:
        where.append("environment = ?")
        params.append(environment)
    rows, next_cursor = await newest_first(db, "incidents", ("opened_at", "id"), where, params, limit, cursor)
    for row in rows:
        end = row["resolved_at"]
        row["duration"] = end - row["opened_at"] if end is not None else None
    return rows, next_cursor
