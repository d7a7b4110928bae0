"""The one-file executable, built by packaging/build.sh, doing an operator's first day on 127.0.0.1.

It runs with a bare environment (no PYTHONPATH, no virtualenv on PATH): everything it needs is
inside the file. The build takes about half a minute and happens once per test run; set
DEPLOYTRACK_EXECUTABLE to test an executable built already.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest

from bench.gen_events import generate
from deploytrack import __version__
from deploytrack.cli.main import build_parser
from tests.conftest import REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # the first test waits for the build
LOCK = REPO / "packaging" / "requirements.lock"


@pytest.fixture(scope="module")
def executable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    given = os.environ.get("DEPLOYTRACK_EXECUTABLE")
    if given:
        assert Path(given).is_file(), f"DEPLOYTRACK_EXECUTABLE={given} does not exist"
        return Path(given)
    if importlib.util.find_spec("PyInstaller") is None:
        if os.environ.get("CI"):
            pytest.fail("PyInstaller is not installed; CI must install the 'build' extra (.ci/run does)")
        pytest.skip("PyInstaller is not installed: python3 -m pip install -e '.[build]'")
    out = tmp_path_factory.mktemp("build")
    done = subprocess.run(["bash", str(REPO / "packaging" / "build.sh"), str(out / "dist"), str(out / "work")],
                          capture_output=True, text=True, timeout=900,
                          # this Python's packages, which the build checks are the lock's versions: no download
                          env={**os.environ, "PYTHON": sys.executable, "DEPLOYTRACK_BUILD_ENV": "current"})
    assert done.returncode == 0, done.stdout + done.stderr
    return out / "dist" / "deploytrack"


@pytest.fixture
def bare_env(tmp_path: Path) -> dict[str, str]:
    """No Python configuration at all; TMPDIR of our own so we can see the unpacked files go away."""
    (tmp_path / "tmp").mkdir()
    return {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LANG": "C.UTF-8", "TMPDIR": str(tmp_path / "tmp")}


def run(executable: Path, env: dict[str, str], *argv: str) -> str:
    done = subprocess.run([str(executable), *argv], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, f"{argv}: {done.stdout}{done.stderr}"
    return done.stdout


def wait_until_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 30) -> None:
    """Wait until the server at `url` answers /healthz with 200; fail with its log if it exits or never does."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


@pytest.fixture
def server(executable: Path, bare_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen([str(executable), "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--db", str(tmp_path / "deploytrack.db"), "--no-scheduler"],
                            stdout=log, stderr=subprocess.STDOUT, env=bare_env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, url, tmp_path / "server.log")
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()


def sign_in(http: httpx.Client, token: str) -> dict[str, str]:
    """The sign-in form, as a browser does it; returns the Cookie header to send (the cookies are
    Secure-flagged, which browsers accept on 127.0.0.1 but Python's cookie jar does not)."""
    form = http.get("/signin")
    csrf_cookie = f"dt_csrf={form.cookies['dt_csrf']}"
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    resp = http.post("/signin", data={"csrf": csrf.group(1), "next": "/", "token": token},
                     headers={"Cookie": csrf_cookie})
    assert resp.status_code == 303, resp.text
    return {"Cookie": f"{csrf_cookie}; dt_session={resp.cookies['dt_session']}"}


def test_version_names_what_the_executable_carries_at_the_locked_versions(executable, bare_env):
    carried = dict(line.split(None, 1) for line in run(executable, bare_env, "version").splitlines())
    pinned = dict(re.findall(r"^([a-z0-9-]+)==(\S+)", LOCK.read_text(), re.M))
    assert carried["deploytrack"] == __version__
    assert carried["sqlite"].count(".") == 2 and carried["python"].startswith("3.")
    for name in ("starlette", "uvicorn", "httptools", "aiosqlite", "orjson", "jinja2", "python-multipart", "asyncpg"):
        assert carried[name] == pinned[name], name


def test_every_sub_command_runs_in_the_executable(executable, bare_env):
    assert run(executable, bare_env, "--version").strip() == f"deploytrack {__version__}"
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"serve", "token", "backup", "export", "import"} <= set(commands)
    for name in commands:
        assert f"usage: deploytrack {name}" in run(executable, bare_env, name, "--help")


