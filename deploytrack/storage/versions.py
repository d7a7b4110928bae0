"""The `versions` rows ingestion writes: a version is created on first sight, and keeps the first SHA sent for it.

(A different SHA for a version that has one is refused before this, by `storage.ingest`.) The writes of
accepted events are merged by `claim`, then written by `statements`: by the ingest group itself on
PostgreSQL, by the projector on SQLite (storage.staging), where a new version in every deployment wrote
a page of the version index per product in every group.
"""

from __future__ import annotations

from typing import Any

from deploytrack.storage.bulk import Statement, insert_statements

Writes = dict[tuple[str, str], list[Any]]  # (product, version) -> [its SHA or None, created_at]
_UPSERT = (" ON CONFLICT (product, version) DO UPDATE SET scm_sha = excluded.scm_sha "
           "WHERE versions.scm_sha IS NULL AND excluded.scm_sha IS NOT NULL")


def claim(writes: Writes, product: str, version: str, sha: str | None, at: int) -> None:
    """An accepted event of this version (at its time `at`): the first one creates it, the first SHA stays."""
    write = writes.setdefault((product, version), [sha, at])
    if sha and not write[0]:
        write[0] = sha


def statements(writes: Writes) -> list[Statement]:
    """Insert the new versions; a stored one only gets its first SHA."""
    return insert_statements("versions", ("product", "version", "scm_sha", "created_at"),
                             [(p, v, sha, at) for (p, v), (sha, at) in sorted(writes.items())], _UPSERT)
