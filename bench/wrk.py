"""Run wrk with post_events.lua (or another script) and read the figures its done() prints."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass
class Run:
    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    server_cpu: float = 0.0
    thread_cpu: dict[str, float] = field(default_factory=dict)
    writer_busy: float = 0.0  # share of the run's wall time the server's writer spent in transactions
    writer_commit: float = 0.0

    @property
    def rps(self) -> float:
        return self.requests / self.seconds


def require_wrk() -> str:
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    return path


def run(url: str, seconds: float, connections: int, threads: int = 1, script: str = "post_events.lua",
        env: dict[str, str] | None = None) -> Run:
    """One bounded wrk run against `url` (127.0.0.1 only)."""
    return finish(start(url, seconds, connections, threads, script, env), seconds)


def start(url: str, seconds: float, connections: int, threads: int = 1, script: str = "post_events.lua",
          env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start a bounded wrk run against `url` (127.0.0.1 only); `finish` waits for its figures."""
    assert url.startswith("http://127.0.0.1:"), url
    argv = [require_wrk(), "-t", str(threads), "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
            "--timeout", "10s", "-s", str(HERE / script), url]
    return subprocess.Popen(argv, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], seconds: float) -> Run:
    """The figures of a run `start` began; `cpu` is wrk's own CPU time (the load generator's share)."""
    try:
        out, err = proc.communicate(timeout=seconds + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {err}")
    line = next((ln for ln in out.splitlines() if ln.startswith("WRK_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no figures:\n{out}")
    d = json.loads(line.removeprefix("WRK_JSON "))
    return Run(requests=d["requests"], seconds=d["duration_us"] / 1e6, non2xx=d["non2xx"],
               socket_errors=d["socket_errors"], p50_ms=d["p50_us"] / 1000, p90_ms=d["p90_us"] / 1000,
               p99_ms=d["p99_us"] / 1000, max_ms=d["max_us"] / 1000)
