"""ilert deployment events: `POST /api/deployment-events`, the token is the body's `integrationKey`.

`summary` is required; `timestamp` (epoch seconds, epoch milliseconds or ISO 8601), `userEmail`,
`customDetails` and `links` are optional. Success is 202 Accepted, as ilert's OpenAPI document says.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from deploytrack.dialects import Context
from deploytrack.errors import DeploytrackError
from deploytrack.model import Event, Fields, check_links, check_metadata
from deploytrack.storage.ingest import IngestResult
from deploytrack.web.auth import Token
from deploytrack.web.http import parse_json

NAME = "ilert"
SECRET_IN_BODY = True


def secret(request: Request, data: Any) -> str | None:
    key = data.get("integrationKey") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None


def payload(request: Request, raw: bytes) -> Any:
    return parse_json(raw)


def to_events(data: Any, token: Token, ctx: Context) -> list[Event]:
    f = Fields(data, ctx.limits)
    f.used.add("integrationKey")  # the credential: never stored
    summary = f.str("summary", required=True, max_chars=ctx.limits.max_summary_chars)
    details = f.obj("customDetails") or {}
    event = Event(
        dialect=NAME, kind="deployment", product=ctx.product_or_default(None, token),
        environment_raw=token.environment, summary=summary, actor=f.str("userEmail"),
        links=check_links(f.raw("links"), ctx.limits),
        occurred_at=f.time("timestamp"),
    )
    event.metadata = check_metadata({**f.rest(), **details}, ctx.limits, "customDetails")
    return [event]


def reply(result: IngestResult, ctx: Context) -> tuple[int, dict[str, Any]]:
    return 202, {"id": result.rows[0]["id"]}


def error_body(error: DeploytrackError) -> dict[str, Any]:
    return {"status": error.status, "code": error.code.upper(), "message": error.message}
