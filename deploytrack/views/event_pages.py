"""The event list (filters, search, keyset paging) and one event with all its fields."""

from __future__ import annotations

import orjson
from starlette.requests import Request
from starlette.responses import Response

from deploytrack.errors import NotFound
from deploytrack.model import KINDS, STATUSES
from deploytrack.storage import event_queries as queries
from deploytrack.views.html import MENU_LIMIT, PAGE_SIZE, page, page_url, render
from deploytrack.web.sessions import require


@page
async def events(request: Request) -> Response:
    """GET /events: events newest first, filtered by product, environment, kind, status, time and text."""
    token = await require(request, "read")
    app = request.app.state.deploytrack
    flt = queries.EventFilter.from_query(request.query_params, app.settings.environment_aliases)
    cursor = request.query_params.get("cursor")
    rows, next_cursor = await queries.list_events(app.db, flt, PAGE_SIZE, cursor)
    query = dict(flt.as_query())
    return render(request, "events.html", {
        "token": token, "events": rows, "filter": flt, "paged": bool(cursor), "kinds": KINDS, "statuses": STATUSES,
        "next_url": page_url("/events", query, next_cursor) if next_cursor else None,
        "first_url": page_url("/events", query),
        "products": await queries.names(app.db, "products", MENU_LIMIT),
        "environments": await queries.names(app.db, "environments", MENU_LIMIT), "menu_limit": MENU_LIMIT,
    })


@page
async def event_detail(request: Request) -> Response:
    """GET /events/{id}: every field and the metadata of one event."""
    token = await require(request, "read")
    row = await queries.get_event(request.app.state.deploytrack.db, request.path_params["event_id"])
    if row is None:
        raise NotFound("There is no event with that id.")
    event = queries.event_json(row)
    metadata = orjson.dumps(event["metadata"], option=orjson.OPT_INDENT_2).decode() if event["metadata"] else None
    return render(request, "event.html", {"token": token, "event": event, "row": row, "metadata": metadata})
