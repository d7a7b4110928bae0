"""Sending one JSON request to a deploytrack server from a pipeline, with stdlib urllib only.

One logical send carries one `Idempotency-Key`, reused on every retry, so a retry after a
lost response is answered from the server's record instead of storing a second event.
Connection errors, timeouts, 5xx and 429 are retried with exponential backoff; any other
answer is final. An endpoint that does not honour the key (`replay_safe=False`) is retried
only when the request certainly was not processed: connection refused, 429 or 503. Nothing here
prints; the caller decides what to say (never the token).
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from deploytrack import __version__

USER_AGENT = f"deploytrack-client/{__version__}"
MAX_BACKOFF = 30.0
MAX_RETRY_AFTER = 10.0  # a pipeline step should not stall for minutes on a busy server
MAX_BODY_SHOWN = 300
MIN_REDACTED = 8


@dataclass(frozen=True)
class Target:
    """Where and how to send: base URL, token, per-attempt timeout, retry policy."""

    server: str
    token: str
    timeout: float = 10.0
    retries: int = 3
    backoff: float = 0.5


@dataclass(frozen=True)
class Request:
    """One logical send: the same key and body on every attempt."""

    method: str
    url: str
    headers: dict[str, str]
    body: dict[str, Any]
    replay_safe: bool = True

    def redacted(self) -> dict[str, Any]:
        """The request as `--dry-run` prints it: the token replaced by `***`."""
        hidden = "Bearer ***" if self.headers.get("Authorization", "").strip() != "Bearer" else "(no token)"
        headers = {k: (hidden if k == "Authorization" else v) for k, v in self.headers.items()}
        return {"method": self.method, "url": redact_url(self.url), "headers": headers, "body": self.body}


@dataclass(frozen=True)
class Outcome:
    """How a logical send ended."""

    ok: bool
    status: int | None
    body: Any
    error: str | None
    attempts: int
    retryable: bool = False


def build_request(target: Target, path: str, body: dict[str, Any], idempotency_key: str | None = None,
                  replay_safe: bool = True) -> Request:
    """A POST of `body` as JSON to `path` under the server's base URL, with a fresh idempotency key.

    `replay_safe`: the endpoint answers a repeated key from its record (deploytrack's ingestion paths do).
    """
    headers = {
        "Authorization": f"Bearer {target.token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": idempotency_key or str(uuid.uuid4()),
    }
    return Request("POST", join_url(target.server, path), headers, body, replay_safe)


def join_url(server: str, path: str) -> str:
    """`http://host:8080/base` + `/deployment-events/` without doubling or dropping slashes."""
    return server.rstrip("/") + "/" + path.lstrip("/")


def redact_url(url: str) -> str:
    """The URL without any user:password part."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not a URL the standard library parses (an unclosed IPv6 bracket): cut at its last '@'
        return "***@" + url.rsplit("@", 1)[1] if "@" in url else url
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rsplit("@", 1)[1]))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A POST that is redirected would be re-sent as a GET without its body: report the 3xx instead."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_opener = urllib.request.build_opener(_NoRedirect())


def send(target: Target, request: Request) -> Outcome:
    """Send with retries; never raises for network or HTTP trouble."""
    data = json.dumps(request.body, separators=(",", ":"), ensure_ascii=False).encode()
    attempts = 0
    while True:
        attempts += 1
        outcome, retry_after = _attempt(target, request, data, attempts)
        if outcome.ok or not outcome.retryable or attempts > target.retries:
            return outcome
        delay = min(MAX_BACKOFF, target.backoff * 2 ** (attempts - 1)) * random.uniform(0.8, 1.2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, MAX_RETRY_AFTER))
        time.sleep(delay)


def _attempt(target: Target, request: Request, data: bytes, attempts: int) -> tuple[Outcome, float | None]:
    try:
        req = urllib.request.Request(request.url, data=data, headers=request.headers, method=request.method)
        with _opener.open(req, timeout=target.timeout) as resp:
            return Outcome(True, resp.status, _decode(resp.read()), None, attempts), None
    except urllib.error.HTTPError as exc:
        status = exc.code
        body = _decode(exc.read())
        retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        retryable = status in (429, 503) or (status >= 500 and request.replay_safe)
        message = f"HTTP {status}: {_describe(body, target.token)}"
        return Outcome(False, status, body, message, attempts, retryable), retry_after
    except urllib.error.URLError as exc:
        # Refused or unresolvable: the request never reached a server, so a retry is always safe.
        never_sent = isinstance(exc.reason, (ConnectionRefusedError, socket.gaierror))
        return Outcome(False, None, None, f"cannot reach the server: {_reason(exc.reason)}", attempts,
                       never_sent or request.replay_safe), None
    except TimeoutError:
        return Outcome(False, None, None, f"no answer within {target.timeout:g} s", attempts,
                       request.replay_safe), None
    except (http.client.InvalidURL, ValueError) as exc:  # no attempt can succeed
        return Outcome(False, None, None, f"invalid server URL: {exc}", attempts), None
    except (ConnectionError, OSError, http.client.HTTPException) as exc:
        # e.g. the connection was reset, or the answer cut short, while reading it
        return Outcome(False, None, None, f"connection failed: {_reason(exc)}", attempts,
                       request.replay_safe), None


def _decode(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return raw.decode("utf-8", "replace")


def _reason(reason: object) -> str:
    if isinstance(reason, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason) or type(reason).__name__


def _retry_after(value: str | None) -> float | None:
    if value and value.strip().isdigit():
        return float(value.strip())
    return None


def _describe(body: Any, token: str) -> str:
    """A short, token-free rendering of an error answer (any API's error shape)."""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and "message" in error:
            text = str(error["message"])
        elif "detail" in body:
            text = str(body["detail"])
        elif isinstance(error, str):
            text = error
        else:
            text = json.dumps(body)
    else:
        text = str(body or "").strip() or "(empty answer)"
    if len(token) >= MIN_REDACTED:
        text = text.replace(token, "***")
    return text[:MAX_BODY_SHOWN]
