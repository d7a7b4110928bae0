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
  else 408 and close, in the error shape of the API the request was sent to (`Refusal`).
Idle keep-alive connections are closed by uvicorn itself (`timeout_keep_alive`).

Both time rules are checked by one timer per connection that ticks while it is open, not by timers
armed and cancelled for every request (three timer-heap operations per request were ~4% of the
event loop's time under load). And a response's status line and headers go out with its body in
one send: uvicorn writes them apart, two system calls and two packets per answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import httptools
import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from deploytrack.errors import DeploytrackError, HeaderFieldsTooLarge, RequestTimeout

log = logging.getLogger("deploytrack.connections")
CHECK_SECONDS = 1.0  # how often a receiving body's rate is checked


@dataclass(frozen=True)
class ConnectionLimits:
    max_header_bytes: int = 65_536
    max_headers: int = 100
    header_timeout: float = 10.0
    min_body_rate: float = 1024.0  # bytes per second; 0 turns the check off
    body_grace: float = 10.0


# The body of a refusal answered here, for a request to a path (None while its headers are not all in).
Refusal = Callable[[str | None, DeploytrackError], bytes]


def native_refusal(path: str | None, error: DeploytrackError) -> bytes:
    return orjson.dumps({"error": error.as_dict()})


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing a request with too many header fields."""


def protocol_class(limits: ConnectionLimits, refusal: Refusal = native_refusal) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol enforcing `limits` (pass it as `uvicorn.Config(http=...)`), answering
    its refusals with `refusal`'s bodies."""
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,),
                {"limits": limits, "refusal": staticmethod(refusal)})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits] = ConnectionLimits()
    refusal: ClassVar[Refusal] = staticmethod(native_refusal)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._awaiting_headers = True
        self._header_bytes = 0
        self._header_count = 0
        self._header_started: float | None = None  # when the request whose headers are awaited began
        self._body_started: float | None = None  # when its body began (None once it is complete)
        self._body_bytes = 0
        self._tick: asyncio.TimerHandle | None = None
        self._tick_seconds = min(CHECK_SECONDS, self.limits.header_timeout / 4)

    # -- connection ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_started = self.loop.time()  # the first request's headers: from the connection's start
        self._tick = self.loop.call_later(self._tick_seconds, self._check_time)

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_ticking()
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
                self._refuse(HeaderFieldsTooLarge(
                    f"the request line and headers are larger than {self.limits.max_header_bytes} bytes"))
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
                self._refuse(HeaderFieldsTooLarge(
                    f"a request may have at most {self.limits.max_headers} header fields"))
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
        if self._header_started is None:
            self._header_started = self.loop.time()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            raise _HeadersTooLarge()
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._awaiting_headers = False
        self._header_started = None
        self._header_bytes = 0
        self._body_started = self.loop.time()
        self._body_bytes = 0
        super().on_headers_complete()
        # The cycle just made (not a HEAD request's: uvicorn writes no body for it, which the head would wait for).
        if self.cycle is not None and self.cycle.transport is self.transport and self.scope["method"] != "HEAD":
            self.cycle.transport = _OneSend(self.transport)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_started = None
        self._awaiting_headers = True
        super().on_message_complete()

    # -- timers ------------------------------------------------------------------------------

    def _check_time(self) -> None:
        """The connection's tick: the header deadline and the body rate, then the next tick."""
        self._tick = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        if self._awaiting_headers:
            if self._header_started is not None and now - self._header_started >= self.limits.header_timeout:
                self._refuse(RequestTimeout(
                    f"the request headers did not arrive within {self.limits.header_timeout:g} seconds"))
                return
        elif self._body_started is not None and self.limits.min_body_rate > 0:
            if self.flow.read_paused:
                self._body_started += self._tick_seconds  # the application is not reading: not the client's delay
            else:
                late = now - self._body_started - self.limits.body_grace
                if late > 0 and self._body_bytes < self.limits.min_body_rate * late:
                    rate = self.limits.min_body_rate
                    self._refuse(RequestTimeout(f"the request body arrived slower than {rate:g} bytes a second"))
                    return
        self._tick = self.loop.call_later(self._tick_seconds, self._check_time)

    def _stop_ticking(self) -> None:
        if self._tick is not None:
            self._tick.cancel()
            self._tick = None

    # -- answers -----------------------------------------------------------------------------

    def _refuse(self, error: DeploytrackError) -> None:
        """Answer `error` (unless a response has begun), and close."""
        client = "{}:{}".format(*self.client) if self.client else "-"
        log.debug("%s: closing the connection: %s", client, error.message)
        self._stop_ticking()
        # A new request not yet handed to the application, or one it has not begun to answer.
        if self._awaiting_headers or self.cycle is None or not self.cycle.response_started:
            body = self.refusal(None if self._awaiting_headers else self.scope["path"], error)
            self.transport.write(b"".join([
                STATUS_LINE[error.status], b"content-type: application/json\r\n",
                b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body]))
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the application's receive() now reports a disconnect
            self.cycle.message_event.set()
        self.transport.close()


class _OneSend:
    """A connection's transport as one response cycle writes to it: a status line and headers that
    announce a content-length wait for the first body write and go out with it in one send (the
    body follows at once). A streamed answer's headers and a 100 Continue go out as they come."""

    __slots__ = ("_transport", "_head", "_started")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head = b""
        self._started = False

    def write(self, data: bytes) -> None:
        if not self._started and not data.startswith(b"HTTP/1.1 100 "):
            self._started = True
            if b"\r\ncontent-length: " in data:
                self._head = data
                return
        if self._head:
            data, self._head = self._head + data, b""
        self._transport.write(data)

    def close(self) -> None:
        if self._head:
            self._transport.write(self._head)
            self._head = b""
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
