"""Benchmark: Versioner ingestion latency while metrics are recomputed over 1M events.

Generates a database of about 1,000,000 events (bench.metrics_recompute.generate), then measures
Versioner single-event ingestion (wrk, 32 connections, bench/post_events.lua) against one server:

1. first round: the server with its metrics job on, on a database never derived, so its first round
   refolds every deployment, derives every fact and snapshots every day (the heaviest job there is:
   a first start on imported data), against the same load with the metrics job off just before;
2. full recompute: `deploytrack metrics recompute --refold-all`, run back to back for as long as the
   load runs, on the database the first round derived (the issue's case: an operator recomputes
   everything on a live server), against the same load with nothing else running just before. The
   load runs 3x as long as one recompute takes alone, so it covers every phase of one (beside the
   load a recompute takes longer).

The target (issue 14) is p99 < 100 ms and < 2x the quiet p99 during the full recompute.

    python -m bench.recompute_beside [--events 1000000] [--seconds 15] [--connections 32] [--no-first-round]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench import servers, wrk
from bench.metrics_recompute import generate
from deploytrack.storage import database as dbmod


def job_runs(db: Path) -> int:
    conn = dbmod.connect(db, readonly=True)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM job_runs").fetchone()[0])
    finally:
        conn.close()


def checkpoint(db: Path) -> None:
    """Copy the WAL into the file and empty it, so that no run pays for the writes of the one before."""
    conn = dbmod.connect(db)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def recompute(db: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "deploytrack", "metrics", "recompute", "--refold-all",
                             "--db", str(db)], env=servers.ENV, cwd="/", stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def first_round(db: Path, seconds: float, connections: int, env: dict[str, str]) -> tuple[wrk.Run, float, bool]:
    """wrk while the server's first metrics round runs: (figures, the round's seconds, whether it outlasted wrk)."""
    started = time.monotonic()
    with servers.deploytrack(db, scheduler=True) as server:
        during = wrk.run(server.url, seconds, connections, env={**env, "BENCH_RUN": "d"})
        throughout = job_runs(db) == 0
        while job_runs(db) == 0 and time.monotonic() - started < 900:
            time.sleep(0.5)
        return during, time.monotonic() - started, throughout


def full_recompute(url: str, db: Path, seconds: float, connections: int, env: dict[str, str]
                   ) -> tuple[wrk.Run, list[float]]:
    """wrk while `metrics recompute --refold-all` runs back to back: (figures, each finished run's seconds)."""
    times: list[float] = []
    began = time.monotonic()
    proc = recompute(db)
    time.sleep(1.0)  # the recompute is under way when the load starts
    load = wrk.start(url, seconds, connections, env={**env, "BENCH_RUN": "r"})
    while load.poll() is None:
        if proc.poll() is not None:
            if proc.returncode != 0:
                raise RuntimeError(f"metrics recompute failed: {proc.communicate()[0]}")
            times.append(time.monotonic() - began)
            began, proc = time.monotonic(), recompute(db)
        time.sleep(0.1)
    during = wrk.finish(load, seconds)
    proc.terminate()
    proc.wait()
    return during, times


def _row(label: str, res: wrk.Run) -> str:
    return f"{label:40} {res.rps:8.0f} {res.p50_ms:8.1f} {res.p99_ms:8.1f} {res.max_ms:8.1f} {res.non2xx:8d}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-first-round", action="store_true",
                        help="derive with `metrics recompute` instead of measuring the server's first round")
    args = parser.parse_args()
    wrk.require_wrk()
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "beside.db"
        conn = dbmod.open_migrated(db)
        conn.execute("PRAGMA synchronous=OFF")
        counts = generate(conn, args.events)
        conn.close()
        checkpoint(db)
        print(f"database: {counts['events']:,} events, {counts['incidents']:,} incidents", flush=True)
        token = servers.create_token(db, "bench", "ingest", "read")
        env = {"BENCH_MODE": "versioner", "BENCH_TOKEN": token}
        header = f"{'':40} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'non-2xx':>8}"
        if not args.no_first_round:
            with servers.deploytrack(db) as server:
                wrk.run(server.url, 1, args.connections, env={**env, "BENCH_RUN": "w"})
                quiet = wrk.run(server.url, args.seconds, args.connections, env={**env, "BENCH_RUN": "q"})
            during, took, throughout = first_round(db, args.seconds, args.connections, env)
            print(f"\nthe server's first metrics round (refold + facts + every day's snapshots) took {took:.1f}s; "
                  f"{'it ran for the whole load run' if throughout else 'it ended before the load run did'}")
            print(header)
            print(_row("quiet (metrics job off)", quiet))
            print(_row("during the first round", during))
            print(f"p99 during / quiet: {during.p99_ms / quiet.p99_ms:.2f}x", flush=True)
        else:
            began = time.monotonic()
            servers.cli("metrics", "recompute", "--db", str(db), timeout=1800)
            print(f"\nfirst derivation with `metrics recompute`: {time.monotonic() - began:.1f}s", flush=True)
        checkpoint(db)
        began = time.monotonic()
        servers.cli("metrics", "recompute", "--refold-all", "--db", str(db), timeout=1800)
        alone = time.monotonic() - began
        seconds = max(args.seconds, 3 * alone)  # the load covers at least one whole recompute (slower beside it)
        with servers.deploytrack(db) as server:
            wrk.run(server.url, 1, args.connections, env={**env, "BENCH_RUN": "w2"})
            quiet = wrk.run(server.url, seconds, args.connections, env={**env, "BENCH_RUN": "q2"})
            during, times = full_recompute(server.url, db, seconds, args.connections, env)
    print(f"\n`metrics recompute --refold-all` alone: {alone:.1f}s; back to back during a {seconds:.0f}s load "
          f"run: {len(times)} finished ({', '.join(f'{t:.1f}s' for t in times) or 'none'})")
    print(header)
    print(_row("quiet (nothing else running)", quiet))
    print(_row("during the full recompute", during))
    ratio = during.p99_ms / quiet.p99_ms
    met = during.p99_ms < 100 and ratio < 2
    print(f"p99 during / quiet: {ratio:.2f}x (target < 2x, and p99 < 100 ms: {'met' if met else 'not met'})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
