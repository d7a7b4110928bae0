"""Connection limits uvicorn's httptools protocol does not have: header size and count, slow clients.

uvicorn with httptools reads headers of any size and waits forever for a client that trickles
them. `protocol_class(limits)` returns its HTTP protocol with these rules added, for
`uvicorn.Config(http=...)`:

- the request line and headers together may be at most `max_header_bytes`, and there may be at
  most `max_headers` header fields: above either, 431 and the connection is closed; the parser is
  never fed more than the limit, so a huge header costs no memory;
- a request must have sent its complete headers within `header_timeout` seconds of its first byte
  (of the connection, for the first request): else 408 and close;
- after `body_grace` seconds of receiving a body, the body must keep arriving at `min_body_rate`
  bytes a second on average (time during which the application is not reading does not count):
  else 408 and close.
Idle keep-alive connections are closed by uvicorn itself (`timeout_keep_alive`).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

log = logging.getLogger("deploytrack.connections")
CHECK_SECONDS = 1.0  # how often a receiving body's rate is checked


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 65_536
    max_headers: int = 100
    header_timeout: float = 10.0
    min_body_rate: float = 1024.0  # bytes per second; 0 turns the check off
    body_grace: float = 10.0


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request with too many header fields."""


def protocol_class(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol enforcing `limits` (pass it as `uvicorn.Config(http=...)`)."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_count = 0
        self._header_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._body_started = 0.0
        self._body_bytes = 0

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        self._unset_keepalive_if_required()
        if not self._awaiting_headers:
            self._feed(data)
            return
        room = max(0, self.limits.max_header_bytes - self._header_bytes)
        head, rest = data[:room], data[room:]
        self._header_bytes += len(head)
        if head and not self._feed(head):
            return
        if rest:
            if self._awaiting_headers:
                self._refuse(431, f"the request line and headers are larger than {self.limits.max_header_bytes} bytes")
            else:
                self._feed(rest)

    def _feed(self, data: bytes) -> bool:
        """Parse `data`; False when the connection was refused because of it."""
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadersTooLarge):
                self._refuse(431, f"a request may have at most {self.limits.max_headers} header fields")
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return False
        return True

    # -- parser callbacks --------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._awaiting_headers = True
        self._header_count = 0
        if self._header_timer is None:
            self._arm_header_timer()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise _HeadersTooLarge()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._cancel_timer("_header_timer")
        self._awaiting_headers = False
        self._header_bytes = 0
        self._body_started = self.loop.time()
        self._body_bytes = 0
        if self.limits.min_body_rate > 0:
            self._body_timer = self.loop.call_later(CHECK_SECONDS, self._check_body_rate)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._cancel_timer("_body_timer")
        self._awaiting_headers = True
        super().on_message_complete()

    # -- timers ------------------------------------------------------------------------------

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_timeout)

    def _header_timeout(self) -> None:
        self._header_timer = None
        if self._awaiting_headers and not self.transport.is_closing():
            self._refuse(408, f"the request headers did not arrive within {self.limits.header_timeout:g} seconds")

    def _check_body_rate(self) -> None:
        self._body_timer = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self.flow.read_paused:
            self._body_started += CHECK_SECONDS  # the application is not reading: not the client's delay
        else:
            late = now - self._body_started - self.limits.body_grace
            if late > 0 and self._body_bytes < self.limits.min_body_rate * late:
                self._refuse(408, f"the request body arrived slower than {self.limits.min_body_rate:g} bytes a second")
                return
        self._body_timer = self.loop.call_later(CHECK_SECONDS, self._check_body_rate)

    def _cancel_timer(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)

    def _cancel_timers(self) -> None:
        self._cancel_timer("_header_timer")
        self._cancel_timer("_body_timer")

    # -- answers -----------------------------------------------------------------------------

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` with the native error shape (unless a response has begun), and close."""
        client = "{}:{}".format(*self.client) if self.client else "-"
        log.debug("%s: closing the connection: %s", client, message)
        self._cancel_timers()
        # A new request not yet handed to the application, or one it has not begun to answer.
        if self._awaiting_headers or self.cycle is None or not self.cycle.response_started:
            code = "request_header_fields_too_large" if status == 431 else "request_timeout"
            body = orjson.dumps({"error": {"code": code, "message": message}})
            self.transport.write(b"".join([
                STATUS_LINE[status], b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the application's receive() now reports a disconnect
            self.cycle.message_event.set()
        self.transport.close()
