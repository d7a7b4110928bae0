"""The ceiling for ingestion: Starlette on uvicorn that parses the posted JSON with orjson and answers.

No auth, no validation, no database. Run with the uvicorn settings `deploytrack serve` uses.
"""

from __future__ import annotations

import argparse

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def ingest(request: Request) -> Response:
    data = orjson.loads(await request.body())
    items = data["events"] if isinstance(data, dict) and "events" in data else [data]
    body = {"ok": True, "count": len(items)}
    return Response(orjson.dumps(body), status_code=200, media_type="application/json")


async def healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(routes=[
    Route("/deployment-events/", ingest, methods=["POST"]),
    Route("/events", ingest, methods=["POST"]),
    Route("/healthz", healthz, methods=["GET"]),
])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    # The same keyword arguments as deploytrack.cli.cmd_serve (log level as the benchmark starts it).
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=10, server_header=False)


if __name__ == "__main__":
    main()
