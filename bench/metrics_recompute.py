"""Benchmark: a full metrics recompute over 1,000,000 events.

Generates the events straight into a fresh database file (executemany, not the HTTP path):
20 products, a year of history, each version built once, deployed to staging and then to
production (started + completed/failed events), 10% of production deployments carrying a
`commits` list in metadata, plus recorded commits and incidents. Then times, each in one
run as the server and `metrics recompute` run them (reads on snapshots, short write transactions):
- the first refresh: refold of every deployment and every stored fact (once per database);
- the first snapshot run over every day;
- the nightly run (yesterday only) after a day's worth of new deployment events;
- a full `metrics recompute` (every day, every scope and window) after another day of events:
  refold of the changed deployment keys, incident relinking, facts refresh, snapshots;
- one live `GET /api/v1/metrics` computation (overall, 30 days),
with the time spent in each stage, and prints the figures with a baseline measured in the same
run: one full scan of the events table.

    python bench/metrics_recompute.py [--events 1000000 | --sizes 100000,1000000,3000000] [--keep FILE]
                                      [--source DIR] [--reuse DIR [--generate-only]]

--reuse DIR keeps each size's generated database (before any metrics work) as DIR/events-SIZE.db and
starts from a copy of it when it is there, so the long generation runs once, outside the bench lock:
    python bench/metrics_recompute.py --sizes 3000000 --reuse /tmp/mbench --generate-only
    flock /work/notes/bench.lock python bench/metrics_recompute.py --sizes 3000000 --reuse /tmp/mbench
"""

from __future__ import annotations

import argparse
import inspect
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import orjson

# --source DIR: time another export of deploytrack (e.g. `git archive COMMIT deploytrack | tar -x -C DIR`)
sys.path.insert(0, sys.argv[sys.argv.index("--source") + 1] if "--source" in sys.argv[:-1]
                else str(Path(__file__).resolve().parent.parent))

from deploytrack.metrics import compute as metrics  # noqa: E402
from deploytrack.metrics import facts, fold, incidents, refresh  # noqa: E402

try:  # (absent from exports before the day totals, which --source may time)
    from deploytrack.metrics import days  # noqa: E402
except ImportError:
    days = None
try:  # (absent from exports before the bulk first build)
    from deploytrack.metrics import first_build  # noqa: E402
except ImportError:
    first_build = None
try:  # (absent from exports before the first build in scratch files)
    from deploytrack.metrics import scratch  # noqa: E402
except ImportError:
    scratch = None
from deploytrack.settings import Settings  # noqa: E402
from deploytrack.storage import database as dbmod  # noqa: E402
from deploytrack.timeutil import day_start_us, now_us  # noqa: E402

MIN = 60_000_000
COLUMNS = ("id", "dialect", "kind", "product", "version", "environment", "environment_raw", "status", "occurred_at",
           "received_at", "scm_sha", "scm_repository", "metadata", "summary")


