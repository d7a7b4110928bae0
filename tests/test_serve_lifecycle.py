"""Operators typing commands: `serve` refuses what it cannot use in one line and stops promptly on
SIGTERM/SIGINT in every state; other commands never create a database by mistake."""

from __future__ import annotations

import contextlib
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from tests.conftest import REPO, LiveServer, create_token, free_port, run_cli

pytestmark = [pytest.mark.sqlite_only]
ENV = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}


def deploytrack(*argv: str, timeout: float = 20) -> tuple[int, str, float]:
    """Run the CLI in a subprocess: (exit code, stderr, seconds it took)."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "deploytrack", *argv], capture_output=True, text=True,
                          timeout=timeout, env=ENV)
    return proc.returncode, proc.stderr, time.monotonic() - started


def one_line_refusal(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("deploytrack: ")
    return lines[0]


def test_serve_on_a_port_in_use_exits_2_within_2_seconds(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, err, took = deploytrack("serve", "--db", str(tmp_path / "d.db"), "--port", str(port))
    assert code == 2 and took < 2 + 1.5  # the interpreter's own start-up on a loaded machine
    assert f"cannot listen on 127.0.0.1:{port}" in one_line_refusal(err)
    assert not (tmp_path / "d.db").exists()


def _newer(path: Path) -> None:
    assert run_cli("token", "create", "x", "--db", str(path), "--create")[0] == 0
    with sqlite3.connect(path) as conn:
        conn.execute("INSERT INTO schema_migrations VALUES ('m999_from_the_future', '2030-01-01')")


def _foreign(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")


@pytest.mark.parametrize("make, expected", [
    (_newer, "newer deploytrack"),
    (_foreign, "another application's database"),
    (lambda p: p.write_bytes(b"these are not the pages you are looking for" * 100), "not a SQLite database"),
    (lambda p: p.mkdir(), "is a directory"),
], ids=["newer", "foreign", "not-sqlite", "a-directory"])
def test_every_start_up_refusal_is_one_line_and_exit_2(tmp_path, make, expected):
    db = tmp_path / "d.db"
    make(db)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err, _ = deploytrack("serve", "--db", str(db), "--port", str(free_port()), "--no-scheduler")
    assert code == 2 and expected in one_line_refusal(err)
    for command in (["token", "list"], ["metrics", "show"], ["check"]):
        code, err, _ = deploytrack(*command, "--db", str(db))
        assert code == 2 and expected in one_line_refusal(err), command
    if db.is_file():
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn, contextlib.suppress(sqlite3.DatabaseError):
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            assert "events" not in tables or make is _newer  # a foreign file is left untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == before


@pytest.mark.parametrize("db, expected", [
    (":memory:", "names no file"),
    ("file:x.db?mode=memory", "names no file"),
    ("postgresql://dt:hunter2@127.0.0.1:99999/postgres", "not a PostgreSQL URL the driver can read"),
    ("postgresql://dt:hunter2@127.0.0.1:abc/postgres", "not a PostgreSQL URL the driver can read"),
    ("postgresql://dt:hunter2@[::1/postgres", "not a PostgreSQL URL the driver can read"),
    ("postgresql://app:hunter2/x@127.0.0.1:5432/db", "not a PostgreSQL URL the driver can read"),  # (an unencoded /)
    ("postgresql://app:hun?ter2@127.0.0.1:5432/db", "not a PostgreSQL URL the driver can read"),
], ids=["memory", "file-uri", "port-too-big", "port-not-a-number", "broken-ipv6", "slash-in-password",
        "question-mark-in-password"])
def test_a_database_setting_that_names_no_database_is_one_line_and_exit_2(tmp_path, db, expected):
    """These ended in tracebacks (`no such table: tokens`, OverflowError, ValueError)."""
    code, err, _ = deploytrack("serve", "--db", db, "--port", str(free_port()), "--no-scheduler")
    assert code == 2 and expected in one_line_refusal(err) and "hunter2" not in err and "ter2" not in err
    code, err, _ = deploytrack("check", "--db", db)
    assert code == 2 and expected in one_line_refusal(err) and "hunter2" not in err and "ter2" not in err


def test_migrate_db_refuses_a_newer_source_in_one_line(tmp_path):
    source = tmp_path / "d.db"
    _newer(source)
    code, err, _ = deploytrack("migrate-db", "--from", str(source), "--to", "postgresql://dt@127.0.0.1:1/none")
    assert code == 2 and f"refusing {source}: the database was upgraded by a newer deploytrack" in one_line_refusal(err)


@pytest.mark.parametrize("command", [["token", "list"], ["token", "revoke", "ci"], ["token", "create", "ci"],
                                     ["metrics", "show"], ["metrics", "recompute"], ["export"], ["check"],
                                     ["backup", "copy.db"]])
def test_commands_other_than_serve_refuse_a_missing_database(tmp_path, command):
    missing = tmp_path / "typo.db"
    code, _ = run_cli(*command, "--db", str(missing))
    assert code == 2
    assert not missing.exists()


def test_the_refusal_names_the_path_and_the_ways_to_create_it(tmp_path, capsys):
    missing = tmp_path / "typo.db"
    assert run_cli("token", "create", "ci", "--db", str(missing))[0] == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "deploytrack serve" in err and "--create" in err
    assert run_cli("token", "create", "ci", "--db", str(missing), "--create", "--secret-only")[0] == 0
    assert missing.exists()


def _serve(tmp_path: Path, *extra: str) -> LiveServer:
    db = tmp_path / "deploytrack.db"
    if not db.exists():
        create_token(db, "ci")
    return LiveServer(db, *extra).start()


def _stop_within(server: LiveServer, sig: int, seconds: float) -> None:
    assert server.proc is not None
    started = time.monotonic()
    server.proc.send_signal(sig)
    code = server.proc.wait(timeout=20)
    took = time.monotonic() - started
    server.proc = None
    assert took < seconds, f"stopping took {took:.1f} s"
    assert code == 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_idle_server_stops_within_5_seconds(tmp_path, sig):
    _stop_within(_serve(tmp_path), sig, 5)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_server_with_slow_clients_and_the_scheduler_stops_within_5_seconds(tmp_path, sig):
    server = _serve(tmp_path, "--scheduler", "--header-timeout", "60", "--body-grace", "60")
    sockets = []
    try:
        for _ in range(20):  # headers that never end
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            sockets.append(sock)
        token = create_token(server.db, "more")
        for _ in range(5):  # bodies that never end, the application waiting for them
            sock = socket.create_connection(("127.0.0.1", server.port))
            sock.sendall(b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"x-api-key: " + token.encode() + b"\r\nContent-Length: 1000\r\n\r\n{\"events\": [")
            sockets.append(sock)
        keep_alive = httpx.Client(base_url=server.url)
        assert keep_alive.get("/healthz").status_code == 200  # and an idle keep-alive connection
        time.sleep(0.3)
        _stop_within(server, sig, 5)
        keep_alive.close()
    finally:
        for sock in sockets:
            sock.close()
        server.stop()


@pytest.mark.slow
def test_server_stops_within_5_seconds_under_load(tmp_path):
    server = _serve(tmp_path)
    token = create_token(server.db, "load")
    body = {"product_name": "p", "version": "1", "environment_name": "prod", "status": "success"}
    clients = [subprocess.Popen(
        [sys.executable, "-c",
         "import httpx2 as h, sys\n"
         "c = h.Client(base_url=sys.argv[1], headers={'Authorization': 'Bearer ' + sys.argv[2]})\n"
         "while True:\n"
         f"    try: c.post('/deployment-events/', json={body!r})\n"
         "    except h.HTTPError: break\n", server.url, token],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(3)]
    try:
        time.sleep(1.5)
        _stop_within(server, signal.SIGTERM, 5)
    finally:
        for proc in clients:
            proc.kill()
            proc.wait()
        server.stop()
