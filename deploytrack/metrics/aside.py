"""A large round's reads planned in a process of their own, one step ahead of its writes.

A first build plans in pure Python (the rules per event and per deployment) about as long as it
writes, and one interpreter runs one of the two at a time: a thread of its own only trades the
interpreter's lock back and forth. So a large round hands its plan reads to a child process (a
fresh interpreter, spawned: it inherits no connection, lock or thread) with a snapshot connection
of its own, the database of `settings`; while the round writes one plan the child computes the
next on the other core and sends it back pickled. When the child is behind, the round plans one
itself rather than wait, so the two cores share the planning and each plan is written as it comes.

Each call is `read(fn, *args)` as the round would run it itself: a snapshot of its own, taken when
it starts. The round asks only for plans that its pending writes cannot change (other products'
refolds, other product/environments' facts), in any order: they are independent of each other.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import queue
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from multiprocessing.connection import Connection as Pipe
from types import TracebackType
from typing import Any

from deploytrack.metrics import gcpause
from deploytrack.settings import Settings
from deploytrack.storage import failures
from deploytrack.storage.database import on_connection, open_settings

Call = tuple[Callable[..., Any], tuple[Any, ...]]  # fn(conn, *args), as for `read`
_CONTEXT = multiprocessing.get_context("spawn")
_AHEAD = 3  # calls the child holds: it starts the next as soon as it has sent a result
_GONE = b""  # (the inbox's end: the child exited or the pipe closed)


class AsideFailed(RuntimeError):
    """A read in the child failed (or the child died); the message says how."""


class AsideDatabaseError(AsideFailed):
    """The child's database refused a read (or its connection): reported as any database error is."""


class Aside:
    """One child process serving reads; close it (`with`) when the round ends."""

    def __init__(self, settings: Settings, read: Callable[..., Any]) -> None:
        self._read = read
        self.served = 0  # results the child sent
        self._pipe, theirs = _CONTEXT.Pipe()
        self._proc = _CONTEXT.Process(target=_serve, args=(theirs, settings), name="deploytrack-plans", daemon=True)
        self._proc.start()
        theirs.close()
        # Results are read off the pipe as they come, by a thread (the bytes only: it waits outside the
        # interpreter's lock), so the child never waits for this process to finish a write before it can
        # send a result and start the next call.
        self._inbox: queue.SimpleQueue[bytes] = queue.SimpleQueue()
        self._drain = threading.Thread(target=self._drain_pipe, name="deploytrack-plans-inbox", daemon=True)
        self._drain.start()

    def _drain_pipe(self) -> None:
        try:
            while True:
                self._inbox.put(self._pipe.recv_bytes())
        except (EOFError, OSError):
            self._inbox.put(_GONE)

    def map(self, calls: Iterable[Call], idle: Callable[[], bool] | None = None, ahead: int = _AHEAD
            ) -> Iterator[Any]:
        """The result of each call, in no particular order. The child takes calls from the front, holding
        `ahead` at most (fewer: less to wait for at the end); when it has no result ready, this process does
        a step of `idle` (other work of the round, while it has some: it returns False once it has none) or
        else runs a call from the back itself rather than wait."""
        todo = deque(calls)
        asked = 0
        while todo and asked < ahead:
            self._send(todo.popleft())
            asked += 1
        while asked or todo:
            if asked and self._inbox.empty() and idle is not None:
                if idle():
                    continue
                idle = None
            if not asked or (todo and self._inbox.empty()):
                fn, args = todo.pop()
                yield self._read(fn, *args)
                continue
            kind, payload = self._receive()
            asked -= 1
            if todo:
                self._send(todo.popleft())
                asked += 1
            if kind == "database":
                raise AsideDatabaseError(payload)
            if kind != "ok":
                raise AsideFailed(payload)
            self.served += 1
            yield payload

    def _receive(self) -> tuple[str, Any]:
        body = self._inbox.get()
        if body is _GONE:
            self._inbox.put(_GONE)
            self._proc.join(1)
            raise AsideFailed(f"the planning process exited with status {self._proc.exitcode}")
        with gcpause.paused():  # (a million small objects: the collector would walk them again and again)
            message: tuple[str, Any] = pickle.loads(body)  # noqa: S301 - our own child, on its own pipe
        return message

    def _send(self, call: Call | None) -> None:
        with contextlib.suppress(OSError):  # it has gone: the next answer says why
            self._pipe.send(call)

    def close(self) -> None:
        self._send(None)
        self._proc.join(5)
        if self._proc.is_alive():  # busy with a call nobody will read
            self._proc.terminate()
            self._proc.join()
        self._drain.join()  # (the child has gone: the pipe is at its end)
        self._pipe.close()

    def __enter__(self) -> Aside:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


class Inline:
    """The same interface for a small round: each call read here, when it is asked for."""

    served = 0  # (no child)

    def __init__(self, read: Callable[..., Any]) -> None:
        self._read = read

    def map(self, calls: Iterable[Call], idle: Callable[[], bool] | None = None, ahead: int = _AHEAD
            ) -> Iterator[Any]:
        """(None is ahead: each is read when it is asked for; `idle` is not called: the caller does its other
        work afterwards.)"""
        return (self._read(fn, *args) for fn, args in calls)

    def __enter__(self) -> Inline:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        pass


def _serve(pipe: Pipe, settings: Settings) -> None:
    """The child: run each call on a snapshot and send its result, until told to stop or the parent goes."""
    # In the server's metrics worker, stdout (fd 1) is the channel to the server: the child must neither
    # write to it nor hold it open, or a worker that dies would not be seen to end until the child does.
    sys.stdout = sys.stderr
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    with contextlib.suppress(KeyboardInterrupt, OSError, EOFError):  # the parent stopped or went away
        try:
            conn = open_settings(settings, migrate=False, readonly=True)
        except Exception as exc:  # noqa: BLE001 - the round's first read raises it
            pipe.send(_failure(exc))
            return
        read, _ = on_connection(conn)
        try:
            while (call := pipe.recv()) is not None:
                fn, args = call
                try:
                    result = ("ok", read(fn, *args))
                except Exception as exc:  # noqa: BLE001 - reported to the round, which raises it
                    result = _failure(exc)
                pipe.send(result)
        finally:
            conn.close()


def _failure(exc: Exception) -> tuple[str, str]:
    return ("database" if isinstance(exc, failures.DATABASE_ERRORS) else "raise", f"{type(exc).__name__}: {exc}")
