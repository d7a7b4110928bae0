"""Commits and incidents in an export file: one JSON line each after the events, `kind` "commit" or
"incident" (event kinds never take these names).

A commit line holds the fields `POST /api/v1/commits` takes; importing it again updates it in place
when a column differs (else it is left alone, its days not marked for recomputing).
An incident line holds the fields `POST /api/v1/incidents` takes plus `created_at`, `product_given`
(false: the product was found through a link, and is found again on import; such a line needs no
product, so an incident whose link is gone imports as it was) and `deployment_event`: when the
incident was linked by hand, the id of that deployment's first event, since deployment ids are
assigned anew on import. Other links are found again by the link rules. An incident already stored
(same title, `opened_at`, `created_at`, product, environment and change id) is skipped, so re-importing
a file stores nothing new; `opened_at` is required.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from deploytrack.errors import BadRequest
from deploytrack.metrics import incidents as incident_rules
from deploytrack.model import Fields, Limits
from deploytrack.settings import Settings
from deploytrack.storage import commits
from deploytrack.storage.database import Connection
from deploytrack.timeutil import to_iso

KINDS = ("commit", "incident")
_INCIDENT_EXTRA = ("kind", "created_at", "deployment_event", "product_given")


@dataclass
class Record:
    """A validated commit (`row`) or incident (`incident`) line of an import file."""

    number: int
    kind: str
    row: tuple[Any, ...] | None = None
    incident: dict[str, Any] | None = None
    created_at: int | None = None
    deployment_event: str | None = None


def commit_rows(conn: Connection) -> Iterator[dict[str, Any]]:
    """Every recorded commit, oldest commit time first."""
    for r in conn.execute("SELECT repository, sha, authored_at, committed_at, message, author FROM commits "
                          "ORDER BY committed_at, repository, sha"):
        yield {"kind": "commit", "repository": r[0], "sha": r[1], "authored_at": to_iso(r[2]),
               "committed_at": to_iso(r[3]), "message": r[4], "author": r[5]}


def incident_rows(conn: Connection) -> Iterator[dict[str, Any]]:
    """Every incident, in the order it was recorded."""
    for r in conn.execute(
            "SELECT i.*, CASE WHEN i.requested_deployment_id IS NULL THEN NULL ELSE "
            "(SELECT e.id FROM events e WHERE e.deployment_id = i.requested_deployment_id ORDER BY e.seq LIMIT 1) "
            "END AS deployment_event FROM incidents i ORDER BY i.id"):
        yield {"kind": "incident", "product": r["product"] or None, "product_given": bool(r["product_given"]),
               "environment": r["environment"], "title": r["title"], "severity": r["severity"],
               "opened_at": to_iso(r["opened_at"]), "resolved_at": to_iso(r["resolved_at"]),
               "change_id": r["change_id"], "metadata": orjson.loads(r["metadata"]) if r["metadata"] else None,
               "created_at": to_iso(r["created_at"]), "deployment_event": r["deployment_event"]}


def parse(data: dict[str, Any], number: int, limits: Limits, aliases: Mapping[str, str], now: int) -> Record:
    """A commit or incident line, checked as the API checks it, every rule storing it would apply
    included (raises BadRequest): a bad line stops the import before anything is written."""
    body = {k: v for k, v in data.items() if k not in _INCIDENT_EXTRA and v is not None}
    if data["kind"] == "commit":
        return Record(number, "commit", row=commits.parse_batch([body], limits, 1)[0])
    f = Fields(data, limits)
    created = f.time("created_at")
    event = f.str("deployment_event", max_chars=64)
    given = f.raw("product_given")
    if given is not None and not isinstance(given, bool):
        raise BadRequest("Field 'product_given' must be true or false", "product_given")
    if given is False:
        body.pop("product", None)
    incident = incident_rules.parse(body, limits, aliases, partial=False, linked=event is not None or given is False)
    incident.pop("deployment_id", None)  # ids are assigned anew: a hand link travels as `deployment_event`
    if incident.get("opened_at") is None:  # `now` would store a copy on each run
        raise BadRequest("Field 'opened_at' is required", "opened_at")
    incident["resolved_at"] = incident_rules.resolved_time(incident, now)
    incident_rules.check_order(incident["opened_at"], incident["resolved_at"])
    return Record(number, "incident", incident=incident, created_at=created, deployment_event=event)


def store_incident(conn: Connection, record: Record, settings: Settings, now: int) -> bool:
    """Store one incident line unless it is stored already; whether it was stored."""
    data = dict(record.incident or {})
    opened = data["opened_at"]
    created = record.created_at or opened
    product = data.get("product") or ""
    if conn.execute("SELECT 1 FROM incidents WHERE title = ? AND opened_at = ? AND created_at = ? "
                    "AND product_given = ? AND (product = ? OR product_given = 0) AND COALESCE(environment, '') = ? "
                    "AND COALESCE(change_id, '') = ?",
                    (data["title"], opened, created, 1 if product else 0, product, data.get("environment") or "",
                     data.get("change_id") or "")).fetchone() is not None:
        return False
    if record.deployment_event is not None:
        row = conn.execute("SELECT deployment_id FROM events WHERE id = ?", (record.deployment_event,)).fetchone()
        if row is not None and row[0] is not None:
            data["deployment_id"] = int(row[0])
    stored = incident_rules.create(conn, data, settings, now)
    conn.execute("UPDATE incidents SET created_at = ? WHERE id = ?", (created, stored["id"]))
    return True
