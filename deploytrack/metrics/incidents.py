"""Incidents: open, update, resolve, and link each to the deployment that caused it.

Link rules, in order (the rule that made a link is stored with it, so a user can see why a
deployment counts as failed; rules.LINK_EXPLANATIONS says each in words):
- `deployment_id`: the client named the deployment (ignored once that deployment no longer exists);
- `change_id`: a completed deployment carrying that change id, within the incident's product (when
  it has one) and environment (when it has one, else the production environments): the latest
  finished at or before the incident opened, else the earliest after it;
- `last_deployment`: the last completed deployment of the incident's product in its environment
  (production when it names none) finished at or before the incident opened (DevLake's rule).
An incident may name only a change id or a deployment id: its product then comes from the link.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from deploytrack.errors import BadRequest, NotFound
from deploytrack.metrics.rules import LINK_EXPLANATIONS
from deploytrack.model import Fields, Limits, check_metadata, check_resend, integer
from deploytrack.settings import Settings, canonical_environment
from deploytrack.storage.database import Connection
from deploytrack.timeutil import day_start_us, to_iso

_FIELDS = {"product", "environment", "title", "severity", "opened_at", "resolved_at", "status", "change_id",
           "deployment_id", "metadata"}
Link = tuple[int | None, str | None, str]  # deployment id, rule, product


def _envs(environment: str | None, settings: Settings) -> list[str]:
    return [environment] if environment else sorted(settings.production_set)


def _marks(values: list[str]) -> str:
    return ", ".join("?" * len(values))


def resolve_link(conn: Connection, settings: Settings, incident: Mapping[str, Any]) -> Link:
    """(deployment id, rule, product) by the link rules; (None, None, product) if nothing fits."""
    product = incident["product"] if incident["product_given"] else ""
    requested = incident["requested_deployment_id"]
    if requested is not None:
        row = conn.execute("SELECT id, product FROM deployments WHERE id = ?", (requested,)).fetchone()
        if row is not None:
            return int(row[0]), "deployment_id", product or row[1]
    envs = _envs(incident["environment"], settings)
    if incident["change_id"]:
        scope = f"change_id = ? AND status = 'completed' AND environment IN ({_marks(envs)})"
        params: list[Any] = [incident["change_id"], *envs]
        if product:
            scope += " AND product = ?"
            params.append(product)
        row = conn.execute(f"SELECT id, product FROM deployments WHERE {scope} AND finished_at <= ? "
                           "ORDER BY finished_at DESC, id DESC LIMIT 1", (*params, incident["opened_at"])).fetchone()
        if row is None:
            row = conn.execute(f"SELECT id, product FROM deployments WHERE {scope} AND finished_at > ? "
                               "ORDER BY finished_at, id LIMIT 1", (*params, incident["opened_at"])).fetchone()
        if row is not None:
            return int(row[0]), "change_id", product or row[1]
    if product:
        row = conn.execute(f"SELECT id FROM deployments WHERE product = ? AND environment IN ({_marks(envs)}) "
                           "AND status = 'completed' AND finished_at <= ? ORDER BY finished_at DESC, id DESC LIMIT 1",
                           (product, *envs, incident["opened_at"])).fetchone()
        if row is not None:
            return int(row[0]), "last_deployment", product
    return None, None, product


_LINK_COLUMNS = "id, product, product_given, environment, opened_at, change_id, requested_deployment_id, " \
                "deployment_id, link_rule"


def plan_links(conn: Connection, settings: Settings,
               touched: Mapping[tuple[str, str], int] | None = None) -> list[tuple[Any, ...]]:
    """(deployment id, rule, product, incident id) for every incident whose link the rules now put
    elsewhere (deployments may have arrived or gone since it was linked). Read-only.

    `touched`: the product/environments whose deployments changed, each with a time no changed
    deployment finished before (None: all may have changed). The time rule links an incident to a
    deployment finished by the time it opened, so only incidents of those product/environments opened
    since can move; an explicit deployment or a change id can link anywhere, so those are always redone.
    """
    if touched is None:
        rows = conn.execute(f"SELECT {_LINK_COLUMNS} FROM incidents").fetchall()
    else:
        production = settings.production_set
        earliest = min(touched.values(), default=None)
        rows = [row for row in conn.execute(
            f"SELECT {_LINK_COLUMNS} FROM incidents WHERE change_id IS NOT NULL OR requested_deployment_id IS NOT NULL "
            "OR product_given = 0").fetchall()]
        if earliest is not None:
            for row in conn.execute(f"SELECT {_LINK_COLUMNS} FROM incidents WHERE opened_at >= ? AND change_id IS NULL "
                                    "AND requested_deployment_id IS NULL AND product_given <> 0", (earliest,)):
                envs = [row["environment"]] if row["environment"] else sorted(production)
                if any(row["opened_at"] >= touched.get((row["product"], env), row["opened_at"] + 1) for env in envs):
                    rows.append(row)
    updates = []
    for row in rows:
        dep, rule, product = resolve_link(conn, settings, row)
        if (dep, rule, product) != (row["deployment_id"], row["link_rule"], row["product"]):
            updates.append((dep, rule, product, row["id"]))
    return updates


def apply_links(conn: Connection, updates: list[tuple[Any, ...]]) -> int:
    """Write planned links (inside the writer's transaction)."""
    conn.executemany("UPDATE incidents SET deployment_id = ?, link_rule = ?, product = ? WHERE id = ?", updates)
    return len(updates)


def mark_dirty(conn: Connection, *times: int | None, now: int) -> None:
    """Days before today whose snapshots a change touches must be recomputed."""
    today = day_start_us(now)
    for at in times:
        if at is not None and day_start_us(at) < today:
            conn.execute("INSERT INTO dirty_days (day) VALUES (?) ON CONFLICT DO NOTHING", (day_start_us(at),))


def parse(body: Any, limits: Limits, aliases: Mapping[str, str], partial: bool,
          linked: bool = False) -> dict[str, Any]:
    """Validated incident fields from a JSON body (all of them for create, those present for update).
    `linked`: the product may come from a link found when storing (an import line), so none is required."""
    f = Fields(body, limits)
    unknown = sorted(set(f.body) - _FIELDS)
    if unknown:
        raise BadRequest(f"Field '{unknown[0]}' is not an incident field; known: {', '.join(sorted(_FIELDS))}",
                         unknown[0])
    out: dict[str, Any] = {}
    if not partial or "title" in f.body:
        out["title"] = f.str("title", required=True)
    if "product" in f.body or not partial:
        product = f.name("product", required=partial or not (linked or f.body.get("change_id")
                                                               or f.body.get("deployment_id")))
        if product is not None:
            out["product"] = product
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
    check_order(out.get("opened_at"), out.get("resolved_at"))
    if "status" in f.body:
        status = f.str("status")
        if status not in ("open", "resolved"):
            raise BadRequest("Field 'status' must be 'open' or 'resolved'", "status")
        out["status"] = status
    if "deployment_id" in f.body:
        dep = f.raw("deployment_id")
        out["deployment_id"] = None if dep is None else integer(dep, "deployment_id",
                                                                what="a deployment id (or null): a whole number")
    if "metadata" in f.body:
        meta = f.obj("metadata")
        out["metadata"] = check_metadata(meta, limits) if meta is not None else None
    return out


def check_order(opened: int | None, resolved: int | None) -> None:
    """An incident is resolved no earlier than it opened."""
    if opened is not None and resolved is not None and resolved < opened:
        raise BadRequest("Field 'resolved_at' is before 'opened_at'", "resolved_at")


def resolved_time(data: Mapping[str, Any], now: int) -> int | None:
    """When a new incident resolved: as given, or `now` when it is created resolved."""
    resolved: int | None = data.get("resolved_at")
    return now if resolved is None and data.get("status") == "resolved" else resolved


def create(conn: Connection, data: dict[str, Any], settings: Settings, now: int) -> dict[str, Any]:
    """Store a new incident and link it; returns the stored row."""
    _check_requested(conn, data)
    opened = data.get("opened_at") or now
    resolved = resolved_time(data, now)
    row = conn.execute(
        "INSERT INTO incidents (product, product_given, environment, title, severity, status, opened_at, resolved_at, "
        "change_id, requested_deployment_id, metadata, created_at, updated_at) "
        "VALUES (?, ?, ?, ?, ?, 'open', ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (data.get("product") or "", 1 if data.get("product") else 0, data.get("environment"), data["title"],
         data.get("severity"), opened, resolved, data.get("change_id"), data.get("deployment_id"),
         orjson.dumps(data["metadata"]).decode() if data.get("metadata") else None, now, now)).fetchone()
    incident_id = int(row[0])
    _finish(conn, incident_id, settings)
    mark_dirty(conn, opened, resolved, now=now)
    return get(conn, incident_id)


