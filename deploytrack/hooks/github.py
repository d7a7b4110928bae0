"""GitHub: `deployment_status` -> the deployment lifecycle, `push` -> commits (for lead time).

Signed with `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`; `X-GitHub-Event` names the
event, `X-GitHub-Delivery` is the delivery's GUID (redeliveries keep it).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from deploytrack.hooks import forge
from deploytrack.hooks.model import (
    Context,
    Delivery,
    delivery_id,
    ignored,
    json_body,
    name,
    nested,
    text,
)
from deploytrack.hooks.signatures import hex_matches, prefixed
from deploytrack.model import Event, Fields, check_metadata

NAME = "github"
# GitHub's deployment states; `inactive` only marks an older deployment as superseded.
STATES = {"pending": "pending", "queued": "pending", "in_progress": "started", "success": "completed",
          "failure": "failed", "error": "failed"}


def verify(request: Request, raw: bytes, secret: str) -> bool:
    return hex_matches(secret, raw, *prefixed(request.headers.get("x-hub-signature-256"), "sha256="))


def to_delivery(request: Request, raw: bytes, ctx: Context) -> Delivery:
    event = request.headers.get("x-github-event", "")
    delivery = delivery_id(request.headers.get("x-github-delivery"))
    if event == "ping":
        return ignored("ping", delivery)
    if event == "push":
        return forge.push(json_body(request, raw), ctx, delivery)
    if event == "deployment_status":
        return _deployment_status(json_body(request, raw), ctx, delivery)
    return ignored(f"event {event[:64]!r} is not used", delivery)


def _deployment_status(data: dict[str, Any], ctx: Context, delivery: str | None) -> Delivery:
    body = Fields(data, ctx.limits)
    status, deployment, repo = nested(body, "deployment_status"), nested(body, "deployment"), nested(body, "repository")
    state = text(status, "state") or ""
    if state not in STATES:
        return ignored(f"deployment state {state[:64]!r} is not used", delivery)
    sha = name(deployment, "sha")
    environment = name(status, "environment") or name(deployment, "environment") or ctx.hook.environment
    creator = nested(status, "creator") if status.body.get("creator") else nested(deployment, "creator")
    links = [{"href": url, "text": "environment"} for url in [text(status, "environment_url")] if url]
    full_name = name(repo, "full_name")
    event = Event(
        dialect=NAME, kind="deployment", product=ctx.product(full_name, name(repo, "name")),
        status=STATES[state], status_raw=state, version=sha[:12] if sha else name(deployment, "ref"),
        environment_raw=environment, scm_sha=sha, scm_branch=text(deployment, "ref"), scm_repository=full_name,
        build_url=text(status, "log_url") or text(status, "target_url"), invoke_id=name(deployment, "id"),
        actor=text(creator, "login"), source_system="github",
        summary=text(status, "description", ctx.limits.max_summary_chars)
        or text(deployment, "description", ctx.limits.max_summary_chars),
        occurred_at=status.time("created_at"), links=links or None,
        metadata=check_metadata({k: v for k, v in {
            "deployment_task": text(deployment, "task"), "github_deployment_status_id": name(status, "id"),
            "deployment_payload": deployment.raw("payload") or None}.items() if v}, ctx.limits, "deployment.payload"),
    )
    if not environment:
        return ignored("the deployment names no environment", delivery)
    event.client_key = f"hook:{ctx.hook.token_id}:github:{text(status, 'id') or delivery}"
    return Delivery(delivery_id=delivery, events=[event])
