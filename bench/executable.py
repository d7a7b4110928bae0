"""Budget of the one-file executable: size, start-up time, idle memory.

    python bench/executable.py [--executable dist/deploytrack] [--runs 5]

Without --executable it builds one with packaging/build.sh into a temporary directory.
Each figure is printed with its budget (size < 40 MB, first answered /healthz < 1.5 s,
idle RSS < 80 MB) and, for time and memory, with the ratio to `python -m deploytrack serve`
from the source tree measured in the same run (the baseline).
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET_MB = 40
BUDGET_START_S = 1.5
BUDGET_RSS_MB = 80


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - 127.0.0.1 only
        resp.read()
        return int(resp.status)


def _tree(pid: int) -> list[int]:
    """A process and its descendants (the one-file bootloader runs Python as its child)."""
    found, pids = [], [pid]
    while pids:
        current = pids.pop()
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        found.append(current)
        pids.extend(int(c) for c in children)
    return found


def rss_kb(pid: int) -> int:
    total = 0
    for p in _tree(pid):
        status = Path(f"/proc/{p}/status").read_text()
        total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return total


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process tree: start-up cost that does not depend on other load."""
    ticks = 0
    for p in _tree(pid):
        fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def measure(command: list[str], env: dict[str, str], workdir: Path,
            runs: int) -> tuple[list[float], list[float], int]:
    """Start-up wall and CPU times to the first 200 from /healthz, each on a fresh database;
    idle RSS of the last run."""
    times, cpu, rss = [], [], 0
    for i in range(runs):
        port = free_port()
        db = workdir / f"bench-{i}-{port}.db"
        started = time.perf_counter()
        proc = subprocess.Popen([*command, "serve", "--host", "127.0.0.1", "--port", str(port), "--db", str(db),
                                 "--no-scheduler", "--log-level", "warning"],
                                env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                if proc.poll() is not None:
                    raise SystemExit(f"server exited with {proc.returncode}")
                try:
                    if get(f"http://127.0.0.1:{port}/healthz") == 200:
                        break
                except OSError:
                    time.sleep(0.005)
                if time.perf_counter() - started > 30:
                    raise SystemExit("server did not answer /healthz within 30 s")
            times.append(time.perf_counter() - started)
            cpu.append(cpu_seconds(proc.pid))
            if i == runs - 1:
                for path in ("/healthz", "/signin", "/metrics", "/static/app.css"):
                    get(f"http://127.0.0.1:{port}{path}")
                time.sleep(2)  # idle
                rss = rss_kb(proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    return times, cpu, rss


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executable", type=Path, help="a built dist/deploytrack (default: build one now)")
    parser.add_argument("--runs", type=int, default=5, help="start-ups measured per program (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deploytrack-bench-") as tmp:
        workdir = Path(tmp)
        exe = args.executable
        if exe is None:
            started = time.perf_counter()
            subprocess.run(["bash", str(REPO / "packaging" / "build.sh"), str(workdir / "dist"), str(workdir / "work")],
                           check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHON": sys.executable})
            print(f"build time            {time.perf_counter() - started:8.1f} s")
            exe = workdir / "dist" / "deploytrack"
        bare = {"PATH": "/usr/bin:/bin", "HOME": tmp, "LANG": "C.UTF-8"}
        source = {**os.environ, "PYTHONPATH": str(REPO)}
        exe_times, exe_cpu, exe_rss = measure([str(exe.resolve())], bare, workdir, args.runs)
        py_times, py_cpu, py_rss = measure([sys.executable, "-m", "deploytrack"], source, workdir, args.runs)
        size_mb = exe.stat().st_size / 1_000_000

    exe_start, py_start = statistics.median(exe_times), statistics.median(py_times)
    rows = [
        ("size", f"{size_mb:.1f} MB", f"< {BUDGET_MB} MB", size_mb < BUDGET_MB, ""),
        ("start to /healthz (median)", f"{exe_start:.3f} s", f"< {BUDGET_START_S} s", exe_start < BUDGET_START_S,
         f"x{exe_start / py_start:.2f} of python -m deploytrack ({py_start:.3f} s)"),
        ("start to /healthz (worst)", f"{max(exe_times):.3f} s", f"< {BUDGET_START_S} s",
         max(exe_times) < BUDGET_START_S, f"python: {max(py_times):.3f} s"),
        ("CPU time to /healthz (median)", f"{statistics.median(exe_cpu):.3f} s", "(info)", True,
         f"x{statistics.median(exe_cpu) / statistics.median(py_cpu):.2f} of python -m deploytrack "
         f"({statistics.median(py_cpu):.3f} s); start-up cost without other load"),
        ("idle RSS", f"{exe_rss / 1024:.1f} MB", f"< {BUDGET_RSS_MB} MB", exe_rss / 1024 < BUDGET_RSS_MB,
         f"x{exe_rss / py_rss:.2f} of python -m deploytrack ({py_rss / 1024:.1f} MB)"),
    ]
    load = os.getloadavg()[0]
    print(f"load average (1 min)  {load:8.2f} on {os.cpu_count()} cores: wall times grow with other load")
    for name, value, budget, ok, note in rows:
        print(f"{name:30} {value:>10}  budget {budget:9} {'ok  ' if ok else 'OVER'}  {note}")
    return 0 if all(r[3] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