def test_a_first_build_plans_in_a_process_aside_in_the_executable(executable, bare_env, tmp_path):
    # over 20,000 events a first build spawns a planning child (metrics/aside.py): the one-file
    # executable must start it as itself (multiprocessing.freeze_support), not as a command line
    db = tmp_path / "imported.db"
    generate(db, 24_000, 60, 4, seed=5)
    with sqlite3.connect(db) as conn:  # as an import of bare events leaves it
        conn.execute("DELETE FROM deployments")
        conn.execute("UPDATE events SET deployment_id = NULL")
    assert "Recomputed" in run(executable, bare_env, "metrics", "recompute", "--db", str(db))
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM events WHERE kind = 'deployment' AND environment IS NOT NULL "
                            "AND deployment_id IS NULL").fetchone() == (0,)
        assert conn.execute("SELECT COUNT(*) FROM deployment_facts").fetchone()[0] > 1_000


def test_rule_time_zones_work_without_the_systems_zone_files(executable, bare_env, tmp_path):
    # PYTHONTZPATH names where zoneinfo looks for zone files: an empty folder stands for a machine
    # without /usr/share/zoneinfo, so the zones must come from the tzdata the executable carries.
    (tmp_path / "no-zones").mkdir()
    env = {**bare_env, "PYTHONTZPATH": str(tmp_path / "no-zones")}
    db = str(tmp_path / "deploytrack.db")
    out = run(executable, env, "rule", "add", "tokyo-nights", "--type", "schedule", "--recurrence", "daily",
              "--start", "22:00", "--end", "06:00", "--timezone", "Asia/Tokyo", "--db", db, "--create")
    assert "Asia/Tokyo" in out
    shown = json.loads(run(executable, env, "rule", "show", "tokyo-nights", "--db", db))
    next_start = shown["window"]["next_start"] or shown["window"]["active_until"]
    assert next_start.endswith(":00:00Z") and next_start[11:13] in ("13", "21")  # 22:00 or 06:00 at +09:00


