"""Incidents: open, update, resolve, and link each to the deployment that caused it.

Link rules, in order (the rule that made a link is stored with it, so a user can see why a
deployment counts as failed):
- `deployment_id`: the client named the deployment;
- `change_id`: the latest completed deployment carrying that change id (one that finished before
  the incident opened if there is one);
- `last_production_deployment`: the last completed production deployment of the same product
  that finished at or before the incident opened (the rule Apache DevLake uses).
"""

from __future__ import annotations

import sqlite3
from typing import Any, Mapping

import orjson

from deploytrack.errors import BadRequest, NotFound
from deploytrack.model import Fields, Limits, check_metadata
from deploytrack.settings import Settings, canonical_environment
from deploytrack.timeutil import day_start_us, to_iso

RULES = ("deployment_id", "change_id", "last_production_deployment")
EXPLAIN = {
    "deployment_id": "linked to the deployment named when the incident was recorded",
    "change_id": "linked to the latest completed deployment with the same change id",
    "last_production_deployment": "no explicit link: linked to the last completed production deployment "
                                  "of the product before the incident opened",
}
_FIELDS = {"product", "environment", "title", "severity", "opened_at", "resolved_at", "status", "change_id",
           "deployment_id", "metadata"}

_BY_CHANGE = """
SELECT id FROM deployments d WHERE d.change_id = :change_id AND d.status = 'completed'
ORDER BY CASE WHEN d.finished_at <= :opened THEN 0 ELSE 1 END, d.finished_at DESC, d.id DESC LIMIT 1
"""


def _fallback_sql(production: frozenset[str]) -> tuple[str, dict[str, str]]:
    keys = {f"prod{i}": name for i, name in enumerate(sorted(production))}
    sql = (f"SELECT id FROM deployments d WHERE d.product = :product AND d.status = 'completed' "
           f"AND d.finished_at <= :opened AND d.environment IN ({', '.join(':' + k for k in keys)}) "
           "ORDER BY d.finished_at DESC, d.id DESC LIMIT 1")
    return sql, keys


def resolve_link(conn: sqlite3.Connection, settings: Settings, product: str, opened: int,
                 change_id: str | None) -> tuple[int | None, str | None]:
    """(deployment id, rule) by change id, else by the DevLake fallback; (None, None) if nothing fits."""
    if change_id:
        row = conn.execute(_BY_CHANGE, {"change_id": change_id, "opened": opened}).fetchone()
        if row is not None:
            return int(row[0]), "change_id"
    sql, keys = _fallback_sql(settings.production_set)
    row = conn.execute(sql, {"product": product, "opened": opened, **keys}).fetchone()
    return (int(row[0]), "last_production_deployment") if row is not None else (None, None)


def relink(conn: sqlite3.Connection, settings: Settings) -> None:
    """Re-resolve every link not named explicitly (deployments may have arrived since)."""
    rows = conn.execute("SELECT id, product, opened_at, change_id, deployment_id, link_rule FROM incidents "
                        "WHERE link_rule IS NULL OR link_rule <> 'deployment_id'").fetchall()
    updates = []
    for row in rows:
        dep, rule = resolve_link(conn, settings, row["product"], row["opened_at"], row["change_id"])
        if (dep, rule) != (row["deployment_id"], row["link_rule"]):
            updates.append((dep, rule, row["id"]))
    conn.executemany("UPDATE incidents SET deployment_id = ?, link_rule = ? WHERE id = ?", updates)


def mark_dirty(conn: sqlite3.Connection, *times: int | None, now: int) -> None:
    """Days before today whose snapshots a change touches must be recomputed."""
    today = day_start_us(now)
    for at in times:
        if at is not None and day_start_us(at) < today:
            conn.execute("INSERT INTO dirty_days (day) VALUES (?) ON CONFLICT DO NOTHING", (day_start_us(at),))


def parse(body: Any, limits: Limits, aliases: Mapping[str, str], partial: bool) -> dict[str, Any]:
    """Validated incident fields from a JSON body (all of them for create, those present for update)."""
    f = Fields(body, limits)
    unknown = sorted(set(f.body) - _FIELDS)
    if unknown:
        raise BadRequest(f"Field '{unknown[0]}' is not an incident field; known: {', '.join(sorted(_FIELDS))}",
                         unknown[0])
    out: dict[str, Any] = {}
    for key in ("product", "title"):
        if not partial or key in f.body:
            out[key] = f.str(key, required=True)
    for key in ("severity", "change_id"):
        if key in f.body:
            out[key] = f.str(key, max_chars=256)
    if "environment" in f.body:
        env = f.str("environment", max_chars=256)
        out["environment"] = canonical_environment(env, aliases) if env else None
    for key in ("opened_at", "resolved_at"):
        if key in f.body:
            out[key] = f.time(key)
    if "opened_at" in out and out["opened_at"] is None:
        raise BadRequest("Field 'opened_at' must be a timestamp", "opened_at")
    if "status" in f.body:
        status = f.str("status")
        if status not in ("open", "resolved"):
            raise BadRequest("Field 'status' must be 'open' or 'resolved'", "status")
        out["status"] = status
    if "deployment_id" in f.body:
        dep = f.raw("deployment_id")
        if dep is not None and (isinstance(dep, bool) or not isinstance(dep, int) or dep < 1):
            raise BadRequest("Field 'deployment_id' must be a positive whole number or null", "deployment_id")
        out["deployment_id"] = dep
    if "metadata" in f.body:
        meta = f.obj("metadata")
        out["metadata"] = check_metadata(meta, limits) if meta is not None else None
    return out


