"""Corrections: an admin deletes an event or all of a product's events; recorded in the audit log."""

from __future__ import annotations

import orjson

from deploytrack.errors import NotFound
from deploytrack.metrics import facts, refresh
from deploytrack.storage import deployment_ids
from deploytrack.storage.database import Connection
from deploytrack.timeutil import DAY


def _audit(conn: Connection, at: int, token_id: int | None, actor: str | None, action: str,
           detail: dict[str, object]) -> None:
    conn.execute("INSERT INTO audit_log (at, token_id, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
                 (at, token_id, actor, action, orjson.dumps(detail).decode()))


def _touch_days(conn: Connection, where: str, params: tuple[object, ...]) -> None:
    conn.execute(f"INSERT INTO dirty_days (day) SELECT DISTINCT occurred_at - occurred_at % {DAY} FROM events "
                 f"WHERE {where} ON CONFLICT DO NOTHING", params)


def delete_event(conn: Connection, event_id: str, token_id: int | None, actor: str | None,
                 now: int) -> dict[str, object]:
    """Delete one event; its deployment key is refolded (at the next refresh) and its day marked for recompute."""
    row = conn.execute("SELECT seq, kind, product, environment, version, scm_sha FROM events WHERE id = ?",
                       (event_id,)).fetchone()
    if row is None:
        raise NotFound("no event with that id", "event_id")
    _touch_days(conn, "seq = ?", (row["seq"],))
    conn.execute("DELETE FROM events WHERE seq = ?", (row["seq"],))
    if row["kind"] == "deployment" and row["environment"]:
        facts.mark_key(conn, row["product"], row["environment"], row["version"])
    elif row["kind"] == "build":
        facts.mark_product(conn, row["product"])
        facts.mark_shas(conn, [row["scm_sha"]] if row["scm_sha"] else [])
    refresh.forget_deleted(conn)
    detail = {"event_id": event_id, "kind": row["kind"], "product": row["product"]}
    _audit(conn, now, token_id, actor, "delete_event", detail)
    return {"deleted": 1, **detail}


def delete_product_events(conn: Connection, product: str, token_id: int | None, actor: str | None,
                          now: int) -> dict[str, object]:
    """Delete every event of a product, its versions and product row; touched days are recomputed."""
    count = conn.execute("SELECT COUNT(*) FROM events WHERE product = ?", (product,)).fetchone()[0]
    known = conn.execute("SELECT 1 FROM products WHERE name = ?", (product,)).fetchone()
    if not count and known is None:
        raise NotFound("no product with that name", "name")
    _touch_days(conn, "product = ?", (product,))
    facts.mark_product(conn, product)
    facts.mark_shas(conn, [r[0] for r in conn.execute(
        "SELECT DISTINCT scm_sha FROM events WHERE product = ? AND kind = 'build' AND scm_sha IS NOT NULL",
        (product,))])
    conn.execute("DELETE FROM events WHERE product = ?", (product,))
    deployment_ids.remember(conn)
    conn.execute("DELETE FROM deployments WHERE product = ?", (product,))
    refresh.forget_deleted(conn)
    conn.execute("DELETE FROM versions WHERE product = ?", (product,))
    conn.execute("DELETE FROM products WHERE name = ?", (product,))
    _audit(conn, now, token_id, actor, "delete_product_events", {"product": product, "events": count})
    return {"deleted": count, "product": product}