def create_once(conn: Connection, data: dict[str, Any], settings: Settings, now: int,
                token_id: int | None, key: str | None, sent: str | None = None) -> dict[str, Any]:
    """`create`, unless a request with the same Idempotency-Key already did: then that incident (`sent`: the
    request body's fingerprint; another body under the key is refused)."""
    if key is None or token_id is None:
        return create(conn, data, settings, now)
    scoped = "incident:" + key  # the same table as ingestion's keys, in its own namespace
    row = conn.execute("SELECT event_ids, fingerprint FROM idempotency_keys WHERE token_id = ? AND key = ?",
                       (token_id, scoped)).fetchone()
    if row is not None:
        check_resend(row[1], sent)
        return get(conn, int(orjson.loads(row[0])[0]))
    incident = create(conn, data, settings, now)
    conn.execute("INSERT INTO idempotency_keys (token_id, key, event_ids, created_at, fingerprint) "
                 "VALUES (?, ?, ?, ?, ?)", (token_id, scoped, orjson.dumps([incident["id"]]).decode(), now, sent))
    return incident


def update(conn: Connection, incident_id: int, data: dict[str, Any], settings: Settings,
           now: int) -> dict[str, Any]:
    """Change fields, resolve or reopen; links are re-resolved. Returns the stored row."""
    old = get(conn, incident_id)
    _check_requested(conn, data, old)
    if data.get("status") == "resolved" and "resolved_at" not in data:
        data["resolved_at"] = old["resolved_at"] or now
    elif data.get("status") == "open":
        data["resolved_at"] = None
    editable = ("product", "environment", "title", "severity", "opened_at", "resolved_at", "change_id")
    columns: dict[str, Any] = {k: data[k] for k in editable if k in data}
    if "product" in data:
        columns["product_given"] = 1
    if "deployment_id" in data:
        columns["requested_deployment_id"] = data["deployment_id"]
    if "metadata" in data:
        columns["metadata"] = orjson.dumps(data["metadata"]).decode() if data["metadata"] else None
    columns["updated_at"] = now
    conn.execute(f"UPDATE incidents SET {', '.join(k + ' = ?' for k in columns)} WHERE id = ?",
                 [*columns.values(), incident_id])
    _finish(conn, incident_id, settings)
    new = get(conn, incident_id)
    mark_dirty(conn, old["opened_at"], old["resolved_at"], new["opened_at"], new["resolved_at"], now=now)
    return new


