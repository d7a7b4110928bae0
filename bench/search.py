"""Event search benchmark: `GET /api/v1/events?q=...` on a big database, before and after the index.

    python -m bench.gen_events /tmp/bench-1m.db          # once: 1,000,000 events
    python -m bench.search /tmp/bench-1m.db [--repeat 15] [--build] [--postgres]

Starts a real `deploytrack serve` on the file, waits until its search indexer has every event, and
times each search (first page, median and p95 of --repeat after one warm-up) through HTTP. In the
same run it times the search as it was before the index — the same filters and `summary LIKE`,
walking the event list newest first — straight on the database (no HTTP: the baseline is flattered
by a few ms), and prints before / after. Cases: terms that match nothing (rare letters, a typo, and
common words in an order no summary has: the index's worst case), a term that matches a few events,
terms that match very many, short terms (windowed), a filter.

--build    also times migration m020 (building the index) on a copy of the file with the index taken out.
--postgres also copies the file into a throwaway PostgreSQL cluster on 127.0.0.1 (`migrate-db`,
           durable settings; ANALYZE as autovacuum would) and measures the same there; its "before" is
           the same query with bitmap scans switched off (a GIN index is used only through them). With
           --build, the GIN index is built again there and timed.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlencode

import asyncpg

from bench import servers
from bench.pg_reads import serve
from bench.reads import Client, timed
from deploytrack.storage import database as dbmod
from deploytrack.storage import migrations
from deploytrack.storage.event_search import PG_INDEX, WATERMARK, like_pattern
from tests.pg_cluster import Cluster

TARGET_MS = 100.0
Before = Callable[[dict[str, str]], tuple[float, int]]


def a_few(db: Path) -> str:
    """A build number that a handful of summaries hold (`#12345`), for 'a few matches'."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        for (summary,) in conn.execute("SELECT summary FROM events WHERE kind = 'build' AND summary LIKE '%#%' "
                                       "LIMIT 50 OFFSET 5000"):
            number = re.search(r"#\d{5}$", summary)
            if number:
                return number.group(0)
    raise SystemExit("no build numbers of 5 digits in this database; make it with bench.gen_events")


def cases(db: Path) -> dict[str, dict[str, str]]:
    few = a_few(db)
    return {
        "no match, rare letters": {"q": "zq-no-such-term"},
        "no match, a typo": {"q": "rolback"},
        "no match, common words": {"q": "build svc-012 to production"},
        "no match, with a product": {"q": "zq-no-such-term", "product": "svc-012"},
        f"a few matches ({few})": {"q": few},
        "many matches (rollback)": {"q": "rollback"},
        "most events (deploy)": {"q": "deploy"},
        "short, no match (zz)": {"q": "zz"},
        "short, many (#1)": {"q": "#1"},
    }


def _old_sql(flt: dict[str, str], like: str, mark: Callable[[int], str]) -> tuple[str, list[str]]:
    """The search as it ran before the index, for one backend's LIKE and placeholders."""
    columns = [c for c in flt if c != "q"]
    where = "".join(f"{c} = {mark(i + 1)} AND " for i, c in enumerate(columns))
    sql = (f"SELECT * FROM events WHERE {where}summary {like} {mark(len(columns) + 1)} ESCAPE '\\' "
           "ORDER BY occurred_at DESC, seq DESC LIMIT 51")
    return sql, [flt[c] for c in columns] + [like_pattern(flt["q"])]


