"""Deployment records refolded from the event log with the rules' fold.

Ingestion folds each deployment event into its record as it arrives (the same fold step), which
depends on arrival order. The refold takes a deployment key's events in `occurred_at` order, so
the same events always give the same records. Only what can have changed is refolded: from the
deployment before the earliest new event of each key (a key's runs before it do not depend on
later events), and whole invoke-id deployments. Record ids are kept: a record keeps the id its
earliest-arrived event had; a fresh id is always above every id ever used, so an id never moves to
another deployment.

`plan()` reads (on a snapshot), `apply()` writes (in the single writer, one short transaction per
chunk of keys, skipping any key that received events after the snapshot).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

from deploytrack.metrics import gcpause, rules
from deploytrack.storage import bulk, deployment_ids
from deploytrack.storage.database import Connection

Key = tuple[str, str, str | None]  # product, environment, version
EVER = rules.EVER

_EVENT_COLUMNS = "seq, occurred_at, status, invoke_id, scm_sha, actor, change_id, metadata, summary, deployment_id"
_RECORD_FIELDS = ("status", "first_at", "last_at", "started_at", "finished_at", "scm_sha", "actor", "change_id",
                  "label", "event_count")
RECORD_COLUMNS = ("id", "product", "environment", "version", "invoke_id", *_RECORD_FIELDS)
_RECORD_VALUES = attrgetter("invoke_id", *_RECORD_FIELDS)
_FIRST_AT = attrgetter("first_at")


Values = tuple[Any, ...]  # a record's stored values: invoke_id, *_RECORD_FIELDS
_FIRST_AT_VALUE = 1 + _RECORD_FIELDS.index("first_at")
_ENV_VERSION = itemgetter(0, 1)
_SENT_COMMITS = '"commits"'  # (the key of a commits list in an event's metadata)


@dataclass(slots=True)
class KeyPlan:
    """The refold of one key: records to replace and what replaces them, in plain tuples (a first build's
    planning process sends a million of them)."""

    key: Key
    top_seq: int  # the key's newest event in the snapshot
    replaced: dict[int, Values]  # id -> stored values
    records: list[Values]  # the refolded records
    events: list[tuple[list[int], list[int | None]]]  # each record's event seqs and the record ids they had
    ids: list[int | None]  # the id each record keeps (None: a fresh one)
    earliest: int  # the earliest time this refold touches (first events of the records replaced and made)

    @classmethod
    def of(cls, key: Key, top_seq: int, replaced: dict[int, Values], folded: list[rules.Folded]) -> KeyPlan:
        made = min(map(_FIRST_AT, folded), default=None)
        old = min((int(r[_FIRST_AT_VALUE]) for r in replaced.values()), default=None)
        return cls(key, top_seq, replaced, list(map(_RECORD_VALUES, folded)),
                   [(r.seqs, r.previous_ids) for r in folded], rules.keep_ids(folded, set()),
                   min((t for t in (made, old) if t is not None), default=EVER))

    def changed(self) -> bool:
        if len(self.records) != len(self.replaced) or any(i is None for i in self.ids):
            return True
        return any(self.replaced.get(i) != r or any(old != i for old in previous)  # type: ignore[arg-type]
                   for i, r, (_, previous) in zip(self.ids, self.records, self.events, strict=True))

    def size(self) -> int:
        """Rows it writes (records) and deletes (those replaced), plus one."""
        return 1 + len(self.records) + len(self.replaced)


def event_of(row: Sequence[Any]) -> rules.FoldEvent:
    seq, at, status, invoke_id, sha, actor, change_id, metadata, summary, dep = row
    # (positional: a million of these in a first build)
    return rules.FoldEvent(seq, at, status, invoke_id or "", sha, actor, change_id,
                           rules.event_label(metadata, summary) if metadata or summary else None, dep)


# -- reading --------------------------------------------------------------------------------------


def dirty_keys(conn: Connection, after_seq: int, top_seq: int) -> dict[Key, int]:
    """Keys with deployment events in (after_seq, top_seq], each with its earliest new event time."""
    rows = conn.execute("SELECT product, environment, version, MIN(occurred_at) FROM events WHERE seq > ? AND seq <= ? "
                        "AND kind = 'deployment' AND environment IS NOT NULL GROUP BY product, environment, version",
                        (after_seq, top_seq))
    return {(r[0], r[1], r[2]): r[3] for r in rows}


def all_products(conn: Connection) -> list[str]:
    """Every product that has deployment events or records (a full refold goes product by product)."""
    return sorted(set(_distinct_products(conn, "events", "kind = 'deployment' AND environment IS NOT NULL"))
                  | set(_distinct_products(conn, "deployments", "1 = 1")))


def _distinct_products(conn: Connection, table: str, where: str) -> Iterator[str]:
    """The products of `table`'s rows matching `where`, a seek each down an index led by the product (the
    events' fold index, the records' key): tens of seeks, not a walk over millions of entries."""
    row = conn.execute(f"SELECT MIN(product) FROM {table} WHERE {where}").fetchone()
    while row[0] is not None:
        yield row[0]
        row = conn.execute(f"SELECT MIN(product) FROM {table} WHERE {where} AND product > ?", (row[0],)).fetchone()


def _key_where(key: Key) -> tuple[str, tuple[Any, ...]]:
    """The terms selecting one key's rows (events or records), and their parameters."""
    same_version, version = bulk.equal("version", key[2])
    return f"product = ? AND environment = ? AND {same_version}", (key[0], key[1], *version)