def generate(conn, total: int, seed: int = 7) -> dict[str, int]:
    """Insert about `total` events (and matching versions, commits, incidents); return counts."""
    rng = random.Random(seed)
    now = now_us()
    start = day_start_us(now) - 365 * metrics.DAY
    products = [f"svc-{i:02d}" for i in range(20)]
    per_version = 5.5  # build + 2 staging + 2 production events, plus rollbacks/retries on average
    versions = int(total // per_version)
    events, commits, incidents, version_rows = [], [], [], []
    serial = 0

    def add(kind, product, version, env, status, at, sha, meta=None, summary=None):
        nonlocal serial
        serial += 1
        events.append((f"e{serial:09d}", "versioner", kind, product, version, env, env, status, at,
                       at + rng.randint(0, 5 * MIN), sha, "repo/" + product, meta, summary))

    step = 365 * metrics.DAY // max(1, versions // len(products))
    for i in range(versions):
        product = products[i % len(products)]
        version = f"1.{i // len(products)}"
        at = start + (i // len(products)) * step + rng.randint(0, step // 2)
        sha = f"{i:040x}"
        version_rows.append((product, version, sha, at))
        commits.append(("repo/" + product, sha, at - 2 * 3600_000_000, at - rng.randint(1, 48) * 3600_000_000))
        add("build", product, version, None, "completed", at, sha)
        add("deployment", product, version, "staging", "started", at + 10 * MIN, sha)
        add("deployment", product, version, "staging", "completed", at + 12 * MIN, sha)
        t = at + rng.randint(1, 72) * 3600_000_000
        meta = orjson.dumps({"commits": [{"sha": sha, "repository": "repo/" + product},
                                         {"sha": f"{i:039x}f", "repository": "repo/lib"}]}).decode() \
            if rng.random() < 0.1 else None
        add("deployment", product, version, "production", "started", t, sha, meta)
        failed = rng.random() < 0.08
        add("deployment", product, version, "production", "failed" if failed else "completed", t + 8 * MIN, sha)
        if failed:  # retried
            add("deployment", product, version, "production", "started", t + 30 * MIN, sha)
            add("deployment", product, version, "production", "completed", t + 38 * MIN, sha)
        if rng.random() < 0.05 and i >= len(products):  # roll back to the previous version
            prev = f"1.{i // len(products) - 1}"
            add("deployment", product, prev, "production", "completed", t + 3 * 3600_000_000, None,
                orjson.dumps({"deployment_type": "rollback"}).decode(), "rollback")
        if rng.random() < 0.04:
            opened = t + rng.randint(10, 600) * MIN
            incidents.append((product, "production", f"incident {i}", "sev2", opened,
                              opened + rng.randint(5, 3000) * MIN if rng.random() < 0.9 else None, now, now))
        if len(events) >= total:
            break
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})", events)
    conn.executemany("INSERT INTO versions (product, version, scm_sha, created_at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT DO NOTHING", version_rows)
    conn.executemany("INSERT INTO commits (repository, sha, authored_at, committed_at) VALUES (?, ?, ?, ?) "
                     "ON CONFLICT DO NOTHING", commits)
    conn.executemany("INSERT INTO incidents (product, environment, title, severity, status, opened_at, resolved_at, "
                     "created_at, updated_at) VALUES (?, ?, ?, ?, 'open', ?, ?, ?, ?)", incidents)
    conn.executemany("INSERT INTO products (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                     [(p, start) for p in products])
    conn.execute("COMMIT")
    return {"events": len(events), "commits": len(commits), "incidents": len(incidents)}


class Stages:
    """Wall/CPU time spent in named functions while it is installed (wraps module attributes)."""

    def __init__(self, targets: dict[str, tuple[object, str]]) -> None:
        self.targets, self.spent = targets, {name: [0.0, 0.0] for name in targets}
        self.saved = {name: getattr(obj, attr) for name, (obj, attr) in targets.items()}

    def __enter__(self) -> Stages:
        for name, (obj, attr) in self.targets.items():
            setattr(obj, attr, self._wrap(name, self.saved[name]))
        return self

    def __exit__(self, *exc: object) -> None:
        for name, (obj, attr) in self.targets.items():
            setattr(obj, attr, self.saved[name])

    def _wrap(self, name, fn):
        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[name][0] += time.perf_counter() - wall
                self.spent[name][1] += time.process_time() - cpu
        return timed

    def report(self) -> str:
        return ", ".join(f"{name} {wall:.2f}s/{cpu:.2f}s" for name, (wall, cpu) in self.spent.items())


def stages() -> Stages:
    targets = {"fold plan": (fold, "plan_key"), "fold plan (whole products)": (fold, "plan_product"),
               "fold write": (fold, "apply"), "event moves": (fold, "move_events"),
               "bulk: records built here": (scratch, "fold_product"),
               "bulk: facts built here": (scratch, "facts_product"),
               "bulk: records copied in": (getattr(scratch, "Writer", None), "copy_records"),
               "bulk: facts copied in": (getattr(scratch, "Writer", None), "copy_facts"),
               "bulk: events pointed": (getattr(scratch, "Writer", None), "point_events"),
               "indexes dropped": (first_build, "drop"),
               "indexes made": (first_build, "restore"),
               "facts plan": (facts, "plan"), "facts write": (facts, "apply"),
               "day totals write": (days, "apply"), "links": (incidents, "plan_links"),
               "windows": (metrics, "snapshot_rows"), "snapshot write": (metrics, "write_snapshots")}
    return Stages({name: target for name, target in targets.items()  # (older exports lack some: --source)
                   if target[0] is not None and hasattr(*target)})


def add_day(conn, prefix: str, offset: int) -> None:
    """A day's worth of late traffic: copies of 2,000 recent deployment events under new ids."""
    late = conn.execute("SELECT * FROM events WHERE kind = 'deployment' ORDER BY seq DESC LIMIT 2000 OFFSET ?",
                        (offset,)).fetchall()
    conn.execute("BEGIN")
    conn.executemany(f"INSERT INTO events ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
                     [(prefix + r["id"], *[r[c] for c in COLUMNS[1:]]) for r in late])
    conn.execute("COMMIT")


def _children_cpu() -> float:
    """CPU seconds of this process's ended children (the planning process of a first build)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(conn, fn, *args) -> tuple[float, float, object, Stages, float]:
    """Run a refresh-style function on one connection (reads on snapshots, short write transactions):
    (wall, CPU of this process, result, stages, CPU of the planning process)."""
    read, write = dbmod.on_connection(conn)
    with stages() as spent:
        wall, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
        result = fn(read, write, *args)
        return (time.perf_counter() - wall, time.process_time() - cpu, result, spent,
                _children_cpu() - children)


def generated(path: Path, events: int, reuse: Path | None) -> tuple[dict[str, int], float]:
    """Generate `events` into `path` (or copy the kept generation from `reuse`); (counts, seconds)."""
    kept = None if reuse is None else reuse / f"events-{events}.db"
    if kept is not None and kept.is_file():
        shutil.copyfile(kept, path)
        return orjson.loads(kept.with_suffix(".json").read_bytes()), 0.0
    conn = dbmod.open_migrated(path)
    conn.execute("PRAGMA synchronous=OFF")  # generation only; the recompute below runs as in the server
    t0 = time.perf_counter()
    counts = generate(conn, events)
    seconds = time.perf_counter() - t0
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, kept)
        kept.with_suffix(".json").write_bytes(orjson.dumps(counts))
    return counts, seconds


def measure(path: Path, events: int, reuse: Path | None = None) -> dict[str, object]:
    """Generate `events` into `path` and time every path of the metrics core on it (see the docstring)."""
    counts, seconds = generated(path, events, reuse)
    conn = dbmod.open_migrated(path)
    conn.execute("PRAGMA synchronous=FULL")
    t2 = time.perf_counter()
    conn.execute("SELECT MAX(received_at), COUNT(*) FROM events").fetchone()
    scan = time.perf_counter() - t2
    now = now_us()
    settings = Settings(db=str(path))
    yesterday = day_start_us(now) - metrics.DAY
    # the first refresh: every deployment refolded in event-time order, every fact derived, as `metrics
    # recompute` runs it on a file no server has open (older exports, --source, have no `aside` or `bulk`)
    accepts = inspect.signature(refresh.refresh).parameters
    first_refresh = timed(conn, refresh.refresh, settings, False,
                          *((True,) if "aside" in accepts else ()), *((True,) if "bulk" in accepts else ()))
    folded = conn.execute("SELECT COUNT(*) FROM deployments").fetchone()[0]
    conn.execute("ANALYZE")
    first_run = timed(conn, refresh.snapshot_days, settings, None, yesterday, now)
    # the nightly run: yesterday only, after a day's worth of new deployment events
    add_day(conn, "n", 0)
    nightly = timed(conn, refresh.snapshot_days, settings, yesterday, yesterday, now)
    # `metrics recompute`: every day, after another day's events (their facts are refreshed in the run)
    add_day(conn, "m", 2000)
    full = timed(conn, refresh.snapshot_days, settings, None, yesterday, now)
    lives = {}
    for name, scope in (("overall", metrics.Scope("overall")), ("one product", metrics.Scope("product", "svc-03"))):
        t5, c5 = time.perf_counter(), time.process_time()
        report = metrics.live(conn, settings, scope, 30, now)
        lives[name] = (time.perf_counter() - t5, time.process_time() - c5, report)
    conn.close()
    return {"counts": counts, "generated": seconds, "scan": scan, "folded": folded, "first_refresh": first_refresh,
            "first_run": first_run, "nightly": nightly, "full": full, "live": lives}


def report(events: int, m: dict[str, object]) -> None:
    counts, scan = m["counts"], m["scan"]
    print(f"== {events:,} events asked: generated {counts['events']:,} events, {counts['commits']:,} commits, "
          f"{counts['incidents']:,} incidents in {m['generated']:.1f}s")
    print(f"load average when done: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (wall times include waiting)")
    print(f"baseline: one full scan of events          {scan:7.2f}s wall")
    for label, (wall, cpu, _result, spent, child) in (
            (f"first refresh (refolds {m['folded']:,} deployments, derives every fact; once per database)",
             m["first_refresh"]),
            ("first snapshot run (every day)", m["first_run"]),
            ("nightly run (one day, after a day of new events)", m["nightly"]),
            ("full recompute (`metrics recompute`, every day, after a day of new events)", m["full"])):
        aside = f" + {child:.2f}s CPU planning aside" if child else ""
        print(f"{label}: {wall:7.2f}s wall, {cpu:6.2f}s CPU{aside}  ({wall / scan:.0f}x the scan)")
        print(f"    wall/CPU by stage: {spent.report()}")
    for name, (wall, cpu, result) in m["live"].items():
        print(f"live metrics ({name}, 30d, one request): {wall:7.3f}s wall, {cpu:6.3f}s CPU  ({wall / scan:.1f}x the "
              f"scan); deployment frequency {result['deployment_frequency']['per_week']}/week")


def table(results: dict[int, dict[str, object]]) -> None:
    """Issue 20's table: wall seconds per size, with the scan of the events table as the baseline."""
    print("\n| events | scan (baseline) | live, overall | live, one product | nightly run | full recompute "
          "| first build (fold + facts + every day) | first refresh: wall / CPU (+ planning aside) |")
    print("|---|---|---|---|---|---|---|---|")
    for _, m in sorted(results.items()):
        first = m["first_refresh"][0] + m["first_run"][0]
        wall, cpu, _, _, child = m["first_refresh"]
        print(f"| {m['counts']['events']:,} | {m['scan']:.2f} s | {m['live']['overall'][0]:.3f} s "
              f"| {m['live']['one product'][0]:.3f} s | {m['nightly'][0]:.2f} s | {m['full'][0]:.2f} s "
              f"| {first:.1f} s | {wall:.1f} s / {cpu:.1f} s (+ {child:.1f} s) |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--sizes", help="comma-separated event counts to measure in turn, e.g. 100000,1000000,3000000; "
                                        "prints issue 20's table at the end")
    parser.add_argument("--keep", metavar="FILE", help="write the database here instead of a temp dir (one size)")
    parser.add_argument("--source", metavar="DIR", help="time the deploytrack package in DIR instead of this one")
    parser.add_argument("--reuse", metavar="DIR", type=Path,
                        help="keep each size's generated database in DIR and start from a copy of it next time")
    parser.add_argument("--generate-only", action="store_true",
                        help="with --reuse: generate what is missing, time nothing")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else [args.events]
    if args.generate_only:
        if args.reuse is None:
            parser.error("--generate-only needs --reuse DIR")
        for events in sizes:
            with tempfile.TemporaryDirectory() as tmp:
                counts, seconds = generated(Path(tmp) / "bench.db", events, args.reuse)
            print(f"{events:,} events asked: {counts['events']:,} events in {args.reuse} ({seconds:.1f}s)")
        return 0
    results = {}
    for events in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(args.keep) if args.keep and len(sizes) == 1 else Path(tmp) / "bench.db"
            results[events] = measure(path, events, args.reuse)
        report(events, results[events])
    table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
