"""The home page: production at a glance, products needing attention first.

For each product (paged by name): the version running in each production environment, its four
DORA numbers for 30 days with their bands, its open incidents; above them, what needs attention:
open incidents and today's failed or in-progress production deployments.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson

from starlette.requests import Request
from starlette.responses import Response

from deploytrack.metrics import compute as metrics
from deploytrack.storage import database as dbmod
from deploytrack.storage import deployment_queries as dq
from deploytrack.timeutil import day_start_us, now_us
from deploytrack.views import dashboard
from deploytrack.views.dora_pages import formatter
from deploytrack.views.html import page, page_url, query_text, render
from deploytrack.web.sessions import require

# Each product's numbers may be counted live, which reads the recent deployment events once per
# product: a page holds few products.
PRODUCTS_PER_PAGE = 10
ATTENTION_LIMIT = 20
FLAGGED_LIMIT = 5  # products needing attention put before the first page
WINDOW = 30


def _scores(conn: Any, settings: Any, products: list[str], now: int) -> dict[str, Score]:
    """Each product's 30-day metrics in production: the newest daily snapshot when it is from today or
    yesterday (one indexed read), else counted live (`metrics.compute.live`, as /dora does).

    Live counting reads every recent deployment event once per call, so a page of products reads
    the stored snapshots the nightly job keeps fresh, and counts live only where there is none yet.
    """
    fresh_from = day_start_us(now) - metrics.DAY
    out = {}
    for name in products:
        row = conn.execute(
            "SELECT day, data FROM metric_snapshots WHERE scope = 'product' AND product = ? AND environment = '' "
            "AND window_days = ? ORDER BY day DESC LIMIT 1", (name, WINDOW)).fetchone()
        if row is not None and row[0] >= fresh_from:
            report, day = orjson.loads(row[1]), row[0]
        else:
            report, day = metrics.live(conn, settings, metrics.Scope.of(name, None), WINDOW, now), None
        out[name] = Score({m.key: dashboard.reading(m.key, report.get(m.key)) for m in dashboard.METRICS}, day)
    return out


@dataclass
class Score:
    readings: dict[str, dashboard.Reading]
    snapshot_day: int | None  # the day of the stored snapshot the numbers come from; None = counted live


def _read_scores(path: Any, settings: Any, products: list[str], now: int) -> dict[str, Score]:
    conn = dbmod.connect(path, readonly=True)  # the metrics queries use temp tables: a connection of its own
    try:
        return _scores(conn, settings, products, now)
    finally:
        conn.close()


async def _attention(db: Any, production: list[str], today: int) -> dict[str, list[dict[str, Any]]]:
    """Open incidents (newest first) and today's failed or in-progress production deployments."""
    incidents = [dict(r) for r in await db.fetchall(
        "SELECT * FROM incidents WHERE resolved_at IS NULL ORDER BY opened_at DESC, id DESC LIMIT ?",
        (ATTENTION_LIMIT,))]
    marks = ", ".join("?" * len(production))
    failed = await db.fetchall(
        f"SELECT * FROM deployments WHERE environment IN ({marks}) AND status IN ('failed', 'aborted') "
        "AND finished_at >= ? ORDER BY finished_at DESC, id DESC LIMIT ?", (*production, today, ATTENTION_LIMIT))
    running = await db.fetchall(
        f"SELECT * FROM deployments WHERE environment IN ({marks}) AND status IN ('pending', 'started') "
        "AND finished_at IS NULL AND first_at >= ? ORDER BY first_at DESC, id DESC LIMIT ?",
        (*production, today, ATTENTION_LIMIT))
    return {"incidents": incidents, "deployments": [dq.with_duration(r) for r in [*failed, *running]]}


async def _open_incidents(db: Any, products: list[str]) -> dict[str, int]:
    counts = {}
    for name in products:
        row = await db.fetchone("SELECT COUNT(*) FROM incidents WHERE resolved_at IS NULL AND product = ?", (name,))
        counts[name] = int(row[0]) if row else 0
    return counts


@page
async def home(request: Request) -> Response:
    """GET /: every product in production, those needing attention first."""
    token = await require(request, "read")
    app = request.app.state.deploytrack
    after = query_text(request, "after")
    production = sorted(app.settings.production_set)
    now = now_us()
    attention = await _attention(app.db, production, day_start_us(now))
    flagged: list[str] = []
    if after is None:  # the first page starts with the products that need attention
        for row in [*attention["incidents"], *attention["deployments"]]:
            if row["product"] not in flagged and len(flagged) < FLAGGED_LIMIT:
                flagged.append(row["product"])
    # The first page holds the flagged products and fills up with the first by name (a flagged one
    # may show again on its own page by name: marked, never missing).
    names, next_after = await dq.deployed_products(app.db, after, PRODUCTS_PER_PAGE - len(flagged))
    products = flagged + [n for n in names if n not in flagged]
    grid = await dq.matrix(app.db, environments=production, products=products)
    scores = await asyncio.to_thread(_read_scores, app.db.path, app.settings, products, now)
    return render(request, "home.html", {
        "token": token, "products": products, "flagged": set(flagged), "m": grid, "production": production,
        "scores": scores, "open": await _open_incidents(app.db, products), "attention": attention,
        "metrics": dashboard.METRICS, "window": WINDOW,
        "formats": {m.key: formatter(m.unit) for m in dashboard.METRICS},
        "next_url": page_url("/", {"after": next_after}) if next_after else None,
        "paged": after is not None,
    })
