"""A metrics round in a process of its own, so its Python never holds the server's interpreter.

The server hands a large round (a first build of derived data, a big backlog, months of snapshots)
to a child: `deploytrack metrics worker`, the same executable. The child reads on a connection of
its own (a snapshot, beside the writer) and computes; each write it needs goes back to the server,
which runs it through its single writer like any request's. So the child never takes the write
lock, and ingestion keeps its latency while the child computes on the other core.

The two talk over the child's stdin and stdout in length-prefixed pickles (both ends are this
program): the server sends `(fn, args, settings)`; the child sends `("write", (fn, args))` and gets
`("ok", result)` or `("raise", message)` back, and ends with `("done", result)`, `("raise", message)` or
`("busy", message)` (refresh.Busy: another process is making the first build).
`fn` is a refresh-style function `fn(read, write, settings, *args)` (refresh.refresh, scheduler.run_due).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import signal
import struct
import sys
from collections.abc import Callable
from typing import IO, Any

from deploytrack.metrics.refresh import Busy, background_priority, paced
from deploytrack.settings import Settings
from deploytrack.storage.database import Database, on_connection, open_settings

log = logging.getLogger("deploytrack.metrics")
_HEADER = struct.Struct(">Q")
# After each write the child rests this many times as long as the write took (at most _MAX_REST): the
# server's writer spends at most a quarter of its time on the round's writes, the rest on requests.
_REST_FACTOR = 3
_MAX_REST = 1.0  # seconds


class WorkerFailed(RuntimeError):
    """The child's round failed (or the child died); the message says how."""


def command() -> list[str]:
    """How to start the child: the one-file executable runs itself, otherwise this interpreter."""
    if getattr(sys, "frozen", False):
        return [sys.executable, "metrics", "worker"]
    return [sys.executable, "-m", "deploytrack", "metrics", "worker"]


class Worker:
    """One child process running one round; `terminate()` asks it to stop (it gives its days back)."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._proc: asyncio.subprocess.Process | None = None
        self._stopping = False

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(read, write, settings, *args)` in a child, serving its writes; its result."""
        if self._stopping:
            raise WorkerFailed("the server is stopping")
        await self.db.barrier()  # the child reads the file itself: every event acknowledged so far in its tables
        proc = await asyncio.create_subprocess_exec(*command(), stdin=asyncio.subprocess.PIPE,
                                                    stdout=asyncio.subprocess.PIPE)
        self._proc = proc
        assert proc.stdin is not None and proc.stdout is not None
        log.info("metrics round %s in process %d", fn.__name__, proc.pid)
        try:
            proc.stdin.write(_frame((fn, args, self.settings)))
            while True:
                message = await _receive(proc.stdout)
                if message is None:
                    raise WorkerFailed(f"the metrics process exited with status {await proc.wait()}")
                kind, payload = message
                if kind == "write":
                    proc.stdin.write(_frame(await self._write(*payload)))
                    await proc.stdin.drain()
                elif kind == "done":
                    return payload
                elif kind == "busy":
                    raise Busy(payload)
                else:
                    raise WorkerFailed(str(payload))
        finally:
            if proc.returncode is None:
                proc.stdin.close()
                await _reap(proc)
            self._proc = None

    async def _write(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> tuple[str, Any]:
        try:
            return "ok", await self.db.write(fn, *args)
        except Exception as exc:  # noqa: BLE001 - the child decides (a failed round gives its days back)
            return "raise", f"{type(exc).__name__}: {exc}"

    def terminate(self) -> None:
        """Ask the child to stop, and start no other; `run` keeps serving its last writes until it has."""
        self._stopping = True
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()


async def _reap(proc: asyncio.subprocess.Process, grace: float = 10.0) -> None:
    try:
        await asyncio.wait_for(proc.wait(), grace)
    except TimeoutError:
        proc.kill()
        await proc.wait()


def _frame(message: Any) -> bytes:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


async def _receive(stream: asyncio.StreamReader) -> Any:
    try:
        size = _HEADER.unpack(await stream.readexactly(_HEADER.size))[0]
        return pickle.loads(await stream.readexactly(size))  # noqa: S301 - our own child, on its own pipe
    except asyncio.IncompleteReadError:
        return None


# -- the child ------------------------------------------------------------------------------------


def _read_message(stream: IO[bytes]) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise WorkerFailed("the server went away")
    return pickle.loads(stream.read(_HEADER.unpack(header)[0]))  # noqa: S301 - from the server that started us


class _StopRequest:
    """SIGTERM asks the round to stop at its next read or write, never inside one: a write whose
    reply is lost would leave the server's state and the round's out of step (days claimed, say,
    but never given back)."""

    def __init__(self) -> None:
        self.signum = 0

    def __call__(self, signum: int, frame: object) -> None:
        self.signum = signum

    def check(self) -> None:
        """Raise once per request (the round's clean-up writes then go through)."""
        if self.signum:
            signum, self.signum = self.signum, 0
            raise SystemExit(f"stopped by signal {signum}")


def main() -> int:
    """The child's side: read the round from stdin, run it, send writes and the result on stdout."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # nothing but the protocol on stdout
    stop = _StopRequest()
    signal.signal(signal.SIGTERM, stop)
    background_priority()  # the server's requests first; the round takes what is left

    def send(message: Any) -> None:
        out.write(_frame(message))
        out.flush()

    def send_write(fn: Callable[..., Any], *args: Any) -> Any:
        stop.check()
        send(("write", (fn, args)))
        return _read_message(inp)

    def write(fn: Callable[..., Any], *args: Any) -> Any:
        kind, payload = paced_write(fn, *args)
        if kind != "ok":
            raise WorkerFailed(payload)
        return payload

    paced_write = paced(send_write, _REST_FACTOR, _MAX_REST)

    try:
        fn, args, settings = _read_message(inp)
    except WorkerFailed:
        print("deploytrack: metrics worker: no round on stdin (it is started by the server)", file=sys.stderr)
        return 2
    conn = open_settings(settings, migrate=False, readonly=True)
    read_snapshot, _ = on_connection(conn)

    def read(fn: Callable[..., Any], *args: Any) -> Any:
        stop.check()
        return read_snapshot(fn, *args)

    try:
        result = fn(read, write, settings, *args)
    except Busy as exc:
        send(("busy", str(exc)))
        return 1
    except BaseException as exc:  # noqa: BLE001 - reported to the server, which logs it
        send(("raise", f"{type(exc).__name__}: {exc}"))
        return 1
    finally:
        conn.close()
    send(("done", result))
    return 0
