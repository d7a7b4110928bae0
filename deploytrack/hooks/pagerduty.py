"""PagerDuty v3 webhooks: incident.triggered / acknowledged / resolved / reopened -> incidents.

Signed with `X-PagerDuty-Signature: v1=<HMAC-SHA256 of the body>` (several, comma-separated,
while a secret is rotated). The secret is the one PagerDuty shows when the subscription is made:
create the hook with `--secret`. The delivery id is the event's `id`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from deploytrack.hooks.model import (
    MAX_DELIVERY_ID,
    Context,
    Delivery,
    IncidentChange,
    delivery_id,
    ignored,
    incident_data,
    json_body,
    name,
    nested,
    prose,
    text,
)
from deploytrack.hooks.signatures import hex_matches, prefixed
from deploytrack.model import Fields

NAME = "pagerduty"
STATES = {"incident.triggered": "open", "incident.acknowledged": "seen", "incident.resolved": "resolved",
          "incident.reopened": "open"}


def verify(request: Request, raw: bytes, secret: str) -> bool:
    return hex_matches(secret, raw, *prefixed(request.headers.get("x-pagerduty-signature"), "v1="))


def to_delivery(request: Request, raw: bytes, ctx: Context) -> Delivery:
    event = nested(Fields(json_body(request, raw), ctx.limits), "event")
    delivery = delivery_id(text(event, "id", MAX_DELIVERY_ID))
    kind = text(event, "event_type") or ""
    if kind not in STATES:
        return ignored(f"event type {kind[:64]!r} is not used", delivery)
    data = nested(event, "data")
    incident_id = text(data, "id")
    if not incident_id:
        return ignored("the event carries no incident", delivery)
    occurred = event.time("occurred_at")
    opened = data.time("created_at") or occurred
    service, priority = nested(data, "service"), nested(data, "priority")
    severity_from = "event.data.priority.summary" if priority.body.get("summary") else "event.data.urgency"
    fields = incident_data(
        ctx, {"product": "event.data.service.summary", "title": "event.data.title", "severity": severity_from,
              "opened_at": "event.data.created_at" if data.body.get("created_at") is not None else "event.occurred_at"},
        product=ctx.product(name(service, "summary")), environment=ctx.hook.environment,
        title=prose(data, "title") or f"PagerDuty incident {incident_id}", opened_at=opened,
        severity=text(priority, "summary") or text(data, "urgency"), metadata=_metadata(data, incident_id))
    state = STATES[kind]
    return Delivery(delivery_id=delivery, incidents=[IncidentChange(
        key=f"pagerduty:{incident_id}", data=fields, state=state,
        resolved_at=occurred if state == "resolved" else None, reopen=kind == "incident.reopened")])


def _metadata(data: Fields, incident_id: str) -> dict[str, Any]:
    number = data.raw("number")
    return {k: v for k, v in {"source": "pagerduty", "pagerduty_id": incident_id,
                              "number": number if isinstance(number, int) else None,
                              "url": text(data, "html_url"), "urgency": text(data, "urgency")}.items() if v}
