"""A throwaway PostgreSQL cluster on 127.0.0.1 for the tests and bench/pg_ingest.py.

initdb into a temporary directory and pg_ctl start on a free port, using Debian's binaries
(/usr/lib/postgresql/*/bin). PostgreSQL refuses to run as root, so as root (CI) the server runs
as the `postgres` system user the Debian package creates.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

USER = "deploytrack"
PASSWORD_ROLE = "locked"


def bindir() -> Path | None:
    """Where initdb and pg_ctl are, or None when PostgreSQL is not installed."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("initdb")
    return Path(found).resolve().parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """One PostgreSQL server in a temporary directory; `stop()` removes it."""

    def __init__(self, *, durable: bool = False) -> None:
        found = bindir()
        if found is None:
            raise FileNotFoundError("PostgreSQL binaries not found (apt-get install postgresql)")
        self.bin = found
        self.durable = durable
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="deploytrack-pg-"))
        self.data = self.dir / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.dir, owner.pw_uid, owner.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        self._counter = 0
        self._options = ""

    def _run(self, *argv: str) -> None:
        result = subprocess.run([*self._as, *argv], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stdout}{result.stderr}")

    def start(self) -> Cluster:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "--auth=trust",
                  "-E", "UTF8", "--no-locale", "--no-sync")
        # Every role connects without a password but PASSWORD_ROLE, which needs one (the tests of
        # DEPLOYTRACK_DB_PASSWORD, --db-password-file, PGPASSWORD and .pgpass use it).
        (self.data / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256\n"
            "host all all 127.0.0.1/32 trust\n")
        options = [f"-p {self.port}", "-c listen_addresses=127.0.0.1", f"-c unix_socket_directories={self.dir}",
                   "-c max_connections=200"]
        if not self.durable:  # tests only: a crash loses nothing that matters
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._options = " ".join(options)
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"),
                  "-w", "-t", "60", "-o", self._options, "start")
        return self

    def url(self, database: str = "postgres", **settings: str) -> str:
        query = "&".join(f"{k}={v}" for k, v in settings.items())
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}" + (f"?{query}" if query else "")

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run([str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                                 "-d", database, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                                capture_output=True, text=True, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"psql failed: {result.stderr}")
        return result.stdout.strip()

    def new_database(self) -> str:
        """A fresh, empty database (a new schema on the search path) and its URL."""
        self._counter += 1
        schema = f"t{os.getpid()}_{self._counter}"
        self.psql(f"CREATE SCHEMA {schema}")
        return self.url("postgres", search_path=schema)

    def restart(self) -> None:
        """Stop the server (closing every client connection) and start it again on the same port."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "60",
                  "-m", "fast", "restart")

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """The server stopped (every client connection closed) for the duration, then started again."""
        ctl = [str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "60"]
        self._run(*ctl, "-m", "fast", "stop")
        try:
            yield
        finally:
            self._run(*ctl, "-o", self._options, "start")

    def stop(self) -> None:
        if self.data.exists():
            subprocess.run([*self._as, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                           capture_output=True, timeout=60)
        shutil.rmtree(self.dir, ignore_errors=True)
