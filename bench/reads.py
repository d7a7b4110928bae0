"""Read benchmark: the event list (JSON and HTML) on a big database, first, deep and middle pages,
and the first page of the deployments list with each filter.

    python -m bench.gen_events /tmp/bench-1m.db          # once: 1,000,000 events
    python -m bench.reads /tmp/bench-1m.db [--repeat 15] [--depth 200]

Starts a real `deploytrack serve` on the file, makes a read token, signs in for the HTML pages,
and times each request from one keep-alive client (median and p95 of --repeat runs). Then loads
the server with wrk (32 connections, a mix of the same pages) and reports its RSS.
"""

from __future__ import annotations

import argparse
import http.client
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import orjson

from bench import servers, wrk

TARGET_MS = 30.0
TARGET_RSS_MB = 150.0


class Client:
    """One keep-alive HTTP/1.1 connection to the server, with a Bearer token or a session cookie."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers: dict[str, str] = {}

    def get(self, path: str) -> tuple[int, bytes, float]:
        for attempt in (1, 2):
            started = time.perf_counter()
            try:
                self.conn.request("GET", path, headers=self.headers)
                resp = self.conn.getresponse()
                body = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection; the second attempt reconnects.
                self.conn.close()
                if attempt == 2:
                    raise
                continue
            return resp.status, body, (time.perf_counter() - started) * 1000
        raise AssertionError("unreachable")

    def sign_in(self, secret: str) -> None:
        """The UI's own sign-in form: CSRF cookie from GET /signin, then POST it with the token."""
        self.conn.request("GET", "/signin")
        resp = self.conn.getresponse()
        resp.read()
        csrf = _cookie(resp.getheader("set-cookie") or "", "dt_csrf")
        form = urlencode({"csrf": csrf, "token": secret, "next": "/"})
        self.conn.request("POST", "/signin", body=form, headers={
            "Content-Type": "application/x-www-form-urlencoded", "Cookie": f"dt_csrf={csrf}"})
        resp = self.conn.getresponse()
        resp.read()
        session = _cookie(resp.getheader("set-cookie") or "", "dt_session")
        if resp.status != 303 or not session:
            raise RuntimeError(f"sign-in failed: {resp.status}")
        self.headers = {"Cookie": f"dt_csrf={csrf}; dt_session={session}", "Accept": "text/html"}


def _cookie(header: str, name: str) -> str:
    for part in header.replace(",", ";").split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return ""


def timed(client: Client, path: str, repeat: int) -> tuple[float, float, int]:
    """(median ms, p95 ms, bytes) of `repeat` GETs of `path` after one warm-up."""
    status, body, _ = client.get(path)
    if status != 200:
        raise RuntimeError(f"GET {path}: {status} {body[:300]!r}")
    times = sorted(client.get(path)[2] for _ in range(repeat))
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))], len(body)


