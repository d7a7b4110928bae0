"""UI sessions, CSRF tokens for its forms, and read access checks.

A session is a record (`sessions`: a hash of its random id, the token, the expiry); the cookie
carries the id signed with the database's session key, so garbage cookies cost no query. Signing
out deletes the record: a copied cookie stops working at once. Revoking the token ends them too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string

from starlette.requests import Request
from starlette.responses import Response

from deploytrack.errors import BadRequest, Forbidden, Unauthorized
from deploytrack.storage.database import Connection
from deploytrack.timeutil import now_us
from deploytrack.web.auth import Token, authenticate, record_use
from deploytrack.web.http import bearer

SESSION_COOKIE = "dt_session"
CSRF_COOKIE = "dt_csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 14 * 86400
_TOKEN_CHARS = frozenset(string.ascii_letters + string.digits + "-_")  # secrets.token_urlsafe's alphabet
_SESSION_ID_CHARS = 43  # token_urlsafe(32)

_INSERT_SESSION = "INSERT INTO sessions (id_hash, token_id, created_at, expires_at) VALUES (?, ?, ?, ?)"
_DELETE_EXPIRED = "DELETE FROM sessions WHERE expires_at <= ?"
_DELETE_SESSION = "DELETE FROM sessions WHERE id_hash = ?"
_SESSION_TOKEN = (
    "SELECT t.id, t.name, t.scopes, t.product, t.environment FROM sessions s JOIN tokens t ON t.id = s.token_id "
    "WHERE s.id_hash = ? AND s.expires_at > ? AND t.revoked_at IS NULL")


def _mac(key: bytes, session_id: str) -> str:
    return hmac.new(key, session_id.encode("ascii"), hashlib.sha256).hexdigest()


def _id_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def _well_formed(value: str | None, length: int) -> bool:
    return value is not None and len(value) == length and _TOKEN_CHARS.issuperset(value)


def session_id(key: bytes, cookie: str | None) -> str | None:
    """The session id in a session cookie whose signature is right (any other bytes: None)."""
    sid, _, mac = (cookie or "").partition(".")
    if not _well_formed(sid, _SESSION_ID_CHARS) or len(mac) != 64 or not mac.isascii():
        return None
    return sid if hmac.compare_digest(mac, _mac(key, sid)) else None


def start_session(conn: Connection, token_id: int, now: int) -> str:
    """Write function: record a new session for `token_id` (and forget expired ones); its id."""
    sid = secrets.token_urlsafe(32)
    conn.execute(_DELETE_EXPIRED, (now,))
    conn.execute(_INSERT_SESSION, (_id_hash(sid), token_id, now, now + SESSION_SECONDS * 1_000_000))
    return sid


def end_session(conn: Connection, sid: str) -> None:
    """Write function: forget the session, so its cookie (and any copy of it) stops working."""
    conn.execute(_DELETE_SESSION, (_id_hash(sid),))


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.url.hostname in ("localhost", "127.0.0.1", "::1")


def set_session(response: Response, request: Request, key: bytes, sid: str) -> None:
    response.set_cookie(SESSION_COOKIE, f"{sid}.{_mac(key, sid)}", max_age=SESSION_SECONDS, httponly=True,
                        samesite="strict", secure=_secure(request), path="/")


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def csrf_token(request: Request, response_cookies: dict[str, str]) -> str:
    """The CSRF token for this browser: reuse its cookie, or mint one to be set on the response."""
    current = request.cookies.get(CSRF_COOKIE)
    if _well_formed(current, 43):
        return current  # type: ignore[return-value]
    fresh = secrets.token_urlsafe(32)
    response_cookies[CSRF_COOKIE] = fresh
    return fresh


def set_csrf_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(CSRF_COOKIE, value, httponly=True, samesite="strict", secure=_secure(request), path="/")


def csrf_matches(request: Request, value: object) -> bool:
    """Whether `value` (from a form or a header) is this browser's CSRF token; any bytes are safe here."""
    cookie = request.cookies.get(CSRF_COOKIE)
    return (_well_formed(cookie, 43) and isinstance(value, str) and _well_formed(value, 43)
            and hmac.compare_digest(cookie, value))  # type: ignore[arg-type]


def check_csrf(request: Request, form_value: object) -> None:
    if not csrf_matches(request, form_value):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again", "csrf")


async def session_token(request: Request) -> Token | None:
    """The live token behind the session cookie, if any (revoked tokens end their sessions)."""
    app = request.app.state.deploytrack
    sid = session_id(app.session_key, request.cookies.get(SESSION_COOKIE))
    if sid is None:
        return None
    row = await app.db.fetchone(_SESSION_TOKEN, (_id_hash(sid), now_us()))
    if row is None:
        return None
    return Token(row["id"], row["name"], frozenset(row["scopes"].split(",")), row["product"], row["environment"])


async def require(request: Request, scope: str = "read") -> Token | None:
    """Who may do this: a Bearer token or a session with `scope`; None when reading is public."""
    app = request.app.state.deploytrack
    secret = bearer(request)
    if secret:
        token = await authenticate(app.db, secret, scope, "Invalid or missing API token")
        app.limiter.check(token.id)  # API clients share the per-token rate limit with ingestion
        return token
    token = await session_token(request)
    if token is not None:
        if not token.allows(scope):
            raise Forbidden(f"this token lacks the '{scope}' scope")
        record_use(app.db, token.id)
        return token
    if scope == "read" and app.settings.public_read:
        return None
    raise Unauthorized("Invalid or missing API token")


def form_text(form: object, name: str, limit: int = 512) -> str:
    value = form.get(name) if hasattr(form, "get") else None  # type: ignore[union-attr]
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"form field '{name}' is missing or too long", name)
    return value.strip()
