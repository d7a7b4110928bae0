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
    name,
    nested,
    text,
)
from deploytrack.hooks.signatures import same_secret
from deploytrack.model import Event, Fields
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
        path = text(nested(Fields(data, ctx.limits), "project"), "path_with_namespace")
        return forge.push(_commit_times(data), ctx, delivery, (path, "project.path_with_namespace"))
    if kind == "deployment":
        return _deployment(Fields(data, ctx.limits), ctx, delivery)
    return ignored(f"event {str(kind)[:64]!r} is not used", delivery)


def _deployment(data: Fields, ctx: Context, delivery: str | None) -> Delivery:
    status = text(data, "status") or ""
    if status not in STATUSES:
        return ignored(f"deployment status {status[:64]!r} is not used", delivery)
    project, user = nested(data, "project"), nested(data, "user")
    environment = name(data, "environment") or ctx.hook.environment
    if not environment:
        return ignored("the deployment names no environment", delivery)
    # The payload carries only the short SHA; the commit URL ends with the full one.
    match = _FULL_SHA.search(text(data, "commit_url") or "")
    short_sha = name(data, "short_sha")
    sha = match.group(1) if match else short_sha
    deployment = name(data, "deployment_id")
    links = [{"href": url, "text": "environment"} for url in [text(data, "environment_external_url")] if url]
    path = name(project, "path_with_namespace")
    event = Event(
        dialect=NAME, kind="deployment", product=ctx.product(path, name(project, "name")),
        status=STATUSES[status], status_raw=status, version=(sha or "")[:12] or None, environment_raw=environment,
        scm_sha=sha, scm_repository=path, build_url=text(data, "deployable_url"),
        build_id=name(data, "deployable_id"), invoke_id=deployment, source_system="gitlab",
        actor=text(user, "username") or text(user, "name"),
        summary=text(data, "commit_title", ctx.limits.max_summary_chars),
        occurred_at=data.time("status_changed_at", status_time), links=links or None,
        metadata={k: v for k, v in {"environment_tier": text(data, "environment_tier"),
                                    "short_sha": short_sha}.items() if v},
    )
    event.client_key = f"hook:{ctx.hook.token_id}:gitlab:{deployment}:{status}"
    return Delivery(delivery_id=delivery, events=[event])


def status_time(value: Any, field: str) -> int:
    """A GitLab time (`gitlab_time`) in epoch µs; ISO 8601 and epoch numbers are taken too."""
    return parse_timestamp(gitlab_time(value), field)


def gitlab_time(value: Any) -> Any:
    """GitLab's own time forms as ISO 8601, anything else as it is: Ruby's `TimeWithZone#to_s` writes
    `2021-04-28 21:50:00 +0200`, and `2021-04-28 19:50:00 UTC` in a UTC zone (GitLab's default)."""
    if isinstance(value, str):
        stamp = value.strip()
        if stamp.endswith(" UTC"):
            stamp = stamp[:-4] + " +0000"
        with contextlib.suppress(ValueError):
            return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S %z").isoformat()
    return value


def _commit_times(data: dict[str, Any]) -> dict[str, Any]:
    """A push with each commit's `timestamp` as `gitlab_time` reads it; a malformed list is left to `forge.push`."""
    items = data.get("commits")
    if not isinstance(items, list):
        return data
    return {**data, "commits": [{**c, "timestamp": gitlab_time(c.get("timestamp"))} if isinstance(c, dict) else c
                                for c in items]}
