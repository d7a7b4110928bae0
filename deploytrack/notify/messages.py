"""Notification bodies: Slack's incoming-webhook shape (Slack, Mattermost, Rocket.Chat) or generic JSON.

Generic JSON (`notify_format = "json"`):
    {"event": "deployment_failed", "text": "<one line>", "data": {...facts...}, "source": "deploytrack"}
A digest (many facts of one kind at once) is event "digest", data {"event", "count", "first", "url"}.
"""

from __future__ import annotations

from typing import Any

MAX_TEXT = 300  # client strings are clipped in the one-line text (the data keeps them, already bounded)
LABELS = {"deployment_frequency": "Deployment frequency", "lead_time": "Lead time for changes",
          "change_failure_rate": "Change failure rate", "time_to_restore": "Time to restore"}


def body(kind: str, data: dict[str, Any], fmt: str) -> dict[str, Any]:
    """The JSON posted for one notification."""
    if fmt == "slack":
        return {"text": _line(kind, data, _slack_escape, _slack_link)}
    return {"event": kind, "text": _line(kind, data, _plain, _plain_link), "data": data, "source": "deploytrack"}


DIGEST_NAMED = 5  # facts named in a digest's text and data; the rest are counted
DIGESTS = {"deployment_failed": ("production deployments failed", "/deployments?status=failed", "deployments"),
           "rollback": ("rollbacks deployed to production", "/deployments?label=rollback", "deployments"),
           "incident_opened": ("incidents opened", "/incidents?state=open", "incidents"),
           "incident_resolved": ("incidents resolved", "/incidents?state=resolved", "incidents"),
           "band_changed": ("DORA bands changed", "/dora", "DORA dashboard")}


def digest(kind: str, facts: list[dict[str, Any]], base_url: str, fmt: str) -> dict[str, Any]:
    """The JSON posted once for many facts of one kind noticed together (the first few named)."""
    what, path, label = DIGESTS[kind]
    url = base_url + path
    esc, link = (_slack_escape, _slack_link) if fmt == "slack" else (_plain, _plain_link)
    named = ", ".join(_name(kind, d, esc) for d in facts[:DIGEST_NAMED])
    more = f" and {len(facts) - DIGEST_NAMED} more" if len(facts) > DIGEST_NAMED else ""
    text = f"{len(facts)} {what}: {named}{more}. {link(url, label)}"
    if fmt == "slack":
        return {"text": text}
    return {"event": "digest", "text": text, "source": "deploytrack",
            "data": {"event": kind, "count": len(facts), "first": facts[:DIGEST_NAMED], "url": url}}


def _name(kind: str, d: dict[str, Any], esc: Any) -> str:
    if kind in ("incident_opened", "incident_resolved"):
        return f"{esc(d['title'])} ({esc(d['product'] or 'no product')})"
    if kind == "band_changed":
        return f"{LABELS.get(d['metric'], d['metric'])} for {esc(d.get('product') or 'all products')}"
    return f"{esc(d.get('product') or '')} {esc(d.get('version') or '')}".strip()


def _line(kind: str, d: dict[str, Any], esc: Any, link: Any) -> str:
    where = f"{esc(d.get('product') or '')} {esc(d.get('version') or '')}".strip()
    env = esc(d.get("environment") or "")
    if kind == "deployment_failed":
        by = f" (by {esc(d['actor'])})" if d.get("actor") else ""
        return f"Deployment failed: {where} to {env}{by}. {link(d['url'], 'deployment ' + str(d['deployment_id']))}"
    if kind == "rollback":
        return f"Rollback deployed: {where} to {env}. {link(d['url'], 'deployment ' + str(d['deployment_id']))}"
    if kind == "incident_opened":
        severity = f"[{esc(d['severity'])}] " if d.get("severity") else ""
        return (f"Incident opened: {severity}{esc(d['title'])} ({esc(d['product'] or 'no product')}"
                f"{', ' + env if env else ''}). "
                f"{link(d['url'], 'incident ' + str(d['incident_id']))}")
    if kind == "incident_resolved":
        return (f"Incident resolved after {_duration(d.get('time_to_restore_seconds'))}: {esc(d['title'])} "
                f"({esc(d['product'] or 'no product')}). {link(d['url'], 'incident ' + str(d['incident_id']))}")
    scope = esc(d.get("product") or "all products")
    return (f"{LABELS.get(d['metric'], d['metric'])} for {scope} ({d['window_days']} days) moved from "
            f"{d['from']} to {d['to']}. {link(d['url'], 'DORA dashboard')}")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    minutes = int(seconds) // 60
    if minutes < 60:
        return f"{minutes}m"
    return f"{minutes // 60}h {minutes % 60:02d}m"


def _plain(value: str) -> str:
    return str(value)[:MAX_TEXT]


def _plain_link(url: str, label: str) -> str:
    return f"{label}: {url}"


def _slack_escape(value: str) -> str:
    """Slack's three control characters; anything else shows as text (no mentions, no links injected)."""
    return str(value)[:MAX_TEXT].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_link(url: str, label: str) -> str:
    return f"<{_slack_escape(url)}|{_slack_escape(label)}>"
