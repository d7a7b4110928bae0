"""The first build of derived data on a database whose events were written straight into the file.

A first build (no watermark yet) points events at their deployment records after it has folded
every product, in seq order; these tests check that it gives what the key-by-key refold gives,
and that one stopped before the events were pointed at their records is redone whole.
"""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from bench.gen_events import generate
from deploytrack.metrics import aside, days, first_build, refresh, scratch
from deploytrack.settings import Settings
from deploytrack.storage import database as dbmod
from deploytrack.storage import file_lock
from tests.conftest import REPO, LiveServer, auth, create_token, query, run_cli
from tests.pg_cluster import Cluster

pytestmark = pytest.mark.slow


class Stopped(Exception):
    """The round stopped here (the process was killed, say)."""


def _nothing_derived(tmp_path: Path, name: str, events: int = 6_000) -> Path:
    db = tmp_path / name
    generate(db, events, 60, 4, seed=11)
    conn = dbmod.connect(db)
    with dbmod.transaction(conn):  # as an import of bare events leaves it
        conn.execute("DELETE FROM deployments")
        conn.execute("UPDATE events SET deployment_id = NULL")
        # commit times and `commits` lists sent with deployments (lead times measured from them)
        conn.execute("UPDATE events SET commit_time = occurred_at - 3600000000 - seq WHERE kind = 'deployment' "
                     "AND seq % 7 = 0")
        conn.execute("""UPDATE events SET metadata = '{"commits": [{"sha": "' || printf('%040x', seq % 97) ||
                        '", "repository": "repo/lib", "committed_at": "2026-0' || (seq % 9 + 1) || '-01T00:00:00Z"}]}'
                        WHERE kind = 'deployment' AND metadata IS NULL AND seq % 11 = 0""")
    conn.close()
    return db


def _records(db: Path | str) -> list[tuple[object, ...]]:
    """Each deployment event with the record it belongs to, by content (ids depend on the order of writes)."""
    return query(db, "SELECT e.seq, d.product, d.environment, d.version, d.invoke_id, d.status, d.first_at, "
                     "d.last_at, d.started_at, d.finished_at, d.scm_sha, d.label, d.event_count FROM events e "
                     "LEFT JOIN deployments d ON d.id = e.deployment_id WHERE e.kind = 'deployment' "
                     "AND e.environment IS NOT NULL ORDER BY e.seq")


def _consistent(db: Path | str) -> None:
    assert all(row[1] is not None for row in _records(db))  # every event points at a record
    assert query(db, "SELECT COUNT(*) FROM deployments d WHERE d.event_count <> "
                     "(SELECT COUNT(*) FROM events e WHERE e.deployment_id = d.id)") == [(0,)]


def _runs(fn: object, args: tuple[object, ...]) -> object:
    """The function a write runs: a first build's writes each renew its lease first (`refresh._leased`)."""
    return args[1] if fn in (refresh._leased, refresh._leased_derived) else fn


# A record named by a fact, by content (ids depend on the order of writes)
_RECORD = "{0}.product, {0}.environment, {0}.version, {0}.invoke_id, {0}.first_at"


def _derived(db: Path | str) -> tuple[object, ...]:
    return (_records(db),
            query(db, "SELECT f.product, f.environment, f.status, f.finished_at, f.is_rollback, f.label, "
                      f"f.rolled_back_at, f.recovered_at, {_RECORD.format('d')}, {_RECORD.format('r')}, "
                      f"{_RECORD.format('b')} FROM deployment_facts f LEFT JOIN deployments d ON d.id = f.id "
                      "LEFT JOIN deployments r ON r.id = f.rollback_of "
                      "LEFT JOIN deployments b ON b.id = f.rolled_back_by "
                      "ORDER BY f.product, f.environment, f.finished_at, f.status, d.first_at"),
            query(db, "SELECT m.product, m.environment, m.change, m.finished_at, m.lead_us, m.source, "
                      f"{_RECORD.format('d')} FROM metric_lead_facts m LEFT JOIN deployments d "
                      "ON d.id = m.deployment_id ORDER BY m.product, m.environment, m.change"),
            [(*row[:-1], sorted(days.decode(str(row[-1])))) for row in query(  # (lead times: in no set order)
                db, "SELECT * FROM metric_days ORDER BY product, environment, day")])