def middle_cursor(db: Path) -> tuple[str, int, str]:
    """A cursor half-way down the newest-first list, the event count, and the newest event's product."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        total = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        occurred, seq = conn.execute("SELECT occurred_at, seq FROM events ORDER BY occurred_at DESC, seq DESC "
                                     "LIMIT 1 OFFSET ?", (total // 2,)).fetchone()
        product = conn.execute("SELECT product FROM events ORDER BY seq DESC LIMIT 1").fetchone()[0]
    return f"{occurred}.{seq}", total, product


def follow(client: Client, depth: int) -> tuple[str, list[float]]:
    """Walk `depth` pages of the JSON list through next_cursor; return the last cursor and page times."""
    cursor, times = "", []
    for _ in range(depth):
        status, body, ms = client.get("/api/v1/events" + (f"?cursor={cursor}" if cursor else ""))
        if status != 200:
            raise RuntimeError(f"page {len(times)}: {status}")
        times.append(ms)
        cursor = orjson.loads(body)["next_cursor"]
        if not cursor:
            break
    return cursor, times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("db", type=Path, help="a database made by bench.gen_events")
    parser.add_argument("--repeat", type=int, default=15, help="timed GETs per case (after one warm-up)")
    parser.add_argument("--depth", type=int, default=200, help="pages to follow through next_cursor")
    parser.add_argument("--load-seconds", type=int, default=5, help="wrk read load for the RSS figure")
    parser.add_argument("--source", type=Path, help="run deploytrack from this checkout (default: this one)")
    args = parser.parse_args()
    servers.use_source(args.source)
    if not (1 <= args.repeat <= 200 and 1 <= args.depth <= 1000 and 1 <= args.load_seconds <= 30):
        raise SystemExit("bounded runs only: --repeat <= 200, --depth <= 1000, --load-seconds <= 30")
    if not args.db.exists():
        raise SystemExit(f"{args.db} does not exist; make it with python -m bench.gen_events {args.db}")
    mid, total, product = middle_cursor(args.db)
    secret = servers.create_token(args.db, f"bench-read-{time.time_ns()}", "read")
    filters = {"no filter": {}, "product": {"product": product}, "environment": {"environment": "production"},
               "status": {"status": "failed"}, "kind": {"kind": "build"}, "q": {"q": "rollback"},
               "product+env+status": {"product": product, "environment": "production", "status": "completed"}}
    results: list[tuple[str, float, float, int]] = []
    with servers.deploytrack(args.db) as server:
        idle_rss = server.rss_kb() / 1024
        api, ui = Client(server.port), Client(server.port)
        api.headers = {"Authorization": f"Bearer {secret}"}
        ui.sign_in(secret)
        deep, page_times = follow(api, args.depth)
        for label, client, base in (("JSON", api, "/api/v1/events"), ("HTML", ui, "/events")):
            for name, flt in filters.items():
                for where, cursor in (("first page", None), ("middle", mid)):
                    query = urlencode({**flt, **({"cursor": cursor} if cursor else {})})
                    path = base + ("?" + query if query else "")
                    med, p95, size = timed(client, path, args.repeat)
                    results.append((f"{label} {where:10} {name}", med, p95, size))
                    print(f"{label} {where:10} {name:20} median {med:7.2f} ms  p95 {p95:7.2f} ms  {size:7} B",
                          flush=True)
            if deep:
                query = "?" + urlencode({"cursor": deep})
                med, p95, size = timed(client, base + query, args.repeat)
                results.append((f"{label} page {len(page_times) + 1} no filter", med, p95, size))
                print(f"{label} page {len(page_times) + 1:<5} no filter            median {med:7.2f} ms  "
                      f"p95 {p95:7.2f} ms  {size:7} B", flush=True)
        # The deployments list (newest first) through the indexes the ingestion path keeps up.
        for name, flt in {"no filter": {}, "product": {"product": product}, "environment": {"environment": "staging"},
                          "label": {"label": "rollback"}, "status": {"status": "failed"},
                          "product+env": {"product": product, "environment": "production"}}.items():
            path = "/api/v1/deployments" + ("?" + urlencode(flt) if flt else "")
            med, p95, size = timed(api, path, args.repeat)
            results.append((f"deployments {name}", med, p95, size))
            print(f"JSON deployments {name:20} median {med:7.2f} ms  p95 {p95:7.2f} ms  {size:7} B", flush=True)
        with tempfile.NamedTemporaryFile("w", suffix=".txt") as paths:
            for flt in filters.values():
                for cursor in (None, mid, deep):
                    query = urlencode({**flt, **({"cursor": cursor} if cursor else {})})
                    paths.write("/api/v1/events" + ("?" + query if query else "") + "\n")
            paths.flush()
            load = wrk.run(server.url, args.load_seconds, 32, 1, script="get_paths.lua",
                           env={"BENCH_TOKEN": secret, "BENCH_PATHS": paths.name})
        load_rss, peak_rss = server.rss_kb() / 1024, server.peak_rss_kb() / 1024
    # After the server stopped (its migrations may have added indexes), with the WAL folded in.
    with sqlite3.connect(args.db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db_bytes = args.db.stat().st_size
    worst = max(results, key=lambda r: r[1])
    print(f"\n{total:,} events; database {db_bytes:,} bytes = {db_bytes / total:.0f} bytes per event")
    print(f"following next_cursor {len(page_times)} pages: median {statistics.median(page_times):.2f} ms, "
          f"slowest {max(page_times):.2f} ms, last {page_times[-1]:.2f} ms")
    missed = [r for r in results if r[1] >= TARGET_MS]
    print(f"{len(results)} cases, slowest median: {worst[0]} {worst[1]:.2f} ms (target < {TARGET_MS:g} ms): "
          f"{'OK' if not missed else f'MISSED in {len(missed)} cases: ' + ', '.join(r[0] for r in missed)}")
    print(f"read load, wrk 32 connections {args.load_seconds} s: {load.rps:.0f} requests/s, p50 {load.p50_ms:.1f} ms, "
          f"p99 {load.p99_ms:.1f} ms, non-2xx {load.non2xx}")
    print(f"server RSS: idle {idle_rss:.0f} MB, after load {load_rss:.0f} MB, peak {peak_rss:.0f} MB "
          f"(target < {TARGET_RSS_MB:g} MB) {'OK' if peak_rss < TARGET_RSS_MB else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
