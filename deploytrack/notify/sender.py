"""The notifier: an App.background job that queues new notifications and posts due ones.

Posting is plain asyncio (no threads): a hanging receiver holds only its own task, up to
`notify_timeout`, and never the writer, the request path or the next round. Each round: collect
(one short write), claim due messages (one short write) and start a task per message, which
posts it and records the outcome (one short write).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from urllib.parse import urlsplit

from deploytrack import __version__
from deploytrack.notify import outbox, watch
from deploytrack.settings import Settings
from deploytrack.storage.database import Database
from deploytrack.timeutil import now_us

log = logging.getLogger("deploytrack.notify")
IN_FLIGHT = 20  # messages being posted at once
WARN_EVERY = 60.0  # seconds: at most one failure warning per receiver host in this time; the rest are counted


class Notifier:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self._stopping = False
        self._warned: dict[str, tuple[float, int]] = {}  # host -> (last warning, failures not logged since)

    async def start(self) -> None:
        self._stopping = False
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._loop(), name="deploytrack-notify")

    async def stop(self) -> None:
        """Stop at once; messages being posted stay claimed and are sent again after their lease."""
        self._stopping = True
        tasks = [t for t in (self._task, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task, self._sending = None, set()

    def kick(self) -> None:
        self._wake.set()

    async def tick(self) -> int:
        """One round: queue new notifications, start posting due ones; returns how many were started.

        Each message is posted by a task of its own, so a receiver that hangs delays only its own
        messages (up to `notify_timeout`), never the next round."""
        s = self.settings
        await self.db.write(watch.collect, s, now_us())
        room = IN_FLIGHT - len(self._sending)
        if room <= 0:
            return 0
        lease = int((s.notify_timeout + 5) * 1_000_000)
        due = await self.db.write(outbox.claim, now_us(), lease, room)
        for message in due:
            task = asyncio.create_task(self._deliver(message))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)
        return len(due)

    async def _deliver(self, message: outbox.Message) -> None:
        error = await post(message.url, message.body, self.settings.notify_timeout)
        if error is not None:
            self._warn(message, error)
        try:
            await self.db.write(outbox.settle, [(message, error)], self.settings, now_us())
        except Exception:  # the lease expires and the message is sent again
            log.exception("could not record notification %d", message.id)

    def _warn(self, message: outbox.Message, error: str) -> None:
        """Log a failed post, at most once per host every WARN_EVERY seconds (a dead receiver and a
        thousand queued messages make one line a minute, not one per attempt)."""
        host, clock = _host(message.url), time.monotonic()
        last, quiet = self._warned.get(host, (-WARN_EVERY, 0))
        if clock - last < WARN_EVERY:
            self._warned[host] = (last, quiet + 1)
            return
        self._warned[host] = (clock, 0)
        since = f" ({quiet} more failed posts to this host not logged since the last warning)" if quiet else ""
        log.warning("notification %d to %s failed (attempt %d): %s%s", message.id, host, message.attempts + 1,
                    error, since)

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()  # before the round: a kick or a stop during it ends the wait below at once
            try:
                await self.tick()
            except Exception:  # a failed round is logged and retried next time
                log.exception("notification round failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.settings.notify_interval)


async def post(url: str, body: bytes, timeout: float) -> str | None:
    """POST `body` as JSON; None on a 2xx answer, else what went wrong."""
    try:
        return await asyncio.wait_for(_post(url, body), timeout)
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except (OSError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"


async def _post(url: str, body: bytes) -> str | None:
    parts = urlsplit(url)
    https = parts.scheme == "https"
    host = parts.hostname or ""
    reader, writer = await asyncio.open_connection(host, parts.port or (443 if https else 80),
                                                   ssl=ssl.create_default_context() if https else None)
    try:
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        netloc = host if parts.port is None else f"{host}:{parts.port}"
        writer.write((f"POST {target} HTTP/1.1\r\nHost: {netloc}\r\nContent-Type: application/json\r\n"
                      f"Content-Length: {len(body)}\r\nUser-Agent: deploytrack/{__version__}\r\n"
                      "Connection: close\r\n\r\n").encode() + body)
        await writer.drain()
        status_line = (await reader.readline()).decode("latin-1").split()
        if len(status_line) < 2 or not status_line[1].isdigit():
            return "the receiver did not answer HTTP"
        status = int(status_line[1])
        return None if 200 <= status < 300 else f"HTTP {status}"
    finally:
        writer.close()


def _host(url: str) -> str:
    """A URL as logged: scheme and host only (Slack's webhook path is its secret)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}"
