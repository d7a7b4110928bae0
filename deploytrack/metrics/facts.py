"""Stored per-deployment facts for the DORA metrics, refreshed only where something changed.

A full recompute reads these small rows instead of re-deriving them from every event:
- `metric_deploy_facts`: each completed deployment, and when it was rolled back (the next completed
  deployment of its product/environment is a rollback of it);
- `metric_lead_facts`: for each change (SHA, else '#' + version) of a product/environment, the first
  completed deployment that shipped it, with the times lead time is measured from (recorded commit,
  commit time sent with the event, first build).

Both are the answers `metrics.load_facts` gives for a range that starts before all data. A refresh
redoes each product/environment from the earliest completed deployment something could have
changed (its deployment keys got events, or had events deleted; a version got its SHA), together
with the completed deployment before that (whose "next" may change), and re-reads commit and build
times for the SHAs and versions that got commits or build events. `metric_facts_stale` holds what
changed without leaving a new event behind (deletions, recorded commits); `kv` holds the event
watermark.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Iterable

import orjson

WATERMARK = "metric_facts_seq"
_EVER = -(1 << 62)  # "from the beginning" for a product/environment
DAY = 86_400_000_000

# Completed deployments from each product/environment's start time; a deployment was rolled back
# when the next completed one there is marked a rollback or brings back a version completed there
# before (any time before it: the EXISTS is not limited to the redone part).
_DEPLOY_FACTS = f"""
INSERT INTO metric_deploy_facts (id, product, environment, version, finished_at, finished_day, rolled_back_at)
SELECT n.id, n.product, n.environment, n.version, n.finished_at, n.finished_at - n.finished_at % {DAY},
       CASE WHEN n.next_label = 'rollback' THEN n.next_at
            WHEN n.next_version IS NOT NULL AND n.next_version <> COALESCE(n.version, '') AND EXISTS (
                SELECT 1 FROM deployments o WHERE o.product = n.product AND o.environment = n.environment
                  AND o.version = n.next_version AND o.status = 'completed' AND o.finished_at < n.next_at)
            THEN n.next_at END
FROM (
    SELECT d.id, d.product, d.environment, d.version, d.finished_at,
           LEAD(d.version) OVER w AS next_version, LEAD(d.label) OVER w AS next_label,
           LEAD(d.finished_at) OVER w AS next_at
    FROM temp.facts_parts p JOIN deployments d ON d.product = p.product AND d.environment = p.environment
        AND d.status = 'completed' AND d.finished_at >= p.since
    WINDOW w AS (PARTITION BY d.product, d.environment ORDER BY d.finished_at, d.id)
) n
"""

# Lead time and its source (0 recorded commit, 1 commit time sent with the event, 2 first build), kept
# with the times they come from so a read is one narrow index range per product/environment.
_START = "COALESCE(commit_at, event_commit_at, build_at)"
_LEAD_US = f"CASE WHEN finished_at > {_START} THEN finished_at - {_START} ELSE 0 END"
_SOURCE = ("CASE WHEN commit_at IS NOT NULL THEN 0 WHEN event_commit_at IS NOT NULL THEN 1 "
           "WHEN build_at IS NOT NULL THEN 2 END")
_DERIVED = f"lead_us = {_LEAD_US}, source = {_SOURCE}"

# The commit refs of the redone deployments (their own SHA, else their version's; plus metadata
# `commits` from temp.facts_meta), the first of each change per product/environment. A change
# whose first deployment lies before the redone part keeps its stored row (ON CONFLICT).
# The commit refs of the redone deployments (their own SHA, else their version's; plus metadata
# `commits` from temp.facts_meta), the first of each change per product/environment. A change
# whose first deployment lies before the redone part keeps its stored row (ON CONFLICT).
_LEAD_FACTS = f"""
INSERT INTO metric_lead_facts (product, environment, change, deployment_id, finished_at, version, sha, repository,
                               event_commit_at, commit_at, build_at, lead_us, source)
