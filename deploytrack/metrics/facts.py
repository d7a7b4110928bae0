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

import bisect
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from deploytrack.errors import BadRequest
from deploytrack.metrics import gcpause, rules
from deploytrack.storage import bulk
from deploytrack.storage.database import Connection
from deploytrack.timeutil import parse_timestamp

Partition = tuple[str, str]  # product, environment
EVER = rules.EVER
_CHUNK = 400
_SCAN_ABOVE = 100_000  # deployments whose sent commit times are read in one pass over the events instead
TERMINAL = ("completed", "failed", "aborted")  # the statuses of a finished deployment, which has facts
_TERMINAL_SQL = f"({', '.join(repr(status) for status in TERMINAL)})"
# The records the facts are derived from (finished), and what is read of each: a `Finished` row.
FINISHED = f"status IN {_TERMINAL_SQL} AND finished_at IS NOT NULL"
FINISHED_COLUMNS = "id, version, status, finished_at, label, scm_sha"


# -- what changed without a new event -----------------------------------------------------------


def mark_key(conn: Connection, product: str, environment: str, version: str | None) -> None:
    """A deployment key lost events (an admin deletion): refold it whole and redo its facts."""
    conn.execute("INSERT INTO derived_stale (kind, product, environment, version) VALUES ('key', ?, ?, ?)",
                 (product, environment, version))


def mark_product(conn: Connection, product: str) -> None:
    """A product's builds or events changed: redo the facts of all its product/environments."""
    conn.execute("INSERT INTO derived_stale (kind, product) VALUES ('product', ?)", (product,))


def mark_shas(conn: Connection, shas: Iterable[str]) -> None:
    """Commits were recorded or builds deleted: redo the facts of every deployment of these SHAs."""
    conn.executemany("INSERT INTO derived_stale (kind, sha) VALUES ('sha', ?)", [(s,) for s in sorted(set(shas))])


# -- reading ------------------------------------------------------------------------------------


def _in(conn: Connection, sql: str, values: Sequence[Any], *before: Any) -> Iterator[Sequence[Any]]:
    """Rows of `sql` filled with each chunk of `values` (after the `before` parameters): `{marks}` becomes
    `?, ?, ...` (for IN), `{rows}` becomes `(?), (?), ...` (for a VALUES table)."""
    for start in range(0, len(values), _CHUNK):
        chunk = list(values[start:start + _CHUNK])
        yield from conn.execute(sql.format(marks=", ".join("?" * len(chunk)), rows=", ".join(["(?)"] * len(chunk))),
                                (*before, *chunk))


def partitions_of(conn: Connection, products: Iterable[str]) -> set[Partition]:
    """The product/environments of these products (with deployments, or facts of deleted ones)."""
    out: set[Partition] = set()
    names = sorted(set(products))
    for table in ("deployments", "deployment_facts"):
        out.update((r[0], r[1]) for r in _in(
            conn, f"SELECT DISTINCT product, environment FROM {table} WHERE product IN ({{marks}})", names))
    return out


def lead_times_of(conn: Connection, shas: Iterable[str], versions: Iterable[tuple[str, str]]
                  ) -> Iterator[tuple[Partition, int]]:
    """(product/environment, earliest first deployment) of the changes whose commit or build times these
    SHAs and product versions can change (the times of recorded commits and builds)."""
    for product, environment, since in _in(
            conn, "SELECT product, environment, MIN(finished_at) FROM metric_lead_facts WHERE sha IN ({marks}) "
            "GROUP BY product, environment", sorted(set(shas))):
        yield (product, environment), since
    for product, version in sorted(set(versions)):
        for environment, since in conn.execute(
                "SELECT environment, MIN(finished_at) FROM metric_lead_facts WHERE product = ? AND version = ? "
                "GROUP BY environment", (product, version)):
            yield (product, environment), since


def all_partitions(conn: Connection) -> set[Partition]:
    rows = conn.execute("SELECT DISTINCT product, environment FROM deployments UNION "
                        "SELECT DISTINCT product, environment FROM deployment_facts")
    return {(r[0], r[1]) for r in rows}


