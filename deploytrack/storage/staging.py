"""SQLite's staged ingestion: accepted events wait in `event_log` until a projector moves them.

On SQLite an ingest group writes its events, with the seq each will have in `events` and the
deployment id each reply named, to `event_log`, which has no secondary index, and commits: the 2xx
means on disk. The writer's `Staging` holds what is staged and not yet projected (rows by id and by
client key, the deployment records as folded so far), so the next groups decide client keys,
idempotent re-sends and folds exactly as if it were in the indexed tables. `project` then moves every
staged event into `events` and writes the records in one transaction of its own, hundreds at a time
(index pages shared), so `events` and `deployments` always agree: readers of those two tables never
see half a projection. `recover` does the same from the file alone (after a crash, or a command
beside the server): it folds the staged rows onto the stored records under the ids the rows carry.

Under load the server's projector works in two halves (`project(half=True)`), each a transaction of
its own with an ingest group between them, so that no group waits for the whole of it: first the
records and versions as the staged events made them, with the top seq folded into them (`FOLDED`,
in `kv`), then the events themselves into `events` and out of `event_log`. The two write disjoint
pages, so the halves cost what one projection did. Between them a reader of the file sees records
that count events not yet in `events`, as if those had arrived a moment later (a metrics round
leaves a key with events newer than its snapshot to the next round); `recover` moves those events
without folding them again. A read in the server waits for both halves, as for any staged event.

PostgreSQL does not stage: two processes share its database, and no in-memory state spans them.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable
from operator import attrgetter
from typing import Any

from deploytrack.metrics import rules
from deploytrack.storage import versions
from deploytrack.storage.connection import Connection
from deploytrack.storage.projection import OPEN_STATUSES, Dep, Key, Projection, fold_event, record_statements

EVENT_COLUMNS = (
    "seq", "id", "dialect", "token_id", "kind", "product", "version", "environment", "environment_raw",
    "status", "status_raw", "occurred_at", "received_at", "scm_sha", "scm_branch", "scm_repository",
    "commit_time", "build_url", "build_number", "build_id", "source_system", "invoke_id", "actor",
    "summary", "change_id", "links", "metadata", "client_key", "deployment_id",
)
_COLUMNS = ", ".join(EVENT_COLUMNS)
_MOVE = f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM event_log WHERE seq <= ? ORDER BY seq"
FOLDED = "event_log_folded_seq"  # kv: the staged events up to this seq are folded into the stored records
_SET_FOLDED = "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"
_TOPS = "SELECT (SELECT MAX(seq) FROM events), (SELECT MAX(seq) FROM event_log)"
_ID_CHUNK = 500
_FOLDED = attrgetter(*(f.name for f in dataclasses.fields(rules.Folded)))  # a record's fields, in order
log = logging.getLogger("deploytrack.db")
Row = dict[str, Any]


class Staging:
    """What the SQLite writer has staged in `event_log` and not yet projected; used by its thread only
    (`count` and `since` are read by the event loop to decide whether a reader must wait)."""

    def __init__(self) -> None:
        self.by_id: dict[str, Row] = {}
        self.by_client_key: dict[str, Row] = {}
        self.records: dict[int, Dep] = {}  # by deployment id: every record a staged event folded into
        self.by_key: dict[Key, dict[int, Dep]] = {}
        self.versions: versions.Writes = {}  # the staged events' versions (storage.versions), written with them
        self.top_seq = 0
        self.top_dep_id = 0
        self.since: float | None = None  # time.monotonic() when the oldest staged event was staged
        self.folded = 0  # the staged events up to this seq are folded into the stored records (a first half)
        self._undo: list[Callable[[], None]] = []  # to forget what an uncommitted transaction staged

    @property
    def count(self) -> int:
        return len(self.by_id)

    def next_seq(self, conn: Connection) -> int:
        """The seq of the next event to stage (at a write transaction's start)."""
        events_top, log_top = conn.execute(_TOPS).fetchone()
        if (log_top or 0) != self.top_seq:
            self._follow_file(conn)
            events_top, log_top = conn.execute(_TOPS).fetchone()
        return max(events_top or 0, log_top or 0) + 1

    def _follow_file(self, conn: Connection) -> None:
        """Another process projected the log since (a command beside the server, storage.database's
        `transaction`): what is in the file wins, and anything it still holds is projected from it."""
        log.info("event_log was changed by another process: %d staged events taken as projected", self.count)
        self.clear()
        recover(conn)

    def client_rows(self, keys: Iterable[str]) -> dict[str, Row]:
        return {k: self.by_client_key[k] for k in keys if k in self.by_client_key}

    def version_sha(self, pair: tuple[str, str]) -> str | None:
        """The SHA a staged event gave this (product, version), if any."""
        write = self.versions.get(pair)
        return write[0] if write is not None else None

    def records_for(self, keys: Iterable[Key], stored: Iterable[Any]) -> dict[Key, Dep]:
        """`Projection.records_from` with the staged records in place of the stored ones: as if the
        staged ones were written (`Projection.lookups` reads only open records of keys without invoke id)."""
        found: dict[Key, Dep] = {}

        def consider(key: Key, dep: Dep) -> None:
            if key not in found or dep["id"] > found[key]["id"]:
                found[key] = dep

        for dep in Projection.candidates(stored):
            if dep["id"] not in self.records:
                consider(Projection.key(dep), dep)
        for key in keys:
            for dep in self.by_key.get(key, {}).values():
                if key[3] or dep["record"].status in OPEN_STATUSES:
                    consider(key, dep)
        # The group folds into copies: the staged records change only once its transaction commits.
        # (Built from the fields: copy.copy of a slotted dataclass took 3.8 us, this 0.75.)
        return {key: ({**dep, "record": rules.Folded(*_FOLDED(dep["record"]))} if dep["id"] in self.records else dep)
                for key, dep in found.items()}

    def stage(self, rows: list[Row], deps: Iterable[Dep], version_writes: versions.Writes) -> None:
        """Take a group's rows (written to `event_log`), the records they folded into and their versions."""
        saved = (self.top_seq, self.top_dep_id, self.since)
        replaced: list[tuple[int, Dep | None]] = []
        old_versions = {pair: list(self.versions[pair]) if pair in self.versions else None for pair in version_writes}
        for (product, version), (sha, at) in version_writes.items():
            versions.claim(self.versions, product, version, sha, at)
        for dep in deps:
            replaced.append((dep["id"], self.records.get(dep["id"])))
            self.records[dep["id"]] = dep
            self.by_key.setdefault(Projection.key(dep), {})[dep["id"]] = dep
            self.top_dep_id = max(self.top_dep_id, dep["id"])
        for row in rows:
            self.by_id[row["id"]] = row
            if row["client_key"]:
                self.by_client_key[row["client_key"]] = row
        if rows:
            self.top_seq = max(self.top_seq, rows[-1]["seq"])
            self.since = self.since or time.monotonic()

        def undo() -> None:
            for row in rows:
                self.by_id.pop(row["id"], None)
                if row["client_key"]:
                    self.by_client_key.pop(row["client_key"], None)
            for dep_id, old in reversed(replaced):
                if old is None:
                    dep = self.records.pop(dep_id)
                    self.by_key[Projection.key(dep)].pop(dep_id, None)
                else:
                    self.records[dep_id] = self.by_key[Projection.key(old)][dep_id] = old
            for pair, write in old_versions.items():
                if write is None:
                    del self.versions[pair]
                else:
                    self.versions[pair] = write
            self.top_seq, self.top_dep_id, self.since = saved

        self._undo.append(undo)

    def mark(self) -> int:
        return len(self._undo)

    def committed(self) -> None:
        """The transaction that staged them committed: they stay staged."""
        self._undo.clear()

    def rolled_back(self, mark: int = 0) -> None:
        """Forget what was staged since `mark` (its transaction or savepoint was undone)."""
        while len(self._undo) > mark:
            self._undo.pop()()

    def project(self, conn: Connection, half: bool = False) -> int:
        """Move everything staged into `events` and `deployments`, in the caller's write transaction
        (undone with it: `rolled_back`). The number of events moved.

        `half`: only the next half (see above): the records of every staged event, or the events whose
        records the first half wrote."""
        if not self.count:
            return 0
        if (conn.execute("SELECT MAX(seq) FROM event_log").fetchone()[0] or 0) != self.top_seq:
            self._follow_file(conn)
            return 0
        if half and self.folded:
            return self._events_half(conn)
        # record_statements marks each record stored: on copies, kept if the transaction is undone.
        deps = [{**dep} for dep in sorted(self.records.values(), key=lambda d: int(d["id"]))]
        records = [*record_statements(deps), *versions.statements(self.versions)]
        if half:
            conn.execute_all([*records, (_SET_FOLDED, [FOLDED, str(self.top_seq)])])
            self._undo.append(self._restore(self._state()))
            # Stored now: a later group reads them from the tables (the staged events stay staged).
            self.records, self.by_key, self.versions, self.folded = {}, {}, {}, self.top_seq
            return 0
        moved = self.count
        conn.execute_all([(_MOVE, [self.top_seq]), *records, ("DELETE FROM event_log WHERE seq <= ?", [self.top_seq])])
        self._undo.append(self._restore(self._state()))
        self._reset()
        return moved

    def _events_half(self, conn: Connection) -> int:
        """The second half: the events whose records the first half wrote, into `events` and out of `event_log`."""
        conn.execute_all([(_MOVE, [self.folded]), ("DELETE FROM event_log WHERE seq <= ?", [self.folded])])
        self._undo.append(self._restore(self._state()))
        left = {i: row for i, row in self.by_id.items() if row["seq"] > self.folded}
        moved = self.count - len(left)
        if not left:
            self._reset()
            return moved
        self.by_id = left
        self.by_client_key = {row["client_key"]: row for row in left.values() if row["client_key"]}
        self.folded, self.since = 0, time.monotonic()
        return moved

    def _state(self) -> tuple[Any, ...]:
        return (self.by_id, self.by_client_key, self.records, self.by_key, self.versions, self.top_seq,
                self.top_dep_id, self.since, self.folded)

    def _restore(self, saved: tuple[Any, ...]) -> Callable[[], None]:
        def undo() -> None:
            (self.by_id, self.by_client_key, self.records, self.by_key, self.versions, self.top_seq,
             self.top_dep_id, self.since, self.folded) = saved

        return undo

    def clear(self) -> None:
        """Forget everything staged: another connection projected it (see `next_seq`)."""
        self._reset()
        self._undo.clear()

    def _reset(self) -> None:
        self.by_id, self.by_client_key, self.records, self.by_key, self.versions = {}, {}, {}, {}, {}
        self.top_seq = self.top_dep_id = self.folded = 0
        self.since = None


def recover(conn: Connection) -> int:
    """Project what `event_log` holds, from the file alone (inside the caller's write transaction): the
    staged events' records are folded onto the stored ones, in seq order, under the ids the rows carry
    (those the replies named). The number of events projected. PostgreSQL stages nothing, but a copy
    of a SQLite file (`migrate-db`) may bring staged events along."""
    try:
        rows = conn.execute("SELECT * FROM event_log ORDER BY seq").fetchall()
    except sqlite3.OperationalError:  # a schema before m025
        return 0
    if not rows:
        return 0
    ids = sorted({int(r["deployment_id"]) for r in rows if r["deployment_id"] is not None})
    deps: dict[int, Dep] = {}
    version_writes: versions.Writes = {}
    for start in range(0, len(ids), _ID_CHUNK):
        chunk = ids[start:start + _ID_CHUNK]
        stored = conn.execute(Projection.by_ids_sql(len(chunk)), chunk).fetchall()
        deps.update((dep["id"], dep) for dep in Projection.candidates(stored))
    folded = conn.execute("SELECT CAST(value AS BIGINT) FROM kv WHERE key = ?", (FOLDED,)).fetchone()
    for row in rows:
        if row["version"] is not None:
            versions.claim(version_writes, row["product"], row["version"], row["scm_sha"], row["occurred_at"])
        if row["deployment_id"] is None or (folded is not None and row["seq"] <= folded[0]):
            continue  # (a first half wrote the records of those up to `folded`)
        event = fold_event(row, rules.event_label(row["metadata"], row["summary"]))
        dep = deps.get(row["deployment_id"])
        if dep is None:
            key = (row["product"], row["environment"], row["version"], row["invoke_id"] or "")
            dep = deps[row["deployment_id"]] = {**Projection.create(key, event), "id": row["deployment_id"]}
        else:
            rules.fold_into(dep["record"], event)
    top = int(rows[-1]["seq"])
    conn.execute_all([(_MOVE, [top]), *record_statements(sorted(deps.values(), key=lambda d: int(d["id"]))),
                      *versions.statements(version_writes), ("DELETE FROM event_log WHERE seq <= ?", [top])])
    return len(rows)