def test_a_first_build_gives_what_the_key_by_key_refold_gives(tmp_path: Path) -> None:
    db = _nothing_derived(tmp_path, "first.db")
    keyed = tmp_path / "keyed.db"
    shutil.copy(db, keyed)
    conn = dbmod.connect(keyed)  # a watermark at 0: every key is refolded key by key, its events moved with it
    with dbmod.transaction(conn):
        conn.execute("INSERT INTO kv (key, value) VALUES (?, '0')", (refresh.WATERMARK,))
    conn.close()
    for path in (db, keyed):
        assert run_cli("metrics", "recompute", "--db", str(path))[0] == 0
        _consistent(path)
    assert _derived(db) == _derived(keyed)
    assert len(_records(db)) > 3_000


def test_a_bulk_build_planned_in_a_child_with_moves_between_gives_the_same(tmp_path: Path, monkeypatch) -> None:
    """The path a real database takes: products built into scratch files by a child process and by this one,
    copied in, then the events pointed at their records a chunk at a time (here: 300 events a chunk)."""
    monkeypatch.setattr(refresh, "ASIDE_ABOVE", 0)
    monkeypatch.setattr(refresh, "_BULK_MOVES", 300)
    dropped: list[object] = []  # the bulk build's drops, counted on their way through (the real ones run)
    drop = first_build.drop
    monkeypatch.setattr(first_build, "drop", lambda conn, tables: (dropped.append(tables), drop(conn, tables))[1])
    db = _nothing_derived(tmp_path, "aside.db")
    keyed = tmp_path / "keyed.db"
    shutil.copy(db, keyed)
    conn = dbmod.connect(keyed)
    with dbmod.transaction(conn):
        conn.execute("INSERT INTO kv (key, value) VALUES (?, '0')", (refresh.WATERMARK,))
    conn.close()
    before = _indexes(db)
    for path in (db, keyed):
        assert run_cli("metrics", "recompute", "--db", str(path))[0] == 0
        _consistent(path)
    assert _derived(db) == _derived(keyed) and _indexes(db) == before
    assert dropped == [first_build.TABLES]  # the first build, the bulk way (not keyed's)


def test_a_first_build_stopped_before_pointing_events_at_records_is_redone_whole(tmp_path: Path) -> None:
    db = _nothing_derived(tmp_path, "stopped.db")
    clean = tmp_path / "clean.db"
    shutil.copy(db, clean)
    conn = dbmod.open_migrated(db)
    read, write = dbmod.on_connection(conn)

    def stops_at_the_moves(fn: object, *args: object) -> object:
        if _runs(fn, args) is refresh.write_moves:
            raise Stopped
        return write(fn, *args)

    with pytest.raises(Stopped):
        refresh.refresh(read, stops_at_the_moves, Settings(db=str(db)))
    conn.close()
    assert query(db, "SELECT COUNT(*) FROM deployments")[0][0] > 0  # records written, events not yet moved
    assert query(db, "SELECT COUNT(*) FROM events WHERE deployment_id IS NOT NULL") == [(0,)]
    assert query(db, "SELECT COUNT(*) FROM kv WHERE key = ?", (refresh.WATERMARK,)) == [(0,)]
    for path in (db, clean):
        assert run_cli("metrics", "recompute", "--db", str(path))[0] == 0
        _consistent(path)
    assert _derived(db) == _derived(clean)
    assert query(db, "SELECT COUNT(*) FROM kv WHERE key = ?", (refresh.WATERMARK,)) == [(1,)]


def _indexes(db: Path | str) -> list[tuple[object, ...]]:
    return query(db, "SELECT name, tbl_name, sql FROM sqlite_master WHERE type = 'index' ORDER BY name")


def test_metrics_recompute_builds_in_bulk_only_on_a_file_nothing_else_has_open(tmp_path: Path) -> None:
    db = _nothing_derived(tmp_path, "alone.db")
    other = dbmod.connect(db)  # a server, say
    try:
        assert not first_build.alone(str(db))
    finally:
        other.close()
    held = first_build.alone(str(db))
    assert held is not None
    file_lock.release(held)
    assert first_build.alone(str(tmp_path / "missing.db")) is None
    assert (tmp_path / "missing.db").exists() is False
    conn = dbmod.open_migrated(db)
    read, write = dbmod.on_connection(conn)
    before = _indexes(db)
    summary = refresh.refresh(read, write, Settings(db=str(db)), bulk=True)
    assert summary.bulk == first_build.TABLES
    assert refresh.refresh(read, write, Settings(db=str(db)), full=True, bulk=True).bulk == ()  # not empty now
    conn.close()
    assert _indexes(db) == before  # every index dropped was made again, as it was
    _consistent(db)


