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
events (`events` and its indexes), then the records and versions as the staged events made them and
the staged rows' removal. The two write disjoint pages, so the halves cost what one projection did.
Between them `event_log` still holds events that `events` holds too (seq <= `moved`): the records of
those are not written yet, and a read in the server waits for the second half (`pending`).

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
_MOVE = (f"INSERT INTO events ({_COLUMNS}) SELECT {_COLUMNS} FROM event_log WHERE seq > ? AND seq <= ? "
         "ORDER BY seq")
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
        self.moved = 0  # the staged events up to this seq are in `events` already (a first half, see above)
        self._half: tuple[dict[int, Dep], versions.Writes] | None = None  # records and versions as of `moved`
        self._undo: list[Callable[[], None]] = []  # to forget what an uncommitted transaction staged

    @property
    def count(self) -> int:
        """Staged events not yet in `events`."""
        return len(self.by_id)

    @property
    def pending(self) -> bool:
        """Whether anything is staged: events not in `events`, or the records of a first half."""
        return bool(self.by_id) or self._half is not None

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
        log.warning("event_log was changed by another process: %d staged events taken as projected", self.count)
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
        (undone with it: `rolled_back`). The number of events moved into `events`.

        `half`: only the next half (see above): the events, or the records of the events moved before."""
        if not self.pending:
            return 0
        if (conn.execute("SELECT MAX(seq) FROM event_log").fetchone()[0] or 0) != self.top_seq:
            self._follow_file(conn)
            return 0
        if half and self._half is not None:
            self._records_half(conn, *self._half)
            return 0
        moved = self.count
        if half:
            self._events_half(conn)
            return moved
        # record_statements marks each record stored: on copies, kept if the transaction is undone.
        deps = [{**dep} for dep in sorted(self.records.values(), key=lambda d: int(d["id"]))]
        conn.execute_all([(_MOVE, [self.moved, self.top_seq]), *record_statements(deps),
                          *versions.statements(self.versions),
                          ("DELETE FROM event_log WHERE seq <= ?", [self.top_seq])])
        self._undo.append(self._restore(self._state()))
        self._reset()
        return moved

    def _events_half(self, conn: Connection) -> None:
        """The first half: the staged events into `events`; the records and versions they made are kept
        as they are now for the second half (later groups fold into copies, storage.ingest)."""
        conn.execute(_MOVE, [self.moved, self.top_seq])
        self._undo.append(self._restore(self._state()))
        self._half = (dict(self.records), {pair: list(write) for pair, write in self.versions.items()})
        self.moved = self.top_seq
        self.by_id, self.by_client_key, self.since = {}, {}, None  # `events` answers for them now

    def _records_half(self, conn: Connection, records: dict[int, Dep], written: versions.Writes) -> None:
        """The second half: the records and versions of the events moved by the first, and those events'
        rows out of `event_log`. Records and versions no later group changed are no longer staged; a record
        one changed stays staged, as stored now."""
        deps = [{**dep} for dep in sorted(records.values(), key=lambda d: int(d["id"]))]
        conn.execute_all([*record_statements(deps), *versions.statements(written),
                          ("DELETE FROM event_log WHERE seq <= ?", [self.moved])])
        self._undo.append(self._restore(self._state()))
        self.records, self.by_key, self.versions = dict(self.records), dict(self.by_key), dict(self.versions)
        for dep in deps:
            key, dep_id = Projection.key(dep), dep["id"]
            self.by_key[key] = dict(self.by_key[key])
            if self.records[dep_id] is records[dep_id]:
                del self.records[dep_id], self.by_key[key][dep_id]
                if not self.by_key[key]:
                    del self.by_key[key]
            else:
                self.records[dep_id] = self.by_key[key][dep_id] = {**self.records[dep_id], "stored": dep["stored"]}
        for pair, write in written.items():
            if self.versions.get(pair) == write:
                del self.versions[pair]
        self._half = None
        if not self.by_id:  # nothing was staged since the first half: `event_log` is empty
            self._reset()

    def _state(self) -> tuple[Any, ...]:
        return (self.by_id, self.by_client_key, self.records, self.by_key, self.versions, self.top_seq,
                self.top_dep_id, self.since, self.moved, self._half)

    def _restore(self, saved: tuple[Any, ...]) -> Callable[[], None]:
        def undo() -> None:
            (self.by_id, self.by_client_key, self.records, self.by_key, self.versions, self.top_seq,
             self.top_dep_id, self.since, self.moved, self._half) = saved

        return undo

    def clear(self) -> None:
        """Forget everything staged: another connection projected it (see `next_seq`)."""
        self._reset()
        self._undo.clear()

    def _reset(self) -> None:
        self.by_id, self.by_client_key, self.records, self.by_key, self.versions = {}, {}, {}, {}, {}
        self.top_seq = self.top_dep_id = self.moved = 0
        self.since = self._half = None


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
    for row in rows:
        if row["version"] is not None:
            versions.claim(version_writes, row["product"], row["version"], row["scm_sha"], row["occurred_at"])
        if row["deployment_id"] is None:
            continue
        event = fold_event(row, rules.event_label(row["metadata"], row["summary"]))
        dep = deps.get(row["deployment_id"])
        if dep is None:
            key = (row["product"], row["environment"], row["version"], row["invoke_id"] or "")
            dep = deps[row["deployment_id"]] = {**Projection.create(key, event), "id": row["deployment_id"]}
        else:
            rules.fold_into(dep["record"], event)
    top = int(rows[-1]["seq"])
    # Those a first half moved are in `events` already (their records are not written yet): the others only.
    moved = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0]
    conn.execute_all([(_MOVE, [moved, top]), *record_statements(sorted(deps.values(), key=lambda d: int(d["id"]))),
                      *versions.statements(version_writes), ("DELETE FROM event_log WHERE seq <= ?", [top])])
    return len(rows)
