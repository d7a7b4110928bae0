"""Push deliveries, which GitHub, Gitea and Forgejo (and, nearly, GitLab) shape alike: commits for lead time."""

from __future__ import annotations

from typing import Any

from deploytrack.errors import BadRequest, DeploytrackError
from deploytrack.hooks.model import Context, Delivery, clip, ignored, nested, sent_as, text
from deploytrack.model import Fields
from deploytrack.storage import commits


def push(data: dict[str, Any], ctx: Context, delivery: str | None,
         repository: tuple[str | None, str] | None = None) -> Delivery:
    """Each pushed commit's SHA, time, message and author, recorded under the repository's full name by the
    rules of `POST /api/v1/commits`; an error names the field as the forge sent it.

    `repository`: (the name, the payload field it came from) when the forge does not send `repository.full_name`."""
    body = Fields(data, ctx.limits)
    repo, repo_field = repository or (text(nested(body, "repository"), "full_name"), "repository.full_name")
    items = body.raw("commits")
    if items is None or items == []:
        return ignored("push without commits", delivery)
    if not isinstance(items, list):
        raise BadRequest("Field 'commits' must be a list", "commits")
    batch, sent = [], {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise BadRequest(f"Field 'commits[{i}]' must be a JSON object", f"commits[{i}]")
        author = nested(Fields(item, ctx.limits, prefix=f"commits[{i}]."), "author")
        who = "name" if author.body.get("name") not in (None, "") else "email"
        batch.append({"sha": item.get("id"), "repository": repo or "", "committed_at": item.get("timestamp"),
                      "message": clip(item.get("message"), ctx.limits.max_field_chars), "author": author.body.get(who)})
        sent.update({f"commits[{i}].sha": f"commits[{i}].id", f"commits[{i}].committed_at": f"commits[{i}].timestamp",
                     f"commits[{i}].repository": repo_field, f"commits[{i}].author": f"commits[{i}].author.{who}"})
    try:
        rows = commits.parse_batch([{k: v for k, v in c.items() if v is not None} for c in batch], ctx.limits,
                                   ctx.settings.max_batch_events)
    except DeploytrackError as error:
        raise sent_as(error, sent) from None
    return Delivery(delivery_id=delivery, commits=rows)
