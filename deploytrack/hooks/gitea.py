"""Gitea and Forgejo: push -> commits (neither sends deployment events).

Signed with `X-Gitea-Signature` / `X-Forgejo-Signature` (hex HMAC-SHA256 of the body; newer
versions also send GitHub's `X-Hub-Signature-256`); `X-Gitea-Event` / `X-Forgejo-Event` name the
event and `X-Gitea-Delivery` / `X-Forgejo-Delivery` identify the delivery.
"""

from __future__ import annotations

from starlette.requests import Request

from deploytrack.hooks import forge
from deploytrack.hooks.model import Context, Delivery, delivery_id, ignored, json_body
from deploytrack.hooks.signatures import hex_matches, prefixed

NAME = "gitea"


def verify(request: Request, raw: bytes, secret: str) -> bool:
    h = request.headers
    return hex_matches(secret, raw, h.get("x-forgejo-signature"), h.get("x-gitea-signature"),
                       *prefixed(h.get("x-hub-signature-256"), "sha256="))


def to_delivery(request: Request, raw: bytes, ctx: Context) -> Delivery:
    h = request.headers
    event = h.get("x-forgejo-event") or h.get("x-gitea-event") or ""
    delivery = delivery_id(h.get("x-forgejo-delivery") or h.get("x-gitea-delivery"))
    if event != "push":
        return ignored(f"event {event[:64]!r} is not used", delivery)
    return forge.push(json_body(request, raw), ctx, delivery)
