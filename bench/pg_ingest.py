"""Ingestion throughput on PostgreSQL with one and with two server processes, beside SQLite.

    python bench/pg_ingest.py [--requests 3000] [--concurrency 32] [--time-limit 60]

Starts a throwaway PostgreSQL cluster on 127.0.0.1 (durable settings: fsync on, like production;
tests/pg_cluster.py), then sends the same load - N Versioner deployment events over C keep-alive
connections from an asyncio client - to:
  1. one server on a SQLite file (the baseline, measured in the same run),
  2. one server on PostgreSQL,
  3. two servers on one PostgreSQL database (the load split evenly between them).
Prints requests/s, p50/p99 latency, the ratio to the SQLite figure, and checks that every
acknowledged event is stored. Bounded: N requests per scenario, at most --time-limit seconds each.
Only 127.0.0.1 is contacted. Needs Debian's postgresql package.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from deploytrack.storage import database as dbmod  # noqa: E402
from tests.pg_cluster import Cluster, _free_port  # noqa: E402


class Server:
    def __init__(self, db: str, workdir: Path) -> None:
        self.db = db
        self.port = _free_port()
        self.log = workdir / f"server-{self.port}.log"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "deploytrack", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--db", db, "--no-scheduler", "--log-level", "warning"],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(workdir))

    async def wait(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text())
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
                writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                status = await reader.readline()
                writer.close()
                if b" 200 " in status:
                    return
            except OSError:
                pass
            await asyncio.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


async def _connection(port: int, token: str, jobs: asyncio.Queue[int], latencies: list[float],
                      deadline: float, errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.monotonic() < deadline:
            try:
                n = jobs.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = orjson.dumps({"product_name": f"svc-{n % 20}", "version": f"1.0.{n}",
                                 "environment_name": "production", "status": "success", "deployed_by": "bench"})
            head = (f"POST /deployment-events/ HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
            started = time.perf_counter()
            writer.write(head + body)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            latencies.append(time.perf_counter() - started)
            if b" 200 " not in status:
                errors.append(status.decode().strip())
    finally:
        writer.close()


async def load(ports: list[int], token: str, requests: int, concurrency: int,
               time_limit: float) -> tuple[int, float, list[float], list[str]]:
    """Send `requests` events over `concurrency` connections spread evenly over `ports`."""
    jobs: asyncio.Queue[int] = asyncio.Queue()
    for n in range(requests):
        jobs.put_nowait(n)
    latencies: list[float] = []
    errors: list[str] = []
    deadline = time.monotonic() + time_limit
    started = time.perf_counter()
    await asyncio.gather(*(_connection(ports[i % len(ports)], token, jobs, latencies, deadline, errors)
                           for i in range(concurrency)))
    return len(latencies), time.perf_counter() - started, latencies, errors


def make_token(db: str) -> str:
    out = subprocess.run([sys.executable, "-m", "deploytrack", "token", "create", "bench", "--scope", "ingest",
                          "--db", db, "--secret-only"], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    return out.stdout.strip()


def stored(db: str) -> int:
    conn = dbmod.connect(db)
    try:
        return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    finally:
        conn.close()


async def scenario(name: str, db: str, processes: int, workdir: Path, args: argparse.Namespace) -> float:
    token = make_token(db)
    servers = [Server(db, workdir) for _ in range(processes)]
    try:
        await asyncio.gather(*(s.wait() for s in servers))
        await load([s.port for s in servers], token, min(200, args.requests), args.concurrency, 30)  # warm-up
        before = await asyncio.to_thread(stored, db)
        done, seconds, lat, errors = await load([s.port for s in servers], token, args.requests,
                                                args.concurrency, args.time_limit)
    finally:
        for s in servers:
            s.stop()
    acked = done - len(errors)
    missing = before + acked - await asyncio.to_thread(stored, db)
    rate = done / seconds
    lat.sort()
    print(f"{name:34} {rate:8.0f} req/s   p50 {statistics.median(lat) * 1000:6.1f} ms   "
          f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:6.1f} ms   {done} requests, {len(errors)} errors, "
          f"{missing} acknowledged but not stored", flush=True)
    if errors:
        print(f"    first errors: {errors[:3]}")
    return rate


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--time-limit", type=float, default=60, help="seconds per scenario at most")
    args = parser.parse_args()
    print(f"{args.requests} Versioner deployment events per scenario over {args.concurrency} keep-alive "
          f"connections; {os.cpu_count()} cores shared by client, servers and database", flush=True)
    cluster = Cluster(durable=True).start()
    try:
        with tempfile.TemporaryDirectory(prefix="deploytrack-bench-") as tmp:
            workdir = Path(tmp)
            base = await scenario("SQLite, 1 process (baseline)", str(workdir / "bench.db"), 1, workdir, args)
            one = await scenario("PostgreSQL, 1 process", cluster.new_database(), 1, workdir, args)
            two = await scenario("PostgreSQL, 2 processes, one database", cluster.new_database(), 2, workdir, args)
    finally:
        cluster.stop()
    print(f"ratio to SQLite: PostgreSQL 1 process {one / base:.2f}x, 2 processes {two / base:.2f}x; "
          f"2 processes vs 1 on PostgreSQL {two / one:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