def sqlite_before(db: Path, repeat: int) -> Before:
    def run(flt: dict[str, str]) -> tuple[float, int]:
        sql, params = _old_sql(flt, "LIKE", lambda _: "?")
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            rows = conn.execute(sql, params).fetchall()
            times = []
            for _ in range(max(3, repeat // 3)):  # a full walk takes a second: fewer repeats
                started = time.perf_counter()
                conn.execute(sql, params).fetchall()
                times.append((time.perf_counter() - started) * 1000)
        return statistics.median(times), len(rows)
    return run


def postgres_before(url: str, repeat: int) -> Before:
    def run(flt: dict[str, str]) -> tuple[float, int]:
        async def go() -> tuple[float, int]:
            conn = await asyncpg.connect(url)
            try:
                await conn.execute("SET enable_bitmapscan = off")  # no GIN index: the plan before m020
                sql, params = _old_sql(flt, "ILIKE", lambda n: f"${n}")
                rows = await conn.fetch(sql, *params)
                times = []
                for _ in range(max(3, repeat // 3)):
                    started = time.perf_counter()
                    await conn.fetch(sql, *params)
                    times.append((time.perf_counter() - started) * 1000)
                return statistics.median(times), len(rows)
            finally:
                await conn.close()
        return asyncio.run(go())
    return run


def wait_indexed(db: Path, timeout: float = 600) -> float:
    """Seconds until the server's indexer has every event."""
    started = time.monotonic()
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        while time.monotonic() - started < timeout:
            done, last = conn.execute("SELECT (SELECT CAST(value AS INTEGER) FROM kv WHERE key = ?), "
                                      "(SELECT COALESCE(MAX(seq), 0) FROM events)", (WATERMARK,)).fetchone()
            if done is not None and done >= last:
                return time.monotonic() - started
            time.sleep(0.2)
    raise SystemExit("the search indexer did not catch up")


def measure(label: str, db: str, todo: dict[str, dict[str, str]], before: Before, repeat: int,
            ready: Callable[[], object] = lambda: None) -> list[tuple[str, float, float]]:
    """Each case through HTTP on a real server on `db`, beside its pre-index baseline; (case, before, after)."""
    secret = servers.create_token(db, f"bench-search-{time.time_ns()}", "read")
    out = []
    print(f"\n{label}: one keep-alive client; before = the pre-index query on the database itself, "
          f"after = through HTTP, median of {repeat}", flush=True)
    with tempfile.TemporaryDirectory() as logs, serve(db, Path(logs)) as server:
        ready()
        api = Client(server.port)
        api.headers = {"Authorization": f"Bearer {secret}"}
        for name, flt in todo.items():
            path = "/api/v1/events?" + urlencode(flt)
            med, p95, _ = timed(api, path, repeat)
            shown = api.get(path)[1].count(b'"summary"')
            old, old_rows = before(flt)
            out.append((name, old, med))
            print(f"{name:32} before {old:8.1f} ms ({old_rows:2} rows)   after {med:7.2f} ms, p95 {p95:7.2f} ms "
                  f"({shown:2} rows)   before/after {old / med:7.1f}x", flush=True)
    no_match = [r for r in out if r[0].startswith("no match")]
    missed = [r[0] for r in no_match if r[2] >= TARGET_MS]
    print(f"{label}: terms of 3+ characters that match nothing, slowest median {max(r[2] for r in no_match):.2f} ms "
          f"(target < {TARGET_MS:g} ms): {'OK' if not missed else 'MISSED: ' + ', '.join(missed)}", flush=True)
    return out


def sqlite_build_seconds(db: Path) -> float:
    """Seconds migration m020 takes on a copy of `db` whose index was taken out."""
    with tempfile.TemporaryDirectory(dir=db.parent) as tmp:
        copy = Path(tmp) / "copy.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        conn = dbmod.connect(copy)
        for statement in ("DROP TRIGGER events_search_delete", "DROP TRIGGER events_search_update",
                          "DROP TABLE events_search", f"DELETE FROM kv WHERE key = '{WATERMARK}'",
                          "DELETE FROM schema_migrations WHERE name LIKE 'm020%'"):
            conn.execute(statement)
        started = time.perf_counter()
        ran = migrations.migrate(conn)
        seconds = time.perf_counter() - started
        conn.close()
        assert [name for name in ran if name.startswith("m020")], ran
        return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", type=Path, help="a database made by bench.gen_events")
    parser.add_argument("--repeat", type=int, default=15, help="timed GETs per case (after one warm-up)")
    parser.add_argument("--build", action="store_true", help="also time building the index")
    parser.add_argument("--postgres", action="store_true", help="also measure on PostgreSQL (a copy of the file)")
    args = parser.parse_args()
    if not 1 <= args.repeat <= 200:
        raise SystemExit("bounded runs only: --repeat <= 200")
    if not args.db.exists():
        raise SystemExit(f"{args.db} does not exist; make it with python -m bench.gen_events {args.db}")
    todo = cases(args.db)
    with sqlite3.connect(f"file:{args.db}?mode=ro", uri=True) as conn:
        total = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
    print(f"{total:,} events in {args.db}", flush=True)
    measure("SQLite", str(args.db), todo, sqlite_before(args.db, args.repeat), args.repeat,
            ready=lambda: print(f"indexer caught up {wait_indexed(args.db):.1f} s after start", flush=True))
    if args.build:
        print(f"SQLite: migration m020 on a copy of the file: {sqlite_build_seconds(args.db):.1f} s", flush=True)
    if not args.postgres:
        return 0
    cluster = Cluster(durable=True).start()
    try:
        url = cluster.new_database()
        started = time.perf_counter()
        servers.cli("migrate-db", "--from", str(args.db), "--to", url, timeout=3600)
        print(f"\nPostgreSQL: migrate-db copied the file in {time.perf_counter() - started:.0f} s", flush=True)
        cluster.psql("VACUUM ANALYZE")  # what autovacuum does after a bulk insert
        measure("PostgreSQL", url, todo, postgres_before(url, args.repeat), args.repeat)
        if args.build:
            schema = cluster.psql("SELECT extnamespace::regnamespace FROM pg_extension WHERE extname = 'pg_trgm'")
            cluster.psql(f"DROP INDEX {url.rsplit('=', 1)[1]}.{PG_INDEX}")
            started = time.perf_counter()
            cluster.psql(f"SET search_path = {url.rsplit('=', 1)[1]}; CREATE INDEX {PG_INDEX} ON events "
                         f"USING gin (summary {schema}.gin_trgm_ops)")
            print(f"PostgreSQL: building the GIN index (m020 on an existing database): "
                  f"{time.perf_counter() - started:.1f} s", flush=True)
    finally:
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