@pytest.mark.parametrize(("holder", "stop", "nth"), [
    (scratch.Writer, "copy_records", 2), (scratch.Writer, "copy_facts", 2), (scratch.Writer, "point_events", 1),
    (scratch.Writer, "point_events", 2), (first_build, "restore", 2)])
def test_a_bulk_first_build_stopped_midway_is_redone_whole_with_its_indexes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, holder: object, stop: str, nth: int) -> None:
    """Stopped at its second product's records or facts copied in, before its events are pointed at their
    records or midway, or at its second index made: `metrics recompute` derives everything again and makes
    the indexes."""
    monkeypatch.setattr(refresh, "_BULK_MOVES", 300)  # (events pointed at their records a transaction)
    db = _nothing_derived(tmp_path, "stopped.db")
    clean = tmp_path / "clean.db"
    shutil.copy(db, clean)
    conn = dbmod.open_migrated(db)
    indexes = _indexes(db)
    read, write = dbmod.on_connection(conn)
    step = getattr(holder, stop)
    seen = 0

    def stops_midway(*args: object) -> object:  # at the nth call
        nonlocal seen
        seen += 1
        if seen == nth:
            raise Stopped
        return step(*args)

    with monkeypatch.context() as patched:
        patched.setattr(holder, stop, stops_midway)
        with pytest.raises(Stopped):
            refresh.refresh(read, write, Settings(db=str(db)), bulk=True)
    conn.close()
    left = Path(f"{db}.first-build")  # what a build killed by a signal leaves: its scratch files
    left.mkdir(exist_ok=True)
    (left / "products.db").write_bytes(b"x" * 1000)
    assert len(_indexes(db)) < len(indexes)  # killed with indexes dropped
    assert query(db, "SELECT COUNT(*) FROM kv WHERE key = ?", (refresh.WATERMARK,)) == [(0,)]
    pointed = query(db, "SELECT COUNT(*) FROM events WHERE deployment_id IS NOT NULL")[0][0]
    if stop == "copy_records" or (stop == "point_events" and nth == 1):
        assert pointed == 0
    elif stop == "point_events":  # (midway)
        assert 0 < pointed < len(_records(db))
    for path in (db, clean):
        assert run_cli("metrics", "recompute", "--db", str(path))[0] == 0
        _consistent(path)
    assert _indexes(db) == indexes
    assert _derived(db) == _derived(clean)
    assert query(db, "SELECT COUNT(*) FROM kv WHERE key = 'first_build_indexes'") == [(0,)]
    assert not left.exists()  # removed by the refresh that repaired the build


