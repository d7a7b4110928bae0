"""Notice what deserves a notification and queue it, in the writer's transaction.

Cursors in `kv` remember how far each kind of fact was read: events by `seq` (failed and rollback
production deployments), incidents by `updated_at` (opened, resolved), metric snapshots by day
(band changes). A cursor and the outbox rows it produced commit together, and every notification
has a dedupe key, so re-reading a stretch (the incidents' look-back, a crash) never sends twice.
A missing cursor starts at the present, and facts whose own time (a deployment's end, an incident's
opening or resolution) is more than a day old are not announced: turning notifications on does not
replay history, and backfilled or imported old facts are recorded quietly.
"""

from __future__ import annotations

from typing import Any

import orjson

from deploytrack.metrics import incidents as incident_rules
from deploytrack.notify import messages, outbox
from deploytrack.settings import Settings
from deploytrack.storage.database import Connection
from deploytrack.timeutil import DAY, day_start_us, to_iso

LOOKBACK_US = 60_000_000  # incident writes may commit out of `updated_at` order by a little
BAND_WINDOW = 30
METRICS = tuple(messages.LABELS)
DIGEST_OVER = 10  # more new facts of one kind in one pass: one digest message instead of one each
_EVENTS, _INCIDENTS, _BANDS = "notify.events_seq", "notify.incidents_at", "notify.band_day"


def collect(conn: Connection, settings: Settings, now: int) -> int:
    """Queue notifications for facts since the cursors; returns how many notifications were found."""
    found: list[tuple[str, str, dict[str, Any]]] = []
    found += _deployments(conn, settings, now)
    found += _incidents(conn, settings, now)
    found += _bands(conn, settings, now)
    by_kind: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for kind, key, data in found:
        if kind in settings.notify_event_set:
            by_kind.setdefault(kind, []).append((key, data))
    for kind, facts in by_kind.items():
        _queue(conn, settings, kind, facts, now)
    return len(found)


def _queue(conn: Connection, settings: Settings, kind: str, facts: list[tuple[str, dict[str, Any]]],
           now: int) -> None:
    """Queue a message per new fact, or one digest when more than DIGEST_OVER of them came at once."""
    urls, fmt = settings.notify_url_list, settings.notify_format
    seen = outbox.queued(conn, [key for key, _ in facts])  # the incidents' look-back reads facts again
    new = [(key, data) for key, data in facts if key not in seen]
    if len(new) <= DIGEST_OVER:
        for key, data in new:
            outbox.enqueue(conn, kind, key, messages.body(kind, data, fmt), urls, now)
        return
    digest_key = f"digest:{new[0][0]}"
    outbox.enqueue(conn, "digest", digest_key, messages.digest(kind, [d for _, d in new], settings.base_url, fmt),
                   urls, now)
    outbox.summarised(conn, kind, [(key, messages.body(kind, data, fmt)) for key, data in new], urls,
                      digest_key, now)


def _move(conn: Connection, key: str, old: int | None, new: int) -> None:
    if old != new:
        conn.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                     (key, str(new)))


def _stored(conn: Connection, key: str) -> int | None:
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
    return int(row[0]) if row is not None else None


def _deployments(conn: Connection, settings: Settings, now: int) -> list[tuple[str, str, dict[str, Any]]]:
    top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    stored = _stored(conn, _EVENTS)
    since = top if stored is None else stored
    found = []
    if top > since:
        rows = conn.execute(
            "SELECT d.id, d.product, d.environment, d.version, d.status, d.label, d.actor, d.finished_at "
            "FROM deployments d WHERE d.id IN (SELECT e.deployment_id FROM events e WHERE e.seq > ? AND e.seq <= ? "
            "AND e.kind = 'deployment' AND e.deployment_id IS NOT NULL) "
            "AND COALESCE(d.finished_at, d.last_at) >= ? ORDER BY d.id",
            (since, top, now - DAY)).fetchall()
        for r in rows:
            if r["environment"] not in settings.production_set:
                continue
            data = {"deployment_id": r["id"], "product": r["product"], "environment": r["environment"],
                    "version": r["version"], "status": r["status"], "actor": r["actor"],
                    "finished_at": to_iso(r["finished_at"]), "url": f"{settings.base_url}/deployments/{r['id']}"}
            if r["status"] == "failed":
                found.append(("deployment_failed", f"deployment_failed:{r['id']}", data))
            if r["label"] == "rollback" and r["status"] == "completed":
                found.append(("rollback", f"rollback:{r['id']}", data))
    _move(conn, _EVENTS, stored, top)
    return found


def _incidents(conn: Connection, settings: Settings, now: int) -> list[tuple[str, str, dict[str, Any]]]:
    stored = _stored(conn, _INCIDENTS)
    since = max(now if stored is None else stored, now - DAY) - LOOKBACK_US
    found = []
    for row in conn.execute("SELECT * FROM incidents WHERE updated_at >= ? ORDER BY id", (since,)).fetchall():
        shown = incident_rules.incident_json(row)
        data = {"incident_id": row["id"], "product": row["product"] or None, "environment": row["environment"],
                "title": row["title"], "severity": row["severity"], "opened_at": shown["opened_at"],
                "resolved_at": shown["resolved_at"], "time_to_restore_seconds": shown["time_to_restore_seconds"],
                "deployment_id": row["deployment_id"], "url": f"{settings.base_url}/incidents/{row['id']}"}
        if row["created_at"] >= since and row["opened_at"] >= now - DAY:
            found.append(("incident_opened", f"incident_opened:{row['id']}", data))
        if row["status"] == "resolved" and row["resolved_at"] >= now - DAY:
            found.append(("incident_resolved", f"incident_resolved:{row['id']}:{row['resolved_at']}", data))
    _move(conn, _INCIDENTS, stored, now)
    return found


def _bands(conn: Connection, settings: Settings, now: int) -> list[tuple[str, str, dict[str, Any]]]:
    """Production metrics (overall and per product, 30-day window) whose band differs from the day before."""
    top = conn.execute("SELECT MAX(day) FROM metric_snapshots").fetchone()[0]
    stored = _stored(conn, _BANDS)
    if top is None:  # no snapshots yet: the first ones to come are news
        _move(conn, _BANDS, stored, 0)
        return []
    found = []
    if stored is not None and top > stored and top >= day_start_us(now) - 2 * DAY:
        rows = conn.execute("SELECT day, scope, product, data FROM metric_snapshots WHERE window_days = ? "
                            "AND scope IN ('overall', 'product') AND day IN (?, ?)",
                            (BAND_WINDOW, top - DAY, top)).fetchall()
        days: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
        for r in rows:
            days.setdefault((r["scope"], r["product"]), {})[r["day"]] = orjson.loads(r["data"])
        for (scope, product), by_day in sorted(days.items()):
            before, after = by_day.get(top - DAY), by_day.get(top)
            if before is None or after is None:
                continue
            for metric in METRICS:
                old, new = (before.get(metric) or {}).get("band"), (after.get(metric) or {}).get("band")
                if old and new and old != new:
                    found.append(("band_changed", f"band:{top}:{scope}:{product}:{metric}", {
                        "metric": metric, "scope": scope, "product": product or None, "window_days": BAND_WINDOW,
                        "day": to_iso(top), "from": old, "to": new, "url": f"{settings.base_url}/dora"}))
    _move(conn, _BANDS, stored, top)
    return found
