"""Benchmark: Versioner ingestion latency while the server recomputes every metric over 1M events.

Generates a database of about 1,000,000 events (bench.metrics_recompute.generate), then measures, in
the same run, Versioner single-event ingestion (wrk, 32 connections, bench/post_events.lua):

1. quiet: the server with its metrics job off (baseline);
2. during: the server started with its metrics job on, on a database never refreshed, so its first
   round refolds every deployment, derives every fact and snapshots every day - the heaviest
   recompute there is - while wrk runs. The recompute runs beside the writer (reads on a snapshot,
   short write transactions); the target is p99 < 100 ms and < 2x the quiet p99.

    python -m bench.recompute_beside [--events 1000000] [--seconds 15] [--connections 32]
"""

from __future__ import annotations

import argparse
import sqlite3
import tempfile
import time
from pathlib import Path

from bench import servers, wrk
from bench.metrics_recompute import generate
from deploytrack.storage import database as dbmod


def job_runs(db: Path) -> int:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM job_runs").fetchone()[0])
    finally:
        conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
    wrk.require_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "beside.db"
        conn = dbmod.open_migrated(db)
        conn.execute("PRAGMA synchronous=OFF")
        counts = generate(conn, args.events)
        conn.close()
        token = servers.create_token(db, "bench", "ingest", "read")
        env = {"BENCH_MODE": "versioner", "BENCH_TOKEN": token}
        with servers.deploytrack(db) as server:
            wrk.run(server.url, 1, args.connections, env={**env, "BENCH_RUN": "w"})
            quiet = wrk.run(server.url, args.seconds, args.connections, env={**env, "BENCH_RUN": "q"})
        started = time.monotonic()
        with servers.deploytrack(db, scheduler=True) as server:
            during = wrk.run(server.url, args.seconds, args.connections, env={**env, "BENCH_RUN": "d"})
            busy_throughout = job_runs(db) == 0
            while job_runs(db) == 0 and time.monotonic() - started < 900:
                time.sleep(0.5)
            recompute = time.monotonic() - started
    print(f"database: {counts['events']:,} events, {counts['incidents']:,} incidents")
    print(f"first metrics round (refold + facts + every day's snapshots) took {recompute:.1f}s after start; "
          f"{'it ran for the whole load run' if busy_throughout else 'it ended before the load run did'}")
    print(f"{'':34} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'non-2xx':>8}")
    for label, res in (("quiet (metrics job off)", quiet), ("during the full recompute", during)):
        print(f"{label:34} {res.rps:8.0f} {res.p50_ms:8.1f} {res.p99_ms:8.1f} {res.max_ms:8.1f} {res.non2xx:8d}")
    print(f"p99 during / quiet: {during.p99_ms / quiet.p99_ms:.2f}x (target < 2x, and p99 < 100 ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
