"""Prometheus Alertmanager (and Grafana alerting, which sends the same body): alerts -> incidents.

Each alert is one incident, known by its fingerprint and start time: `firing` opens it, `resolved`
resolves it at the alert's `endsAt`. The product and environment come from the labels named by
the `alert_product_label` and `alert_environment_label` settings. Authenticated by a bearer
secret (`http_config.authorization.credentials` in Alertmanager; an Authorization header in
Grafana's webhook contact point). The delivery id is the group key, status and the alerts' start times.
"""

from __future__ import annotations

import hashlib

from starlette.requests import Request

from deploytrack.errors import BadRequest
from deploytrack.hooks.model import (
    Context,
    Delivery,
    IncidentChange,
    ignored,
    incident_data,
    json_body,
    name,
    nested,
    prose,
    text,
)
from deploytrack.hooks.signatures import same_secret
from deploytrack.model import Fields, check_metadata
from deploytrack.web.http import bearer

NAME = "alertmanager"
MAX_ALERTS = 1000
_ZERO_TIME = "0001-01-01T00:00:00Z"  # Alertmanager's endsAt of a firing alert


def verify(request: Request, raw: bytes, secret: str) -> bool:
    return same_secret(secret, bearer(request, "Bearer"))


def to_delivery(request: Request, raw: bytes, ctx: Context) -> Delivery:
    data = Fields(json_body(request, raw), ctx.limits)
    alerts = data.raw("alerts")
    if not isinstance(alerts, list):
        raise BadRequest("Field 'alerts' must be a list", "alerts")
    if len(alerts) > MAX_ALERTS:
        raise BadRequest(f"Field 'alerts' has more than {MAX_ALERTS} alerts", "alerts")
    changes, seen = [], []
    for i, alert in enumerate(alerts):
        change = _change(Fields(alert, ctx.limits, prefix=f"alerts[{i}]."), ctx)
        if change is not None:
            changes.append(change)
            seen.append(change.key + ":" + change.state)
    identity = f"{text(data, 'groupKey') or ''}|{text(data, 'status') or ''}|{'|'.join(sorted(seen))}"
    delivery = "alertmanager:" + hashlib.sha256(identity.encode()).hexdigest()
    if not changes:
        return ignored("no firing or resolved alerts", delivery)
    return Delivery(delivery_id=delivery, incidents=changes)


def _change(alert: Fields, ctx: Context) -> IncidentChange | None:
    status = text(alert, "status")
    if status not in ("firing", "resolved"):
        return None
    labels, annotations = nested(alert, "labels"), nested(alert, "annotations")
    if alert.raw("startsAt") is None:
        raise BadRequest(f"Field '{alert.prefix}startsAt' is required", f"{alert.prefix}startsAt")
    opened = alert.time("startsAt")
    resolved = alert.time("endsAt") if status == "resolved" and alert.raw("endsAt") != _ZERO_TIME else None
    fingerprint = text(alert, "fingerprint", 128) or hashlib.sha256(
        repr(sorted((str(k), str(v)) for k, v in labels.body.items())).encode()).hexdigest()[:16]
    settings = ctx.settings
    product_label, environment_label = settings.alert_product_label, settings.alert_environment_label
    title_from = f"{annotations.prefix}summary" if annotations.body.get("summary") else f"{labels.prefix}alertname"
    fields = incident_data(
        ctx, {"product": labels.prefix + product_label, "environment": labels.prefix + environment_label,
              "title": title_from, "severity": f"{labels.prefix}severity", "opened_at": f"{alert.prefix}startsAt",
              "metadata": labels.prefix.rstrip(".")},
        product=ctx.product(name(labels, product_label)),
        environment=name(labels, environment_label) or ctx.hook.environment,
        title=prose(annotations, "summary") or text(labels, "alertname") or f"alert {fingerprint}",
        severity=text(labels, "severity"), opened_at=opened,
        metadata={"source": "alertmanager", "fingerprint": fingerprint,
                  "labels": check_metadata(labels.body, ctx.limits, labels.prefix.rstrip(".")),
                  **({"url": url} if (url := prose(alert, "generatorURL")) else {})})
    return IncidentChange(key=f"alert:{fingerprint}:{opened}", data=fields,
                          state="resolved" if status == "resolved" else "open", resolved_at=resolved)
