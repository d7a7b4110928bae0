"""Shared fixtures: a real app on a real database, tokens made by the real CLI, live servers.

Every test that uses `db_path` (directly or through `token`, `client`, `make_client`,
`live_server`) runs twice: on a SQLite file and on PostgreSQL (a fresh schema in a throwaway
cluster this session starts on 127.0.0.1; see pg_cluster.py). On PostgreSQL `db_path` is the
database URL. Tests that open the SQLite file themselves are marked `sqlite_only`.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from deploytrack.app import create_app
from deploytrack.cli.main import main as cli_main
from deploytrack.settings import load_settings
from deploytrack.storage import database as dbmod
from tests.pg_cluster import Cluster, bindir

REPO = Path(__file__).resolve().parent.parent


def run_cli(*argv: str) -> tuple[int, str]:
    """Run the deploytrack CLI in-process; return (exit code, stdout)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            code = cli_main(list(argv))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
    return code, out.getvalue()


def create_token(db: Path | str, name: str, *scopes: str, product: str | None = None,
                 environment: str | None = None) -> str:
    argv = ["token", "create", name, "--db", str(db), "--secret-only", "--create"]
    for scope in scopes or ("ingest", "read"):
        argv += ["--scope", scope]
    if product:
        argv += ["--product", product]
    if environment:
        argv += ["--environment", environment]
    code, out = run_cli(*argv)
    assert code == 0, out
    return out.strip()


BACKENDS = ("sqlite", "postgres")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked sqlite_only run on SQLite alone (their PostgreSQL variant is deselected); the
    PostgreSQL variants of the others are marked `postgres`."""
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        on_postgres = params.get("db_path") == "postgres"
        if on_postgres:
            item.add_marker(pytest.mark.postgres)  # `-m "not postgres"` runs the SQLite half alone
        (drop if on_postgres and item.get_closest_marker("sqlite_only") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """A throwaway PostgreSQL server for this test session (required when CI is set)."""
    if bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("CI is set but PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL binaries not found (apt-get install postgresql); the postgres variant runs in CI")
    cluster = Cluster().start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """The URL of a fresh, empty PostgreSQL database."""
    return pg_cluster.new_database()


@pytest.fixture(params=BACKENDS)
def db_path(request: pytest.FixtureRequest, tmp_path: Path) -> Path | str:
    """The database of this test: a SQLite file path, or a PostgreSQL URL."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return tmp_path / "deploytrack.db"


@pytest.fixture
def token(db_path: Path) -> str:
    """An ingest+read token."""
    return create_token(db_path, "ci", "ingest", "read")


@pytest.fixture
def make_client(db_path: Path) -> Iterator[object]:
    """Build a started app (lifespan entered) with extra settings; closed at teardown."""
    stack = contextlib.ExitStack()

    def make(**overrides: object) -> TestClient:
        settings = load_settings({"db": str(db_path), "scheduler": False, **overrides}, environ={})
        return stack.enter_context(TestClient(create_app(settings), base_url="http://localhost"))

    with stack:
        yield make


@pytest.fixture
def ui(db_path: Path, token: str) -> Iterator[TestClient]:
    """A started app reached over https (its session cookies are Secure, so the client sends them back)."""
    settings = load_settings({"db": str(db_path), "scheduler": False}, environ={})
    with TestClient(create_app(settings), base_url="https://localhost") as client:
        yield client


@pytest.fixture
def client(make_client: object, token: str) -> TestClient:
    """A started app on a fresh database; `token` exists before it starts."""
    return make_client()  # type: ignore[operator]


def query(db: Path | str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Rows of `sql` read through a separate connection to the test's database (either backend), which
    first projects the events a server staged (storage.staging), as every deploytrack command does."""
    conn = dbmod.connect(db)
    try:
        dbmod.project_staged(conn)
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]
    finally:
        conn.close()


def execute(db: Path | str, sql: str, params: tuple[object, ...] = ()) -> None:
    """Write one statement to the test's database (either backend) in its own transaction."""
    conn = dbmod.connect(db)
    try:
        with dbmod.transaction(conn):
            conn.execute(sql, params)
    finally:
        conn.close()


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """`python -m deploytrack serve` in a subprocess on 127.0.0.1."""

    def __init__(self, db: Path | str, *extra: str, env: dict[str, str] | None = None) -> None:
        self.db = db
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = db.parent if isinstance(db, Path) else Path(tempfile.mkdtemp(prefix="deploytrack-live-"))
        self.log = self.workdir / f"server.{self.port}.log"
        self.extra = extra
        self.env = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 15, expect: tuple[int, ...] = (200,)) -> LiveServer:
        """Start the server and wait until /healthz answers one of `expect`; a server that does not
        is stopped before the error is raised (a process left running is a ResourceWarning)."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "deploytrack", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--db", str(self.db), "--no-scheduler", *self.extra],
                stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=str(self.workdir))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code in expect:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log.read_text()}")

    def stop(self, sig: int | None = None) -> int:
        if self.proc is None:
            return 0
        if sig is None:
            self.proc.terminate()
        else:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code


@contextlib.contextmanager
def two_live_servers(pg_cluster: Cluster, timeout: float = 30) -> Iterator[
        tuple[LiveServer, LiveServer, str, str, httpx.Client]]:
    """Two server processes started at the same moment on one fresh PostgreSQL database (they race to
    migrate it): (first, second, an ingest+read token, the database URL, an HTTP client)."""
    url = pg_cluster.new_database()
    servers = [LiveServer(url), LiveServer(url)]
    try:
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda s: s.start(), servers))
        token = create_token(url, "ci", "ingest", "read")
        with httpx.Client(timeout=timeout) as http:
            yield servers[0], servers[1], token, url, http
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def live_server(db_path: Path, token: str) -> Iterator[LiveServer]:
    server = LiveServer(db_path).start()
    try:
        yield server
    finally:
        server.stop()