def test_a_first_build_planned_in_a_process_aside_gives_the_same(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    db = _nothing_derived(tmp_path, "aside.db")
    inline = tmp_path / "inline.db"
    shutil.copy(db, inline)
    monkeypatch.setattr(refresh, "ASIDE_ABOVE", 0)  # (a real one plans aside above 20,000 events)
    conn = dbmod.open_migrated(db)
    read, write = dbmod.on_connection(conn)
    with pytest.raises(aside.AsideDatabaseError, match="unable to open database file"):  # the child: settings.db
        refresh.refresh(read, write, Settings(db=str(tmp_path / "missing" / "x.db")), aside=True)
    summary = refresh.refresh(read, write, Settings(db=str(db)), aside=True)
    conn.close()
    assert summary.keys_refolded > 1_000
    assert summary.planned_aside >= 2  # the child's first two plans are always awaited (the rest may be planned here)
    assert run_cli("metrics", "recompute", "--db", str(inline))[0] == 0  # under 20,000 events: planned inline
    assert run_cli("metrics", "recompute", "--db", str(db))[0] == 0  # (the snapshots; derived data is current)
    _consistent(db)
    assert _derived(db) == _derived(inline)


@pytest.mark.postgres
def test_a_first_build_planned_aside_on_postgresql_gives_the_same(tmp_path: Path, pg_cluster: Cluster,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    db = _nothing_derived(tmp_path, "source.db")
    aside_url, inline_url = pg_cluster.new_database(), pg_cluster.new_database()
    for url in (aside_url, inline_url):
        assert run_cli("migrate-db", "--from", str(db), "--to", url)[0] == 0
    monkeypatch.setattr(refresh, "ASIDE_ABOVE", 0)
    conn = dbmod.connect(aside_url)
    read, write = dbmod.on_connection(conn)
    summary = refresh.refresh(read, write, Settings(db=aside_url), aside=True)
    conn.close()
    assert summary.keys_refolded > 1_000  # a first build: nothing was derived before
    for url in (aside_url, inline_url):  # under 20,000 events: planned inline
        assert run_cli("metrics", "recompute", "--db", url)[0] == 0
    _consistent(aside_url)
    assert _derived(aside_url) == _derived(inline_url)


@pytest.mark.sqlite_only
def test_a_server_does_not_start_beside_a_bulk_build_and_a_build_is_not_bulk_beside_a_server(db_path, token):
    """A bulk first build holds the file (storage.file_lock) for its whole run: a server started meanwhile
    refuses with one line; and with a server running, a command never builds in bulk."""
    held = first_build.alone(str(db_path))
    assert held is not None  # nothing else has the file open
    try:
        server = LiveServer(db_path)
        with pytest.raises(RuntimeError, match="a metrics first build is writing this file in bulk"):
            server.start()
        assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 2  # another command waits its turn
    finally:
        file_lock.release(held)
    server = LiveServer(db_path).start()
    try:
        assert first_build.alone(str(db_path)) is None  # the server's hold: no bulk build beside it
        assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0  # the ordinary build
    finally:
        server.stop()


HOLD_LEASE = """
import sys, time
from deploytrack.metrics import leases, refresh
from deploytrack.storage import database as dbmod
conn = dbmod.connect(sys.argv[1])
with dbmod.transaction(conn):
    assert leases.take(conn, refresh.FIRST_BUILD, leases.new_owner(), 0, 2 ** 62)
print("held", flush=True)
time.sleep(60)
"""


def test_a_first_build_is_left_to_the_process_that_holds_its_lease(tmp_path: Path) -> None:
    """Two first builds at once would each write every record (no event names one yet): the second
    refuses while the first one's process runs, and takes over once it is gone."""
    db = _nothing_derived(tmp_path, "leased.db")
    other = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, str(db)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        code, out = run_cli("metrics", "recompute", "--db", str(db))
        assert code == 2
        assert query(db, "SELECT COUNT(*) FROM deployments") == [(0,)]
        assert query(db, "SELECT COUNT(*) FROM kv WHERE key = ?", (refresh.WATERMARK,)) == [(0,)]
    finally:
        other.kill()
        other.communicate()
    assert run_cli("metrics", "recompute", "--db", str(db))[0] == 0  # its process is gone: the lease is free
    _consistent(db)
    assert query(db, "SELECT owner FROM jobs WHERE name = ?", (refresh.FIRST_BUILD,)) == [(None,)]


def test_two_first_builds_started_together_write_each_record_once(tmp_path: Path) -> None:
    db = _nothing_derived(tmp_path, "together.db", 30_000)  # (big enough that the two overlap)
    alone = tmp_path / "alone.db"
    shutil.copy(db, alone)
    holder = sqlite3.connect(db)  # the file is open elsewhere (a server, say): both build the ordinary way
    holder.execute("SELECT 1 FROM events LIMIT 1").fetchall()
    try:
        builds = [subprocess.Popen([sys.executable, "-m", "deploytrack", "metrics", "recompute", "--db", str(db)],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                  for _ in range(2)]
        said = [p.communicate(timeout=120)[0] for p in builds]
    finally:
        holder.close()
    codes = sorted(p.returncode for p in builds)
    assert codes[0] == 0 and codes[1] in (0, 2), said  # (2: it found the other one building, and said so)
    assert run_cli("metrics", "recompute", "--db", str(alone))[0] == 0
    _consistent(db)
    assert _derived(db) == _derived(alone)


def test_a_server_reads_from_what_is_derived_while_another_process_makes_the_first_build(tmp_path: Path) -> None:
    """The server notes it (INFO, no failure logged) and does not try again at every read: with this many
    events each try would start a worker process."""
    db = _nothing_derived(tmp_path, "beside.db", 25_000)
    token = create_token(db, "reader", "read")
    other = subprocess.Popen([sys.executable, "-c", HOLD_LEASE, str(db)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    server = LiveServer(db)
    try:
        assert other.stdout is not None and other.stdout.readline() == "held\n"
        server.start()
        for _ in range(4):
            resp = httpx.get(f"{server.url}/api/v1/metrics", headers=auth(token), timeout=30)
            assert resp.status_code == 200, resp.text
            time.sleep(0.3)
    finally:
        server.stop()
        other.kill()
        other.communicate()
    log = server.log.read_text()
    assert "Traceback" not in log and " ERROR " not in log and "WARNING" not in log, log
    assert log.count("another process is building the derived data for the first time") == 1, log
    assert query(db, "SELECT COUNT(*) FROM deployments") == [(0,)]
