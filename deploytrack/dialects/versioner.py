"""Versioner: `POST /deployment-events/` and `POST /build-events/`, `Authorization: Bearer`.

Errors are `{"detail": "..."}`; success is 200 with the documented fields.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from deploytrack.dialects import Context
from deploytrack.errors import BadRequest, DeploytrackError
from deploytrack.model import Event, Fields, check_metadata, normalize_status
from deploytrack.storage.ingest import IngestResult
from deploytrack.timeutil import to_iso
from deploytrack.web.auth import Token
from deploytrack.web.http import bearer, parse_json

NAME = "versioner"
SECRET_IN_BODY = False


def secret(request: Request, data: Any) -> str | None:
    return bearer(request, "Bearer")


def payload(request: Request, raw: bytes) -> Any:
    return parse_json(raw)


def to_events(data: Any, token: Token, ctx: Context) -> list[Event]:
    f = Fields(data, ctx.limits)
    product = f.str("product_name", required=True)
    version = f.str("version", required=True, allow_number=True)
    environment = f.str("environment_name", required=True) if ctx.kind == "deployment" else f.str("environment_name")
    status_value = f.raw("status")
    if status_value is None:
        raise BadRequest("Field 'status' is required", "status")
    status, status_raw = normalize_status(status_value)
    actor = f.str("deployed_by" if ctx.kind == "deployment" else "built_by")
    event = Event(
        dialect=NAME, kind=ctx.kind, product=product or "", version=version, environment_raw=environment,
        status=status, status_raw=status_raw, actor=actor,
        scm_branch=f.str("scm_branch"), scm_sha=f.str("scm_sha"), scm_repository=f.str("scm_repository"),
        build_url=f.str("build_url"), build_number=f.str("build_number", allow_number=True),
        source_system=f.str("source_system"), invoke_id=f.str("invoke_id", allow_number=True),
        summary=f.str("description") or f.str("summary"), change_id=f.str("change_id"),
        occurred_at=f.time("timestamp"),
        commit_time=f.time("commit_timestamp"),
    )
    extra = f.obj("extra_metadata") or {}
    event.metadata = check_metadata({**f.rest(), **extra}, ctx.limits, "extra_metadata")
    if event.invoke_id:
        event.client_key = f"{NAME}:{ctx.kind}:{event.product}:{environment or ''}:{event.invoke_id}:{status}"
    return [event]


def reply(result: IngestResult, ctx: Context) -> tuple[int, dict[str, Any]]:
    row = result.rows[0]
    body: dict[str, Any] = {"id": row["id"], "product_name": row["product"], "version": row["version"]}
    if row["kind"] == "deployment":
        body.update(environment_name=row["environment"], status=row["status"],
                    deployed_at=to_iso(row["occurred_at"]), deployed_by=row["actor"])
    else:
        body.update(status=row["status"], created_at=to_iso(row["occurred_at"]))
    return 200, body


def error_body(error: DeploytrackError) -> dict[str, Any]:
    return {"detail": error.message}
