"""The one request path the four foreign APIs share (`Endpoint`), and their routes."""

from __future__ import annotations

from types import ModuleType
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from deploytrack.dialects import Context, devgrid, ilert, quanta, versioner
from deploytrack.errors import DeploymentBlocked, DeploytrackError, MethodNotAllowed
from deploytrack.model import InexactNumber, exact_json, fingerprint
from deploytrack.storage import ingest as store
from deploytrack.timeutil import now_us
from deploytrack.web.auth import Token, authenticate
from deploytrack.web.http import JSONResponse, idempotency_key, read_body, refuse_nul


class Endpoint:
    """The ingestion path of one dialect and kind, as an ASGI app: Starlette routes to it, and the
    application object calls it straight (`app.Deploytrack`)."""

    def __init__(self, dialect: ModuleType, kind: str, status: str | None = None) -> None:
        self.dialect = dialect
        self.kind = kind
        self.status = status  # (Context.status)
        self.__name__ = f"{dialect.NAME}_{kind}"  # the route's name

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = await self.ingest(Request(scope, receive))
        await response(scope, receive, send)

    async def ingest(self, request: Request) -> Response:
        dialect, kind = self.dialect, self.kind
        app = request.app.state.deploytrack
        try:
            refuse_nul(request)
            token: Token | None = None
            if not dialect.SECRET_IN_BODY:
                token = await authenticate(app.db, dialect.secret(request, None), "ingest", cached=True)
                app.limiter.check(token.id)
            raw = await read_body(request, app.settings.max_body_bytes)
            key = idempotency_key(request)
            data = dialect.payload(request, raw)
            if token is None:
                token = await authenticate(app.db, dialect.secret(request, data), "ingest", cached=True)
                app.limiter.check(token.id)
            ctx = Context(kind, app.limits, app.settings.max_batch_events, app.settings.environment_aliases, request,
                          self.status)
            try:
                events = dialect.to_events(data, token, ctx)
            except InexactNumber:  # maybe an integer beyond 64 bits, which orjson parsed as a float
                events = dialect.to_events(exact_json(raw), token, ctx)
            result = await app.db.write_grouped(store.ingest_group, store.Ingest(
                events=events, token_id=token.id, received_at=now_us(), aliases=app.settings.environment_aliases,
                idempotency_key=key, fingerprint=fingerprint(raw) if key else None,
                rules="block" if dialect.NAME in app.settings.rules_block_set else "record"), shared=True)
            app.count_ingested(dialect.NAME, 0 if result.replayed else len(events))
            status, body = dialect.reply(result, ctx)
            return JSONResponse(body, status_code=status)
        except DeploytrackError as error:
            return self._refused(request, error)

    def refuse_method(self, request: Request, allowed: set[str]) -> Response:
        """A method this path does not take: a 405 naming the ones it does, in the API's error shape."""
        methods = ", ".join(sorted(allowed))
        error = MethodNotAllowed(f"method {request.method[:16]} not allowed; this path takes {methods}")
        error.headers = {"Allow": methods}
        return self._refused(request, error)

    def _refused(self, request: Request, error: DeploytrackError) -> Response:
        request.app.state.deploytrack.count_rejected(self.dialect.NAME, error.status)
        body = error.preflight_body() if isinstance(error, DeploymentBlocked) else self.dialect.error_body(error)
        return JSONResponse(body, status_code=error.status, headers=error.headers)


def _both(path: str, handler: Any, methods: list[str]) -> list[Route]:
    """Each ingestion path answers with and without a trailing slash, never redirecting. Only the
    methods named: Starlette adds HEAD to a GET route, and a HEAD (a link checker's, a monitor's) to
    Quanta's GET push would record a deployment."""
    bare = path.rstrip("/")
    found = [Route(bare, handler, methods=methods), Route(bare + "/", handler, methods=methods)]
    for route in found:
        route.methods = set(methods)
    return found


def routes() -> list[Route]:
    """Every ingestion path of the four APIs."""
    return [
        *_both("/deployment-events", Endpoint(versioner, "deployment"), ["POST"]),
        *_both("/build-events", Endpoint(versioner, "build"), ["POST"]),
        *_both("/version-events", Endpoint(versioner, "build", status="completed"), ["POST"]),  # (versioner.py)
        *_both("/api/events/push", Endpoint(quanta, "deployment"), ["GET", "POST"]),
        *_both("/events", Endpoint(devgrid, "deployment"), ["POST"]),
        *_both("/api/deployment-events", Endpoint(ilert, "deployment"), ["POST"]),
    ]