@dataclass
class PartitionFacts:
    """The facts rows of one product/environment from `start` on (empty: it has none any more)."""

    partition: Partition
    start: int
    outcomes: list[tuple[Any, ...]] = field(default_factory=list)  # in finish order
    lead: list[tuple[Any, ...]] = field(default_factory=list)
    end: int | None = None  # rows finished before this (None: all after start)

    def size(self) -> int:
        return 1 + len(self.outcomes) + len(self.lead)

    def pieces(self, rows: int) -> list[PartitionFacts]:
        """The same rows as consecutive finish-time ranges of about `rows` outcomes each, so that each
        write transaction stays short and every range is whole when written."""
        outcomes = sorted(self.outcomes, key=itemgetter(4))
        lead = sorted(self.lead, key=itemgetter(4))
        cuts = sorted({outcomes[i][4] for i in range(rows, len(outcomes), rows)})
        if not cuts:
            return [self]
        out_times, lead_times = [r[4] for r in outcomes], [r[4] for r in lead]
        bounds = [self.start, *cuts, None]
        out = []
        for lo, hi in zip(bounds, bounds[1:], strict=False):
            def part(sorted_rows: list[tuple[Any, ...]], times: list[int], lo: int = lo,
                     hi: int | None = hi) -> list[tuple[Any, ...]]:
                """The rows finished in [lo, hi), by bisection: each piece costs its own rows only."""
                begin = bisect.bisect_left(times, lo)
                return sorted_rows[begin:len(times) if hi is None else bisect.bisect_left(times, hi)]
            out.append(PartitionFacts(self.partition, lo, part(outcomes, out_times), part(lead, lead_times), hi))
        return out


def _commit_time(value: Any) -> int | None:
    if value is None:
        return None
    try:
        return parse_timestamp(value, "committed_at")
    except BadRequest:
        return None


def _tail_start(conn: Connection, partition: Partition, since: int) -> tuple[int, rules.Outcome | None]:
    """Where a product/environment's facts must be redone from for changes at or after `since`: the last
    completed deployment before it (whose "next" may change), with the completed deployment before that,
    which the rules need as context."""
    if since <= EVER:
        return EVER, None
    row = conn.execute("SELECT MAX(finished_at) FROM deployments WHERE product = ? AND environment = ? "
                       "AND status = 'completed' AND finished_at < ?", (*partition, since)).fetchone()
    if row[0] is None:
        return EVER, None
    start = int(row[0])
    before = conn.execute("SELECT id, version, status, finished_at, label FROM deployments WHERE product = ? "
                          "AND environment = ? AND status = 'completed' AND finished_at < ? "
                          "ORDER BY finished_at DESC, id DESC LIMIT 1", (*partition, start)).fetchone()
    return start, None if before is None else rules.Outcome(*before)


def _seen_before(conn: Connection, partition: Partition, start: int, versions: Iterable[str]) -> set[str]:
    """Which of `versions` completed in the product/environment before `start` (the rules ask only
    about the versions they meet, so the rest of the history is not read)."""
    if start <= EVER:
        return set()
    return {r[0] for r in _in(conn, "SELECT DISTINCT version FROM deployments WHERE product = ? AND environment = ? "
                                    "AND status = 'completed' AND finished_at < ? AND version IN ({marks})",
                              sorted(set(versions)), *partition, start)}


def _sent_commits(conn: Connection, deployment_ids: list[int]) -> Iterator[Sequence[Any]]:
    """(deployment id, commit time, metadata) of the events of these deployments that sent a commit time or
    a `commits` list, in seq order for each deployment."""
    sent = "(commit_time IS NOT NULL OR metadata LIKE '%\"commits\"%')"
    if len(deployment_ids) > _SCAN_ABOVE:  # most of the history: one pass over the events, not a lookup each
        wanted = set(deployment_ids)
        yield from (r for r in conn.execute(f"SELECT deployment_id, commit_time, metadata FROM events "
                                            f"WHERE deployment_id IS NOT NULL AND {sent} ORDER BY seq")
                    if r[0] in wanted)
        return
    # (only deployment events have a deployment_id: no `kind` term, which would tempt the planner into
    # walking every deployment event instead of looking these ids up)
    yield from _in(conn, f"SELECT deployment_id, commit_time, metadata FROM events WHERE deployment_id IN ({{marks}}) "
                   f"AND {sent} ORDER BY deployment_id, seq", deployment_ids)


Sent = dict[int, list[tuple[int | None, Any]]]  # deployment id -> (commit time, metadata) its events sent, in seq order
Finished = dict[Partition, list[Sequence[Any]]]  # each one's finished records: id, version, status, finished_at,
# label, scm_sha, in finish order


