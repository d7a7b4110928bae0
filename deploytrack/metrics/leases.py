"""Leases on named jobs (rows of `jobs`): one owner at a time does a job that two must not do at once.

An owner is `host:pid:start:token`. Another owner's lease holds until it expires, or until its process
is found gone on this host (a server killed mid-job need not keep its successor waiting)."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
from pathlib import Path

from deploytrack.storage.database import Connection


def _this_host() -> str:
    """This machine as its processes see it: the host name, and on Linux the boot and the PID namespace (two
    containers may share a host name, and a pid means nothing across a reboot)."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8])
        parts.append(os.readlink("/proc/self/ns/pid").strip("pid:[]"))
    return "/".join(parts)


def _started(pid: int) -> str:
    """When process `pid` started (clock ticks since boot, Linux: a reused pid starts later); "-" if unknown."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "-"


def new_owner() -> str:
    """An owner name for this process: `host:pid:start:token`."""
    return f"{_this_host()}:{os.getpid()}:{_started(os.getpid())}:{secrets.token_hex(4)}"


def _gone(owner: str) -> bool:
    """Whether `owner` names a process of this host that no longer runs."""
    host, pid, started, *_ = [*owner.split(":"), "", "", ""]
    if host != _this_host() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # (it runs, as another user)
        pass
    return started != "-" and _started(int(pid)) != started


def take(conn: Connection, job: str, owner: str, now: int, lease_us: int) -> bool:
    """Hold (or renew) `job`'s lease until now + lease_us; False while another owner holds it."""
    row = conn.execute("SELECT owner, lease_until FROM jobs WHERE name = ?", (job,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO jobs (name, owner, lease_until) VALUES (?, ?, ?)", (job, owner, now + lease_us))
        return True
    held_by = row["owner"]
    if held_by not in (None, owner) and (row["lease_until"] or 0) > now and not _gone(held_by):
        return False
    conn.execute("UPDATE jobs SET owner = ?, lease_until = ? WHERE name = ?", (owner, now + lease_us, job))
    return True


def renew(conn: Connection, job: str, owner: str, now: int, lease_us: int) -> bool:
    """Extend `owner`'s lease on `job`; False if it no longer holds it (another owner took it over)."""
    return conn.execute("UPDATE jobs SET lease_until = ? WHERE name = ? AND owner = ?",
                        (now + lease_us, job, owner)).rowcount == 1


def release(conn: Connection, job: str, owner: str) -> None:
    """Give `job`'s lease back, if `owner` holds it."""
    conn.execute("UPDATE jobs SET owner = NULL, lease_until = NULL WHERE name = ? AND owner = ?", (job, owner))
