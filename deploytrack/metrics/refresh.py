"""Bringing derived data up to date beside the writer, never inside it.

Derived data - deployment records refolded in event-time order, the stored facts, incident links,
daily snapshots - is a function of the event log, commits and incidents. A refresh reads what
changed on a snapshot (a read transaction: one consistent view), computes in Python with the rules,
and hands the results to the single writer in short transactions, one chunk at a time, so ingestion
keeps its latency while metrics are computed. A chunk that raced with newer events is skipped and
redone in the next round; the watermark only moves past what was read.

`read(fn, *args)` runs `fn(conn, *args)` on a snapshot; `write(fn, *args)` runs it in one write
transaction. The server passes its read connections and its writer; the CLI one connection.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, itemgetter
from typing import Any, TypeVar

from deploytrack.metrics import aside as aside_mod
from deploytrack.metrics import compute, days, facts, first_build, fold, gcpause, incidents, leases, scratch
from deploytrack.settings import Settings
from deploytrack.storage.database import Connection, derived, is_derived
from deploytrack.timeutil import DAY, now_us

T = TypeVar("T")
_EARLIEST = attrgetter("earliest")
Read = Callable[..., Any]
Write = Callable[..., Any]
WATERMARK = "derived_seq"  # events up to this seq are reflected in every derived table
LINKED_WITH = "links_production"  # the production environments of the last relinking
# A first build's records are new rows that no event names yet, so two at once would write each record
# twice: it holds this lease (metrics/leases.py), renewed by each of its writes.
FIRST_BUILD = "metrics_first_build"
FIRST_BUILD_LEASE_US = 300 * 1_000_000  # (a product's planning may take minutes between two writes)
_KEYS_PER_READ = 2_000
_ROWS_PER_WRITE = 1_000  # the fewest rows a write transaction is given (and the size of a piece of facts)
# At most this many: a run of writes that changed little must not size the next one, which may change
# every row it is given, far past tens of milliseconds (fixed writes of 5,000 rows measured best, RESULTS.md).
_MOST_ROWS_PER_WRITE = 5_000
WRITE_SECONDS = 0.04  # what a round's write transaction is sized to take (DESIGN: tens of milliseconds)
_BULK_MOVES = 200_000  # events a bulk first build (metrics/scratch.py) points at their records a transaction
_PARTITIONS_PER_READ = 64
_PARTITIONS_PER_ASIDE_READ = 2  # a product's: small plans, shared between the two processes as they go
ASIDE_ABOVE = 20_000  # events: a full round over fewer plans here (a child takes a fraction of a second to start)


class Busy(Exception):
    """Another process is making the first build of derived data; this round leaves it to it."""


@dataclass
class Changes:
    """What a refresh must redo, as read on one snapshot."""

    top_seq: int
    stale_id: int
    full: bool
    first: bool  # no watermark yet: nothing derived has been completed (a first build)
    keys: dict[fold.Key, int] = field(default_factory=dict)
    partitions: dict[facts.Partition, int] = field(default_factory=dict)  # redo from this time on

    def touch(self, partition: facts.Partition, since: int | None) -> None:
        if since is not None:
            self.partitions[partition] = min(since, self.partitions.get(partition, since))

    @property
    def nothing(self) -> bool:
        return not self.full and not self.keys and not self.partitions and not self.stale_id


def state(conn: Connection) -> tuple[int, int | None, int]:
    """(newest event seq, watermark or None, newest stale mark id)."""
    row = conn.execute("SELECT (SELECT COALESCE(MAX(seq), 0) FROM events), (SELECT value FROM kv WHERE key = ?), "
                       "(SELECT COALESCE(MAX(id), 0) FROM derived_stale)", (WATERMARK,)).fetchone()
    return int(row[0]), None if row[1] is None else int(row[1]), int(row[2])


def is_current(conn: Connection) -> bool:
    """Nothing to redo: no event since the watermark and no stale mark."""
    top, mark, stale = state(conn)
    return mark is not None and mark >= top and not stale


def settled_seq(conn: Connection) -> int:
    """The newest event's seq, read in a write transaction (`write`): it holds the write lock
    exclusively, so no ingest group is in flight and every event up to this seq is committed. (On
    PostgreSQL two processes' groups run at once and may commit out of seq order: a snapshot may
    hold seq 101 while 100 is still to come, and a watermark at 101 would skip 100 for good.)"""
    return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events").fetchone()[0])


def what_changed(conn: Connection, full: bool, top: int) -> Changes:
    """The keys to refold, and the product/environments to redo with the time to redo each from, from
    the watermark up to `top` (`settled_seq`, read before this snapshot began) (read-only)."""
    _, mark, stale_id = state(conn)
    changes = Changes(top, stale_id, full or mark is None, mark is None)
    if changes.full:  # every key is refolded product by product (refresh)
        changes.partitions = dict.fromkeys(facts.all_partitions(conn), fold.EVER)
        return changes
    assert mark is not None
    after = min(mark, top)  # deletions can leave the watermark above the newest seq
    changes.keys = fold.dirty_keys(conn, after, top)
    for (product, environment, _), since in changes.keys.items():
        changes.touch((product, environment), since)
    # a record that took a new event may have finished at another time before
    for product, environment, since in conn.execute(
            "SELECT d.product, d.environment, MIN(d.first_at) FROM events e JOIN deployments d "
            "ON d.id = e.deployment_id WHERE e.seq > ? AND e.seq <= ? GROUP BY d.product, d.environment",
            (after, top)):
        changes.touch((product, environment), since)
    products: set[str] = set()
    shas: set[str] = set()
    for kind, product, environment, version, sha in conn.execute(
            "SELECT kind, product, environment, version, sha FROM derived_stale WHERE id <= ?", (stale_id,)):
        if kind == "key":
            changes.keys[(product, environment, version)] = fold.EVER
            changes.touch((product, environment), fold.EVER)
        elif kind == "product":
            products.add(product)
        elif kind == "sha":
            shas.add(sha)
    for partition in facts.partitions_of(conn, products):
        changes.touch(partition, fold.EVER)
    # builds: first build times, and a version's SHA (what change its deployments shipped)
    builds = conn.execute("SELECT DISTINCT product, version, scm_sha FROM events WHERE seq > ? AND seq <= ? "
                          "AND kind = 'build'", (after, top)).fetchall()
    shas.update(sha for _, _, sha in builds if sha)
    versions = {(p, v) for p, v, _ in builds if v is not None} | {(p, v) for p, _, v in changes.keys if v is not None}
    for partition, since in facts.lead_times_of(conn, shas, versions):
        changes.touch(partition, since)
    return changes


def background_priority() -> None:
    """Lower this process's CPU priority: a recompute beside a server takes what its requests leave."""
    if hasattr(os, "nice"):
        os.nice(10)


