"""Stored facts of each product/environment, derived with the rules over its whole history.

- `deployment_facts`: every finished deployment, whether it is a rollback, what rolled it back and
  when, and (a failed one) when the next deployment completed;
- `metric_lead_facts`: each change's first completed deployment in the product/environment, with
  the times a lead time is measured from (recorded commit, commit time sent with the event, first
  build).

Both are a pure function of the deployments, events and commits of their product/environment, so
redoing a product/environment whole is always right; a refresh redoes only those something
touched. `plan()` reads on a snapshot, `apply()` writes in the single writer. What changes without
leaving a new event behind (deletions, recorded commits) is marked in `derived_stale`.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from deploytrack.errors import BadRequest
from deploytrack.metrics import rules
from deploytrack.timeutil import parse_timestamp

Partition = tuple[str, str]  # product, environment
_CHUNK = 400
_TERMINAL_SQL = "('completed', 'failed', 'aborted')"


# -- what changed without a new event -----------------------------------------------------------


def mark_key(conn: sqlite3.Connection, product: str, environment: str, version: str | None) -> None:
    """A deployment key lost events (an admin deletion): refold it whole and redo its facts."""
    conn.execute("INSERT INTO derived_stale (kind, product, environment, version) VALUES ('key', ?, ?, ?)",
                 (product, environment, version))


def mark_product(conn: sqlite3.Connection, product: str) -> None:
    """A product's builds or events changed: redo the facts of all its product/environments."""
    conn.execute("INSERT INTO derived_stale (kind, product) VALUES ('product', ?)", (product,))


def mark_shas(conn: sqlite3.Connection, shas: Iterable[str]) -> None:
    """Commits were recorded or builds deleted: redo the facts of every deployment of these SHAs."""
    conn.executemany("INSERT INTO derived_stale (kind, sha) VALUES ('sha', ?)", [(s,) for s in sorted(set(shas))])


# -- reading ------------------------------------------------------------------------------------


def _in(conn: sqlite3.Connection, sql: str, values: Sequence[Any], *before: Any) -> Iterator[Sequence[Any]]:
    """Rows of `sql` whose `{in}` is filled with each chunk of `values` (after the `before` parameters)."""
    for start in range(0, len(values), _CHUNK):
        chunk = list(values[start:start + _CHUNK])
        yield from conn.execute(sql.format(marks=", ".join("?" * len(chunk))), (*before, *chunk))


def partitions_of(conn: sqlite3.Connection, products: Iterable[str], shas: Iterable[str]) -> set[Partition]:
    """The product/environments with deployments of these products, or shipping these SHAs."""
    out: set[Partition] = set()
    products, shas = sorted(set(products)), sorted(set(shas))
    for table in ("deployments", "deployment_facts"):  # facts of a product whose deployments were deleted go too
        out.update((r[0], r[1]) for r in _in(
            conn, f"SELECT DISTINCT product, environment FROM {table} WHERE product IN ({{marks}})", products))
    out.update((r[0], r[1]) for r in _in(
        conn, "SELECT DISTINCT product, environment FROM metric_lead_facts WHERE sha IN ({marks})", shas))
    out.update((r[0], r[1]) for r in _in(
        conn, "SELECT DISTINCT product, environment FROM deployments WHERE scm_sha IN ({marks})", shas))
    by_version = sorted({r[0] for r in _in(conn, "SELECT product FROM versions WHERE scm_sha IN ({marks})", shas)})
    out.update((r[0], r[1]) for r in _in(
        conn, "SELECT DISTINCT product, environment FROM deployments WHERE product IN ({marks})", by_version))
    return out


def all_partitions(conn: sqlite3.Connection) -> set[Partition]:
    rows = conn.execute("SELECT DISTINCT product, environment FROM deployments UNION "
                        "SELECT DISTINCT product, environment FROM deployment_facts")
    return {(r[0], r[1]) for r in rows}


@dataclass
class PartitionFacts:
    """The facts rows of one product/environment (empty: it has none any more)."""

    partition: Partition
    outcomes: list[tuple[Any, ...]] = field(default_factory=list)
    lead: list[tuple[Any, ...]] = field(default_factory=list)

    def size(self) -> int:
        return 1 + len(self.outcomes) + len(self.lead)


def _commit_time(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value, "committed_at")
    except BadRequest:
        return None


