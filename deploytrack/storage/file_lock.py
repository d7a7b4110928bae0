"""Who may use a SQLite file while a metrics first build writes it in bulk (metrics/first_build.py).

A bulk first build drops indexes and writes records without comparing them with stored ones, so nothing
else may build or write derived rows meanwhile. It holds an exclusive `flock` on the database file for
its whole run; a server, and any other metrics command, hold a shared one while they use the file.
`flock` locks are apart from the POSIX record locks SQLite takes on the same file (Linux, macOS), so
neither disturbs SQLite's own locking.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path


def take(path: str | Path, exclusive: bool) -> int | None:
    """The open descriptor that holds the lock (closing it releases it; so does the process's end), or
    None when another process holds it the other way. A file that does not exist yet is nobody's: None
    for exclusive, and a shared hold is not needed (-1)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None if exclusive else -1
    try:
        fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def release(fd: int | None) -> None:
    if fd is not None and fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
