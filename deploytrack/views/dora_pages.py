"""The DORA dashboard: live numbers, stored daily snapshots as trend charts, bands."""

from __future__ import annotations

from collections.abc import Callable

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from deploytrack.metrics import compute as metrics
from deploytrack.metrics.report import report as metrics_report
from deploytrack.settings import canonical_environment
from deploytrack.storage import event_queries as queries
from deploytrack.timeutil import now_us, to_iso
from deploytrack.views import charts, dashboard
from deploytrack.views.html import MENU_LIMIT, page, page_url, query_text, render
from deploytrack.web.sessions import require

THRESHOLDS: dict[str, tuple[tuple[float, str], ...]] = {
    "lead_time": ((86400, "1 day"), (7 * 86400, "1 week"), (30 * 86400, "30 days")),
    "change_failure_rate": ((0.05, "5%"), (0.10, "10%"), (0.15, "15%")),
    "time_to_restore": ((3600, "1 hour"), (86400, "1 day"), (7 * 86400, "1 week")),
}


# A duration is told in the largest unit it reaches `from` for: on the headline and on a chart's axis alike.
DURATION_UNITS: charts.Units = ((1.0, "s", 0.0), (60.0, "min", 90.0), (3600.0, "h", 90 * 60.0),
                                 (86400.0, "d", 48 * 3600.0))
_DURATION_TEXT = {"s": "{:.0f} s", "min": "{:.0f} min", "h": "{:.1f} h", "d": "{:.1f} days"}


def span_text(seconds: float) -> str:
    """A duration in the largest unit that keeps it readable: 45 s, 12 min, 5.5 h, 3.2 days."""
    size, name = charts.unit_for(seconds, DURATION_UNITS)
    return _DURATION_TEXT[name].format(seconds / size)


def formatter(unit: str) -> Callable[[float], str]:
    if unit == "ratio":
        return lambda v: f"{v * 100:.1f}%"
    if unit == "seconds":
        return span_text
    return lambda v: f"{v:.1f} / week"


@page
async def dora(request: Request) -> Response:
    """GET /dora: the four metrics for a product/environment scope and window, with 90-day trends."""
    token = await require(request, "read")
    app = request.app.state.deploytrack
    product = query_text(request, "product")
    env = query_text(request, "environment")
    environment = canonical_environment(env, app.settings.environment_aliases) if env else None
    window = dashboard.parse_window(request.query_params.get("window"))
    scope = metrics.Scope.of(product, environment)
    await app.deriver.ensure_current()
    report = await app.db.read(metrics_report, app.settings, scope, window, dashboard.TREND_DAYS, now_us())
    board = dashboard.from_report(report, window)
    production = sorted(app.settings.production_set)
    # the default choice stands for the production environments: a lone one is not listed twice
    environments = [e for e in await queries.names(app.db, "environments", MENU_LIMIT)
                    if len(production) > 1 or e not in production]
    cards = []
    for metric in dashboard.METRICS:
        fmt = formatter(metric.unit)
        now = board.latest.get(metric.key, dashboard.Reading(None, None, None))
        series = board.series.get(metric.key, [])
        live = (board.day, now.value) if board.day is not None and now.value is not None else None
        chart: Markup = charts.trend(series, title=f"{metric.title}, daily, {window}-day window", fmt=fmt,
                                     thresholds=THRESHOLDS.get(metric.key, ()), live=live,
                                     axis_fmt=(lambda v: f"{v:g}/wk") if metric.unit == "per_week" else None,
                                     units=DURATION_UNITS if metric.unit == "seconds" else ())
        cards.append({"metric": metric, "now": now, "text": fmt(now.value) if now.value is not None else None,
                      "chart": chart, "days": sum(1 for _, v in series if v is not None),
                      "since": (to_iso(series[0][0]) or "")[:10] if series else None,
                      "url": page_url(f"/dora/{metric.key}", {"product": product, "environment": environment,
                                                              "window": f"{window}d"})})
    return render(request, "dora.html", {
        "token": token, "board": board, "cards": cards, "product": product, "environment": environment,
        "window": window, "windows": dashboard.WINDOWS, "bands_source": metrics.BANDS_SOURCE,
        "band_names": dashboard.BAND_ORDER, "metrics": dashboard.METRICS,
        "production": production,
        "products": await queries.names(app.db, "products", MENU_LIMIT),
        "environments": environments, "menu_limit": MENU_LIMIT,
        "production_label": "production" if production == ["production"] else f"production ({', '.join(production)})",
    })
