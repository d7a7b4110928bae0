"""Quanta DEM push: `POST|GET /api/events/push`, `Authorization: Token <t>` or `?auth_token=<t>`.

POST needs `Content-Type: application/json`; GET carries the fields as query parameters.
Success is 200 `{"success": true, ...}`; failure a 4xx with `{"error": "..."}`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from deploytrack.dialects import Context
from deploytrack.errors import BadRequest, DeploytrackError, UnsupportedMediaType
from deploytrack.model import Event, Fields, check_metadata
from deploytrack.storage.ingest import IngestResult
from deploytrack.web.auth import Token
from deploytrack.web.http import bearer, parse_json

NAME = "quanta"
SECRET_IN_BODY = False
TYPES = {"code_deploy": "deployment", "config_change": "config_change", "comment": "comment", "cron": "cron",
         "custom": "custom"}


def secret(request: Request, data: Any) -> str | None:
    return bearer(request, "Token") or request.query_params.get("auth_token")


def payload(request: Request, raw: bytes) -> Any:
    if request.method == "GET":
        return {k: v for k, v in request.query_params.items() if k != "auth_token"}
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaType("Content-Type must be application/json", "Content-Type")
    return parse_json(raw)


def to_events(data: Any, token: Token, ctx: Context) -> list[Event]:
    f = Fields(data, ctx.limits)
    kind_name = f.str("type", required=True) or ""
    if kind_name not in TYPES:
        raise BadRequest(f"Field 'type' must be one of {', '.join(TYPES)}; got {kind_name[:64]!r}", "type")
    content = f.str("content", max_chars=ctx.limits.max_summary_chars)
    event = Event(
        dialect=NAME, kind=TYPES[kind_name], product=ctx.product_or_default(f.name("product"), token),
        environment_raw=f.name("environment") or token.environment, version=f.name("version", allow_number=True),
        summary=content, actor=f.str("user"),
        occurred_at=f.time("timestamp"),
    )
    event.metadata = check_metadata({"type": kind_name, **f.rest()}, ctx.limits)
    return [event]


def reply(result: IngestResult, ctx: Context) -> tuple[int, dict[str, Any]]:
    return 200, {"success": True, "id": result.rows[0]["id"]}


def error_body(error: DeploytrackError) -> dict[str, Any]:
    return {"error": error.message}
