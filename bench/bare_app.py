"""The ceilings for ingestion: Starlette on uvicorn that parses the posted JSON with orjson and answers.

Bare: no auth, no validation, no database. With `--durable DB` (the "durable floor"), each posted
event is also stored as one row of an index-free table through deploytrack's own `Database` (the same
writer thread, group commit, WAL and synchronous=FULL), and the answer waits for the COMMIT: the
least any durable ingestion on this stack can cost. Run with the uvicorn settings `deploytrack serve` uses.
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from deploytrack.storage.database import Database

DB: Database | None = None


def _store(conn: sqlite3.Connection, rows: list[tuple[str]]) -> None:
    conn.executemany("INSERT INTO bench_floor (body) VALUES (?)", rows)


async def ingest(request: Request) -> Response:
    data = orjson.loads(await request.body())
    items = data["events"] if isinstance(data, dict) and "events" in data else [data]
    if DB is not None:
        await DB.write(_store, [(orjson.dumps(item).decode(),) for item in items])
    body = {"ok": True, "count": len(items)}
    return Response(orjson.dumps(body), status_code=200, media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


@contextlib.asynccontextmanager
async def lifespan(_: Starlette) -> AsyncIterator[None]:
    if DB is not None:
        await DB.open()
        await DB.write(lambda conn: conn.execute(
            "CREATE TABLE IF NOT EXISTS bench_floor (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)"))
    try:
        yield
    finally:
        if DB is not None:
            await DB.close()


app = Starlette(lifespan=lifespan, routes=[
    Route("/deployment-events/", ingest, methods=["POST"]),
    Route("/events", ingest, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--durable", type=Path, help="store each event durably in this SQLite file")
    args = parser.parse_args()
    global DB
    DB = Database(args.durable) if args.durable else None
    # The same keyword arguments as deploytrack.cli.cmd_serve (log level as the benchmark starts it).
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False, loop="asyncio",
                timeout_graceful_shutdown=10, server_header=False)


if __name__ == "__main__":
    main()
