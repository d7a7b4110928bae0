"""A consistent copy of the live database, taken with SQLite's online backup API.

The copy is one snapshot: the backup reads every page inside one read transaction, and in
WAL mode that neither blocks the server's writer nor sees its later commits. The copy is
written next to its destination and renamed into place, so a crash mid-way never leaves a
half-written file under the destination's name.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from dataclasses import dataclass
from pathlib import Path

from deploytrack.storage import sqlite
from deploytrack.storage.database import transaction


class BackupError(RuntimeError):
    pass


def special(path: Path) -> bool:
    """Whether `path` is a symbolic link, or exists and is no regular file or directory (`/dev/null`,
    `/dev/stdout`, a FIFO): a copy renamed into place would replace the link or the device itself."""
    return path.is_symlink() or (path.exists() and not path.is_file() and not path.is_dir())


def own_file(path: Path, database: Path) -> bool:
    """Whether `path` is the database or one of SQLite's files beside it (-wal, -shm, -journal): writing there
    would destroy it."""
    real = Path(os.path.realpath(database))
    target = Path(os.path.realpath(path))
    return any(target == own or (target.exists() and own.exists() and os.path.samefile(target, own))  # (hard links)
               for own in (real, *(real.with_name(real.name + end) for end in ("-wal", "-shm", "-journal"))))


def partial_beside(path: Path) -> Path:
    """A new empty file beside `path` to write its next content into before renaming it over `path`: a name
    no file has (a database called like the old fixed name `.NAME.partial` was deleted by a backup)."""
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    os.close(fd)
    mask = os.umask(0)  # (mkstemp makes it 0600: the file gets the mode a new file would have)
    os.umask(mask)
    os.chmod(name, 0o666 & ~mask)
    return Path(name)


def unwritable(path: Path) -> str | None:
    """Why a file cannot be written at `path` (no name, or no such directory), or None."""
    if path.name in ("", ".", ".."):
        return f"{str(path)!r} names no file"
    if not path.parent.is_dir():
        return f"{path}: there is no directory {path.parent}"
    return None


@dataclass(frozen=True)
class BackupResult:
    path: Path
    bytes: int
    events: int


def backup(source: str | Path, destination: str | Path) -> BackupResult:
    """Copy the database at `source` to `destination` (replaced if it exists); check the copy."""
    source, destination = Path(source), Path(destination)
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    if (problem := unwritable(destination)) is not None:
        raise BackupError(problem)
    destination = Path(os.path.realpath(destination))  # a link is kept: the file it names is replaced
    if own_file(destination, source):
        raise BackupError("the backup must go to another file than the database and its -wal, -shm and -journal files")
    if destination.is_dir():
        raise BackupError(f"{destination} is a directory; name the backup file")
    if special(destination):
        raise BackupError(f"{destination} is not a regular file (a device or a pipe); name a file for the backup")
    partial = partial_beside(destination)
    # mode=rw: never create the source by accident; the busy timeout rides out a checkpoint.
    src = sqlite3.connect(sqlite.uri(source, "rw"), uri=True, timeout=30, isolation_level=None)
    try:
        dst = sqlite3.connect(str(partial), isolation_level=None)
        try:
            src.backup(dst)  # pages=-1: every page in one step, i.e. one read transaction
        finally:
            dst.close()
        dst = sqlite.connect(partial)
        try:
            # The events the server had staged are in the copy: projected there, every event is in `events`.
            with transaction(dst):
                pass
            # A backup is one self-contained file: no -wal/-shm companions to forget when copying it.
            dst.execute("PRAGMA journal_mode=DELETE")
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the copy failed its integrity check: {check}")
            events = dst.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        finally:
            dst.close()
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise BackupError(f"backup of {source} failed: {exc}") from exc
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        src.close()
    with partial.open("rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(partial, destination)
    directory = os.open(destination.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)
    return BackupResult(destination, destination.stat().st_size, int(events))