def plan(conn: Connection, partitions: Mapping[Partition, int], sent: Sent | None = None,
         finished: Finished | None = None) -> list[PartitionFacts]:
    """Derive the facts of these product/environments from each one's time on (EVER: all; read-only).
    `sent`: what their deployments' events sent (a bulk first build knows it before its events name their
    records); else it is read (`_sent_commits`). `finished`: their finished records, all of them (a bulk
    first build's, not stored yet; every partition from EVER); else they are read."""
    with gcpause.paused():
        return _plan(conn, partitions, sent, finished)


def _given(sent: Sent, deployment_ids: list[int]) -> Iterator[tuple[int, int | None, Any]]:
    for dep_id in deployment_ids:
        for commit_time, metadata in sent.get(dep_id, ()):
            yield dep_id, commit_time, metadata


def _plan(conn: Connection, partitions: Mapping[Partition, int], sent: Sent | None, finished: Finished | None
          ) -> list[PartitionFacts]:
    deps: dict[Partition, list[Sequence[Any]]] = {}
    context: dict[Partition, tuple[int, rules.Outcome | None, set[str]]] = {}
    for partition, since in partitions.items():
        start, previous = _tail_start(conn, partition, since)
        deps[partition] = list(conn.execute(
            f"SELECT {FINISHED_COLUMNS} FROM deployments WHERE product = ? AND environment = ? AND {FINISHED} "
            "AND finished_at >= ?", (*partition, start))
        ) if finished is None else finished.get(partition, [])
        seen = _seen_before(conn, partition, start, (d[1] for d in deps[partition] if d[1] is not None))
        context[partition] = start, previous, seen
    completed = [d[0] for rows in deps.values() for d in rows if d[2] == "completed"]
    versions: dict[str, set[str]] = defaultdict(set)  # product -> versions deployed
    for (product, _), rows in deps.items():
        versions[product].update(d[1] for d in rows if d[1] is not None)
    version_sha: dict[tuple[str, str], str] = {}
    for product, names in sorted(versions.items()):
        version_sha.update(((product, r[0]), r[1]) for r in _in(
            conn, "SELECT version, scm_sha FROM versions WHERE product = ? AND scm_sha IS NOT NULL "
            "AND version IN ({marks})", sorted(names), product))
    event_ct: dict[int, int] = {}
    listed: dict[int, list[tuple[str, str, int | None]]] = defaultdict(list)
    for dep_id, commit_time, metadata in _sent_commits(conn, completed) if sent is None else _given(sent, completed):
        if commit_time is not None:
            event_ct[dep_id] = min(commit_time, event_ct.get(dep_id, commit_time))
        if metadata is not None and (not isinstance(metadata, str) or '"commits"' in metadata):
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
    # one lookup per SHA: with `scm_sha IN (...)` a planner without statistics walks every build instead
    build_sha = {r[0]: r[1] for r in _in(conn, "SELECT v.column1, (SELECT MIN(e.occurred_at) FROM events e "
                                         "WHERE e.kind = 'build' AND e.scm_sha = v.column1) FROM (VALUES {rows}) AS v",
                                         shas) if r[1] is not None}
    build_version: dict[tuple[str, str], int] = {}
    for product, names in sorted(versions.items()):
        build_version.update(((product, r[0]), r[1]) for r in _in(
            conn, "SELECT version, MIN(occurred_at) FROM events WHERE kind = 'build' AND product = ? "
            "AND version IN ({marks}) GROUP BY version", sorted(names), product))

    out = []
    for (product, environment), rows in deps.items():
        start, previous, seen = context[(product, environment)]
        result = PartitionFacts((product, environment), start)
        outcomes = [rules.Outcome(d[0], d[1], d[2], d[3], d[4]) for d in rows]
        facts = rules.outcome_facts(outcomes, previous, seen)
        changes = sorted({ref.change for o in outcomes for ref in refs.get(o.id, ())})
        deployed_before = {r[0] for r in _in(
            conn, "SELECT change FROM metric_lead_facts WHERE product = ? AND environment = ? AND finished_at < ? "
            "AND change IN ({marks})", changes, product, environment, start)} if start > EVER else set()
        firsts: dict[str, tuple[rules.Outcome, rules.ChangeRef]] = {}
        for o in sorted(outcomes, key=rules.outcome_order):
            f = facts[o.id]
            result.outcomes.append((o.id, product, environment, o.status, o.finished_at, int(f.is_rollback),
                                    rules.effective_label(o.label, f.is_rollback), f.rollback_of,
                                    f.rolled_back_by, f.rolled_back_at, f.recovered_at))
            for ref in refs.get(o.id, ()):
                if ref.change not in deployed_before:
                    firsts.setdefault(ref.change, (o, ref))
        for change, (o, ref) in sorted(firsts.items()):
            commit_at = min((at for repo, at in commits.get(ref.sha or "", ())
                             if not ref.repository or repo == ref.repository), default=None)
            build_at = build_sha.get(ref.sha or "")
            if build_at is None and o.version is not None:
                build_at = build_version.get((product, o.version))
            begin = rules.lead_start(commit_at, ref.commit_time, build_at)
            result.lead.append((product, environment, change, o.id, o.finished_at, o.version, ref.sha,
                                ref.repository, ref.commit_time, commit_at, build_at,
                                None if begin is None else max(0, o.finished_at - begin[0]),
                                None if begin is None else begin[1]))
        out.append(result)
    return out