def test_first_day_with_the_executable(executable, bare_env, server, tmp_path):
    proc, url = server
    db = tmp_path / "deploytrack.db"
    admin = run(executable, bare_env, "token", "create", "ops", "--scope", "ingest", "--scope", "read",
                "--db", str(db), "--secret-only").strip()
    pipeline = run(executable, bare_env, "token", "create", "pipeline", "--product", "smoke-pipeline",
                   "--environment", "production", "--db", str(db), "--secret-only").strip()
    assert "pipeline" in run(executable, bare_env, "token", "list", "--db", str(db))

    with httpx.Client(base_url=url, timeout=10) as http:
        bearer = {"Authorization": f"Bearer {admin}"}
        sent = [
            http.post("/deployment-events/", headers=bearer, json={
                "product_name": "smoke-versioner", "version": "1.0.0", "environment_name": "production",
                "status": "success", "description": "versioner deploy"}),
            http.post("/build-events/", headers=bearer, json={
                "product_name": "smoke-versioner", "version": "1.0.0", "status": "built",
                "description": "versioner build"}),
            http.post("/api/events/push", headers={"Authorization": f"Token {pipeline}"},
                      json={"type": "code_deploy", "content": "quanta deploy 42"}),
            http.post("/events", headers={"x-api-key": admin}, json={"events": [{
                "type": "event-deploy", "entityId": "smoke-devgrid",
                "attributes": {"env": "production", "status": "success", "build_commit_sha": "a1b2c3d4",
                               "description": "devgrid deploy"}}]}),
            http.post("/api/deployment-events", json={"integrationKey": pipeline, "summary": "ilert deploy"}),
        ]
        assert [r.status_code for r in sent] == [200, 200, 200, 201, 202], [r.text for r in sent]

        css = http.get("/static/app.css")  # assets come from inside the executable
        assert css.status_code == 200 and css.content == (REPO / "deploytrack" / "static" / "app.css").read_bytes()
        assert http.get("/events").status_code == 303  # the list needs a signed-in reader
        cookie = sign_in(http, admin)
        page = http.get("/events", headers=cookie)
        assert page.status_code == 200
        home = http.get("/", headers=cookie)  # the production overview, its DORA numbers counted live
        assert home.status_code == 200 and "smoke-versioner" in home.text
        for text in ("versioner deploy", "versioner build", "quanta deploy 42", "devgrid deploy", "ilert deploy",
                     "smoke-versioner", "smoke-devgrid", "smoke-pipeline"):
            assert text in page.text, text
        found = http.get("/api/v1/events", params={"q": "DEVGRID dep"}, headers=bearer).json()
        assert [e["summary"] for e in found["events"]] == ["devgrid deploy"] and found["next_cursor"] is None

        # Backup while the server runs and keeps taking writes.
        backup = tmp_path / "backup.db"
        assert "5 events" in run(executable, bare_env, "backup", str(backup), "--db", str(db))
        assert http.post("/deployment-events/", headers=bearer, json={
            "product_name": "smoke-versioner", "version": "1.0.1", "environment_name": "staging",
            "status": "success"}).status_code == 200

    conn = sqlite3.connect(f"file:{backup}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # The executable's own SQLite has FTS5's trigram tokenizer: its migration built the search index.
        assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'events_search'").fetchone() == (1,)
        assert sorted(r[0] for r in conn.execute("SELECT dialect FROM events")) == \
            ["devgrid", "ilert", "quanta", "versioner", "versioner"]
    finally:
        conn.close()

    exported = run(executable, bare_env, "export", "--db", str(db))
    assert len([json.loads(line) for line in exported.splitlines()]) == 6
    (tmp_path / "events.jsonl").write_text(exported)
    restored = tmp_path / "restored.db"
    assert "Imported 6 events" in run(executable, bare_env, "import", str(tmp_path / "events.jsonl"),
                                      "--db", str(restored), "--create")
    assert "Imported 0 events" in run(executable, bare_env, "import", str(tmp_path / "events.jsonl"),
                                      "--db", str(restored))

    # The CI client and the metrics job, from the same file.
    wrapped = subprocess.run([str(executable), "wrap", "--server", url, "--token", admin, "--strict",
                              "--product", "smoke-wrap", "--environment", "staging", "--version", "2.0",
                              "--", "/bin/sh", "-c", "exit 3"],
                             capture_output=True, text=True, env=bare_env, timeout=60)
    assert wrapped.returncode == 3, wrapped.stdout + wrapped.stderr
    run(executable, bare_env, "metrics", "recompute", "--db", str(db))
    assert "smoke-wrap" in run(executable, bare_env, "export", "--db", str(db), "--format", "csv")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("SELECT status FROM deployments WHERE product = 'smoke-wrap'").fetchall() == [("failed",)]
    finally:
        conn.close()

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    log = (tmp_path / "server.log").read_text()
    assert "Application shutdown complete" in log and "Traceback" not in log, log
    # The one-file executable unpacks itself under TMPDIR and removes that on a clean stop.
    assert list(Path(bare_env["TMPDIR"]).iterdir()) == []


def test_the_executable_serves_postgresql(executable, bare_env, pg_url, tmp_path):
    """asyncpg travels inside the file: token, serve, ingest and read on a PostgreSQL database."""
    token = run(executable, bare_env, "token", "create", "ci", "--scope", "ingest", "--scope", "read",
                "--db", pg_url, "--secret-only").strip()
    port = free_port()
    with (tmp_path / "server.log").open("wb") as log:
        proc = subprocess.Popen([str(executable), "serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--db", pg_url, "--no-scheduler"], stdout=log, stderr=subprocess.STDOUT,
                                env=bare_env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(proc, url, tmp_path / "server.log")
        bearer = {"Authorization": f"Bearer {token}"}
        sent = httpx.post(url + "/deployment-events/", headers=bearer, timeout=10, json={
            "product_name": "smoke-pg", "version": "1.0.0", "environment_name": "production", "status": "success"})
        assert sent.status_code == 200, sent.text
        listed = httpx.get(url + "/api/v1/events", headers=bearer, timeout=10).json()["events"]
        assert [e["id"] for e in listed] == [sent.json()["id"]]
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0
