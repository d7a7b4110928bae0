"""The one request path of every hook: find the hook, read the body (hooks' own size limit),
verify the source's signature or secret, map, record in one write transaction, answer.

Errors are in the native API's shape. Nothing is stored before the signature is checked, and a
2xx means the delivery is on disk (or was ignored: pings and event types deploytrack does not use).
"""

from __future__ import annotations

from types import ModuleType

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from deploytrack.errors import DeploytrackError, NotFound, Unauthorized
from deploytrack.hooks import (
    alertmanager,
    gitea,
    github,
    gitlab,
    opsgenie,
    pagerduty,
    registry,
)
from deploytrack.hooks.model import Context, Hook
from deploytrack.hooks.record import record
from deploytrack.model import whole_number
from deploytrack.timeutil import now_us
from deploytrack.views.api import error_response
from deploytrack.web.auth import record_use
from deploytrack.web.http import JSONResponse, read_body

SOURCES: dict[str, ModuleType] = {m.NAME: m for m in (github, gitlab, gitea, pagerduty, alertmanager, opsgenie)}
SOURCES["forgejo"] = gitea  # Forgejo is Gitea's fork and signs the same way


def path(source: str, hook_id: int) -> str:
    return f"/hooks/{source}/{hook_id}"


async def receive(request: Request) -> Response:
    app = request.app.state.deploytrack
    name = request.path_params["source"]
    source = SOURCES.get(name)
    try:
        if source is None:
            raise NotFound(f"no hook source {name[:64]!r}; known: {', '.join(sorted(SOURCES))}", "source")
        raw_id = request.path_params.get("hook_id")
        hook_id = whole_number(raw_id) if raw_id is not None else None
        if raw_id is not None and hook_id is None:
            raise Unauthorized("unknown hook")
        hooks = await registry.candidates(app.db, name, hook_id)
        raw = await read_body(request, app.settings.hook_max_body_bytes)
        hook = _verified(source, request, raw, hooks)
        app.limiter.check(hook.token_id)
        record_use(app.db, hook.token_id)
        delivery = source.to_delivery(request, raw, Context(hook, app.settings, app.limits))
        if delivery.ignored is not None:
            return JSONResponse({"status": "ignored", "reason": delivery.ignored})
        done = await app.db.write(record, hook.token_id, delivery, app.settings, now_us())
        app.count_ingested(f"hook:{source.NAME}", 0 if done.duplicate else len(done.events))
        return JSONResponse(done.as_dict())
    except DeploytrackError as error:
        # (a label from the path only for a known source: an unknown one would add a series per name sent)
        app.count_rejected(f"hook:{source.NAME if source is not None else 'unknown'}", error.status)
        return error_response(error)


def _verified(source: ModuleType, request: Request, raw: bytes, hooks: list[Hook]) -> Hook:
    for hook in hooks:
        if source.verify(request, raw, hook.secret):
            return hook
    raise Unauthorized("the delivery's signature or secret does not match this hook")


def routes() -> list[Route]:
    return [Route(p, receive, methods=["POST"]) for p in (
        "/hooks/{source}", "/hooks/{source}/", "/hooks/{source}/{hook_id}", "/hooks/{source}/{hook_id}/")]
