"""Event search benchmark: `GET /api/v1/events?q=...` on a big database, before and after the index.

    python -m bench.gen_events /tmp/bench-1m.db          # once: 1,000,000 events
    python -m bench.search /tmp/bench-1m.db [--repeat 15] [--build]

Starts a real `deploytrack serve` on the file, waits until its search indexer has every event, and
times each search (first page, median and p95 of --repeat after one warm-up) through HTTP. In the
same run it times the search as it was before the index — the same filters with `summary LIKE`,
walking the event list newest first — straight on the file (no HTTP: the baseline is flattered by
a few ms), and prints before / after. Cases: terms that match nothing (rare letters, a typo, and
common words in an order no summary has, the index's worst case), a term that matches a few events,
terms that match very many, short terms (windowed), and a filter. `--build` also times migration
m020 (building the index) on a copy of the file with the index taken out.
"""

from __future__ import annotations

import argparse
import re
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

from bench import servers
from bench.reads import Client, timed
from deploytrack.storage import database as dbmod
from deploytrack.storage import migrations
from deploytrack.storage.event_search import WATERMARK, like_pattern

TARGET_MS = 100.0
_BEFORE = "SELECT * FROM events WHERE {where}summary LIKE ? ESCAPE '\\' ORDER BY occurred_at DESC, seq DESC LIMIT 51"


def a_few(db: Path) -> str:
    """A build number that a handful of summaries hold (`#12345 ` with its trailing space), for 'a few matches'."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        for (summary,) in conn.execute("SELECT summary FROM events WHERE kind = 'build' AND summary LIKE '%#%' "
                                       "LIMIT 50 OFFSET 5000"):
            number = re.search(r"#\d{5}$", summary)
            if number:
                return number.group(0)
    raise SystemExit("no build numbers of 5 digits in this database; make it with bench.gen_events")


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


def before_ms(db: Path, flt: dict[str, str], repeat: int) -> tuple[float, int]:
    """(median ms, matches on the first page) of the pre-index search, straight on the file."""
    where = "".join(f"{column} = ? AND " for column in flt if column != "q")
    params = [v for k, v in flt.items() if k != "q"] + [like_pattern(flt["q"])]
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        sql = _BEFORE.format(where=where)
        rows = conn.execute(sql, params).fetchall()
        times = []
        for _ in range(max(3, repeat // 3)):  # a full walk takes seconds: fewer repeats
            started = time.perf_counter()
            conn.execute(sql, params).fetchall()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), len(rows)


def build_seconds(db: Path) -> tuple[float, int]:
    """Seconds migration m020 takes on a copy of `db` whose index was taken out, and the copy's size."""
    with tempfile.TemporaryDirectory(dir=db.parent) as tmp:
        copy = Path(tmp) / "copy.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as src, sqlite3.connect(copy) as dst:
            src.backup(dst)
        conn = dbmod.connect(copy)
        for trigger in ("events_search_delete", "events_search_update"):
            conn.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        conn.execute("DROP TABLE IF EXISTS events_search")
        conn.execute("DELETE FROM kv WHERE key = ?", (WATERMARK,))
        conn.execute("DELETE FROM schema_migrations WHERE name LIKE 'm020%'")
        started = time.perf_counter()
        ran = migrations.migrate(conn)
        seconds = time.perf_counter() - started
        conn.close()
        assert any(name.startswith("m020") for name in ran), ran
        return seconds, copy.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", type=Path, help="a database made by bench.gen_events")
    parser.add_argument("--repeat", type=int, default=15, help="timed GETs per case (after one warm-up)")
    parser.add_argument("--build", action="store_true", help="also time migration m020 on a copy of the file")
    args = parser.parse_args()
    if not 1 <= args.repeat <= 200:
        raise SystemExit("bounded runs only: --repeat <= 200")
    if not args.db.exists():
        raise SystemExit(f"{args.db} does not exist; make it with python -m bench.gen_events {args.db}")
    few = a_few(args.db)
    cases = {
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
    secret = servers.create_token(args.db, f"bench-search-{time.time_ns()}", "read")
    results = []
    with servers.deploytrack(args.db) as server:
        caught_up = wait_indexed(args.db)
        print(f"indexer caught up {caught_up:.1f} s after start", flush=True)
        api = Client(server.port)
        api.headers = {"Authorization": f"Bearer {secret}"}
        for name, flt in cases.items():
            path = "/api/v1/events?" + urlencode(flt)
            med, p95, _ = timed(api, path, args.repeat)
            _, body, _ = api.get(path)
            shown = body.count(b'"summary"')
            old, old_rows = before_ms(args.db, flt, args.repeat)
            results.append((name, old, med, p95))
            print(f"{name:36} before {old:8.1f} ms ({old_rows:2} rows)   after median {med:7.2f} ms  p95 "
                  f"{p95:7.2f} ms ({shown:2} rows)   before/after {old / med:7.1f}x", flush=True)
    no_match = [r for r in results if r[0].startswith("no match")]
    missed = [r[0] for r in no_match if r[2] >= TARGET_MS]
    print(f"\nterms of 3+ characters that match nothing, slowest median: {max(r[2] for r in no_match):.2f} ms "
          f"(target < {TARGET_MS:g} ms): {'OK' if not missed else 'MISSED: ' + ', '.join(missed)}")
    if args.build:
        seconds, size = build_seconds(args.db)
        print(f"migration m020 on a copy ({size:,} bytes): {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
