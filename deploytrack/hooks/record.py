"""Write-side: record one verified delivery in the writer's transaction, all or nothing.

Deployment events go through the ingestion path every API uses (storage.ingest), commits through
storage.commits, incidents through metrics.incidents' create and update. The delivery id is kept
in `idempotency_keys` (under the hook's token) with what it recorded, so a redelivery records
nothing and answers the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from deploytrack.hooks.model import Delivery, IncidentChange
from deploytrack.metrics import incidents
from deploytrack.settings import Settings
from deploytrack.storage import commits
from deploytrack.storage import ingest as store
from deploytrack.storage.database import Connection


@dataclass
class Recorded:
    events: list[str]
    commits: int
    incidents: list[int]
    duplicate: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {"status": "duplicate" if self.duplicate else "accepted", "events": self.events,
                "commits": self.commits, "incidents": self.incidents}


def record(conn: Connection, token_id: int, delivery: Delivery, settings: Settings, now: int) -> Recorded:
    key = "hook-delivery:" + delivery.delivery_id if delivery.delivery_id else None
    if key is not None:
        row = conn.execute("SELECT event_ids FROM idempotency_keys WHERE token_id = ? AND key = ?",
                           (token_id, key)).fetchone()
        if row is not None:
            kept = orjson.loads(row[0])
            return Recorded(kept["events"], kept["commits"], kept["incidents"], duplicate=True)
    done = Recorded([], 0, [])
    if delivery.events:
        # Deployment rules record violations but never refuse: the forge has already deployed.
        result = store.ingest(conn, store.Ingest(events=delivery.events, token_id=token_id, received_at=now,
                                                 aliases=settings.environment_aliases, rules="record"))
        done.events = [r["id"] for r in result.rows]
    if delivery.commits:
        done.commits = commits.store(conn, delivery.commits, now)
    for change in delivery.incidents:
        done.incidents.append(_incident(conn, token_id, change, settings, now))
    if key is not None:
        conn.execute("INSERT INTO idempotency_keys (token_id, key, event_ids, created_at) VALUES (?, ?, ?, ?)",
                     (token_id, key, orjson.dumps(done.as_dict()).decode(), now))
    return done


def _incident(conn: Connection, token_id: int, change: IncidentChange, settings: Settings, now: int) -> int:
    data = dict(change.data)
    if change.state == "resolved":
        data["resolved_at"] = max(change.resolved_at or now, data.get("opened_at") or now)
    row = incidents.create_once(conn, data, settings, now, token_id, change.key)
    if change.state == "resolved" and row["resolved_at"] is None:
        row = incidents.update(conn, row["id"], {"resolved_at": max(change.resolved_at or now, row["opened_at"])},
                               settings, now)
    elif change.state == "open" and change.reopen and row["resolved_at"] is not None:
        row = incidents.update(conn, row["id"], {"status": "open"}, settings, now)
    return int(row["id"])
