"""Deployment records: a set-based rebuild from the event log, rollback recognition, listing.

Ingestion folds each deployment event into its record as it arrives, which depends on arrival
order. `rebuild()` refolds every deployment event in `occurred_at` order (ties by arrival), so
the same events always give the same records. Record ids are kept: a record keeps the id its
earliest-arrived event had, so explicit incident links survive a rebuild.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable

from deploytrack import store

TERMINAL_SQL = "('completed', 'failed', 'aborted')"

# One row per deployment event with its group: events of one product/environment/version/invoke_id;
# without an invoke_id a terminal status closes the group and the next event opens a new one.
# A group is named by its earliest-arrived event (`gid`, the smallest seq).
_GROUPED_EVENTS = f"""
CREATE TEMP TABLE dep_ev AS
SELECT seq, product, environment, version, invoke, status, occurred_at, old_id, scm_sha, actor, change_id,
       MIN(seq) OVER (PARTITION BY product, environment, version, invoke, run) AS gid,
       FIRST_VALUE(status) OVER (PARTITION BY product, environment, version, invoke, run
                                 ORDER BY occurred_at DESC, seq DESC) AS last_status
FROM (SELECT e.*, CASE WHEN invoke = '' THEN COALESCE(SUM(CASE WHEN status IN {TERMINAL_SQL} THEN 1 ELSE 0 END) OVER (
                  PARTITION BY product, environment, version, invoke ORDER BY occurred_at, seq
                  ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) ELSE 0 END AS run
      FROM (SELECT seq, product, environment, version, COALESCE(invoke_id, '') AS invoke, status, occurred_at,
                   deployment_id AS old_id, scm_sha, actor, change_id
            FROM events WHERE kind = 'deployment' AND environment IS NOT NULL) e) r
"""

_GROUPS = f"""
CREATE TEMP TABLE dep_grp AS
SELECT d.gid, MIN(d.product) AS product, MIN(d.environment) AS environment, MIN(d.version) AS version,
       MIN(d.invoke) AS invoke, MIN(d.occurred_at) AS first_at, MAX(d.occurred_at) AS last_at,
       MIN(CASE WHEN d.status = 'started' THEN d.occurred_at END) AS started_at,
       MAX(CASE WHEN d.status IN {TERMINAL_SQL} THEN d.occurred_at END) AS finished_at,
       MAX(d.last_status) AS status, MAX(d.scm_sha) AS scm_sha, MIN(d.actor) AS actor,
       MIN(d.change_id) AS change_id, MAX(l.label) AS label, COUNT(*) AS event_count
FROM dep_ev d LEFT JOIN dep_label l ON l.seq = d.seq
GROUP BY d.gid
"""

# A group keeps the record id its earliest-arrived event had, unless an earlier group claimed it
# (a split); every other group gets a fresh id above all ids ever used.
_IDS = """
CREATE TEMP TABLE dep_map AS
SELECT gid, CASE WHEN keep = 1 THEN old_id
                 ELSE :top + ROW_NUMBER() OVER (PARTITION BY keep ORDER BY gid) END AS id
FROM (SELECT gid, old_id, CASE WHEN old_id IS NOT NULL AND rn = 1 THEN 1 ELSE 0 END AS keep
      FROM (SELECT e.gid, e.old_id, ROW_NUMBER() OVER (PARTITION BY e.old_id ORDER BY e.gid) AS rn
            FROM dep_ev e WHERE e.seq = e.gid) k) m
"""

_TEMP = ("dep_ev", "dep_grp", "dep_label", "dep_map")


def rebuild(conn: sqlite3.Connection) -> int:
    """Refold all deployment events into `deployments` (inside the caller's transaction); return the count."""
    for table in _TEMP:
        conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
    conn.execute("CREATE TEMP TABLE dep_label (seq INTEGER PRIMARY KEY, label TEXT NOT NULL)")
    conn.executemany("INSERT INTO dep_label (seq, label) VALUES (?, ?)", list(_labels(conn)))
    conn.execute(_GROUPED_EVENTS)
    conn.execute(_GROUPS)
    top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM deployments").fetchone()[0]
    conn.execute(_IDS, {"top": top})
    conn.execute("CREATE UNIQUE INDEX temp.dep_map_gid ON dep_map (gid)")
    conn.execute("DELETE FROM deployments")
    conn.execute("""
        INSERT INTO deployments (id, product, environment, version, invoke_id, status, first_at, last_at, started_at,
                                 finished_at, scm_sha, actor, change_id, label, event_count)
        SELECT m.id, g.product, g.environment, g.version, g.invoke, g.status, g.first_at, g.last_at, g.started_at,
               CASE WHEN g.status IN ('completed', 'failed', 'aborted') THEN g.finished_at END,
               g.scm_sha, g.actor, g.change_id, g.label, g.event_count
        FROM dep_grp g JOIN dep_map m ON m.gid = g.gid""")
    conn.execute("""
        UPDATE events SET deployment_id = m.id FROM dep_ev e JOIN dep_map m ON m.gid = e.gid
        WHERE e.seq = events.seq AND e.old_id IS NOT m.id""")
    count = int(conn.execute("SELECT COUNT(*) FROM dep_grp").fetchone()[0])
    for table in _TEMP:
        conn.execute(f"DROP TABLE temp.{table}")
    return count


def _labels(conn: sqlite3.Connection) -> Iterable[tuple[int, str]]:
    """Rollback/hotfix marks; only events whose text mentions one are parsed."""
    rows = conn.execute("""
        SELECT seq, metadata, summary FROM events WHERE kind = 'deployment'
          AND (LOWER(metadata) LIKE '%rollback%' OR LOWER(metadata) LIKE '%hotfix%'
               OR LOWER(summary) LIKE 'roll%' OR LOWER(summary) LIKE 'revert%' OR LOWER(summary) LIKE 'hotfix%')""")
    for row in rows:
        label = store.deployment_label({"metadata": row["metadata"], "summary": row["summary"]})
        if label:
            yield row["seq"], label


# A completed deployment is a rollback when it is marked so, or when it brings back a version that
# was completed in the same product/environment before and is not the one running.
ROLLBACK_SQL = """
SELECT id, product, environment, version, finished_at,
       CASE WHEN label = 'rollback' OR (prev_version IS NOT NULL AND version IS NOT prev_version
                                        AND first_of_version < finished_at) THEN 1 ELSE 0 END AS is_rollback
FROM (SELECT id, product, environment, version, finished_at, label,
             LAG(version) OVER (PARTITION BY product, environment ORDER BY finished_at, id) AS prev_version,
             MIN(finished_at) OVER (PARTITION BY product, environment, version) AS first_of_version
      FROM deployments WHERE status = 'completed' AND finished_at < :until {where}) c
"""


def list_sql(where: list[str]) -> str:
    """Deployments newest first, with the computed rollback label and who rolled each back."""
    cond = " AND ".join(where) if where else "1 = 1"
    return f"""
    WITH rb AS ({ROLLBACK_SQL.format(where="")}),
    nx AS (SELECT id, is_rollback,
                  LEAD(id) OVER (PARTITION BY product, environment ORDER BY finished_at, id) AS next_id,
                  LEAD(is_rollback) OVER (PARTITION BY product, environment ORDER BY finished_at, id) AS next_rb
           FROM rb)
    SELECT d.*, COALESCE(nx.is_rollback, 0) AS is_rollback,
           CASE WHEN nx.next_rb = 1 THEN nx.next_id END AS rolled_back_by
    FROM deployments d LEFT JOIN nx ON nx.id = d.id
    WHERE {cond}
    ORDER BY d.first_at DESC, d.id DESC LIMIT :limit"""


def deployment_json(row: Any) -> dict[str, Any]:
    """The native API's shape of one deployment record."""
    from deploytrack.timeutil import to_iso

    start = row["started_at"] if row["started_at"] is not None else row["first_at"]
    finished = row["finished_at"]
    label = row["label"] or ("rollback" if row["is_rollback"] else None)
    return {
        "id": row["id"], "product": row["product"], "environment": row["environment"], "version": row["version"],
        "invoke_id": row["invoke_id"] or None, "status": row["status"], "label": label,
        "first_at": to_iso(row["first_at"]), "started_at": to_iso(row["started_at"]),
        "finished_at": to_iso(finished), "duration_seconds": (finished - start) / 1e6 if finished is not None else None,
        "scm_sha": row["scm_sha"], "actor": row["actor"], "change_id": row["change_id"],
        "event_count": row["event_count"], "rolled_back_by": row["rolled_back_by"],
    }
