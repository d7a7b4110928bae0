"""Request limits below the application: header size and count, slow headers and bodies, idle
keep-alive — against a real server on 127.0.0.1 (uvicorn + httptools + deploytrack's protocol)."""

from __future__ import annotations

import contextlib
import socket
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import orjson
import pytest

from tests.conftest import LiveServer, auth, create_token, query

pytestmark = [pytest.mark.sqlite_only]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[LiveServer, str]]:
    db = tmp_path / "deploytrack.db"
    token = create_token(db, "ci", "ingest", "read")
    live = LiveServer(db, "--header-timeout", "2", "--min-body-rate", "1024", "--body-grace", "1",
                      "--keep-alive-timeout", "1").start()
    try:
        yield live, token
    finally:
        live.stop()


_open: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _open:
        _open.pop().close()


def connect(live: LiveServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    _open.append(sock)
    return sock


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or 10 s pass)."""
    out = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            out += chunk
    return out


def answer(raw: bytes) -> tuple[int, dict[str, object]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), orjson.loads(body) if body else {}


def still_open(sock: socket.socket) -> bool:
    """True when the server has neither closed the connection nor answered on it."""
    sock.setblocking(False)
    try:
        sock.recv(1)  # an answer, or b"" for a closed connection
        return False
    except BlockingIOError:
        return True
    finally:
        sock.setblocking(True)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_headers_over_64_kib_are_431_without_reading_them(server):
    live, _ = server
    assert live.proc is not None
    before = rss_kib(live.proc.pid)
    sock = connect(live)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ")
    sent = 0
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        while sent < 64 * 1024 * 1024:  # 64 MiB offered; the server stops reading after 64 KiB
            sock.sendall(b"a" * 65536)
            sent += 65536
    status, body = answer(read_all(sock))
    assert status == 431 and "65536 bytes" in str(body["error"])
    assert sent < 16 * 1024 * 1024, "the server kept reading the header"
    assert rss_kib(live.proc.pid) - before < 20 * 1024
    assert httpx.get(live.url + "/healthz").status_code == 200


def test_exactly_the_limit_passes_and_one_byte_more_is_431(tmp_path):
    db = tmp_path / "deploytrack.db"
    create_token(db, "ci")
    live = LiveServer(db, "--max-header-bytes", "2048").start()
    try:
        head = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Pad: "
        for extra, expected in ((0, 200), (1, 431)):
            pad = b"p" * (2048 - len(head) - 4 + extra)
            sock = connect(live)
            sock.sendall(head + pad + b"\r\n\r\n")
            assert answer(read_all(sock))[0] == expected
    finally:
        live.stop()


def test_more_than_100_header_fields_is_431(server):
    live, _ = server
    for count, expected in ((99, 200), (101, 431)):
        sock = connect(live)
        fields = b"".join(b"X-F%d: v\r\n" % i for i in range(count))
        sock.sendall(b"GET /healthz HTTP/1.1\r\nConnection: close\r\n" + fields + b"\r\n")
        status, body = answer(read_all(sock))
        assert status == expected, body
    assert "100 header fields" in str(body["error"])


def test_headers_trickled_past_the_timeout_get_408_and_close(server):
    live, _ = server
    sock = connect(live)
    started = time.monotonic()
    sock.sendall(b"GET /healthz HTTP/1.1\r\n")
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for _ in range(8):  # a byte every half second never completes the headers
            sock.sendall(b"X")
            time.sleep(0.5)
            if time.monotonic() - started > 3:
                break
    status, body = answer(read_all(sock))
    assert status == 408 and "within 2 seconds" in str(body["error"])
    assert 1.8 < time.monotonic() - started < 4.5


def test_a_silent_connection_is_closed_after_the_header_timeout(server):
    live, _ = server
    sock = connect(live)
    started = time.monotonic()
    assert answer(read_all(sock))[0] == 408
    assert 1.8 < time.monotonic() - started < 4


DEVGRID_EVENT = {"type": "event-deploy", "entityId": "slow", "attributes": {"env": "prod", "status": "success"}}


@pytest.mark.parametrize("path,body,message_of", [
    ("/events", {"events": [DEVGRID_EVENT]}, lambda e: set(e) == {"statusCode", "error", "message"} and e["message"]),
    ("/deployment-events/", {"product_name": "slow", "version": "1", "environment_name": "prod", "status": "success"},
     lambda e: set(e) == {"detail"} and e["detail"]),
    ("/api/v1/commits", [{"sha": "a" * 40, "committed_at": "2024-01-01T00:00:00Z"}],
     lambda e: set(e) == {"error"} and e["error"]["code"] == "request_timeout" and e["error"]["message"]),
])
def test_a_body_slower_than_the_minimum_rate_is_cut_in_the_apis_shape_and_nothing_is_stored(server, path, body,
                                                                                            message_of):
    live, token = server
    raw = orjson.dumps(body)
    sock = connect(live)
    sock.sendall(b"POST " + path.encode() + b" HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"x-api-key: " + token.encode() + b"\r\nAuthorization: Bearer " + token.encode() +
                 b"\r\nContent-Length: %d\r\n\r\n" % (len(raw) + 20000))
    started = time.monotonic()
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        for i in range(0, len(raw), 8):  # 16 bytes a second, far under 1 KiB/s
            sock.sendall(raw[i:i + 8])
            time.sleep(0.5)
            if time.monotonic() - started > 6:
                break
    status, error = answer(read_all(sock))
    assert status == 408 and "bytes a second" in message_of(error), error
    assert time.monotonic() - started < 6
    assert query(live.db, "SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM commits)") == [(0,)]


def test_a_large_body_at_normal_speed_is_accepted(server):
    live, token = server
    attributes = {"env": "prod", "status": "success", "pad": "x" * 150}
    events = [{"type": "event-deploy", "entityId": f"p{i}", "attributes": attributes} for i in range(4000)]
    body = orjson.dumps({"events": events})
    assert len(body) > 700_000
    resp = httpx.post(live.url + "/events", content=body, timeout=30,
                      headers={"x-api-key": token, "Content-Type": "application/json"})
    assert resp.status_code == 201


def test_idle_keep_alive_connections_are_closed(server):
    live, _ = server
    sock = connect(live)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    time.sleep(0.2)
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200")
    started = time.monotonic()
    assert read_all(sock) == b""  # closed by the server, with nothing more sent
    assert time.monotonic() - started < 3


@pytest.mark.slow
def test_others_p99_stays_under_50_ms_while_200_slow_sockets_are_open(tmp_path):
    db = tmp_path / "deploytrack.db"
    token = create_token(db, "ci", "ingest", "read")
    live = LiveServer(db, "--header-timeout", "60").start()
    slow = _open
    try:
        with httpx.Client(base_url=live.url, headers=auth(token), timeout=10) as http:
            http.post("/deployment-events/", json={"product_name": "a", "version": "1", "environment_name": "prod",
                                                   "status": "success"})
            for i in range(200):
                sock = connect(live)
                sock.sendall(b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nX-Slow-%d: " % i)
            latencies = []
            for round_ in range(300):
                if round_ % 20 == 0:
                    for sock in slow:  # every socket keeps trickling its headers
                        sock.send(b"s")
                started = time.perf_counter()
                assert http.get("/api/v1/events", params={"limit": 10}).status_code == 200
                latencies.append(time.perf_counter() - started)
            open_now = sum(1 for sock in slow if still_open(sock))
        p99 = statistics.quantiles(latencies, n=100)[98]
        print(f"p99 {p99 * 1000:.1f} ms, median {statistics.median(latencies) * 1000:.1f} ms, "
              f"{open_now} slow sockets open")
        assert open_now == 200
        assert p99 < 0.050
    finally:
        live.stop()



def _answer_on(sock: socket.socket, data: bytes, *, head_only: bool = False) -> tuple[bytes, bytes, bytes]:
    """One answer read from a keep-alive connection: its head, its body (by content-length; none for
    HEAD) and the bytes that came after it."""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, data = data.partition(b"\r\n\r\n")
    length = 0 if head_only else next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                                      if line.lower().startswith(b"content-length:"))
    while len(data) < length:
        data += sock.recv(65536)
    return head, data[:length], data[length:]


def test_answers_keep_their_order_and_shape_on_one_connection(server):
    """Each answer's head and body go out together; a 100 Continue still comes first, alone, before
    the client sends its body; pipelined requests are answered in order; HEAD has no body."""
    live, token = server
    sock = connect(live)
    sock.settimeout(5)
    body = orjson.dumps({"events": [{"type": "event-deploy", "entityId": "one-send",
                                     "attributes": {"env": "prod", "status": "success"}}]})
    sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\n"
                 b"x-api-key: " + token.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body))
    assert sock.recv(65536) == b"HTTP/1.1 100 Continue\r\n\r\n"  # and nothing else: the body is not sent yet
    sock.sendall(body)
    head, answered, rest = _answer_on(sock, b"")
    assert head.startswith(b"HTTP/1.1 201") and orjson.loads(answered) and rest == b""

    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nHEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + token.encode() + b"\r\n\r\n")
    head, answered, rest = _answer_on(sock, b"")
    assert head.startswith(b"HTTP/1.1 200") and orjson.loads(answered)
    head, answered, rest = _answer_on(sock, rest, head_only=True)
    assert head.startswith(b"HTTP/1.1 200") and b"content-length:" in head.lower() and answered == b""
    head, answered, rest = _answer_on(sock, rest)
    assert head.startswith(b"HTTP/1.1 200") and rest == b""
    assert [e["product"] for e in orjson.loads(answered)["events"]] == ["one-send"]
