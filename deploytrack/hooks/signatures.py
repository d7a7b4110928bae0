"""The ways sources prove a delivery is theirs: an HMAC of the raw body, or the shared secret itself."""

from __future__ import annotations

import hashlib
import hmac


def hmac_sha256(secret: str, raw: bytes) -> str:
    return hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


def hex_matches(secret: str, raw: bytes, *signatures: str | None) -> bool:
    """True if any of the given hex signatures is the HMAC-SHA256 of `raw` under `secret`."""
    expected = hmac_sha256(secret, raw)
    return any(s is not None and hmac.compare_digest(expected, s.strip().lower()) for s in signatures)


def prefixed(header: str | None, prefix: str) -> list[str]:
    """The signatures in a header such as `sha256=...` or `v1=...,v1=...` (several during a secret rotation)."""
    if not header:
        return []
    return [part.strip()[len(prefix):] for part in header.split(",") if part.strip().startswith(prefix)]


def same_secret(secret: str, given: str | None) -> bool:
    """A secret sent as it is (GitLab's token header, a bearer token), compared in constant time."""
    return given is not None and hmac.compare_digest(secret.encode(), given.strip().encode())
