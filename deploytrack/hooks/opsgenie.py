"""Opsgenie outgoing webhooks: alert Create / Acknowledge / Close -> incidents.

Opsgenie signs nothing: the hook's secret travels in the URL (`?secret=...`) or in a custom
`Authorization: Bearer ...` header. The product is the alert's `entity` (through `hook_products`)
unless the hook names one. The delivery id is the alert id and the action.
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
from deploytrack.hooks.signatures import same_secret
from deploytrack.model import Fields
from deploytrack.timeutil import now_us, parse_timestamp
from deploytrack.web.http import bearer

NAME = "opsgenie"
STATES = {"Create": "open", "Acknowledge": "seen", "Close": "resolved"}


def verify(request: Request, raw: bytes, secret: str) -> bool:
    return same_secret(secret, bearer(request, "Bearer") or request.query_params.get("secret"))


def to_delivery(request: Request, raw: bytes, ctx: Context) -> Delivery:
    data = Fields(json_body(request, raw), ctx.limits)
    action, alert = text(data, "action") or "", nested(data, "alert")
    alert_id = text(alert, "alertId", MAX_DELIVERY_ID - len(":Acknowledge"))
    delivery = delivery_id(f"{alert_id}:{action}" if alert_id else None)
    if action not in STATES:
        return ignored(f"action {action[:64]!r} is not used", delivery)
    if not alert_id:
        return ignored("the delivery carries no alert id", delivery)
    opened = alert.time("createdAt", epoch)
    state = STATES[action]
    closed = (alert.time("updatedAt", epoch) or now_us()) if state == "resolved" else None
    fields = incident_data(
        ctx, {"product": "alert.entity", "title": "alert.message", "severity": "alert.priority",
              "opened_at": "alert.createdAt"},
        product=ctx.product(name(alert, "entity")), environment=ctx.hook.environment,
        title=prose(alert, "message") or f"Opsgenie alert {alert_id}", opened_at=opened,
        severity=text(alert, "priority"),
        metadata={k: v for k, v in {"source": "opsgenie", "alert_id": alert_id, "tiny_id": text(alert, "tinyId"),
                                    "alias": text(alert, "alias")}.items() if v})
    return Delivery(delivery_id=delivery, incidents=[IncidentChange(
        key=f"opsgenie:{alert_id}", data=fields, state=state, resolved_at=closed)])


def epoch(value: Any, field: str) -> int:
    """Opsgenie's times are epoch numbers: milliseconds (`createdAt`) or nanoseconds (`updatedAt`)."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 10**17:
        value //= 1_000_000  # nanoseconds -> milliseconds
    elif isinstance(value, int) and not isinstance(value, bool) and value > 10**14:
        value //= 1000  # microseconds -> milliseconds
    return parse_timestamp(value, field)