def _since(conn: Connection, key: Key, earliest: int) -> int:
    """Where the key's runs must be refolded from for new events at or after `earliest`."""
    since = earliest
    if since == EVER:
        return since
    where, params = _key_where(key)
    while True:  # records straddling `since` (ingestion folded new events into older records)
        row = conn.execute(f"SELECT MIN(first_at) FROM deployments WHERE {where} AND invoke_id = '' AND last_at >= ?",
                           (*params, since)).fetchone()
        if row[0] is None or row[0] >= since:
            break
        since = row[0]
    # the record holding the last event before: a new event may continue it
    row = conn.execute(f"SELECT first_at FROM deployments WHERE {where} AND invoke_id = '' AND last_at < ? "
                       "ORDER BY last_at DESC, id DESC LIMIT 1", (*params, since)).fetchone()
    return since if row is None else min(since, row[0])


def plan_key(conn: Connection, key: Key, earliest: int) -> KeyPlan:
    """Read what the refold of one key needs and fold it."""
    since = _since(conn, key, earliest)
    where, params = _key_where(key)
    events = [event_of(r) for r in conn.execute(
        f"SELECT {_EVENT_COLUMNS} FROM events WHERE kind = 'deployment' AND {where} AND occurred_at >= ?",
        (*params, since))]
    invokes = sorted({e.invoke_id for e in events if e.invoke_id})
    if invokes and since != EVER:  # an invoke-id deployment is always refolded whole
        for start in range(0, len(invokes), 200):
            chunk = invokes[start:start + 200]
            events.extend(event_of(r) for r in conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events WHERE kind = 'deployment' AND {where} AND occurred_at < ? "
                f"AND invoke_id IN ({', '.join('?' * len(chunk))})", (*params, since, *chunk)))
    replaced_ids = {e.deployment_id for e in events if e.deployment_id is not None}
    replaced = {}
    for row in conn.execute(f"SELECT id, invoke_id, {', '.join(_RECORD_FIELDS)} FROM deployments WHERE {where} "
                            "AND (last_at >= ? OR invoke_id <> '')", (*params, since)):
        if row[1] == "" or row[0] in replaced_ids:
            replaced[row[0]] = tuple(row[1:])
    return KeyPlan.of(key, max((e.seq for e in events), default=0), replaced, rules.fold(events))


def plan_product(conn: Connection, product: str) -> list[KeyPlan]:
    """The refolds of every key of one product that change something: two streaming reads, not a
    few queries per key."""
    with gcpause.paused():
        return _plan_product(conn, product)


def _plan_product(conn: Connection, product: str) -> list[KeyPlan]:
    stored: dict[Key, dict[int, Values]] = {}
    for row in conn.execute(f"SELECT id, environment, version, invoke_id, {', '.join(_RECORD_FIELDS)} "
                            "FROM deployments WHERE product = ?", (product,)):
        stored.setdefault((product, row[1], row[2]), {})[row[0]] = tuple(row[3:])
    events: dict[Key, list[rules.FoldEvent]] = {}
    for row in conn.execute(f"SELECT environment, version, {_EVENT_COLUMNS} FROM events WHERE kind = 'deployment' "
                            "AND product = ? AND environment IS NOT NULL", (product,)):
        events.setdefault((product, row[0], row[1]), []).append(event_of(row[2:]))
    plans = []
    for key in sorted(set(stored) | set(events), key=lambda k: (k[1], k[2] or "")):
        key_events = events.get(key, [])
        key_plan = KeyPlan.of(key, max((e.seq for e in key_events), default=0), stored.get(key, {}),
                              rules.fold(key_events))
        if key_plan.changed():
            plans.append(key_plan)
    return plans


Sent = list[tuple[int | None, Any]]  # (commit time, metadata) of a record's events that sent either, in seq order
Fresh = tuple[tuple[Any, ...], list[int], Sent]  # a new record's row without its id, its events' seqs, what they sent


