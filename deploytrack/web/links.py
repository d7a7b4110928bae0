"""Turning client-supplied strings into links: only absolute http(s) URLs ever become an href."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MAX_URL = 2048
_SHA = re.compile(r"[0-9a-fA-F]{7,64}")
_HOST_PATH = re.compile(r"[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+(:\d{1,5})?/[A-Za-z0-9._~/-]+")
_SCP = re.compile(r"[A-Za-z0-9_.-]+@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+):([A-Za-z0-9._~/-]+)")
_URL_CHARS = re.compile(r"[A-Za-z0-9._~:/?#\[\]@!$&'()*+,;=%-]+")


def safe_href(url: object) -> str | None:
    """The URL if it is an absolute http(s) link, else None (so it is shown as text, not a link)."""
    if not isinstance(url, str) or len(url) > MAX_URL:
        return None
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
        return None
    return url


def commit_url(repository: object, sha: object) -> str | None:
    """A web link to commit `sha` in `repository`, when the repository names a web host.

    Accepts https URLs, `host/owner/repo` and `git@host:owner/repo.git`; GitLab hosts get
    GitLab's `/-/commit/` path, every other host GitHub's `/commit/` (Gitea and Forgejo share it).
    """
    if not isinstance(repository, str) or not isinstance(sha, str) or not _SHA.fullmatch(sha.strip()):
        return None
    repo = repository.strip()
    scp = _SCP.fullmatch(repo)
    if scp:
        repo = f"https://{scp.group(1)}/{scp.group(2)}"
    elif _HOST_PATH.fullmatch(repo):
        repo = "https://" + repo
    base = safe_href(repo)
    if base is None or not _URL_CHARS.fullmatch(base):
        return None
    parts = urlsplit(base)
    if parts.query or parts.fragment or parts.username or parts.password:
        return None
    path = parts.path.rstrip("/").removesuffix(".git")
    if path.count("/") < 2:  # needs at least /owner/repo
        return None
    separator = "/-/commit/" if "gitlab" in parts.hostname.lower() else "/commit/"  # type: ignore[union-attr]
    return f"{parts.scheme.lower()}://{parts.netloc}{path}{separator}{sha.strip().lower()}"
