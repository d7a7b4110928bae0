"""Reads on PostgreSQL beside SQLite, on the same data: each JSON list and the metrics API.

    python -m bench.pg_reads [--events 100000] [--repeat 15]

Generates the events into a SQLite file (bench.gen_events), analyzes it and brings its derived
data up to date (`metrics recompute`), copies that file into a throwaway
PostgreSQL cluster on 127.0.0.1 with `deploytrack migrate-db` (durable settings, as in production;
tests/pg_cluster.py), starts one `deploytrack serve` on each, and times every request from one
keep-alive client per server (median and p95 of --repeat runs after a warm-up). The two servers are
asked in turn, request by request (SQLite, PostgreSQL, SQLite, ...): on a shared machine the load
drifts within seconds, and alternating gives both the same conditions. Prints both and the ratio;
the target is PostgreSQL within 2x of SQLite on each. Then the same lists and the metrics report
timed in-process through `Database` alone (no HTTP, no auth lookup; also alternating): the storage
layer's own share. Only 127.0.0.1 is contacted; the cluster and files are removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench import servers
from bench.gen_events import generate
from bench.reads import Client, middle_cursor
from deploytrack.metrics.compute import Scope
from deploytrack.metrics.report import report
from deploytrack.settings import load_settings
from deploytrack.storage import deployment_queries as dq
from deploytrack.storage import event_queries as eq
from deploytrack.storage.database import Database
from deploytrack.timeutil import now_us
from tests.pg_cluster import Cluster

TARGET_RATIO = 2.0


def paths(cursor: str, product: str) -> list[tuple[str, str]]:
    return [
        ("events, first page", "/api/v1/events"),
        ("events, middle page (cursor)", f"/api/v1/events?cursor={cursor}"),
        ("events by product", f"/api/v1/events?product={product}"),
        ("events by status failed", "/api/v1/events?status=failed"),
        ("events by environment and kind", "/api/v1/events?environment=production&kind=deployment"),
        ("events, text search", "/api/v1/events?q=rollback"),
        ("one event", "/api/v1/events/{event_id}"),
        ("deployments, first page", "/api/v1/deployments"),
        ("deployments by product", f"/api/v1/deployments?product={product}"),
        ("deployments, rollbacks", "/api/v1/deployments?label=rollback"),
        ("incidents", "/api/v1/incidents"),
        ("rules", "/api/v1/rules"),
        ("rule overrides", "/api/v1/rule-overrides"),
        ("rule violations", "/api/v1/rule-violations"),
        ("rule violations by product", f"/api/v1/rule-violations?product={product}"),
        ("metrics, overall, 30 days", "/api/v1/metrics?window=30"),
        ("metrics, one product, 90 days", f"/api/v1/metrics?window=90&product={product}"),
    ]


def add_rules(db: Path, violations: int) -> None:
    """Rules, overrides and violations for the rule lists (the event generator makes none): rules and
    overrides through the CLI, `violations` rows written directly, spread over products and a year."""
    with sqlite3.connect(db) as conn:
        products = [r[0] for r in conn.execute("SELECT name FROM products ORDER BY name LIMIT 10")]
        newest = conn.execute("SELECT MAX(received_at) FROM events").fetchone()[0]
    for i, product in enumerate(products):
        servers.cli("rule", "add", f"one-at-a-time-{i}", "--type", "concurrency", "--mode", "report-only",
                    "--product", product, "--db", str(db), "--by", "bench")
    for product in products[:5]:
        servers.cli("rule", "override", "--product", product, "--reason", "bench", "--db", str(db), "--by", "bench")
    with sqlite3.connect(db) as conn:
        rules = conn.execute("SELECT id, name FROM rules ORDER BY id").fetchall()
        conn.executemany(
            "INSERT INTO rule_violations (at, outcome, rule_id, rule_name, rule_type, code, http_status, message, "
            "dialect, product, environment, version, status, violations, attempt) "
            "VALUES (?, 'reported', ?, ?, 'concurrency', 'concurrent_deployment', 409, 'another deployment runs', "
            "'versioner', ?, 'production', ?, 'started', '[]', '{}')",
            [(newest - (violations - i) * 15_000_000, rules[i % len(rules)][0], rules[i % len(rules)][1],
              products[i % len(products)], f"1.{i}") for i in range(violations)])


def serve(db: str, workdir: Path) -> servers.Server:
    port = servers.free_port()
    argv = [sys.executable, "-m", "deploytrack", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--db", db, "--no-scheduler", "--log-level", "warning"]
    return servers.Server(argv, port, workdir / f"server.{port}.log", "/healthz", "deploytrack")


Figures = dict[str, tuple[float, float] | str]


def measure(dbs: list[str], workdir: Path, todo: list[tuple[str, str]], repeat: int) -> list[Figures]:
    """(median, p95) ms of each path on each database's server, the servers asked in turn."""
    out: list[Figures] = [{} for _ in dbs]
    started = [serve(db, workdir) for db in dbs]
    try:
        clients = []
        for db, server in zip(dbs, started, strict=True):
            token = servers.cli("token", "create", f"bench-{os.getpid()}", "--scope", "read", "--db", db,
                                "--secret-only").strip()
            client = Client(server.port)
            client.headers = {"Authorization": f"Bearer {token}"}
            clients.append(client)
        for name, path in todo:
            times: list[list[float]] = [[] for _ in dbs]
            try:
                for client in clients:  # warm-up, and a failing path fails here
                    status, body, _ = client.get(path)
                    if status != 200:
                        raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
                for _ in range(repeat):
                    for client, spent in zip(clients, times, strict=True):
                        spent.append(client.get(path)[2])
                for figures, spent in zip(out, times, strict=True):
                    spent.sort()
                    figures[name] = (statistics.median(spent), spent[min(len(spent) - 1, int(len(spent) * 0.95))])
            except RuntimeError as exc:
                for figures in out:
                    figures[name] = str(exc)[:160]
    finally:
        for server in started:
            server.stop()
    return out


