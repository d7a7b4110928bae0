"""Versioner: `POST /deployment-events/` and `POST /build-events/`, `Authorization: Bearer`.

`POST /version-events/` is what Versioner's GitHub Action sent for builds before `/build-events/`:
a built version, with no `status` (a finished build) and its time as `built_at`; its deployments
named the environment `environment`.

Errors are `{"detail": "..."}`; success is 200 with the documented fields, plus the ids Versioner's
CLI and GitHub Action read (`product_id`, `version_id`, `environment_id`, `deployment_id`, `event_id`).
Besides the document's fields, what those clients send is understood: `deploy_url` (the CI link when
`build_url` is absent), `started_at` / `completed_at` (the event's time when `timestamp` is absent),
`deployed_by_email` / `deployed_by_name` (the actor when `deployed_by` is absent; `built_by_*` alike).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from deploytrack.dialects import Context
from deploytrack.errors import BadRequest, DeploytrackError
from deploytrack.metrics.rules import TERMINAL
from deploytrack.model import Event, Fields, check_metadata, client_key, normalize_status, stable_id
from deploytrack.settings import canonical_environment
from deploytrack.storage.ingest import IngestResult
from deploytrack.timeutil import to_iso
from deploytrack.web.auth import Token
from deploytrack.web.http import bearer, parse_json

NAME = "versioner"
SECRET_IN_BODY = False
# Which of the clients' run times is the event's own time, by status (pending events have none).
_TIME_FIELDS = {"started": "started_at", **dict.fromkeys(TERMINAL, "completed_at")}


def secret(request: Request, data: Any) -> str | None:
    return bearer(request, "Bearer")


def payload(request: Request, raw: bytes) -> Any:
    return parse_json(raw)


def to_events(data: Any, token: Token, ctx: Context) -> list[Event]:
    f = Fields(data, ctx.limits)
    product = f.name("product_name", required=True) or ""
    version = f.name("version", required=True, allow_number=True)
    # (`environment`: what Versioner's GitHub Action sent before its 2025 releases)
    environment = f.name("environment_name") or f.name("environment")
    if environment is None and ctx.kind == "deployment":
        raise BadRequest("Field 'environment_name' is required", "environment_name")
    status_value = f.raw("status")
    if status_value is None:
        status_value = ctx.status
    if status_value is None:
        raise BadRequest("Field 'status' is required", "status")
    status, status_raw = normalize_status(status_value)
    who = "deployed_by" if ctx.kind == "deployment" else "built_by"
    event = Event(
        dialect=NAME, kind=ctx.kind, product=product, version=version, environment_raw=environment,
        status=status, status_raw=status_raw, actor=f.str(who) or f.str(who + "_email") or f.str(who + "_name"),
        scm_branch=f.str("scm_branch"), scm_sha=f.name("scm_sha"), scm_repository=f.str("scm_repository"),
        build_url=f.str("build_url") or f.str("deploy_url"), build_number=f.str("build_number", allow_number=True),
        source_system=f.str("source_system"), invoke_id=f.name("invoke_id", allow_number=True),
        summary=f.str("description") or f.str("summary"), change_id=f.name("change_id"),
        occurred_at=_event_time(f, status, ctx.kind),
        commit_time=f.time("commit_timestamp"),
    )
    extra = f.obj("extra_metadata") or {}
    event.metadata = check_metadata({**f.rest(), **extra}, ctx.limits, "extra_metadata")
    if event.invoke_id:
        event.client_key = client_key(token.id, NAME, ctx.kind, product,
                                      canonical_environment(environment, ctx.aliases) if environment else None,
                                      event.invoke_id, status)
    return [event]


def _event_time(f: Fields, status: str, kind: str) -> int | None:
    """`timestamp`; else the run time Versioner's clients send that fits the status (`completed_at`
    for a finished event, `started_at` for a started one; the other stays in metadata), or a build's
    `built_at`; else None (the arrival time)."""
    for name in ("timestamp", _TIME_FIELDS.get(status), "built_at" if kind == "build" else None):
        if name is not None and (at := f.time(name)) is not None:
            return at
    return None


def reply(result: IngestResult, ctx: Context) -> tuple[int, dict[str, Any]]:
    row = result.rows[0]
    body: dict[str, Any] = {"id": row["id"], "product_name": row["product"], "version": row["version"],
                            "product_id": stable_id("product", row["product"]),
                            "version_id": stable_id("version", row["product"], row["version"])}
    if row["kind"] == "deployment":
        deployment = row["deployment_id"]
        body.update(environment_name=row["environment"], status=row["status"],
                    deployed_at=to_iso(row["occurred_at"]), deployed_by=row["actor"],
                    environment_id=stable_id("environment", row["environment"]), event_id=row["id"],
                    deployment_id=str(deployment) if deployment is not None else None)
    else:
        body.update(status=row["status"], created_at=to_iso(row["occurred_at"]))
    return 200, body


def error_body(error: DeploytrackError) -> dict[str, Any]:
    return {"detail": error.message}