SELECT q.*, {_LEAD_US}, {_SOURCE} FROM (
SELECT p.product, p.environment, p.change, p.id, p.finished_at, p.version, p.sha, p.repo, p.ct AS event_commit_at,
       (SELECT MIN(c.committed_at) FROM commits c WHERE c.sha = p.sha AND (p.repo = '' OR c.repository = p.repo))
           AS commit_at,
       COALESCE((SELECT MIN(b.occurred_at) FROM events b WHERE b.kind = 'build' AND b.scm_sha = p.sha),
                (SELECT MIN(b.occurred_at) FROM events b
                 WHERE b.kind = 'build' AND b.product = p.product AND b.version = p.version)) AS build_at
FROM (
    SELECT r.*, COALESCE(r.sha, '#' || r.version) AS change,
           ROW_NUMBER() OVER (PARTITION BY r.product, r.environment, COALESCE(r.sha, '#' || r.version)
                              ORDER BY r.finished_at, r.id, CASE WHEN r.ct IS NULL THEN 1 ELSE 0 END, r.repo,
                                       r.ct) AS nth
    FROM (
        SELECT d.id, d.product, d.environment, d.version, d.finished_at, COALESCE(d.scm_sha, v.scm_sha) AS sha,
               '' AS repo, (SELECT MIN(e.commit_time) FROM events e WHERE e.deployment_id = d.id
                            AND e.kind = 'deployment' AND e.commit_time IS NOT NULL) AS ct
        FROM temp.facts_deps d LEFT JOIN versions v ON v.product = d.product AND v.version = d.version
        UNION ALL
        SELECT d.id, d.product, d.environment, d.version, d.finished_at, m.sha, m.repo, m.ct
        FROM temp.facts_meta m JOIN temp.facts_deps d ON d.id = m.dep_id
    ) r WHERE COALESCE(r.sha, r.version) IS NOT NULL
) p
WHERE p.nth = 1
) q WHERE 1 = 1
ON CONFLICT (product, environment, change) DO NOTHING
"""

_COMMIT_AT = """(SELECT MIN(c.committed_at) FROM commits c WHERE c.sha = metric_lead_facts.sha
    AND (metric_lead_facts.repository = '' OR c.repository = metric_lead_facts.repository))"""
_BUILD_AT = """COALESCE(
    (SELECT MIN(b.occurred_at) FROM events b WHERE b.kind = 'build' AND b.scm_sha = metric_lead_facts.sha),
    (SELECT MIN(b.occurred_at) FROM events b WHERE b.kind = 'build' AND b.product = metric_lead_facts.product
       AND b.version = metric_lead_facts.version))"""

_TEMP = ("facts_keys", "facts_parts", "facts_deps", "facts_meta", "facts_shas", "facts_versions")


# -- what changed without a new event -------------------------------------------------------


def stale_key(conn: sqlite3.Connection, product: str, environment: str, version: str | None) -> None:
    """A deployment key lost events (an admin deletion): redo its product/environment from its deployments."""
    conn.execute("INSERT INTO metric_facts_stale (kind, product, environment, version) VALUES ('key', ?, ?, ?)",
                 (product, environment, version))


def stale_build(conn: sqlite3.Connection, product: str, version: str | None, sha: str | None) -> None:
    """A build event went: the first-build times of its SHA and of its product/version are read again."""
    if sha:
        conn.execute("INSERT INTO metric_facts_stale (kind, sha) VALUES ('sha', ?)", (sha,))
    if version is not None:
        conn.execute("INSERT INTO metric_facts_stale (kind, product, version) VALUES ('version', ?, ?)",
                     (product, version))


def stale_product(conn: sqlite3.Connection, product: str) -> None:
    """All of a product's events go: redo its facts, and the build times of SHAs its builds had."""
    conn.execute("INSERT INTO metric_facts_stale (kind, product) VALUES ('product', ?)", (product,))
    conn.execute("INSERT INTO metric_facts_stale (kind, sha) SELECT DISTINCT 'sha', scm_sha FROM events "
                 "WHERE product = ? AND kind = 'build' AND scm_sha IS NOT NULL", (product,))


