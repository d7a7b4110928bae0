"""A small, bounded load generator for fault tests: client threads posting events to a LiveServer.

Each thread keeps one HTTP/1.1 connection (stdlib http.client) and records, for every answer, the
status, the time it arrived and the stored event ids it acknowledged.
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

# (method, path, headers, body) for the n-th request of thread t
RequestFactory = Callable[[int, int], tuple[str, str, dict[str, str], bytes]]


@dataclass
class Answer:
    status: int
    at: float
    ids: list[str]
    body: bytes


@dataclass
class Load:
    url: str
    make_request: RequestFactory
    threads: int = 4
    max_requests: int = 5000  # per thread: a bound even if the server never goes away
    answers: list[Answer] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for t in range(self.threads):
            worker = threading.Thread(target=self._run, args=(t,), daemon=True)
            worker.start()
            self._workers.append(worker)
        return self

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.1, deadline - time.monotonic()))
        assert not any(w.is_alive() for w in self._workers), "load threads did not finish"

    def join(self, timeout: float = 30) -> None:
        """Wait for the threads to end by themselves (the server went away)."""
        deadline = time.monotonic() + timeout
        for worker in self._workers:
            worker.join(max(0.1, deadline - time.monotonic()))
        self.stop()

    @property
    def acked_ids(self) -> set[str]:
        return {i for a in self.answers if 200 <= a.status < 300 for i in a.ids}

    def statuses(self) -> set[int]:
        return {a.status for a in self.answers}

    def _run(self, t: int) -> None:
        parts = urlsplit(self.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        try:
            for n in itertools.count():
                if self._stop.is_set() or n >= self.max_requests:
                    return
                method, path, headers, body = self.make_request(t, n)
                try:
                    conn.request(method, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    status = resp.status
                    closing = resp.getheader("connection", "").lower() == "close"
                except (OSError, http.client.HTTPException) as exc:
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                    return  # the server is gone (killed or shutting down)
                answer = Answer(status, time.monotonic(), _ids(data) if 200 <= status < 300 else [], data)
                with self._lock:
                    self.answers.append(answer)
                if closing:
                    conn.close()
                    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        finally:
            conn.close()


def _ids(body: bytes) -> list[str]:
    """Event ids in any dialect's success body (a single object with `id`, or lists of them)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return []
    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, dict):
            if isinstance(value.get("id"), str):
                found.append(value["id"])
            for key in ("events", "data", "success"):
                if key in value:
                    walk(value[key])
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(data)
    return found