def paced(step: Callable[..., T], factor: float = 1.0, most: float = 0.25) -> Callable[..., T]:
    """`step` (a read or write) followed by a rest `factor` times as long as it took, at most `most`
    seconds: a background job leaves the writer, and the interpreter, to requests between its steps."""
    def run(*args: Any) -> T:
        began = time.perf_counter()
        try:
            return step(*args)
        finally:
            time.sleep(min(most, factor * (time.perf_counter() - began)))
    return run


def _one_row(_: Any) -> int:
    return 1


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


class Sized:
    """A round's writes of one kind, each given as many rows as the writes before it wrote in about
    WRITE_SECONDS (at least _ROWS_PER_WRITE, at most twice the last size and _MOST_ROWS_PER_WRITE): a
    thousand rows took a few milliseconds a transaction, and each transaction writes every index page it
    touches to the WAL again (and checkpoints it again). The time is the whole `write` call, a paced
    caller's rest and the writer's queue included, so in the server the writes come out smaller."""

    def __init__(self, write: Write) -> None:
        self._write = write
        self.rows = _ROWS_PER_WRITE  # rows the next write is to be given
        self._per_row = 0.0  # seconds a row: the last write's if slower, else halfway to it

    def write(self, rows: int, fn: Callable[..., T], *args: Any) -> T:
        """`write(fn, *args)`, a transaction of `rows` rows, timed."""
        began = time.perf_counter()
        result: T = self._write(fn, *args)
        per_row = (time.perf_counter() - began) / max(rows, 1)
        self._per_row = max(per_row, (self._per_row + per_row) / 2)
        fit = int(WRITE_SECONDS / max(self._per_row, 1e-9))
        self.rows = max(_ROWS_PER_WRITE, min(_MOST_ROWS_PER_WRITE, 2 * self.rows, fit))
        return result

    def groups(self, plans: Sequence[Any], size: Callable[[Any], int]) -> Iterator[tuple[int, list[Any]]]:
        """Plans grouped into writes of about `self.rows` rows each (read as each group is made): (rows, group)."""
        group: list[Any] = []
        rows = 0
        for p in plans:
            group.append(p)
            rows += size(p)
            if rows >= self.rows:
                yield rows, group
                group, rows = [], 0
        if group:
            yield rows, group


