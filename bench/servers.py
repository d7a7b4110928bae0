"""Start and stop the servers a benchmark measures: real `deploytrack serve`, or the bare ceiling app.

Both run as one uvicorn process on 127.0.0.1 with the same uvicorn settings (those `cli.cmd_serve` uses).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}


def use_source(tree: Path | None) -> None:
    """Run deploytrack from another checkout (e.g. an older commit, for before/after figures)."""
    if tree is not None:
        if not (tree / "deploytrack" / "__init__.py").exists():
            raise SystemExit(f"{tree} holds no deploytrack package")
        ENV["PYTHONPATH"] = f"{tree.resolve()}{os.pathsep}{REPO}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli(*argv: str, timeout: float = 60) -> str:
    """Run `python -m deploytrack ARGV` from the chosen checkout; return its stdout."""
    # cwd "/" so that `-m` finds deploytrack through PYTHONPATH, not in the current directory.
    out = subprocess.run([sys.executable, "-m", "deploytrack", *argv], env=ENV, check=True, cwd="/",
                         capture_output=True, text=True, timeout=timeout)
    return out.stdout


def create_token(db: Path | str, name: str, *scopes: str) -> str:
    argv = ["token", "create", name, "--db", str(db), "--secret-only", "--create"]  # a fresh file is fine
    for scope in scopes:
        argv += ["--scope", scope]
    return cli(*argv).strip()


class Server:
    """A server subprocess; `url`, `pid`, and `rss_kb()` / `peak_rss_kb()` from /proc."""

    def __init__(self, argv: list[str], port: int, log: Path, health: str, kind: str) -> None:
        self.kind = kind
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._health = health
        with log.open("ab") as fh:
            self.proc = subprocess.Popen(argv, stdout=fh, stderr=subprocess.STDOUT, env=ENV, cwd=str(log.parent))
        self._wait()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + self._health, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not start: {self.log.read_text()[-2000:]}")

    def _status(self, key: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
        return 0

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process has used so far (all its threads)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def thread_cpu_seconds(self) -> dict[str, float]:
        """CPU time so far per thread name (threads of one name summed): where the server's time goes."""
        out: dict[str, float] = {}
        for task in Path(f"/proc/{self.pid}/task").iterdir():
            try:
                stat = (task / "stat").read_text()
                name = (task / "comm").read_text().strip()
            except OSError:  # the thread ended meanwhile
                continue
            fields = stat.rsplit(")", 1)[1].split()
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    def rss_kb(self) -> int:
        return self._status("VmRSS")

    def peak_rss_kb(self) -> int:
        return self._status("VmHWM")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def deploytrack(db: Path, *extra: str, scheduler: bool = False) -> Server:
    """`python -m deploytrack serve` on `db` (durable commits: the server's own synchronous=FULL); its
    metrics job off unless `scheduler`."""
    port = free_port()
    argv = [sys.executable, "-m", "deploytrack", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--db", str(db), *([] if scheduler else ["--no-scheduler"]), "--log-level", "warning", *extra]
    return Server(argv, port, db.with_suffix(f".{port}.log"), "/healthz", "deploytrack")


def deploytrack_at(db: str, workdir: Path) -> Server:
    """`deploytrack` for a SQLite file or a PostgreSQL URL, logging into `workdir`; metrics job off."""
    port = free_port()
    argv = [sys.executable, "-m", "deploytrack", "serve", "--host", "127.0.0.1", "--port", str(port),
            "--db", db, "--no-scheduler", "--log-level", "warning"]
    return Server(argv, port, workdir / f"server.{port}.log", "/healthz", "deploytrack")


def bare(workdir: Path, durable: Path | None = None) -> Server:
    """The ceiling: a Starlette app that only parses the JSON body with orjson and answers; with
    `durable`, the durable floor (each event also stored as one index-free row, answered after COMMIT)."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.bare_app", "--port", str(port)]
    if durable is not None:
        argv += ["--durable", str(durable)]
    name = "floor" if durable else "bare"
    return Server(argv, port, workdir / f"{name}.{port}.log", "/healthz", name)
