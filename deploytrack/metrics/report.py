"""What GET /api/v1/metrics, the DORA page and `metrics show` return: live numbers plus the daily series."""

from __future__ import annotations

from typing import Any

import orjson

from deploytrack.errors import BadRequest
from deploytrack.metrics.compute import WINDOWS, Scope, live
from deploytrack.metrics.rules import BANDS_SOURCE
from deploytrack.model import whole_number
from deploytrack.settings import Settings
from deploytrack.storage.database import Connection
from deploytrack.timeutil import DAY, day_start_us, to_iso


def window_param(raw: str | None) -> int:
    """7, 30 or 90 ('30' and '30d' both accepted); default 30."""
    if raw is None or not raw.strip():
        return 30
    window = whole_number(raw.strip().lower().removesuffix("d"))
    if window not in WINDOWS:
        raise BadRequest("query parameter 'window' must be 7, 30 or 90 (days)", "window")
    return window


def series(conn: Connection, scope: Scope, window: int, days: int, today: int) -> list[dict[str, Any]]:
    """The stored daily snapshots of the last `days` days before today."""
    rows = conn.execute(
        "SELECT day, data FROM metric_snapshots WHERE scope = ? AND product = ? AND environment = ? "
        "AND window_days = ? AND day >= ? ORDER BY day",
        (scope.kind, scope.product, scope.environment, window, today - days * DAY)).fetchall()
    return [{"day": to_iso(r[0]), **orjson.loads(r[1])} for r in rows]


def report(conn: Connection, settings: Settings, scope: Scope, window: int, days: int,
           now: int) -> dict[str, Any]:
    """The live ("latest") numbers for the window ending today and the daily series (read-only; the
    caller brings derived data up to date first)."""
    return {
        "scope": scope.as_dict(), "window_days": window, "bands": BANDS_SOURCE,
        "production_environments": sorted(settings.production_set), "as_of": to_iso(now),
        "latest": live(conn, settings, scope, window, now),
        "series": series(conn, scope, window, days, day_start_us(now)),
    }