def _linked_with(conn: Connection) -> str | None:
    """The production environments the stored incident links were made with."""
    row = conn.execute("SELECT value FROM kv WHERE key = ?", (LINKED_WITH,)).fetchone()
    return None if row is None else str(row[0])


def _done(conn: Connection, top_seq: int, stale_id: int, production: str, owner: str | None) -> None:
    conn.executemany("INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                     [(WATERMARK, str(top_seq)), (LINKED_WITH, production)])
    conn.execute("DELETE FROM derived_stale WHERE id <= ?", (stale_id,))
    if owner is not None:
        leases.release(conn, FIRST_BUILD, owner)


_BUSY = "another process is building the derived data for the first time; this round is left to it"


def _claim_first_build(conn: Connection, owner: str) -> bool | None:
    """Whether this round is a first build (no watermark yet), holding its lease if so; None while another
    process holds it. (The watermark is read under the lease: one set by a build that has just finished
    means this round is not a first build.) Nothing is raised here: the writer would log it as a failure."""
    if state(conn)[1] is not None:
        return False
    return True if leases.take(conn, FIRST_BUILD, owner, now_us(), FIRST_BUILD_LEASE_US) else None


def _leased(conn: Connection, owner: str, fn: Callable[..., T], *args: Any) -> tuple[bool, T | None]:
    """(True, `fn(conn, *args)`) in a first build's transaction while `owner` holds the lease (renewed);
    (False, None), having written nothing, once another process has taken it over."""
    if not leases.renew(conn, FIRST_BUILD, owner, now_us(), FIRST_BUILD_LEASE_US):
        return False, None
    return True, fn(conn, *args)


@derived
def _leased_derived(conn: Connection, owner: str, fn: Callable[..., T], *args: Any) -> tuple[bool, T | None]:
    return _leased(conn, owner, fn, *args)


def _holding(write: Write, owner: str) -> Write:
    """`write`, each transaction renewing (and requiring) `owner`'s first-build lease."""
    def leased_write(fn: Callable[..., T], *args: Any) -> T:
        held, result = write(_leased_derived if is_derived(fn) else _leased, owner, fn, *args)
        if not held:
            raise Busy("another process took over the lease of this first build of derived data")
        return result  # type: ignore[no-any-return]
    return leased_write


def forget_deleted(conn: Connection) -> None:
    """After events were deleted: seqs above the new newest one are given out again, so the watermark
    must not stay above it (later events under it would be missed)."""
    conn.execute("UPDATE kv SET value = (SELECT CAST(COALESCE(MAX(seq), 0) AS TEXT) FROM events) "
                 "WHERE key = ? AND CAST(value AS BIGINT) > (SELECT COALESCE(MAX(seq), 0) FROM events)",
                 (WATERMARK,))


@derived
def write_facts(conn: Connection, planned: list[facts.PartitionFacts]) -> int:
    """The facts of these product/environment ranges and their day totals, in one transaction."""
    count = facts.apply(conn, planned)
    days.apply(conn, planned)
    return count


@derived
def write_records(conn: Connection, plans: list[fold.KeyPlan], top_seq: int, defer_moves: bool
                  ) -> tuple[list[tuple[fold.Key, int]], fold.Moves]:
    """Refolded deployment records (`fold.apply`)."""
    return fold.apply(conn, plans, top_seq, defer_moves)


@derived
def write_moves(conn: Connection, moves: fold.Moves) -> None:
    """Events pointed at their refolded records (`fold.move_events`)."""
    fold.move_events(conn, moves)


@dataclass
class Summary:
    keys_refolded: int = 0
    partitions: int = 0
    links: int = 0
    planned_aside: int = 0  # plans the child process made (a first build's, metrics/aside.py)
    bulk: tuple[str, ...] = ()  # tables a first build wrote in bulk (metrics/first_build.py)


def _fold_plans(conn: Connection, product: str) -> list[fold.KeyPlan]:
    """A product's refolds in time order: the records' time-ordered indexes then grow at their ends, a few
    pages a write."""
    return sorted(fold.plan_product(conn, product), key=_EARLIEST)


def _folded(conn: Connection, product: str, directory: str) -> scratch.Built:
    return scratch.fold_product(conn, product, directory)


def _facts_of(conn: Connection, built: scratch.Built) -> scratch.Built:
    return scratch.facts_product(conn, built)


def _key_plans(conn: Connection, keys: dict[fold.Key, int]) -> list[fold.KeyPlan]:
    return sorted(fold.plan(conn, keys), key=_EARLIEST)


def refresh(read: Read, write: Write, settings: Settings, full: bool = False, aside: bool = False,
            bulk: bool = False) -> Summary:
    """Refold, re-derive facts and relink incidents wherever something changed (everything if `full`).

    `aside`: a large full round (a first build) plans in a child process on a connection of its own to
    `settings.db` (metrics/aside.py), one step ahead of its writes; the caller reads that database.
    `bulk`: nothing else uses the database (`first_build.alone`), so a first build writes the tables it
    finds empty in bulk (metrics/first_build.py)."""
    _restore_indexes(read, write)  # (a bulk first build was stopped midway: its indexes first)
    scratch.remove_left(settings.db)  # (and its scratch files)
    top = write(settled_seq)
    changes: Changes = read(what_changed, full, top)
    if not changes.first:
        return _refresh(read, write, settings, changes, None, aside, bulk)
    owner = leases.new_owner()
    claimed = write(_claim_first_build, owner)
    if claimed is None:
        raise Busy(_BUSY)
    if not claimed:  # a first build finished meanwhile
        return _refresh(read, write, settings, read(what_changed, full, top), None, aside, bulk)
    try:
        return _refresh(read, _holding(write, owner), settings, changes, owner, aside, bulk)
    except BaseException:
        with contextlib.suppress(Exception):  # (a process that dies leaves it to expire, or to be found gone)
            write(leases.release, FIRST_BUILD, owner)
        raise


def _refresh(read: Read, write: Write, settings: Settings, changes: Changes, owner: str | None, aside: bool,
             bulk: bool) -> Summary:
    summary = Summary()
    if changes.nothing:
        return summary
    big = aside and changes.full and changes.top_seq > ASIDE_ABOVE
    # (a big round: the collector off while millions of plan tuples come in, see gcpause)
    with gcpause.paused() if big else contextlib.nullcontext(), \
            aside_mod.Aside(settings, read) if big else aside_mod.Inline(read) as plans:
        if bulk and changes.first and read(first_build.eligible, first_build.TABLES):
            _build_fresh(read, write, settings, plans, changes, summary, owner)
            summary.bulk = first_build.TABLES
        else:
            _refold(read, write, plans, changes, summary)
            _refacts(read, write, plans, changes, summary, big)
        summary.planned_aside = plans.served
    # incidents are relinked where deployments changed; all of them after a change of the production environments
    production = ",".join(sorted(settings.production_set))
    touched = None if changes.full or read(_linked_with) != production else changes.partitions
    summary.links = write(incidents.apply_links, read(incidents.plan_links, settings, touched))
    write(_done, changes.top_seq, changes.stale_id, production, owner)
    return summary


def _refacts(read: Read, write: Write, plans: aside_mod.Aside | aside_mod.Inline, changes: Changes,
             summary: Summary, big: bool) -> None:
    """Re-derive the facts and day totals of the product/environments noted."""
    per_read = _PARTITIONS_PER_ASIDE_READ if big else _PARTITIONS_PER_READ
    sized_facts = Sized(write)
    calls: list[aside_mod.Call] = [(facts.planned, (dict(part), _ROWS_PER_WRITE))
                                   for part in _chunks(sorted(changes.partitions.items()), per_read)]
    for planned in plans.map(calls):
        for rows, group in sized_facts.groups(planned, facts.PartitionFacts.size):
            summary.partitions += sized_facts.write(rows, write_facts, group)


def _refold(read: Read, write: Write, plans: aside_mod.Aside | aside_mod.Inline, changes: Changes,
            summary: Summary) -> None:
    """Refold the changed keys (every key, product by product, if `changes.full`), noting the facts to redo."""
    keys = sorted(changes.keys.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or ""))
    calls: list[aside_mod.Call] = [(_key_plans, (dict(chunk),)) for chunk in _chunks(keys, _KEYS_PER_READ)]
    if changes.full:
        calls = [(_fold_plans, (product,)) for product in read(fold.all_products)]
    moves: fold.Moves = []
    records = Sized(write)
    for planned in plans.map(calls):
        for rows, group in records.groups(planned, fold.KeyPlan.size):
            written, deferred = records.write(rows, write_records, group, changes.top_seq, changes.first)
            moves.extend(deferred)
            summary.keys_refolded += len(written)
            for (product, environment, _), since in written:
                changes.touch((product, environment), fold.EVER if changes.full else since)
    # A first build points events at their records afterwards, in seq order: were a round to stop between,
    # the watermark would still be missing and the next round would refold everything again.
    moves.sort()
    moved = Sized(write)
    for rows, chunk in moved.groups(moves, _one_row):
        moved.write(rows, write_moves, chunk)


