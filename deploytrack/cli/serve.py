"""`deploytrack serve`: bind, check the database, and run the app on uvicorn (its only caller)."""

from __future__ import annotations

import gc
import logging
import signal
import socket
import sys

import uvicorn

from deploytrack import __version__
from deploytrack.app import create_app
from deploytrack.cli.dbfile import Refusal, check_database
from deploytrack.settings import Settings
from deploytrack.storage import postgres as pg
from deploytrack.web.connections import ConnectionLimits, protocol_class

# Objects before the cyclic collector looks at the young ones (CPython's default is 700). A request makes
# and frees thousands, nearly all by reference counting; at 700 the collector ran ~70 times a second
# under load (bench/RESULTS.md).
GC_THRESHOLD = 7000


def quiet_collector() -> None:
    """Take what the process made before serving (modules, the app, its routes) out of the cyclic
    collector's passes: under load a full pass walked it all every second or two, 15-40 ms each with the
    GIL held, while every request waited. Its later objects are collected as before."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])


def run(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; refuse (one line, exit 2) a port or database that cannot be used."""
    logging.addLevelName(5, "TRACE")  # uvicorn's, below DEBUG: it registers it only once it starts
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)-9s %(name)s: %(message)s")
    # Both checks come before uvicorn: a port in use or a database that cannot be used is one line
    # and exit code 2 within a second, not a traceback from the lifespan.
    listener = bind_listener(settings.host, settings.port)
    check_database(settings, create=True)
    app = create_app(settings)
    # uvicorn drains requests and runs the lifespan shutdown on SIGTERM/SIGINT, then re-raises the
    # signal; ending there with status 0 tells systemd and scripts the stop was clean.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    where = f"http://{settings.host}:{settings.port}/"
    print(f"deploytrack {__version__} serving {where} (database {pg.redact(settings.db)})",
          file=sys.stderr, flush=True)
    limits = ConnectionLimits(max_header_bytes=settings.max_header_bytes, max_headers=settings.max_headers,
                              header_timeout=settings.header_timeout, min_body_rate=settings.min_body_rate,
                              body_grace=settings.body_grace)
    # httptools parses HTTP (a dependency; `protocol_class` adds header and slow-client limits to
    # uvicorn's protocol for it); the event loop stays asyncio's: uvloop holds the GIL through its
    # socket calls, and the database writer thread then waits longer for it after each SQLite call
    # (writer busy 630 -> 400 us per request with asyncio, bench/RESULTS.md).
    config = uvicorn.Config(app, log_level=settings.log_level, loop="asyncio",
                            http=protocol_class(limits, app.refusal_body), ws="none",
                            access_log=settings.log_level == "debug", server_header=False,
                            timeout_keep_alive=settings.keep_alive_timeout,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS)
    server = uvicorn.Server(config)
    quiet_collector()
    server.run(sockets=[listener])
    return 0 if server.started else 1


# Requests in flight get this long to finish on SIGTERM/SIGINT; with the lifespan's shutdown the
# server is gone within 5 s.
GRACEFUL_SHUTDOWN_SECONDS = 3


def bind_listener(host: str, port: int) -> socket.socket:
    """A listening socket on host:port, or a one-line refusal (a port in use, an unknown address)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
            sock.listen(2048)
        except OSError:
            sock.close()
            raise
    except OSError as exc:
        raise Refusal(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)