async def storage_times(targets: list[str], product: str, cursor: str, repeat: int) -> list[dict[str, float]]:
    """Median ms of each list and the metrics report through `Database` alone, the databases in turn."""
    dbs = [Database(target) for target in targets]
    for db in dbs:
        await db.open()

    def cases(db: Database, target: str) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
        settings = load_settings({"db": target, "scheduler": False}, environ={})
        return [
            ("events, first page", lambda: eq.list_events(db, eq.EventFilter())),
            ("events, middle page (cursor)", lambda: eq.list_events(db, eq.EventFilter(), cursor=cursor)),
            ("events by product", lambda: eq.list_events(db, eq.EventFilter(product=product))),
            ("events by status failed", lambda: eq.list_events(db, eq.EventFilter(status="failed"))),
            ("deployments, first page", lambda: dq.list_deployments(db, dq.DeploymentFilter())),
            ("deployments by product", lambda: dq.list_deployments(db, dq.DeploymentFilter(product=product))),
            ("metrics report, overall, 30 days",
             lambda: db.read(report, settings, Scope.of(None, None), 30, 90, now_us())),
        ]

    per_db = [cases(db, target) for db, target in zip(dbs, targets, strict=True)]
    out: list[dict[str, float]] = [{} for _ in dbs]
    try:
        for i, (name, _) in enumerate(per_db[0]):
            runs = [listed[i][1] for listed in per_db]
            for run in runs:
                await run()
            times: list[list[float]] = [[] for _ in dbs]
            for _ in range(repeat):
                for run, spent in zip(runs, times, strict=True):
                    began = time.perf_counter()
                    await run()
                    spent.append((time.perf_counter() - began) * 1000)
            for figures, spent in zip(out, times, strict=True):
                figures[name] = statistics.median(spent)
    finally:
        for db in dbs:
            await db.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    cluster = Cluster(durable=True).start()
    try:
        with tempfile.TemporaryDirectory(prefix="deploytrack-pgreads-") as tmp:
            workdir = Path(tmp)
            db = workdir / "bench.db"
            made = generate(db, args.events, 365, 60, 1)
            add_rules(db, args.events // 50)
            with sqlite3.connect(db) as conn:  # statistics, as a database that has served a while has them
                conn.execute("ANALYZE")
            # Derived data (deployment facts, snapshots) current before the copy, as on a running install:
            # the metrics API then times reading them, not the first refresh after a bulk load.
            subprocess.run([sys.executable, "-m", "deploytrack", "metrics", "recompute", "--db", str(db)],
                           env=servers.ENV, check=True, capture_output=True, timeout=600)
            url = cluster.new_database()
            servers.cli("migrate-db", "--from", str(db), "--to", url)
            cursor, total, product = middle_cursor(db)
            with sqlite3.connect(db) as conn:
                event_id = conn.execute("SELECT id FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0]
            todo = [(n, p.replace("{event_id}", event_id)) for n, p in paths(cursor, product)]
            print(f"{total:,} events, {made['deployments']:,} deployments; one keep-alive client per server, the "
                  f"two asked in turn; median and p95 of {args.repeat} runs; {os.cpu_count()} cores shared by the "
                  "client, the servers, PostgreSQL and anything else running", flush=True)
            print(f"load average {os.getloadavg()[0]:.1f} before the requests", flush=True)
            lite, post = measure([str(db), url], workdir, todo, args.repeat)
            lite_storage, post_storage = asyncio.run(storage_times([str(db), url], product, cursor, args.repeat))
            print(f"load average {os.getloadavg()[0]:.1f} after", flush=True)
    finally:
        cluster.stop()
    print(f"{'request':34} {'SQLite ms':>16} {'PostgreSQL ms':>16} {'ratio':>7}")
    worst = 0.0
    for name, _ in todo:
        a, b = lite[name], post[name]
        if isinstance(a, str) or isinstance(b, str):
            print(f"{name:34} {a if isinstance(a, str) else f'{a[0]:.1f}':>16} "
                  f"{b if isinstance(b, str) else f'{b[0]:.1f}':>16}   error")
            continue
        ratio = b[0] / a[0]
        worst = max(worst, ratio)
        print(f"{name:34} {a[0]:7.1f} (p95 {a[1]:5.1f}) {b[0]:7.1f} (p95 {b[1]:5.1f}) {ratio:6.2f}x"
              f"{'' if ratio <= TARGET_RATIO else '  over target'}")
    print(f"worst ratio {worst:.2f}x (target <= {TARGET_RATIO}x)")
    print(f"\n{'in-process, through Database only':34} {'SQLite ms':>16} {'PostgreSQL ms':>16} {'ratio':>7}")
    for name, ms in lite_storage.items():
        print(f"{name:34} {ms:16.2f} {post_storage[name]:16.2f} {post_storage[name] / ms:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