def stale_commits(conn: sqlite3.Connection, shas: Iterable[str]) -> None:
    """Commits were recorded or changed: their commit times are read again."""
    conn.executemany("INSERT INTO metric_facts_stale (kind, sha) VALUES ('sha', ?)", [(s,) for s in set(shas)])


def forget_deleted(conn: sqlite3.Connection) -> None:
    """Event seqs above the new maximum get reused after a deletion: keep the watermark at or below it."""
    top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    mark = conn.execute("SELECT value FROM kv WHERE key = ?", (WATERMARK,)).fetchone()
    if mark is not None and int(mark[0]) > top:
        conn.execute("UPDATE kv SET value = ? WHERE key = ?", (str(top), WATERMARK))


# -- refresh ----------------------------------------------------------------------------------


def refresh(conn: sqlite3.Connection, full: bool = False) -> int:
    """Bring the stored facts up to date (inside the caller's transaction, after the deployments
    were refolded); returns how many product/environments were redone. The first refresh, and
    `full`, redo everything."""
    mark = conn.execute("SELECT value FROM kv WHERE key = ?", (WATERMARK,)).fetchone()
    top = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    for table in _TEMP:
        conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
    conn.execute("CREATE TEMP TABLE facts_parts (product TEXT, environment TEXT, since INTEGER)")
    conn.execute("CREATE TEMP TABLE facts_shas (sha TEXT)")
    conn.execute("CREATE TEMP TABLE facts_versions (product TEXT, version TEXT)")
    if full or mark is None:
        conn.execute("DELETE FROM metric_deploy_facts")
        conn.execute("DELETE FROM metric_lead_facts")
        conn.execute(f"INSERT INTO facts_parts SELECT DISTINCT product, environment, {_EVER} FROM deployments")
    else:
        _changed(conn, int(mark[0]))
    # Statistics for the temp tables: without them SQLite takes each for a million rows and builds a
    # Bloom filter over a whole big table for every join with one.
    conn.execute("ANALYZE temp.facts_parts")
    parts = conn.execute("SELECT product, environment, since FROM temp.facts_parts").fetchall()
    if parts:
        _redo(conn, [tuple(p) for p in parts], full or mark is None)
    if not (full or mark is None):
        # Commit and first-build times of the SHAs and versions that got commits or build events.
        shas = [tuple(r) for r in conn.execute("SELECT DISTINCT sha FROM temp.facts_shas")]
        versions = [tuple(r) for r in conn.execute("SELECT DISTINCT product, version FROM temp.facts_versions")]
        conn.executemany(f"UPDATE metric_lead_facts SET commit_at = {_COMMIT_AT}, build_at = {_BUILD_AT} "
                         "WHERE sha = ?", shas)
        conn.executemany(f"UPDATE metric_lead_facts SET build_at = {_BUILD_AT} WHERE product = ? AND version = ?",
                         versions)
        conn.executemany(f"UPDATE metric_lead_facts SET {_DERIVED} WHERE sha = ?", shas)
        conn.executemany(f"UPDATE metric_lead_facts SET {_DERIVED} WHERE product = ? AND version = ?", versions)
    conn.execute("DELETE FROM metric_facts_stale")
    conn.execute("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                 (WATERMARK, str(top)))
    for table in _TEMP:
        conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
    return len(parts)


def _changed(conn: sqlite3.Connection, mark: int) -> None:
    """temp.facts_parts (product/environments to redo, from when), facts_shas, facts_versions."""
    # `kind || ''` and `seq > ?` first: walk the new events only, not an index on kind.
    conn.execute("CREATE TEMP TABLE facts_keys (product TEXT, environment TEXT, version TEXT)")
    conn.execute("INSERT INTO facts_keys SELECT DISTINCT product, environment, version FROM events "
                 "WHERE seq > ? AND kind || '' = 'deployment' AND environment IS NOT NULL", (mark,))
    conn.execute("INSERT INTO facts_keys SELECT product, environment, version FROM metric_facts_stale "
                 "WHERE kind = 'key'")
    # A new event may have given its version a SHA: the completed deployments of that version redo.
    conn.execute("""
        INSERT INTO facts_keys SELECT DISTINCT f.product, f.environment, f.version
        FROM (SELECT DISTINCT product || '' AS product, version FROM events WHERE seq > ? AND version IS NOT NULL) e
        JOIN metric_deploy_facts f ON f.product = e.product AND f.version = e.version""", (mark,))
    conn.execute("ANALYZE temp.facts_keys")
    conn.execute(f"""
        INSERT INTO facts_parts
        SELECT product, environment, MIN(finished_at) FROM (
            SELECT f.product, f.environment, f.finished_at FROM temp.facts_keys k
            JOIN metric_deploy_facts f ON f.product = k.product AND f.environment = k.environment
                AND f.version IS k.version
            UNION ALL
            SELECT d.product, d.environment, d.finished_at FROM temp.facts_keys k
            JOIN deployments d ON d.product = k.product AND d.environment = k.environment AND d.version IS k.version
                AND d.status = 'completed'
            UNION ALL
            SELECT f.product, f.environment, {_EVER} FROM metric_facts_stale s
            JOIN metric_deploy_facts f ON f.product = s.product WHERE s.kind = 'product'
        ) x GROUP BY product, environment""")
    # Also redo the completed deployment before each start: its "next" may have changed.
    conn.execute("""
        UPDATE facts_parts SET since = COALESCE((
            SELECT MAX(f.finished_at) FROM metric_deploy_facts f WHERE f.product = facts_parts.product
              AND f.environment = facts_parts.environment AND f.finished_at < facts_parts.since), since)""")
    conn.execute("INSERT INTO facts_shas SELECT sha FROM metric_facts_stale WHERE kind = 'sha' "
                 "UNION SELECT scm_sha FROM events WHERE seq > ? AND kind || '' = 'build' AND scm_sha IS NOT NULL",
                 (mark,))
    conn.execute("INSERT INTO facts_versions SELECT product, version FROM metric_facts_stale WHERE kind = 'version' "
                 "UNION SELECT product, version FROM events WHERE seq > ? AND kind || '' = 'build' "
                 "AND version IS NOT NULL", (mark,))


def _redo(conn: sqlite3.Connection, parts: list[tuple[Any, ...]], everything: bool) -> None:
    """Replace the facts of each (product, environment) from its start time."""
    if not everything:
        for table in ("metric_deploy_facts", "metric_lead_facts"):
            conn.executemany(f"DELETE FROM {table} WHERE product = ? AND environment = ? AND finished_at >= ?", parts)
    conn.execute(_DEPLOY_FACTS)
    conn.execute("""
        CREATE TEMP TABLE facts_deps AS
        SELECT d.id, d.product, d.environment, d.version, d.finished_at, d.scm_sha
        FROM temp.facts_parts p JOIN deployments d ON d.product = p.product AND d.environment = p.environment
            AND d.status = 'completed' AND d.finished_at >= p.since""")
    conn.execute("CREATE UNIQUE INDEX temp.facts_deps_id ON facts_deps (id)")
    conn.execute("ANALYZE temp.facts_deps")
    conn.execute("CREATE TEMP TABLE facts_meta (dep_id INTEGER, sha TEXT, repo TEXT, ct INTEGER)")
    from deploytrack.metrics.compute import commit_refs

    source = "events e" if everything else "temp.facts_deps d JOIN events e ON e.deployment_id = d.id"
    rows = conn.execute(f"SELECT e.deployment_id, e.metadata FROM {source} WHERE e.kind = 'deployment' "
                        "AND e.deployment_id IS NOT NULL AND e.metadata LIKE '%\"commits\"%'")
    refs = [(dep, *ref) for dep, meta in rows for ref in commit_refs(orjson.loads(meta))]
    conn.executemany("INSERT INTO facts_meta VALUES (?, ?, ?, ?)", refs)
    conn.execute("CREATE INDEX temp.facts_meta_dep ON facts_meta (dep_id)")
    conn.execute("ANALYZE temp.facts_meta")
    conn.execute(_LEAD_FACTS)


# -- reading ----------------------------------------------------------------------------------


def tuples(conn: sqlite3.Connection, sql: str, params: Any) -> Iterable[tuple[Any, ...]]:
    """Rows as plain tuples (sqlite3.Row objects cost a third more on these large reads)."""
    if isinstance(conn, sqlite3.Connection):
        cursor = conn.cursor()
        cursor.row_factory = None
        return cursor.execute(sql, params)
    return (tuple(row) for row in conn.execute(sql, params))


def completed(conn: sqlite3.Connection, base: int, until: int) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
    """Per product/environment: (finish day, day the failure became known or None, 'completed', count) for
    the completed deployments finished before `until` (day indexes from `base`). A failure is a rollback
    known by `until` or a linked incident opened before it, whichever came first."""
    if until % DAY:
        raise ValueError("stored facts are counted by whole days: `until` must be a day start")
    out: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
    totals: dict[tuple[str, str, int], int] = {}
    for product, environment, fday, count in tuples(
            conn, "SELECT product, environment, finished_day, COUNT(*) FROM metric_deploy_facts "
            "WHERE finished_day < ? GROUP BY product, environment, finished_day", (until,)):
        totals[(product, environment, fday)] = count
    known: dict[int, tuple[str, str, int, int]] = {}
    for dep, product, environment, finished, at in conn.execute(
            "SELECT id, product, environment, finished_at, rolled_back_at FROM metric_deploy_facts "
            "WHERE rolled_back_at IS NOT NULL AND rolled_back_at < ? AND finished_at < ?", (until, until)):
        known[dep] = (product, environment, finished, at)
    for dep, product, environment, finished, at in conn.execute(
            "SELECT f.id, f.product, f.environment, f.finished_at, i.at FROM "
            "(SELECT deployment_id, MIN(opened_at) AS at FROM incidents WHERE opened_at < ? "
            "AND deployment_id IS NOT NULL GROUP BY deployment_id) i "
            "JOIN metric_deploy_facts f ON f.id = i.deployment_id WHERE f.finished_at < ?", (until, until)):
        if dep not in known or at < known[dep][3]:
            known[dep] = (product, environment, finished, at)
    failures: dict[tuple[str, str, int, int], int] = {}
    for product, environment, finished, at in known.values():
        fday = finished - finished % DAY
        kday = fday if at < finished else at - at % DAY
        failures[(product, environment, fday, kday)] = failures.get((product, environment, fday, kday), 0) + 1
        totals[(product, environment, fday)] -= 1
    for (product, environment, fday, kday), count in failures.items():
        out.setdefault((product, environment), []).append(((fday - base) // DAY, (kday - base) // DAY,
                                                           "completed", count))
    for (product, environment, fday), count in totals.items():
        if count:
            out.setdefault((product, environment), []).append(((fday - base) // DAY, None, "completed", count))
        else:
            out.setdefault((product, environment), [])
    return out


def lead_points(conn: sqlite3.Connection, base: int, until: int,
                keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], list[tuple[int, int, int]]]:
    """Per product/environment of `keys` (those with completed deployments before `until`): (finish day
    index from `base`, lead time µs, source: 0 commit, 1 event, 2 build) of each change's first completed
    deployment before `until` that has a time to measure from (`base` <= every finish time).
    One query per product/environment: small ints, no strings per row."""
    sql = f"""SELECT (finished_at - ?) / {DAY}, lead_us, source FROM metric_lead_facts
              WHERE product = ? AND environment = ? AND finished_at < ? AND source IS NOT NULL"""
    out = {}
    for product, environment in keys:
        points = list(tuples(conn, sql, (base, product, environment, until)))
        if points:
            out[(product, environment)] = points
    return out
