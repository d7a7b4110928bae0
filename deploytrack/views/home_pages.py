"""The home page: production at a glance, products needing attention first.

For each product (paged by name): the version running in each production environment, its four
DORA numbers for 30 days with their bands, its open incidents; above them, what needs attention:
open incidents and today's failed or in-progress production deployments.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from deploytrack.rules.status import freezes
from deploytrack.storage import deployment_queries as dq
from deploytrack.storage import incident_queries as iq
from deploytrack.timeutil import day_start_us, now_us
from deploytrack.views import dashboard
from deploytrack.views.dora_pages import formatter
from deploytrack.views.html import page, page_url, query_text, render
from deploytrack.web.sessions import require

PRODUCTS_PER_PAGE = 20
ATTENTION_LIMIT = 20
FLAGGED_LIMIT = 10  # products needing attention put before the first page


@page
async def home(request: Request) -> Response:
    """GET /: every product in production, those needing attention first."""
    token = await require(request, "read")
    app = request.app.state.deploytrack
    after = query_text(request, "after")
    production = sorted(app.settings.production_set)
    now = now_us()
    await app.deriver.ensure_current()
    attention = {"incidents": await iq.open_incidents(app.db, ATTENTION_LIMIT),
                 "deployments": await dq.troubled_since(app.db, production, day_start_us(now), ATTENTION_LIMIT)}
    flagged: list[str] = []
    if after is None:  # the first page starts with the products that need attention
        for row in [*attention["incidents"], *attention["deployments"]]:
            # an incident sent without a product (nothing linked yet) needs attention, but is no product
            if row["product"] and row["product"] not in flagged and len(flagged) < FLAGGED_LIMIT:
                flagged.append(row["product"])
    # The first page holds the flagged products and fills up with the first by name (a flagged one
    # may show again on its own page by name: marked, never missing).
    names, next_after = await dq.deployed_products(app.db, after, PRODUCTS_PER_PAGE - len(flagged))
    products = flagged + [n for n in names if n not in flagged]
    grid = await dq.matrix(app.db, environments=production, products=products)
    scores = await app.db.read(dashboard.product_scores, app.settings, products, now)
    return render(request, "home.html", {
        "token": token, "products": products, "flagged": set(flagged), "m": grid, "production": production,
        "scores": scores, "open": await iq.open_counts(app.db, products), "attention": attention,
        "metrics": dashboard.METRICS, "window": dashboard.GLANCE_WINDOW,
        "frozen": await freezes(app.db, products, production),
        "formats": {m.key: formatter(m.unit) for m in dashboard.METRICS},
        "next_url": page_url("/", {"after": next_after}) if next_after else None,
        "paged": after is not None,
    })