def plan(conn: sqlite3.Connection, partitions: Sequence[Partition]) -> list[PartitionFacts]:
    """Derive the facts of these product/environments (read-only)."""
    deps: dict[Partition, list[Sequence[Any]]] = {}
    for product, environment in partitions:
        deps[(product, environment)] = list(conn.execute(
            "SELECT id, version, status, finished_at, label, scm_sha FROM deployments "
            f"WHERE product = ? AND environment = ? AND status IN {_TERMINAL_SQL}", (product, environment)))
    completed = [d[0] for rows in deps.values() for d in rows if d[2] == "completed"]
    products = sorted({p for p, _ in partitions})
    version_sha: dict[tuple[str, str], str] = {
        (r[0], r[1]): r[2] for r in _in(conn, "SELECT product, version, scm_sha FROM versions "
                                        "WHERE scm_sha IS NOT NULL AND product IN ({marks})", products)}
    # (only deployment events have a deployment_id: no `kind` term, which would tempt the planner into
    # walking every deployment event instead of looking these ids up)
    event_ct = {r[0]: r[1] for r in _in(conn, "SELECT deployment_id, MIN(commit_time) FROM events "
                                        "WHERE deployment_id IN ({marks}) AND commit_time IS NOT NULL "
                                        "GROUP BY deployment_id", completed)}
    listed: dict[int, list[tuple[str, str, int | None]]] = defaultdict(list)
    for dep_id, metadata in _in(conn, "SELECT deployment_id, metadata FROM events WHERE deployment_id IN ({marks}) "
                                "AND metadata LIKE '%\"commits\"%'", completed):
        listed[dep_id].extend(rules.listed_commits(metadata, _commit_time))

    refs: dict[int, list[rules.ChangeRef]] = {}
    for (product, _), rows in deps.items():
        for dep_id, version, status, _, _, sha in rows:
            if status == "completed":
                own = sha or (version_sha.get((product, version)) if version is not None else None)
                refs[dep_id] = rules.change_refs(version, own, listed.get(dep_id, ()), event_ct.get(dep_id))
    shas = sorted({r.sha for rs in refs.values() for r in rs if r.sha})
    commits: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for sha, repository, at in _in(conn, "SELECT sha, repository, committed_at FROM commits WHERE sha IN ({marks})",
                                   shas):
        commits[sha].append((repository, at))
    build_sha = {r[0]: r[1] for r in _in(conn, "SELECT scm_sha, MIN(occurred_at) FROM events WHERE kind = 'build' "
                                         "AND scm_sha IN ({marks}) GROUP BY scm_sha", shas)}
    build_version: dict[tuple[str, str], int] = {}
    for product in products:
        versions = sorted({d[1] for (p, _), rows in deps.items() if p == product for d in rows if d[1] is not None})
        build_version.update(((product, r[0]), r[1]) for r in _in(
            conn, "SELECT version, MIN(occurred_at) FROM events WHERE kind = 'build' AND product = ? "
            "AND version IN ({marks}) GROUP BY version", versions, product))

    out = []
    for (product, environment), rows in deps.items():
        result = PartitionFacts((product, environment))
        outcomes = [rules.Outcome(d[0], d[1], d[2], d[3], d[4]) for d in rows]
        facts = rules.outcome_facts(outcomes)
        firsts: dict[str, tuple[rules.Outcome, rules.ChangeRef]] = {}
        for o in sorted(outcomes, key=rules.outcome_order):
            f = facts[o.id]
            result.outcomes.append((o.id, product, environment, o.status, o.finished_at, int(f.is_rollback),
                                    rules.effective_label(o.label, f.is_rollback), f.rollback_of, f.rolled_back_by, f.rolled_back_at, f.recovered_at))
            for ref in refs.get(o.id, ()):
                firsts.setdefault(ref.change, (o, ref))
        for change, (o, ref) in sorted(firsts.items()):
            commit_at = min((at for repo, at in commits.get(ref.sha or "", ())
                             if not ref.repository or repo == ref.repository), default=None)
            build_at = build_sha.get(ref.sha or "")
            if build_at is None and o.version is not None:
                build_at = build_version.get((product, o.version))
            start = rules.lead_start(commit_at, ref.commit_time, build_at)
            result.lead.append((product, environment, change, o.id, o.finished_at, o.version, ref.sha,
                                ref.repository, ref.commit_time, commit_at, build_at,
                                None if start is None else max(0, o.finished_at - start[0]),
                                None if start is None else start[1]))
        out.append(result)
    return out


# -- writing ------------------------------------------------------------------------------------

_OUTCOME_COLUMNS = ("id", "product", "environment", "status", "finished_at", "is_rollback", "label", "rollback_of",
                    "rolled_back_by", "rolled_back_at", "recovered_at")
_LEAD_COLUMNS = ("product", "environment", "change", "deployment_id", "finished_at", "version", "sha", "repository",
                 "event_commit_at", "commit_at", "build_at", "lead_us", "source")


def apply(conn: sqlite3.Connection, planned: Iterable[PartitionFacts]) -> int:
    """Replace the facts of each planned product/environment (inside the writer's transaction)."""
    count = 0
    for p in planned:
        conn.execute("DELETE FROM deployment_facts WHERE product = ? AND environment = ?", p.partition)
        conn.execute("DELETE FROM metric_lead_facts WHERE product = ? AND environment = ?", p.partition)
        conn.executemany(f"INSERT INTO deployment_facts ({', '.join(_OUTCOME_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(_OUTCOME_COLUMNS))})", p.outcomes)
        conn.executemany(f"INSERT INTO metric_lead_facts ({', '.join(_LEAD_COLUMNS)}) "
                         f"VALUES ({', '.join('?' * len(_LEAD_COLUMNS))})", p.lead)
        count += 1
    return count