def planned(conn: Connection, partitions: Mapping[Partition, int], rows: int) -> list[PartitionFacts]:
    """The facts of these product/environments (`plan`) in pieces of about `rows` outcomes (`pieces`), those
    that differ from the stored rows (`differing`): what the writer is to be asked for (read-only)."""
    return differing(conn, [piece for p in plan(conn, partitions) for piece in p.pieces(rows)])


# -- writing ------------------------------------------------------------------------------------

_OUTCOME_COLUMNS = ("id", "product", "environment", "status", "finished_at", "is_rollback", "label", "rollback_of",
                    "rolled_back_by", "rolled_back_at", "recovered_at")
_LEAD_COLUMNS = ("product", "environment", "change", "deployment_id", "finished_at", "version", "sha", "repository",
                 "event_commit_at", "commit_at", "build_at", "lead_us", "source")


def differing(conn: Connection, planned: Iterable[PartitionFacts]) -> list[PartitionFacts]:
    """The planned pieces whose rows are not already stored (read on the snapshot the plan came from):
    a full recompute over facts that are right then asks the writer for nothing."""
    return [p for p in planned if any(_stored(conn, table, columns, p) != set(rows) for table, columns, _, rows in
                                      _tables(p))]


def apply(conn: Connection, planned: Iterable[PartitionFacts], fresh: bool = False) -> int:
    """Replace the facts of each planned product/environment (inside the writer's transaction).

    Only rows that differ are deleted or inserted: index pages that are right stay as they are. `fresh`:
    none is stored (a bulk first build's scratch file, metrics/scratch.py)."""
    count = 0
    for p in planned:
        for table, columns, key, rows in _tables(p):
            stored = set() if fresh else _stored(conn, table, columns, p)
            at = [columns.index(c) for c in key]
            conn.executemany(f"DELETE FROM {table} WHERE {' AND '.join(f'{c} = ?' for c in key)}",
                             [tuple(r[i] for i in at) for r in stored - set(rows)])
            for sql, params in bulk.insert_statements(table, columns, [r for r in rows if r not in stored]):
                conn.execute(sql, params)
        count += 1
    return count


def _tables(p: PartitionFacts) -> list[tuple[str, tuple[str, ...], tuple[str, ...], list[tuple[Any, ...]]]]:
    """(table, columns, primary key, rows) of each fact table for one planned piece."""
    return [("deployment_facts", _OUTCOME_COLUMNS, ("id",), p.outcomes),
            ("metric_lead_facts", _LEAD_COLUMNS, ("product", "environment", "change"), p.lead)]


def _stored(conn: Connection, table: str, columns: tuple[str, ...], p: PartitionFacts) -> set[tuple[Any, ...]]:
    """The rows of `table` stored in `p`'s product/environment and finish-time range."""
    end = "" if p.end is None else " AND finished_at < ?"
    bounds = (*p.partition, p.start) if p.end is None else (*p.partition, p.start, p.end)
    return {tuple(r) for r in conn.execute(
        f"SELECT {', '.join(columns)} FROM {table} WHERE product = ? AND environment = ? AND finished_at >= ?{end}",
        bounds)}
