"""The rules page (each rule's scope, mode and windows, and the overrides) and the violations list."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from deploytrack.rules import store as rule_store
from deploytrack.rules.status import window_state
from deploytrack.storage import event_queries as queries
from deploytrack.timeutil import now_us
from deploytrack.views.html import PAGE_SIZE, page, page_url, render
from deploytrack.views.rules_api import OUTCOMES, violation_filters, violation_json
from deploytrack.web.sessions import require


@page
async def rules(request: Request) -> Response:
    """GET /rules: deployment rules with scope, mode and their next no-deploy window; overrides."""
    token = await require(request, "read")
    db = request.app.state.deploytrack.db
    now = now_us()
    listed = [(r, *window_state(r, now)) for r in await rule_store.list_rules(db)]
    return render(request, "rules.html", {"token": token, "rules": listed, "now": now,
                                          "overrides": await rule_store.list_overrides(db, 50)})


@page
async def violations(request: Request) -> Response:
    """GET /rules/violations: deployments a rule blocked or objected to, newest first."""
    token = await require(request, "read")
    db = request.app.state.deploytrack.db
    filters = violation_filters(request)
    rows = [violation_json(r) | {"at_us": r["at"]} for r in await rule_store.list_violations(db, PAGE_SIZE, **filters)]
    query = {"product": filters["product"], "outcome": filters["outcome"]}
    next_before = rows[-1]["id"] if len(rows) == PAGE_SIZE else None
    return render(request, "violations.html", {
        "token": token, "violations": rows, "filters": filters, "outcomes": OUTCOMES,
        "products": await queries.names(db, "products"), "paged": filters["before"] is not None,
        "first_url": page_url("/rules/violations", query),
        "next_url": page_url("/rules/violations", {**query, "before": str(next_before)}) if next_before else None})
