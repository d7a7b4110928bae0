"""Signed session cookies for the UI, CSRF tokens for its forms, and read access checks."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

from starlette.requests import Request
from starlette.responses import Response

from deploytrack.errors import BadRequest, Forbidden, Unauthorized
from deploytrack.model import whole_number
from deploytrack.web.auth import Token, authenticate
from deploytrack.web.http import bearer

SESSION_COOKIE = "dt_session"
CSRF_COOKIE = "dt_csrf"
SESSION_SECONDS = 14 * 86400


def sign(key: bytes, token_id: int, expires: int) -> str:
    payload = f"{token_id}.{expires}"
    mac = hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
    return f"{payload}.{mac}"


def verify(key: bytes, cookie: str | None) -> int | None:
    """The token id a valid, unexpired session cookie stands for."""
    if not cookie or cookie.count(".") != 2:
        return None
    token_text, expires_text, mac = cookie.split(".")
    token_id, expires = whole_number(token_text), whole_number(expires_text)
    if token_id is None or expires is None or not mac.isascii():
        return None
    expected = sign(key, token_id, expires).rsplit(".", 1)[1]
    if not hmac.compare_digest(mac, expected) or expires < time.time():
        return None
    return token_id


def _secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.url.hostname in ("localhost", "127.0.0.1", "::1")


def set_session(response: Response, request: Request, key: bytes, token_id: int) -> None:
    expires = int(time.time()) + SESSION_SECONDS
    response.set_cookie(SESSION_COOKIE, sign(key, token_id, expires), max_age=SESSION_SECONDS, httponly=True,
                        samesite="strict", secure=_secure(request), path="/")


def clear_session(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def csrf_token(request: Request, response_cookies: dict[str, str]) -> str:
    """The CSRF token for this browser: reuse its cookie, or mint one to be set on the response."""
    current = request.cookies.get(CSRF_COOKIE)
    if current and len(current) == 43:
        return current
    fresh = secrets.token_urlsafe(32)
    response_cookies[CSRF_COOKIE] = fresh
    return fresh


def set_csrf_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(CSRF_COOKIE, value, httponly=True, samesite="strict", secure=_secure(request), path="/")


def check_csrf(request: Request, form_value: object) -> None:
    cookie = request.cookies.get(CSRF_COOKIE)
    if not cookie or not isinstance(form_value, str) or not hmac.compare_digest(cookie, form_value):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again", "csrf")


async def session_token(request: Request) -> Token | None:
    """The live token behind the session cookie, if any (revoked tokens end their sessions)."""
    app = request.app.state.deploytrack
    token_id = verify(app.session_key, request.cookies.get(SESSION_COOKIE))
    if token_id is None:
        return None
    row = await app.db.fetchone(
        "SELECT id, name, scopes, product, environment FROM tokens WHERE id = ? AND revoked_at IS NULL", (token_id,))
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
        return token
    if scope == "read" and app.settings.public_read:
        return None
    raise Unauthorized("Invalid or missing API token")


def form_text(form: object, name: str, limit: int = 512) -> str:
    value = form.get(name) if hasattr(form, "get") else None  # type: ignore[union-attr]
    if not isinstance(value, str) or len(value) > limit:
        raise BadRequest(f"form field '{name}' is missing or too long", name)
    return value.strip()