def _check_requested(conn: Connection, data: dict[str, Any], old: Mapping[str, Any] | None = None) -> None:
    """A deployment id the request names must exist (one named earlier and deleted since is ignored: DESIGN §5),
    and be of the incident's product when it names one (`old`: the stored incident a change applies to)."""
    requested = data.get("deployment_id")
    if requested is None:
        return
    row = conn.execute("SELECT product FROM deployments WHERE id = ?", (requested,)).fetchone()
    if row is None:
        raise BadRequest(f"Field 'deployment_id': no deployment {requested}", "deployment_id")
    if "product" in data:
        product = data["product"]
    else:
        product = old["product"] if old is not None and old["product_given"] else None
    if product and row[0] != product:
        raise BadRequest(f"Field 'deployment_id': deployment {requested} is of product '{row[0]}', "
                         f"not the incident's '{product}'", "deployment_id")


def _finish(conn: Connection, incident_id: int, settings: Settings) -> None:
    row = get(conn, incident_id)
    check_order(row["opened_at"], row["resolved_at"])  # the fields a change left as stored count too
    dep, rule, product = resolve_link(conn, settings, row)
    status = "resolved" if row["resolved_at"] is not None else "open"
    conn.execute("UPDATE incidents SET deployment_id = ?, link_rule = ?, product = ?, status = ? WHERE id = ?",
                 (dep, rule, product, status, incident_id))


def get(conn: Connection, incident_id: int) -> dict[str, Any]:
    row = conn.execute("SELECT * FROM incidents WHERE id = ?", (incident_id,)).fetchone()
    if row is None:
        raise NotFound(f"no incident {incident_id}", "id")
    return dict(row)


def incident_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """The native API's shape of one incident, with its link and the rule that made it."""
    restore = (row["resolved_at"] - row["opened_at"]) / 1e6 if row["resolved_at"] is not None else None
    return {
        "id": row["id"], "product": row["product"] or None, "environment": row["environment"], "title": row["title"],
        "severity": row["severity"], "status": row["status"], "opened_at": to_iso(row["opened_at"]),
        "resolved_at": to_iso(row["resolved_at"]), "time_to_restore_seconds": restore,
        "change_id": row["change_id"], "deployment_id": row["deployment_id"],
        "link": {"deployment_id": row["deployment_id"], "rule": row["link_rule"],
                 "explanation": LINK_EXPLANATIONS.get(row["link_rule"] or "", "no deployment found to link to")},
        "metadata": orjson.loads(row["metadata"]) if row["metadata"] else {},
        "created_at": to_iso(row["created_at"]), "updated_at": to_iso(row["updated_at"]),
    }
