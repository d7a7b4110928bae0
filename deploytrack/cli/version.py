"""`deploytrack version`: the versions this install or executable carries, for bug reports and audits."""

from __future__ import annotations

import argparse
import importlib.util
import platform
import sqlite3
from importlib import metadata
from typing import Any

from deploytrack import __version__

# What deploytrack runs on: distribution name -> module (asyncpg only with the PostgreSQL extra).
COMPONENTS = {"starlette": "starlette", "uvicorn": "uvicorn", "httptools": "httptools", "aiosqlite": "aiosqlite",
              "orjson": "orjson", "jinja2": "jinja2", "python-multipart": "python_multipart", "asyncpg": "asyncpg"}


def register(subparsers: Any) -> None:
    """Add `version` to the `deploytrack` command."""
    p = subparsers.add_parser("version", help="print the versions of deploytrack, Python, SQLite and the libraries",
                              description="One line per component: deploytrack, Python, the SQLite library, and "
                                          "each Python library deploytrack runs on (\"not installed\" when absent).")
    p.set_defaults(func=run)


def versions() -> list[tuple[str, str]]:
    """(component, version) pairs, deploytrack first."""
    rows = [("deploytrack", __version__),
            ("python", f"{platform.python_version()} ({platform.python_implementation()})"),
            ("sqlite", sqlite3.sqlite_version)]
    for name, module in COMPONENTS.items():
        try:
            # The module itself must be importable: an executable may carry metadata without the code.
            found = importlib.util.find_spec(module) is not None
            rows.append((name, metadata.version(name) if found else "not installed"))
        except (metadata.PackageNotFoundError, ImportError):
            rows.append((name, "not installed"))
    return rows


def run(args: argparse.Namespace) -> int:
    for name, version in versions():
        print(f"{name:18} {version}")
    return 0