def _build_fresh(read: Read, write: Write, settings: Settings, plans: aside_mod.Aside | aside_mod.Inline,
                 changes: Changes, summary: Summary, owner: str | None) -> None:
    """A bulk first build (metrics/first_build.py): the indexes not led by the product dropped; each product's
    records built into a scratch file and copied in (metrics/scratch.py), then its facts and day totals, while
    this process points the events at their records and makes the records' indexes whenever it has nothing to
    copy; the facts' indexes made again at the end."""
    write(first_build.drop, first_build.TABLES)
    def renew(conn: Connection) -> None:  # (the copies' transactions hold the lease as `write`'s do)
        if owner is not None and not leases.renew(conn, FIRST_BUILD, owner, now_us(), FIRST_BUILD_LEASE_US):
            raise Busy("another process took over the lease of this first build of derived data")

    with scratch.directory(settings.db) as directory, scratch.Writer(settings.db, renew) as copies:
        folded = []
        for built in plans.map([(_folded, (product, directory)) for product in read(fold.all_products)], ahead=2):
            copies.copy_records(built)
            folded.append(built)
            summary.keys_refolded += built.keys
            for partition in built.partitions:
                changes.touch(partition, fold.EVER)

        def idle() -> bool:  # (the records' indexes too: every record is in)
            if copies.point_events(_BULK_MOVES):
                return True
            records = read(first_build.dropped, first_build.RECORDS)
            if records:
                write(first_build.restore, records[0])
            return bool(records)

        for built in plans.map([(_facts_of, (built,)) for built in folded], idle, ahead=2):
            copies.copy_facts(built)
            summary.partitions += len(built.partitions)
        while idle():
            pass
    _restore_indexes(read, write)


