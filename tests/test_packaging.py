"""The executable's build is reproducible: a lock with hashes for every package, PyInstaller pinned;
`deploytrack version` names what an install carries."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib import metadata

from tests.conftest import REPO, run_cli

LOCK = REPO / "packaging" / "requirements.lock"


def test_every_locked_package_is_pinned_with_hashes_and_pyinstaller_is_among_them():
    entries = re.split(r"\n(?=[a-z0-9])", LOCK.read_text().split("\n", 6)[-1])
    pins = {}
    for entry in entries:
        if entry.startswith("#") or not entry.strip():
            continue
        match = re.match(r"([a-z0-9-]+)==(\S+) \\", entry)
        assert match, entry[:80]
        assert re.search(r"--hash=sha256:[0-9a-f]{64}", entry), f"{match[1]} has no hash"
        pins[match[1]] = match[2]
    assert {"pyinstaller", "starlette", "uvicorn", "httptools", "aiosqlite", "orjson", "jinja2"} <= set(pins)
    build = (REPO / "packaging" / "build.sh").read_text()
    assert "--require-hashes" in build and "requirements.lock" in build
    assert "pip install -q \"pyinstaller" not in build  # no unpinned fallback


def test_the_lock_check_names_a_version_that_differs(tmp_path):
    lock = tmp_path / "requirements.lock"
    lock.write_text(f"orjson==0.0.1 \\\n    --hash=sha256:{'0' * 64}\nstarlette=={metadata.version('starlette')} \\\n")
    done = subprocess.run([sys.executable, str(REPO / "packaging" / "check_lock.py"), str(lock)],
                          capture_output=True, text=True)
    assert done.returncode == 1
    assert f"orjson: lock 0.0.1, installed {metadata.version('orjson')}" in done.stderr
    assert "starlette" not in done.stderr


def test_version_prints_deploytrack_python_sqlite_and_each_library():
    code, out = run_cli("version")
    assert code == 0
    rows = dict(line.split(None, 1) for line in out.splitlines())
    assert list(rows)[:3] == ["deploytrack", "python", "sqlite"]
    assert rows["starlette"] == metadata.version("starlette") and rows["uvicorn"] == metadata.version("uvicorn")
    assert {"aiosqlite", "orjson", "jinja2", "httptools", "asyncpg"} <= set(rows)
