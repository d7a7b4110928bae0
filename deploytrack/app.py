"""create_app(settings): the application object, its routes, and its lifespan."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import Receive, Scope, Send

from deploytrack import __version__
from deploytrack.dialects import endpoint as dialects
from deploytrack.errors import DeploytrackError, MethodNotAllowed, NotFound
from deploytrack.hooks import endpoint as hooks
from deploytrack.metrics.scheduler import Deriver, MetricsScheduler
from deploytrack.model import Limits
from deploytrack.notify.sender import Notifier
from deploytrack.settings import Settings
from deploytrack.storage import postgres as pg
from deploytrack.storage.database import Database, password_for
from deploytrack.storage.event_search import SearchIndexer
from deploytrack.timeutil import now_us, to_iso
from deploytrack.views import api, html, metrics_api, pages, products_api, rules_api
from deploytrack.web.connections import native_refusal
from deploytrack.web.guards import RequestGuards, unavailable
from deploytrack.web.http import RateLimiter, error_response, redact_access_log
from deploytrack.web.links import commit_url, safe_href

log = logging.getLogger("deploytrack")
PACKAGE_DIR = Path(__file__).parent


def relative_time(us: int | None, now: int | None = None) -> str:
    if us is None:
        return ""
    seconds = ((now or now_us()) - us) // 1_000_000
    future = seconds < 0
    seconds = abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            text = f"{seconds // size}{unit}"
            break
    else:
        text = f"{seconds}s"
    return f"in {text}" if future else f"{text} ago"


def duration_text(us: int | None) -> str:
    if us is None:
        return "—"
    seconds = us // 1_000_000
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m {seconds % 60:02d}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m"


def make_templates() -> Jinja2Templates:
    env = Environment(loader=FileSystemLoader(str(PACKAGE_DIR / "templates")),
                      autoescape=select_autoescape(default=True, default_for_string=True))
    env.filters.update(iso=to_iso, safe_href=safe_href, commit_url=commit_url, ago=relative_time,
                       duration=duration_text, utc=html.utc_text, day_or_time=html.day_or_time)
    return Jinja2Templates(env=env)


class App:
    """Shared state of one running server: settings, database, templates, counters."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.version = __version__
        self.db = Database(settings.db, settings.db_readers, password_for(settings),
                           project_after=settings.db_projection_ms / 1000)
        self.deriver = Deriver(self.db, settings)
        self.templates = make_templates()
        self.limits = Limits.from_settings(settings)
        self.limiter = RateLimiter(settings.rate_limit)
        self.health = api.HealthLog()
        self.session_key = b""
        self.started_at = time.time()
        self.ingested: Counter[str] = Counter()
        self.rejected: Counter[tuple[str, int]] = Counter()
        self.background: list[Any] = []  # objects with async start()/stop(), e.g. the scheduler

    async def start(self) -> None:
        redact_access_log()
        await self.db.open()
        self.session_key = await self.db.write(_session_key)
        count = await self.db.fetchone("SELECT COUNT(*) FROM tokens WHERE revoked_at IS NULL")
        if count is not None and count[0] == 0:
            log.warning("No API tokens yet. Create one with: deploytrack token create NAME "
                        "--scope ingest --scope read --db %s", pg.redact(self.settings.db))
        for job in self.background:
            await job.start()

    async def stop(self) -> None:
        for job in reversed(self.background):
            await job.stop()
        await self.deriver.stop()
        await self.db.close()

    def count_ingested(self, dialect: str, n: int) -> None:
        self.ingested[dialect] += n

    def count_rejected(self, dialect: str, status: int) -> None:
        """`dialect` is a label of the /metrics scrape, written unescaped: a fixed name, never a client's text."""
        self.rejected[(dialect, status)] += 1

    def prometheus_text(self) -> str:
        lines = [
            "# HELP deploytrack_events_ingested_total Events stored, by API dialect.",
            "# TYPE deploytrack_events_ingested_total counter",
            *(f'deploytrack_events_ingested_total{{dialect="{d}"}} {n}' for d, n in sorted(self.ingested.items())),
            "# HELP deploytrack_requests_rejected_total Ingestion requests refused, by dialect and status.",
            "# TYPE deploytrack_requests_rejected_total counter",
            *(f'deploytrack_requests_rejected_total{{dialect="{d}",status="{s}"}} {n}'
              for (d, s), n in sorted(self.rejected.items())),
            "# HELP deploytrack_write_commits_total Write transactions committed (each holds a group of requests).",
            "# TYPE deploytrack_write_commits_total counter",
            f"deploytrack_write_commits_total {self.db.commits}",
            "# HELP deploytrack_write_projections_total Transactions that moved staged events into the indexed"
            " tables (SQLite).",
            "# TYPE deploytrack_write_projections_total counter",
            f"deploytrack_write_projections_total {self.db.projections}",
            "# HELP deploytrack_write_tasks_total Write requests committed.",
            "# TYPE deploytrack_write_tasks_total counter",
            f"deploytrack_write_tasks_total {self.db.written_tasks}",
            "# HELP deploytrack_write_busy_seconds_total Time the writer spent in transactions (near the"
            " uptime means writes are the bottleneck).",
            "# TYPE deploytrack_write_busy_seconds_total counter",
            f"deploytrack_write_busy_seconds_total {self.db.busy_seconds:.3f}",
            "# HELP deploytrack_write_commit_seconds_total Of that, time in COMMIT (WAL writes and fsync).",
            "# TYPE deploytrack_write_commit_seconds_total counter",
            f"deploytrack_write_commit_seconds_total {self.db.commit_seconds:.3f}",
            *self._integrity_lines(),
            "# HELP deploytrack_uptime_seconds Seconds since the server started.",
            "# TYPE deploytrack_uptime_seconds gauge",
            f"deploytrack_uptime_seconds {time.time() - self.started_at:.0f}",
        ]
        return "\n".join(lines) + "\n"

    def _integrity_lines(self) -> list[str]:
        """The nightly quick check's last result (nothing before the first check)."""
        if self.db.integrity is None:
            return []
        return [
            "# HELP deploytrack_integrity_ok 1 when the last quick integrity check of the database passed, else 0.",
            "# TYPE deploytrack_integrity_ok gauge",
            f"deploytrack_integrity_ok {int(self.db.integrity.ok)}",
            "# HELP deploytrack_integrity_checked_timestamp_seconds When that check ran (Unix time).",
            "# TYPE deploytrack_integrity_checked_timestamp_seconds gauge",
            f"deploytrack_integrity_checked_timestamp_seconds {self.db.integrity_checked_at:.0f}",
        ]


