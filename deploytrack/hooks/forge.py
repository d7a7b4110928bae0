"""Push deliveries, which GitHub, Gitea and Forgejo (and, nearly, GitLab) shape alike: commits for lead time."""

from __future__ import annotations

from typing import Any

from deploytrack.errors import BadRequest
from deploytrack.hooks.model import MAX_TITLE, Context, Delivery, ignored, obj, text
from deploytrack.storage import commits


def push(data: dict[str, Any], ctx: Context, delivery: str | None, repository: str | None = None) -> Delivery:
    """Each pushed commit's SHA, time, message and author, recorded under the repository's full name."""
    repo = repository or text(obj(data, "repository"), "full_name", 512) or ""
    items = data.get("commits")
    if items is None or items == []:
        return ignored("push without commits", delivery)
    if not isinstance(items, list):
        raise BadRequest("Field 'commits' must be a list", "commits")
    batch = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"Field 'commits[{i}]' must be a JSON object", f"commits[{i}]")
        author = obj(item, "author")
        batch.append({k: v for k, v in {
            "sha": text(item, "id", 128), "repository": repo, "committed_at": item.get("timestamp"),
            "message": text(item, "message", MAX_TITLE),
            "author": text(author, "name", 256) or text(author, "email", 256),
        }.items() if v is not None})
    return Delivery(delivery_id=delivery, commits=commits.parse_batch(batch, ctx.limits, ctx.settings.max_batch_events))