def plan_fresh(conn: Connection, product: str) -> list[Fresh]:
    """A product's records when none is stored and no event names one (a bulk first build, see
    metrics/first_build.py): every record is new, with its events and the commit times or `commits` lists
    they sent (what the facts read by record otherwise, `facts._sent_commits`), in time order. Plain tuples,
    read in the key order of the events' fold index so that each key's events come together."""
    with gcpause.paused():
        out: list[Fresh] = []
        rows = conn.execute(f"SELECT environment, version, commit_time, {_EVENT_COLUMNS} FROM events "
                            "WHERE kind = 'deployment' AND product = ? AND environment IS NOT NULL "
                            "ORDER BY environment, version", (product,))
        for (environment, version), key_rows in itertools.groupby(rows, _ENV_VERSION):
            head = (product, environment, version)
            events, sent = [], {}
            for row in key_rows:
                events.append(event_of(row[3:]))
                if row[2] is not None or (row[10] is not None and _SENT_COMMITS in row[10]):
                    sent[row[3]] = (row[2], row[10])  # (seq: commit time, metadata)
            out += [((*head, *_RECORD_VALUES(r)), r.seqs,
                     [sent[s] for s in sorted(r.seqs) if s in sent] if sent else []) for r in rules.fold(events)]
        out.sort(key=_fresh_first_at)
        return out


def _fresh_first_at(fresh: Fresh) -> int:
    return int(fresh[0][3 + _FIRST_AT_VALUE])  # (product, environment, version, *Values)


def plan(conn: Connection, keys: dict[Key, int]) -> Iterator[KeyPlan]:
    """The refolds that change something, one key at a time."""
    for key, earliest in sorted(keys.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or "")):
        key_plan = plan_key(conn, key, earliest)
        if key_plan.changed():
            yield key_plan


# -- writing --------------------------------------------------------------------------------------


def _stored(conn: Connection, ids: list[int]) -> dict[int, Values]:
    out = {}
    for start in range(0, len(ids), 400):
        chunk = ids[start:start + 400]
        for row in conn.execute(f"SELECT id, invoke_id, {', '.join(_RECORD_FIELDS)} FROM deployments "
                                f"WHERE id IN ({', '.join('?' * len(chunk))})", chunk):
            out[row[0]] = tuple(row[1:])
    return out


def _late_keys(conn: Connection, snapshot_top: int) -> set[Key]:
    """Keys with deployment events that arrived after the snapshot (usually none, or a few)."""
    # (the kind is tested here, not in SQL: a `kind` term tempts the planner into walking every deployment)
    rows = conn.execute("SELECT kind, product, environment, version FROM events WHERE seq > ?", (snapshot_top,))
    return {(r[1], r[2], r[3]) for r in rows if r[0] == "deployment"}


Moves = list[tuple[int, int, int | None]]  # (event seq, its new record id, the id it had when read)


def apply(conn: Connection, plans: Iterable[KeyPlan], snapshot_top: int, defer_moves: bool = False
          ) -> tuple[list[tuple[Key, int]], Moves]:
    """Write refolds (inside the writer's transaction); a key that got events after the snapshot, or whose
    records changed since (another refresh), is left for the next round. Returns the keys written, each
    with the earliest time it touched, and (`defer_moves`) the events' new record ids, for `move_events`
    to write later (else they are written here). A few statements for the whole chunk, not per key."""
    plans = list(plans)
    late = _late_keys(conn, snapshot_top)
    stored = _stored(conn, [i for p in plans for i in p.replaced])
    # new events, or another refresh got here first: the next round sees it
    fresh = [p for p in plans if p.key not in late and all(stored.get(i) == r for i, r in p.replaced.items())]
    if not fresh:
        return [], []
    deployment_ids.remember(conn)
    fresh_ids = iter(deployment_ids.new(conn, sum(kept is None for p in fresh for kept in p.ids)))
    replaced = [i for p in fresh for i in p.replaced]
    for start in range(0, len(replaced), 400):
        chunk = replaced[start:start + 400]
        conn.execute(f"DELETE FROM deployments WHERE id IN ({', '.join('?' * len(chunk))})", chunk)
    rows: list[tuple[Any, ...]] = []
    moves: Moves = []
    for p in fresh:
        for values, (seqs, previous), kept in zip(p.records, p.events, p.ids, strict=True):
            if kept is None:
                kept = next(fresh_ids)
            rows.append((kept, *p.key, *values))
            moves += [(seq, kept, old) for seq, old in zip(seqs, previous, strict=True) if old != kept]
    for sql, params in bulk.insert_statements("deployments", RECORD_COLUMNS, rows):
        conn.execute(sql, params)
    written = [(p.key, p.earliest) for p in fresh]
    if defer_moves:
        return written, moves
    move_events(conn, moves)
    return written, []


def move_events(conn: Connection, moves: Moves) -> None:
    """Point events at their new records (inside the writer's transaction), unless something else has
    moved an event since it was read. Given in seq order, a first build's millions of moves rewrite each
    page of the events table once, where key by key they would rewrite it once per product. A few
    hundred rows a statement: one call into the database, not one per row."""
    for start in range(0, len(moves), bulk.ROWS_CHUNK):
        chunk = moves[start:start + bulk.ROWS_CHUNK]
        conn.execute("UPDATE events SET deployment_id = v.column2 FROM (VALUES "
                     + ", ".join(["(CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT))"] * len(chunk))
                     + ") AS v WHERE events.seq = v.column1 AND events.deployment_id IS NOT DISTINCT FROM v.column3",
                     [value for move in chunk for value in move])