def _session_key(conn: Any) -> bytes:
    """The key that signs session cookies, made once per database so sessions survive restarts."""
    row = conn.execute("SELECT value FROM kv WHERE key = 'session_key'").fetchone()
    if row is not None:
        return bytes.fromhex(row[0])
    key = secrets.token_bytes(32)
    conn.execute("INSERT INTO kv (key, value) VALUES ('session_key', ?)", (key.hex(),))
    return key


async def _http_error(request: Request, exc: Exception) -> Response:
    """404/405 from routing, in the native error shape (or as a page for browsers)."""
    assert isinstance(exc, HTTPException)
    error: DeploytrackError = MethodNotAllowed("method not allowed for this path") if exc.status_code == 405 \
        else NotFound("no such path") if exc.status_code == 404 else DeploytrackError(str(exc.detail))
    error.status = exc.status_code
    error.headers = dict(exc.headers or {})  # a 405's Allow
    if "text/html" in request.headers.get("accept", "") and request.method == "GET":
        response = pages.render(request, "error.html", {"error": error}, status=exc.status_code)
        response.headers.update(error.headers)
        return response
    return error_response(error)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    error = DeploytrackError("internal error; see the server log")
    error.status, error.code = 500, "internal"
    return error_response(error)


class Deploytrack(Starlette):
    """The application: Starlette, except that ingestion requests go straight to their endpoint.

    Starlette's layers (its two exception middlewares, `RequestGuards`, the router, the endpoint's
    request wrapper and their wrappers of `send`) were a fifth of the event loop's time per Versioner
    event. An ingestion endpoint answers every refusal itself, in its API's shape; for anything else it
    raises, the answer is the one those layers give: a 503 for a database that cannot be used, else the
    logged 500. `RequestGuards`' other rules are for the native API, which no ingestion path is under.
    """

    def __init__(self, ingestion: list[Route], routes: list[BaseRoute], **kwargs: Any) -> None:
        super().__init__(routes=[*ingestion, *routes], **kwargs)
        self.ingestion: dict[str, tuple[dialects.Endpoint, set[str]]] = {}
        for route in ingestion:
            if not isinstance(route.endpoint, dialects.Endpoint):
                raise TypeError(f"ingestion route {route.path} must be a dialects.Endpoint")
            self.ingestion[route.path] = (route.endpoint, route.methods or set())
        # paths only an API takes: another method there is refused in that API's shape (GET /events is a page)
        self.api_only = set(self.ingestion) - {getattr(r, "path", None) for r in routes}

    def refusal_body(self, path: str | None, error: DeploytrackError) -> bytes:
        """A refusal answered below the application (web.connections), in the shape of the API at `path`."""
        found = self.ingestion.get(path) if path is not None else None
        return orjson.dumps(found[0].dialect.error_body(error)) if found else native_refusal(path, error)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self.ingestion.get(scope["path"]) if scope["type"] == "http" and not scope.get("root_path") else None
        if found is None or (scope["method"] not in found[1] and scope["path"] not in self.api_only):
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        request = Request(scope, receive)
        endpoint, methods = found
        try:
            if scope["method"] in methods:
                response = await endpoint.ingest(request)
            else:
                response = endpoint.refuse_method(request, methods)
        except Exception as exc:
            response = unavailable(exc, scope) or await _server_error(request, exc)
        await response(scope, receive, send)


def create_app(settings: Settings) -> Deploytrack:
    """The ASGI application for `settings`; its lifespan opens the database and background jobs."""
    state = App(settings)
    state.background.append(SearchIndexer(state.db))
    if settings.scheduler:
        state.background.append(MetricsScheduler(state.db, settings, deriver=state.deriver))
    if settings.notify_url_list:
        state.background.append(Notifier(state.db, settings))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await state.start()
        try:
            yield
        finally:
            await state.stop()

    routes = [
        *hooks.routes(),
        *api.routes(),
        *metrics_api.routes(),
        *products_api.routes(),
        *rules_api.routes(),
        *pages.routes(),
        Mount("/static", StaticFiles(directory=str(PACKAGE_DIR / "static")), name="static"),
    ]
    app = Deploytrack(dialects.routes(), routes=routes, lifespan=lifespan, middleware=[Middleware(RequestGuards)],
                      exception_handlers={HTTPException: _http_error, Exception: _server_error})
    app.router.redirect_slashes = False
    app.state.deploytrack = state
    return app
