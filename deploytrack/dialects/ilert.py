"""ilert deployment events: `POST /api/deployment-events`; the token is the body's `integrationKey`
(or `apiKey`, the name ilert's GitHub Action and events API use).

`summary` is required; `timestamp` (epoch seconds, epoch milliseconds or ISO 8601), `userEmail`,
`customDetails` and `links` are optional. Success is 202 Accepted, as ilert's OpenAPI document says.

ilert has no fields for what was deployed where, so pipelines put it in `customDetails`; the common
keys become event fields (`DETAILS`), also when sent at the top level as ilert's GitHub Action does
with `repository` and `userName`. The rest of `customDetails` is kept as metadata.
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
KEY_FIELDS = ("integrationKey", "apiKey")
# event field -> the keys read for it, first present wins (top level, then customDetails)
DETAILS = {"product": ("service",), "version": ("version",), "scm_sha": ("sha", "commit"),
           "environment": ("environment", "env"), "scm_repository": ("repository",)}


def secret(request: Request, data: Any) -> str | None:
    for name in KEY_FIELDS:
        key = data.get(name) if isinstance(data, dict) else None
        if isinstance(key, str):
            return key
    return None


def payload(request: Request, raw: bytes) -> Any:
    return parse_json(raw)


def to_events(data: Any, token: Token, ctx: Context) -> list[Event]:
    f = Fields(data, ctx.limits)
    f.used.update(KEY_FIELDS)  # the credential: never stored
    summary = f.str("summary", required=True, max_chars=ctx.limits.max_summary_chars)
    details = Fields(f.obj("customDetails") or {}, ctx.limits, prefix="customDetails.")
    found = {field: _first(keys, f, details, allow_number=field == "version", name=field != "scm_repository")
             for field, keys in DETAILS.items()}
    event = Event(
        dialect=NAME, kind="deployment", product=ctx.product_or_default(found["product"], token),
        environment_raw=found["environment"] or token.environment, version=found["version"],
        scm_sha=found["scm_sha"], scm_repository=found["scm_repository"], summary=summary,
        actor=f.str("userEmail") or f.str("userName"), links=check_links(f.raw("links"), ctx.limits),
        occurred_at=f.time("timestamp"),
    )
    event.metadata = check_metadata({**f.rest(), **details.rest()}, ctx.limits, "customDetails")
    return [event]


def _first(keys: tuple[str, ...], *places: Fields, allow_number: bool, name: bool) -> str | None:
    """The first of `keys` present, looking at the top level before customDetails (`name`: an indexed one)."""
    for place in places:
        for key in keys:
            if (value := (place.name if name else place.str)(key, allow_number=allow_number)) is not None:
                return value
    return None


def reply(result: IngestResult, ctx: Context) -> tuple[int, dict[str, Any]]:
    return 202, {"id": result.rows[0]["id"]}


def error_body(error: DeploytrackError) -> dict[str, Any]:
    return {"status": error.status, "code": error.code.upper(), "message": error.message}
