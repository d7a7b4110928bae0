"""Deployment records: a set-based rebuild from the event log, rollback recognition, listing.

Ingestion folds each deployment event into its record as it arrives, which depends on arrival
order. `rebuild()` refolds every deployment event in `occurred_at` order (ties by arrival), so
the same events always give the same records. Record ids are kept: a record keeps the id its
earliest-arrived event had, so explicit incident links survive a rebuild.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable

from deploytrack.metrics import facts as metric_facts
from deploytrack.storage import ingest as store

TERMINAL_SQL = "('completed', 'failed', 'aborted')"

# The events of one deployment: same product, environment, version and invoke_id; without an
# invoke_id a terminal status closes the deployment and the next event opens a new one (`run`).
# One pass in the order of the covering index events_deploy_fold, so no sort is needed.
_RUNS = f"""
SELECT seq, product, environment, version, invoke_id, status, occurred_at, {{columns}}
       CASE WHEN invoke_id IS NULL THEN COALESCE(SUM(CASE WHEN status IN {TERMINAL_SQL} THEN 1 ELSE 0 END) OVER (
           PARTITION BY product, environment, version, invoke_id ORDER BY occurred_at, seq
           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) ELSE 0 END AS run
FROM {{source}} WHERE kind = 'deployment' AND environment IS NOT NULL
"""

# For an incremental rebuild: only the events of the product/environment/version keys in temp.dep_keys.
_KEYED_EVENTS = """(
    SELECT e.* FROM temp.dep_keys k JOIN events e ON e.kind = 'deployment' AND e.product = k.product
        AND e.environment = k.environment AND e.version = k.version
    UNION ALL
    SELECT e.* FROM temp.dep_keys k JOIN events e ON e.kind = 'deployment' AND e.product = k.product
        AND e.environment = k.environment AND k.version IS NULL AND e.version IS NULL) events"""
_KEYED_DEPLOYMENTS = """
SELECT d.id FROM temp.dep_keys k JOIN deployments d ON d.product = k.product AND d.environment = k.environment
    AND d.version = k.version
UNION ALL
SELECT d.id FROM temp.dep_keys k JOIN deployments d ON d.product = k.product AND d.environment = k.environment
    AND k.version IS NULL AND d.version IS NULL
"""
WATERMARK = "deployments_folded_seq"

# The lifecycle only moves forward: any outcome beats pending/started whatever their times; between
# outcomes the latest wins, at equal times the higher rank (aborted > failed > completed).
# store._fold_status applies the same rule when ingestion folds events one at a time.
_RANK = "CASE status WHEN 'pending' THEN 0 WHEN 'started' THEN 1 ELSE 2 + (CASE status WHEN 'completed' THEN 0 " \
        "WHEN 'failed' THEN 1 ELSE 2 END) END"
_GROUPS = f"""
CREATE TEMP TABLE dep_grp AS
SELECT product, environment, version, invoke_id, run, COALESCE(version, '') AS vkey,
       COALESCE(invoke_id, '') AS ikey, MIN(seq) AS gid, MIN(occurred_at) AS first_at, MAX(occurred_at) AS last_at,
       MIN(CASE WHEN status = 'started' THEN occurred_at END) AS started_at,
       MAX(CASE WHEN status IN {TERMINAL_SQL} THEN occurred_at END) AS finished_at,
       COALESCE(MAX(CASE WHEN status IN {TERMINAL_SQL} THEN occurred_at * 8 + {_RANK} END) % 8,
                MAX({_RANK})) AS last_rank, MAX(scm_sha) AS scm_sha, MIN(actor) AS actor,
       MIN(change_id) AS change_id, MAX((SELECT l.label FROM dep_label l WHERE l.seq = r.seq)) AS label,
       COUNT(*) AS event_count
FROM ({_RUNS.format(columns="scm_sha, actor, change_id,", source="{source}")}) r
GROUP BY product, environment, version, invoke_id, run
"""
_STATUS = "CASE last_rank WHEN 0 THEN 'pending' WHEN 1 THEN 'started' WHEN 2 THEN 'completed' " \
          "WHEN 3 THEN 'failed' ELSE 'aborted' END"

# A deployment keeps the record id its earliest-arrived event had, unless an earlier deployment
# claimed it (a split); every other one gets a fresh id above all ids ever used.
_IDS = """
CREATE TEMP TABLE dep_map AS
SELECT gid, CASE WHEN keep = 1 THEN old_id
                 ELSE :top + ROW_NUMBER() OVER (PARTITION BY keep ORDER BY gid) END AS id
FROM (SELECT gid, old_id, CASE WHEN old_id IS NOT NULL AND rn = 1 THEN 1 ELSE 0 END AS keep
      FROM (SELECT g.gid, e.deployment_id AS old_id,
                   ROW_NUMBER() OVER (PARTITION BY e.deployment_id ORDER BY g.gid) AS rn
            FROM dep_grp g JOIN events e ON e.seq = g.gid) k) m
"""

_TEMP = ("dep_grp", "dep_label", "dep_map")


def rebuild(conn: sqlite3.Connection, full: bool = True,
            keys: list[tuple[str, str, str | None]] | None = None) -> int:
    """Refold deployment events into `deployments` (inside the caller's transaction); return the count refolded.

    `full=False` refolds only the product/environment/version keys that received events since the
    last rebuild (and any `keys` given); the first rebuild is always full.
    """
    mark = conn.execute("SELECT value FROM kv WHERE key = ?", (WATERMARK,)).fetchone()
    top_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    conn.execute("DROP TABLE IF EXISTS temp.dep_keys")
    if full or mark is None:
        source = "events"
    else:
        # `kind || ''`: walk only the new events (the seq range), not every deployment event in an index on kind
        conn.execute("CREATE TEMP TABLE dep_keys AS SELECT DISTINCT product, environment, version FROM events "
                     "WHERE seq > ? AND kind || '' = 'deployment' AND environment IS NOT NULL", (int(mark[0]),))
        conn.executemany("INSERT INTO dep_keys VALUES (?, ?, ?)", keys or [])
        # Without statistics SQLite takes a temp table for a million rows and builds a Bloom filter
        # over all of `events` for each join with it (0.3 s per statement at 1M events).
        conn.execute("ANALYZE temp.dep_keys")
        source = _KEYED_EVENTS
    empty = source != "events" and conn.execute("SELECT 1 FROM temp.dep_keys LIMIT 1").fetchone() is None
    count = 0 if empty else _refold(conn, source)
    conn.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                 (WATERMARK, str(top_seq)))
    conn.execute("DROP TABLE IF EXISTS temp.dep_keys")
    return count


def forget_deleted(conn: sqlite3.Connection) -> None:
    """After events were deleted: event seqs above the new maximum get reused, so the fold and
    metric-facts watermarks must not stay above it (or later events under them would be skipped)."""
    top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    for key in (WATERMARK, metric_facts.WATERMARK):
        mark = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        if mark is not None and int(mark[0]) > top:
            conn.execute("UPDATE kv SET value = ? WHERE key = ?", (str(top), key))


def _refold(conn: sqlite3.Connection, source: str) -> int:
    for table in _TEMP:
        conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
    conn.execute("CREATE TEMP TABLE dep_label (seq INTEGER PRIMARY KEY, label TEXT NOT NULL)")
    conn.executemany("INSERT INTO dep_label (seq, label) VALUES (?, ?)", list(_labels(conn, source)))
    conn.execute(_GROUPS.format(source=source))
    top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM deployments").fetchone()[0]
    conn.execute(_IDS, {"top": top})
    conn.execute("CREATE UNIQUE INDEX temp.dep_map_gid ON dep_map (gid)")
    conn.execute("CREATE UNIQUE INDEX temp.dep_grp_key ON dep_grp (product, environment, vkey, ikey, run)")
    if source == "events":
        conn.execute("DELETE FROM deployments")
    else:
        conn.execute(f"DELETE FROM deployments WHERE id IN ({_KEYED_DEPLOYMENTS})")
    conn.execute(f"""
        INSERT INTO deployments (id, product, environment, version, invoke_id, status, first_at, last_at, started_at,
                                 finished_at, scm_sha, actor, change_id, label, event_count)
        SELECT m.id, g.product, g.environment, g.version, g.ikey, {_STATUS}, g.first_at, g.last_at, g.started_at,
               CASE WHEN g.last_rank >= 2 THEN g.finished_at END, g.scm_sha, g.actor, g.change_id, g.label,
               g.event_count
        FROM dep_grp g JOIN dep_map m ON m.gid = g.gid""")
    conn.execute(f"""
        UPDATE events SET deployment_id = x.id FROM (
            SELECT r.seq, m.id FROM ({_RUNS.format(columns="", source=source)}) r
            JOIN dep_grp g ON g.product = r.product AND g.environment = r.environment
                AND g.vkey = COALESCE(r.version, '') AND g.ikey = COALESCE(r.invoke_id, '') AND g.run = r.run
            JOIN dep_map m ON m.gid = g.gid) x
        WHERE events.seq = x.seq AND events.deployment_id IS NOT x.id""")
    count = int(conn.execute("SELECT COUNT(*) FROM dep_grp").fetchone()[0])
    for table in _TEMP:
        conn.execute(f"DROP TABLE temp.{table}")
    return count


def _labels(conn: sqlite3.Connection, source: str) -> Iterable[tuple[int, str]]:
    """Rollback/hotfix marks; only events whose text mentions one are parsed."""
    rows = conn.execute(f"""
        SELECT seq, metadata, summary FROM {source} WHERE kind = 'deployment'
          AND (LOWER(metadata) LIKE '%rollback%' OR LOWER(metadata) LIKE '%hotfix%'
               OR LOWER(summary) LIKE 'roll%' OR LOWER(summary) LIKE 'revert%' OR LOWER(summary) LIKE 'hotfix%')""")
    for row in rows:
        label = store.deployment_label({"metadata": row["metadata"], "summary": row["summary"]})
        if label:
            yield row["seq"], label


# A completed deployment is a rollback when it is marked so, or when it brings back a version that
# was completed in the same product/environment before and is not the one running. Computed per
# listed row with indexed lookups (deployments_finished, deployments_version).
_PREV = """(SELECT p.{col} FROM deployments p WHERE p.product = {d}.product AND p.environment = {d}.environment
    AND p.status = 'completed' AND p.finished_at <= {d}.finished_at
    AND (p.finished_at < {d}.finished_at OR p.id < {d}.id)
    ORDER BY p.finished_at DESC, p.id DESC LIMIT 1)"""
_IS_ROLLBACK = """(CASE WHEN {d}.status <> 'completed' THEN 0 WHEN {d}.label = 'rollback' THEN 1
    WHEN COALESCE({prev}, {d}.version) <> {d}.version AND EXISTS (
        SELECT 1 FROM deployments o WHERE o.product = {d}.product AND o.environment = {d}.environment
          AND o.version = {d}.version AND o.status = 'completed' AND o.finished_at < {d}.finished_at) THEN 1
    ELSE 0 END)"""


def rollback_condition() -> str:
    """SQL true when deployment `d` is a rollback (for filtering by label)."""
    return _IS_ROLLBACK.format(d="d", prev=_PREV.format(col="version", d="d")) + " = 1"


def list_sql(where: list[str]) -> str:
    """Deployments newest first, with the computed rollback label and the rollback that undid each."""
    cond = " AND ".join(where) if where else "1 = 1"
    is_rb = _IS_ROLLBACK.format(d="d", prev=_PREV.format(col="version", d="d"))
    next_rb = _IS_ROLLBACK.format(d="n", prev=_PREV.format(col="version", d="n"))
    return f"""
    SELECT d.*, {is_rb} AS is_rollback,
           (SELECT n.id FROM deployments n WHERE n.product = d.product AND n.environment = d.environment
              AND n.status = 'completed' AND d.status = 'completed' AND n.finished_at >= d.finished_at
              AND (n.finished_at > d.finished_at OR n.id > d.id)
              AND {next_rb} = 1
              AND n.id = (SELECT q.id FROM deployments q WHERE q.product = d.product AND q.environment = d.environment
                            AND q.status = 'completed' AND q.finished_at >= d.finished_at
                            AND (q.finished_at > d.finished_at OR q.id > d.id)
                          ORDER BY q.finished_at, q.id LIMIT 1)) AS rolled_back_by
    FROM deployments d
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
