"""Generate N realistic events straight into a deploytrack database file, for the read benchmark.

    python -m bench.gen_events /tmp/bench-1m.db [--events 1000000] [--days 365] [--seed 1]

Writes what the real ingest path would have written for Versioner traffic: `events` rows, the
`deployments` rows they fold into (started -> completed/failed/aborted), `versions`, `products`,
`environments` and the token that "sent" them. Deployments come in pairs of events (started, then
a result a few minutes later), builds as single events; a year of history, newest last.
It uses executemany in one transaction (journal off while loading; WAL again at the end).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from deploytrack.metrics.rules import event_label
from deploytrack.storage import database as dbmod
from deploytrack.storage.ingest import _INSERT_EVENT, EVENT_COLUMNS
from deploytrack.timeutil import now_us
from deploytrack.web.auth import hash_secret, new_secret

ENVIRONMENTS = [("production", 0.40), ("staging", 0.30), ("development", 0.20), ("qa", 0.10)]
RAW_ENV = {"production": ("production", "prod", "Production"), "staging": ("staging", "stg"),
           "development": ("development", "dev"), "qa": ("qa",)}
RESULTS = [("success", "completed", 0.90), ("failed", "failed", 0.07), ("cancelled", "aborted", 0.03)]
ACTORS = ["ci-bot", "alice", "bob", "carol", "dave", "release-train"]
REGIONS = ["eu-west-1", "us-east-1", "ap-south-1"]
CHUNK = 20_000


def uuid7(ms: int, rng: random.Random) -> str:
    raw = bytearray(ms.to_bytes(6, "big") + rng.randbytes(10))
    raw[6] = (raw[6] & 0x0F) | 0x70
    raw[8] = (raw[8] & 0x3F) | 0x80
    return str(uuid.UUID(bytes=bytes(raw)))


class Generator:
    """Produces event rows (dicts keyed by EVENT_COLUMNS) and the derived rows, in time order."""

    def __init__(self, n: int, days: int, products: int, token_id: int, seed: int) -> None:
        self.n, self.token_id = n, token_id
        self.rng = random.Random(seed)
        self.products = [f"svc-{i:03d}" for i in range(products)]
        self.end = now_us() - 60_000_000
        self.start = self.end - days * 86_400_000_000
        self.release = {p: 0 for p in self.products}
        self.versions: dict[tuple[str, str], tuple[str, int]] = {}
        self.deployments: list[tuple[Any, ...]] = []
        self.count = 0

    def _env(self) -> str:
        x, acc = self.rng.random(), 0.0
        for name, share in ENVIRONMENTS:
            acc += share
            if x < acc:
                return name
        return ENVIRONMENTS[-1][0]

    def _row(self, **values: Any) -> dict[str, Any]:
        row = dict.fromkeys(EVENT_COLUMNS[1:])
        row.update(values)
        return row

    def _version(self, product: str, at: int) -> tuple[str, str]:
        """The newest release of `product`, sometimes a new one."""
        if self.release[product] == 0 or self.rng.random() < 0.3:
            self.release[product] += 1
        version = f"1.{self.release[product]}.{self.rng.randrange(3)}"
        key = (product, version)
        if key not in self.versions:
            self.versions[key] = (f"{self.rng.getrandbits(160):040x}", at)
        return version, self.versions[key][0]

    def rows(self) -> Iterator[dict[str, Any]]:
        step = (self.end - self.start) / self.n * 1.7  # 1.7 events per step on average (30% builds)
        at = float(self.start)
        while self.count < self.n:
            at += step * self.rng.uniform(0.2, 1.8)
            product = self.rng.choice(self.products)
            if self.rng.random() < 0.3 or self.n - self.count < 2:
                yield self._build(product, int(at))
            else:
                yield from self._deployment(product, int(at), int(at + step * self.rng.uniform(1, 3)))

    def _common(self, product: str, version: str, sha: str, at: int) -> dict[str, Any]:
        self.count += 1
        return dict(id=uuid7(at // 1000, self.rng), dialect="versioner", token_id=self.token_id, product=product,
                    version=version, occurred_at=at, received_at=at + self.rng.randrange(50_000, 2_000_000),
                    scm_sha=sha, scm_branch="main", scm_repository=f"git@git.example.com:acme/{product}.git",
                    source_system="jenkins", actor=self.rng.choice(ACTORS))

    def _build(self, product: str, at: int) -> dict[str, Any]:
        version, sha = self._version(product, at)
        number = str(self.rng.randrange(1, 99_999))
        status_raw = "success" if self.rng.random() < 0.92 else "failed"
        return self._row(**self._common(product, version, sha, at), kind="build",
                         status="completed" if status_raw == "success" else "failed", status_raw=status_raw,
                         build_url=f"https://ci.example.com/job/{product}/{number}/", build_number=number,
                         summary=f"build {product} {version} #{number}")

    def _deployment(self, product: str, at: int, done_at: int) -> Iterator[dict[str, Any]]:
        version, sha = self._version(product, at)
        env = self._env()
        raw_env = self.rng.choice(RAW_ENV[env])
        invoke = f"{self.rng.getrandbits(64):016x}"
        rollback = self.rng.random() < 0.02
        summary = f"{'rollback' if rollback else 'deploy'} {product} {version} to {env}"
        meta = {"region": self.rng.choice(REGIONS), "pipeline": "release"}
        if rollback:
            meta["deployment_type"] = "rollback"
        x, acc = self.rng.random(), 0.0
        status_raw, status = RESULTS[-1][:2]
        for raw, norm, share in RESULTS:
            acc += share
            if x < acc:
                status_raw, status = raw, norm
                break
        dep_id = len(self.deployments) + 1
        metadata = orjson.dumps(meta).decode()
        change = f"CHG{self.rng.randrange(10**7):07d}" if env == "production" and self.rng.random() < 0.5 else None
        shared = dict(kind="deployment", environment=env, environment_raw=raw_env, invoke_id=invoke,
                      summary=summary, metadata=metadata, change_id=change, deployment_id=dep_id,
                      build_url=f"https://ci.example.com/job/{product}-deploy/{dep_id}/")
        first = self._row(**self._common(product, version, sha, at), status="started", status_raw="started",
                          client_key=f"versioner:deployment:{product}:{raw_env}:{invoke}:started", **shared)
        last = self._row(**self._common(product, version, sha, done_at), status=status, status_raw=status_raw,
                         client_key=f"versioner:deployment:{product}:{raw_env}:{invoke}:{status}", **shared)
        self.deployments.append((dep_id, product, env, version, invoke, status, at, done_at, at, done_at, sha,
                                 first["actor"], change, event_label(first["metadata"], first["summary"]), 2))
        yield first
        yield last


def generate(path: Path, n: int, days: int, products: int, seed: int) -> dict[str, Any]:
    conn = dbmod.open_migrated(path)
    if conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]:
        raise SystemExit(f"{path} already has events; give a new file")
    started = time.monotonic()
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA cache_size=-262144")
    conn.execute("BEGIN")
    token_id = conn.execute(
        "INSERT INTO tokens (name, secret_hash, scopes, created_at) VALUES (?, ?, 'ingest', ?)",
        (f"gen-{os.getpid()}-{time.time_ns()}", hash_secret(new_secret()), now_us())).lastrowid
    gen = Generator(n, days, products, int(token_id or 0), seed)
    chunk: list[list[Any]] = []
    for row in gen.rows():
        chunk.append([row[c] for c in EVENT_COLUMNS[1:]])
        if len(chunk) >= CHUNK:
            conn.executemany(_INSERT_EVENT, chunk)
            chunk.clear()
            print(f"\r{gen.count:,} events", end="", file=sys.stderr, flush=True)
    conn.executemany(_INSERT_EVENT, chunk)
    conn.executemany(
        "INSERT INTO deployments (id, product, environment, version, invoke_id, status, first_at, last_at, "
        "started_at, finished_at, scm_sha, actor, change_id, label, event_count) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", gen.deployments)
    conn.executemany("INSERT INTO versions (product, version, scm_sha, created_at) VALUES (?, ?, ?, ?)",
                     [(p, v, sha, at) for (p, v), (sha, at) in gen.versions.items()])
    conn.executemany("INSERT INTO products (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                     [(p, gen.start) for p in gen.products])
    conn.executemany("INSERT INTO environments (name, created_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
                     [(e, gen.start) for e, _ in ENVIRONMENTS])
    conn.execute("COMMIT")
    # No ANALYZE: a server's own database has no planner statistics either, so the read figures are honest.
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    print(file=sys.stderr)
    return {"events": gen.count, "deployments": len(gen.deployments), "versions": len(gen.versions),
            "seconds": time.monotonic() - started, "bytes": path.stat().st_size}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", type=Path, help="database file to create (must hold no events)")
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=365, help="history spread over this many days")
    parser.add_argument("--products", type=int, default=60)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    if not 1 <= args.events <= 10_000_000:
        raise SystemExit("--events must be between 1 and 10,000,000")
    out = generate(args.db, args.events, args.days, args.products, args.seed)
    print(f"{out['events']:,} events, {out['deployments']:,} deployments, {out['versions']:,} versions "
          f"in {out['seconds']:.0f} s; {args.db}: {out['bytes']:,} bytes = {out['bytes'] / out['events']:.0f} "
          f"bytes per event")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
