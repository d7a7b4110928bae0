"""Prometheus Alertmanager (and Grafana alerting, which sends the same body): alerts -> incidents.

Each alert is one incident, known by its fingerprint and start time: `firing` opens it, `resolved`
resolves it at the alert's `endsAt`. The product and environment come from the labels named by
the `alert_product_label` and `alert_environment_label` settings. Authenticated by a bearer
secret (`http_config.authorization.credentials` in Alertmanager; an Authorization header in
Grafana's webhook contact point). The delivery id is the group key, status and the alerts' start times.
"""

from __future__ import annotations

import hashlib
from typing import Any

from starlette.requests import Request

from deploytrack.errors import BadRequest
from deploytrack.hooks.model import (
    Context,
    Delivery,
    IncidentChange,
    ignored,
    incident_data,
    json_body,
    obj,
    text,
)
from deploytrack.hooks.signatures import same_secret
from deploytrack.timeutil import parse_timestamp
from deploytrack.web.http import bearer

NAME = "alertmanager"
MAX_ALERTS = 1000
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert


def verify(request: Request, raw: bytes, secret: str) -> bool:
    return same_secret(secret, bearer(request, "Bearer"))


def to_delivery(request: Request, raw: bytes, ctx: Context) -> Delivery:
    data = json_body(request, raw)
    alerts = data.get("alerts")
    if not isinstance(alerts, list):
        raise BadRequest("Field 'alerts' must be a list", "alerts")
    if len(alerts) > MAX_ALERTS:
        raise BadRequest(f"Field 'alerts' has more than {MAX_ALERTS} alerts", "alerts")
    changes, seen = [], []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise BadRequest(f"Field 'alerts[{i}]' must be a JSON object", f"alerts[{i}]")
        change = _change(alert, i, ctx)
        if change is not None:
            changes.append(change)
            seen.append(change.key + ":" + change.state)
    identity = f"{text(data, 'groupKey') or ''}|{text(data, 'status') or ''}|{'|'.join(sorted(seen))}"
    delivery = "alertmanager:" + hashlib.sha256(identity.encode()).hexdigest()
    if not changes:
        return ignored("no firing or resolved alerts", delivery)
    return Delivery(delivery_id=delivery, incidents=changes)


def _change(alert: dict[str, Any], i: int, ctx: Context) -> IncidentChange | None:
    status = text(alert, "status")
    if status not in ("firing", "resolved"):
        return None
    labels, annotations = obj(alert, "labels"), obj(alert, "annotations")
    starts = alert.get("startsAt")
    if starts is None:
        raise BadRequest(f"Field 'alerts[{i}].startsAt' is required", f"alerts[{i}].startsAt")
    opened = parse_timestamp(starts, f"alerts[{i}].startsAt")
    ends = alert.get("endsAt")
    resolved = parse_timestamp(ends, f"alerts[{i}].endsAt") if status == "resolved" and ends not in (None, _ZERO_TIME) \
        else None
    fingerprint = text(alert, "fingerprint", 128) or hashlib.sha256(
        repr(sorted((str(k), str(v)) for k, v in labels.items())).encode()).hexdigest()[:16]
    settings = ctx.settings
    fields = incident_data(
        ctx, product=ctx.product(text(labels, settings.alert_product_label, 256)),
        environment=text(labels, settings.alert_environment_label, 256) or ctx.hook.environment,
        title=text(annotations, "summary") or text(labels, "alertname") or f"alert {fingerprint}",
        severity=text(labels, "severity", 256), opened_at=opened,
        metadata={"source": "alertmanager", "fingerprint": fingerprint,
                  "labels": {str(k)[:256]: str(v)[:1024] for k, v in list(labels.items())[:100]},
                  **({"url": text(alert, "generatorURL")} if text(alert, "generatorURL") else {})})
    return IncidentChange(key=f"alert:{fingerprint}:{opened}", data=fields,
                          state="resolved" if status == "resolved" else "open", resolved_at=resolved)
