"""PagerDuty v3 webhooks: incident.triggered / acknowledged / resolved / reopened -> incidents.

Signed with `X-PagerDuty-Signature: v1=<HMAC-SHA256 of the body>` (several, comma-separated,
while a secret is rotated). The secret is the one PagerDuty shows when the subscription is made:
create the hook with `--secret`. The delivery id is the event's `id`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from deploytrack.hooks.model import (
    Context,
    Delivery,
    IncidentChange,
    delivery_id,
    ignored,
    incident_data,
    json_body,
    obj,
    text,
)
from deploytrack.hooks.signatures import hex_matches, prefixed
from deploytrack.timeutil import parse_timestamp

NAME = "pagerduty"
STATES = {"incident.triggered": "open", "incident.acknowledged": "seen", "incident.resolved": "resolved",
          "incident.reopened": "open"}


def verify(request: Request, raw: bytes, secret: str) -> bool:
    return hex_matches(secret, raw, *prefixed(request.headers.get("x-pagerduty-signature"), "v1="))


def to_delivery(request: Request, raw: bytes, ctx: Context) -> Delivery:
    event = obj(json_body(request, raw), "event")
    delivery = delivery_id(text(event, "id", 255))
    kind = text(event, "event_type", 128) or ""
    if kind not in STATES:
        return ignored(f"event type {kind[:64]!r} is not used", delivery)
    data = obj(event, "data")
    incident_id = text(data, "id", 128)
    if not incident_id:
        return ignored("the event carries no incident", delivery)
    occurred = _time(event.get("occurred_at"), "event.occurred_at")
    opened = _time(data.get("created_at"), "event.data.created_at") or occurred
    fields = incident_data(
        ctx, product=ctx.product(text(obj(data, "service"), "summary")), environment=ctx.hook.environment,
        title=text(data, "title") or f"PagerDuty incident {incident_id}", opened_at=opened,
        severity=text(obj(data, "priority"), "summary", 256) or text(data, "urgency", 256),
        metadata=_metadata(data))
    state = STATES[kind]
    return Delivery(delivery_id=delivery, incidents=[IncidentChange(
        key=f"pagerduty:{incident_id}", data=fields, state=state,
        resolved_at=occurred if state == "resolved" else None, reopen=kind == "incident.reopened")])


def _time(value: Any, field: str) -> int | None:
    return parse_timestamp(value, field) if value is not None else None


def _metadata(data: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in {"source": "pagerduty", "pagerduty_id": text(data, "id", 128),
                              "number": data.get("number") if isinstance(data.get("number"), int) else None,
                              "url": text(data, "html_url"), "urgency": text(data, "urgency", 64)}.items() if v}
