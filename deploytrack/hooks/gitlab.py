"""GitLab: Deployment events -> the deployment lifecycle, Push events -> commits.

GitLab sends the hook's secret token as it is in `X-Gitlab-Token`; `X-Gitlab-Event` names the
event and `X-Gitlab-Event-UUID` identifies the delivery.
"""

from __future__ import annotations

import contextlib
import re
from datetime import datetime
from typing import Any

from starlette.requests import Request

from deploytrack.hooks import forge
from deploytrack.hooks.model import (
    Context,
    Delivery,
    delivery_id,
    ignored,
    json_body,
    obj,
    text,
)
from deploytrack.hooks.signatures import same_secret
from deploytrack.model import Event
from deploytrack.timeutil import parse_timestamp

NAME = "gitlab"
STATUSES = {"created": "pending", "running": "started", "success": "completed", "failed": "failed",
            "canceled": "aborted"}
_FULL_SHA = re.compile(r"/commit/([0-9a-f]{40}|[0-9a-f]{64})$")


def verify(request: Request, raw: bytes, secret: str) -> bool:
    return same_secret(secret, request.headers.get("x-gitlab-token"))


def to_delivery(request: Request, raw: bytes, ctx: Context) -> Delivery:
    delivery = delivery_id(request.headers.get("x-gitlab-event-uuid"))
    data = json_body(request, raw)
    kind = data.get("object_kind")
    if kind == "push":
        project = obj(data, "project")
        return forge.push(data, ctx, delivery, text(project, "path_with_namespace", 512))
    if kind == "deployment":
        return _deployment(data, ctx, delivery)
    return ignored(f"event {str(kind)[:64]!r} is not used", delivery)


def _deployment(data: dict[str, Any], ctx: Context, delivery: str | None) -> Delivery:
    status = text(data, "status") or ""
    if status not in STATUSES:
        return ignored(f"deployment status {status[:64]!r} is not used", delivery)
    project, user = obj(data, "project"), obj(data, "user")
    environment = text(data, "environment", 256) or ctx.hook.environment
    if not environment:
        return ignored("the deployment names no environment", delivery)
    # The payload carries only the short SHA; the commit URL ends with the full one.
    match = _FULL_SHA.search(text(data, "commit_url") or "")
    sha = match.group(1) if match else text(data, "short_sha", 128)
    deployment = text(data, "deployment_id", 64)
    links = [{"href": url, "text": "environment"} for url in [text(data, "environment_external_url")] if url]
    event = Event(
        dialect=NAME, kind="deployment",
        product=ctx.product(text(project, "path_with_namespace"), text(project, "name")),
        status=STATUSES[status], status_raw=status, version=(sha or "")[:12] or None, environment_raw=environment,
        scm_sha=sha, scm_repository=text(project, "path_with_namespace", 512), build_url=text(data, "deployable_url"),
        build_id=text(data, "deployable_id", 64), invoke_id=deployment, source_system="gitlab",
        actor=text(user, "username", 256) or text(user, "name", 256), summary=text(data, "commit_title"),
        occurred_at=status_time(data.get("status_changed_at")), links=links or None,
        metadata={k: v for k, v in {"environment_tier": text(data, "environment_tier", 256),
                                    "short_sha": text(data, "short_sha", 64)}.items() if v},
    )
    event.client_key = f"hook:{ctx.hook.token_id}:gitlab:{deployment}:{status}"
    return Delivery(delivery_id=delivery, events=[event])


def status_time(value: Any) -> int | None:
    """GitLab writes `2021-04-28 21:50:00 +0200`; ISO 8601 is taken too."""
    if value is None:
        return None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = datetime.strptime(value.strip(), "%Y-%m-%d %H:%M:%S %z").isoformat()
    return parse_timestamp(value, "status_changed_at")