def _restore_indexes(read: Read, write: Write) -> None:
    """Make the indexes a bulk first build dropped, one transaction each."""
    for name in read(first_build.dropped):
        write(first_build.restore, name)


def snapshot_days(read: Read, write: Write, settings: Settings, first_day: int | None, last_day: int,
                  computed_at: int, full: bool = False, aside: bool = False, bulk: bool = False
                  ) -> tuple[int, int, int]:
    """Refresh, then replace the daily snapshots of first_day (None: the first day with data) .. last_day,
    within the last SNAPSHOT_DAYS days (older ones are deleted).

    Returns (first day, last day, snapshot rows); no days when there is no data yet.
    """
    refresh(read, write, settings, full, aside, bulk)
    horizon = last_day - (compute.SNAPSHOT_DAYS - 1) * DAY
    while write(compute.drop_snapshots, horizon, _ROWS_PER_WRITE) == _ROWS_PER_WRITE:  # short transactions
        pass
    earliest = read(compute.earliest_day)  # days before any data have no snapshots
    start = earliest if first_day is None or earliest is None else max(first_day, earliest)
    start = None if start is None else max(start, horizon)
    if start is None or start > last_day:
        return last_day + DAY, last_day, 0
    computed = read(compute.snapshot_rows, settings, start, last_day, computed_at)  # one pass over the facts
    computed.sort(key=itemgetter(0))
    # Short transactions: whole days (a write replaces its days) of about _ROWS_PER_WRITE rows; a day with
    # more (one row per scope and window) is a write of its own.
    rows, first, taken = 0, start, 0
    for at, row in enumerate(computed):
        if at + 1 == len(computed) or (computed[at + 1][0] != row[0] and at + 1 - taken >= _ROWS_PER_WRITE):
            end = last_day if at + 1 == len(computed) else row[0]
            rows += write(compute.write_snapshots, computed[taken:at + 1], first, end)
            first, taken = end + DAY, at + 1
    if not computed:  # no scope has data in these days: what is stored for them goes
        rows += write(compute.write_snapshots, [], start, last_day)
    return start, last_day, rows
