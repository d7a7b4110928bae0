"""The native, versioned JSON API (`/api/v1/...`), `/healthz` and Prometheus `/metrics`."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from deploytrack.errors import BadRequest, DeploytrackError, NotFound
from deploytrack.model import whole_number
from deploytrack.storage import event_queries as queries
from deploytrack.storage.failures import RETRY_AFTER
from deploytrack.timeutil import to_iso
from deploytrack.web.http import JSONResponse, error_response, refuse_nul
from deploytrack.web.openapi import openapi_json
from deploytrack.web.sessions import require

Handler = Callable[[Request], Awaitable[Response]]
log = logging.getLogger("deploytrack.api")


def api(handler: Handler) -> Handler:
    """Turn raised catalogue errors into the native error shape."""

    async def wrapped(request: Request) -> Response:
        try:
            refuse_nul(request)
            return await handler(request)
        except DeploytrackError as error:
            return error_response(error)

    wrapped.__name__ = handler.__name__
    wrapped.__doc__ = handler.__doc__
    return wrapped


def page_limit(request: Request, default: int = 50, most: int = 500) -> int:
    """The `limit` query parameter: a page size from 1 to `most`."""
    raw = request.query_params.get("limit")
    if raw is None:
        return default
    value = whole_number(raw)
    if value is None:
        raise BadRequest("query parameter 'limit' must be a whole number", "limit")
    if not 1 <= value <= most:
        raise BadRequest(f"query parameter 'limit' must be between 1 and {most}", "limit")
    return value


@api
async def list_events(request: Request) -> Response:
    """Events newest first, filtered, with cursor paging."""
    await require(request, "read")
    app = request.app.state.deploytrack
    flt = queries.EventFilter.from_query(request.query_params, app.settings.environment_aliases)
    rows, cursor = await queries.list_events(app.db, flt, page_limit(request), request.query_params.get("cursor"),
                                             app.settings.search_window)
    return JSONResponse({"events": [queries.event_json(r) for r in rows], "next_cursor": cursor})


@api
async def get_event(request: Request) -> Response:
    """One event with all its metadata."""
    await require(request, "read")
    row = await queries.get_event(request.app.state.deploytrack.db, request.path_params["event_id"])
    if row is None:
        raise NotFound("no event with that id", "event_id")
    return JSONResponse(queries.event_json(row))


class HealthLog:
    """What /healthz tells the log of the database failing: a failure when it starts and once a minute while
    it lasts (a monitor polls every few seconds), and the recovery."""

    def __init__(self) -> None:
        self.failing = False
        self.logged_at = 0.0  # time.monotonic()

    def failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if not self.failing or now - self.logged_at >= 60:
            log.error("health check: the database did not answer: %s", exc)
            self.logged_at = now
        self.failing = True

    def answered(self) -> None:
        if self.failing:
            log.warning("health check: the database answers again")
            self.failing = False


async def healthz(request: Request) -> Response:
    """Liveness and a database round trip; no auth."""
    app = request.app.state.deploytrack
    try:
        await app.db.fetchone("SELECT 1")
    except Exception as exc:  # noqa: BLE001 - health reports, never raises
        # Unauthenticated: the cause (paths, hosts) goes to the log, not to whoever asks; an unknown one with
        # its traceback.
        if isinstance(exc, DeploytrackError):
            app.health.failed(exc)
        else:
            log.exception("health check: the database did not answer")
        return JSONResponse({"status": "error", "error": "the database did not answer; see the server log"},
                            status_code=503, headers=RETRY_AFTER)
    app.health.answered()
    report, checked = app.db.integrity, app.db.integrity_checked_at
    if report is None:
        return JSONResponse({"status": "ok", "version": app.version, "integrity": "not checked yet"})
    body = {"version": app.version, "integrity": "ok" if report.ok else "failed",
            "integrity_checked_at": to_iso(int(checked * 1_000_000)) if checked is not None else None}
    if not report.ok:  # details (pages, tables) go to the log and `deploytrack check`, not to whoever asks
        return JSONResponse({"status": "error", **body, "error": "the database failed its integrity check; "
                             "see the server log"}, status_code=503)
    return JSONResponse({"status": "ok", **body})


async def prometheus(request: Request) -> Response:
    """Counters in Prometheus text format."""
    return PlainTextResponse(request.app.state.deploytrack.prometheus_text(),
                             media_type="text/plain; version=0.0.4; charset=utf-8")


def routes() -> list[Route]:
    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", prometheus, methods=["GET"]),
        Route("/api/v1/events", list_events, methods=["GET"]),
        Route("/api/v1/events/{event_id}", get_event, methods=["GET"]),
        Route("/api/v1/openapi.json", openapi_json, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