def create(conn: sqlite3.Connection, data: dict[str, Any], settings: Settings, now: int) -> dict[str, Any]:
    """Store a new incident and link it; returns the stored row."""
    opened = data.get("opened_at") or now
    resolved = data.get("resolved_at")
    if data.get("status") == "resolved" and resolved is None:
        resolved = now
    cursor = conn.execute(
        "INSERT INTO incidents (product, environment, title, severity, status, opened_at, resolved_at, change_id, "
        "deployment_id, link_rule, metadata, created_at, updated_at) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?, ?)",
        (data["product"], data.get("environment"), data["title"], data.get("severity"), opened, resolved,
         data.get("change_id"), data.get("deployment_id"), None,
         orjson.dumps(data["metadata"]).decode() if data.get("metadata") else None, now, now))
    incident_id = int(cursor.lastrowid or 0)
    _finish(conn, incident_id, settings, explicit="deployment_id" in data and data["deployment_id"] is not None)
    mark_dirty(conn, opened, resolved, now=now)
    return get(conn, incident_id)


def create_once(conn: sqlite3.Connection, data: dict[str, Any], settings: Settings, now: int,
                token_id: int | None, key: str | None) -> dict[str, Any]:
    """`create`, unless a request with the same Idempotency-Key already did: then that incident."""
    if key is None or token_id is None:
        return create(conn, data, settings, now)
    scoped = "incident:" + key  # the same table as ingestion's keys, in its own namespace
    row = conn.execute("SELECT event_ids FROM idempotency_keys WHERE token_id = ? AND key = ?",
                       (token_id, scoped)).fetchone()
    if row is not None:
        return get(conn, int(orjson.loads(row[0])[0]))
    incident = create(conn, data, settings, now)
    conn.execute("INSERT INTO idempotency_keys (token_id, key, event_ids, created_at) VALUES (?, ?, ?, ?)",
                 (token_id, scoped, orjson.dumps([incident["id"]]).decode(), now))
    return incident


def update(conn: sqlite3.Connection, incident_id: int, data: dict[str, Any], settings: Settings,
           now: int) -> dict[str, Any]:
    """Change fields, resolve or reopen; links are re-resolved. Returns the stored row."""
    old = get(conn, incident_id)
    if data.get("status") == "resolved" and "resolved_at" not in data:
        data["resolved_at"] = old["resolved_at"] or now
    elif data.get("status") == "open":
        data["resolved_at"] = None
    columns = {k: data[k] for k in ("product", "environment", "title", "severity", "opened_at", "resolved_at",
                                    "change_id", "deployment_id") if k in data}
    if "metadata" in data:
        columns["metadata"] = orjson.dumps(data["metadata"]).decode() if data["metadata"] else None
    columns["updated_at"] = now
    conn.execute(f"UPDATE incidents SET {', '.join(k + ' = ?' for k in columns)} WHERE id = ?",
                 [*columns.values(), incident_id])
    explicit = data["deployment_id"] is not None if "deployment_id" in data else old["link_rule"] == "deployment_id"
    _finish(conn, incident_id, settings, explicit=explicit)
    new = get(conn, incident_id)
    mark_dirty(conn, old["opened_at"], old["resolved_at"], new["opened_at"], new["resolved_at"], now=now)
    return new


def _finish(conn: sqlite3.Connection, incident_id: int, settings: Settings, explicit: bool) -> None:
    row = get(conn, incident_id)
    if row["resolved_at"] is not None and row["resolved_at"] < row["opened_at"]:
        raise BadRequest("Field 'resolved_at' is before 'opened_at'", "resolved_at")
    if explicit:
        if conn.execute("SELECT 1 FROM deployments WHERE id = ?", (row["deployment_id"],)).fetchone() is None:
            raise BadRequest(f"Field 'deployment_id': no deployment {row['deployment_id']}", "deployment_id")
        dep, rule = row["deployment_id"], "deployment_id"
    else:
        dep, rule = resolve_link(conn, settings, row["product"], row["opened_at"], row["change_id"])
    status = "resolved" if row["resolved_at"] is not None else "open"
    conn.execute("UPDATE incidents SET deployment_id = ?, link_rule = ?, status = ? WHERE id = ?",
                 (dep, rule, status, incident_id))


def get(conn: sqlite3.Connection, incident_id: int) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    if row is None:
        raise NotFound(f"no incident {incident_id}", "id")
    return dict(row)


def incident_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The native API's shape of one incident, with its link and the rule that made it."""
    restore = (row["resolved_at"] - row["opened_at"]) / 1e6 if row["resolved_at"] is not None else None
    return {
        "id": row["id"], "product": row["product"], "environment": row["environment"], "title": row["title"],
        "severity": row["severity"], "status": row["status"], "opened_at": to_iso(row["opened_at"]),
        "resolved_at": to_iso(row["resolved_at"]), "time_to_restore_seconds": restore,
        "change_id": row["change_id"], "deployment_id": row["deployment_id"],
        "link": {"deployment_id": row["deployment_id"], "rule": row["link_rule"],
                 "explanation": EXPLAIN.get(row["link_rule"] or "", "no deployment found to link to")},
        "metadata": orjson.loads(row["metadata"]) if row["metadata"] else {},
        "created_at": to_iso(row["created_at"]), "updated_at": to_iso(row["updated_at"]),
    }
