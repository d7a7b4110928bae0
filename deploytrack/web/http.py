"""HTTP helpers shared by every endpoint: bounded body reading, JSON replies, rate limits."""

from __future__ import annotations

import logging
import re
import time
from typing import Any
from urllib.parse import unquote_plus

import orjson
from starlette.requests import Request
from starlette.responses import Response

from deploytrack.errors import BadRequest, DeploytrackError, PayloadTooLarge, RateLimited
from deploytrack.model import whole_number


class JSONResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_response(error: DeploytrackError) -> JSONResponse:
    """The native API's error shape: {"error": {"code", "message", "field"?}}."""
    return JSONResponse({"error": error.as_dict()}, status_code=error.status, headers=error.headers)


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing (413) anything over `limit` bytes without reading it all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        size = whole_number(declared)
        if size is None:
            raise BadRequest("Content-Length header is not a number")
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
    # ASGI messages read directly: Request.stream() is an async generator, and creating one costs every
    # request the event loop's async-generator bookkeeping (a WeakSet entry; 6% of its time under load).
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            # Not a server error: the client hung up mid-body (load generators do at the end of a run).
            raise BadRequest("the client disconnected before sending the whole body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body is larger than {limit} bytes")
        chunks.append(chunk)
        more = message.get("more_body", False)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def refuse_nul(request: Request) -> None:
    """A 400 naming the query or path parameter that holds a NUL character.

    PostgreSQL cannot store NUL in text (and no name, id or filter needs one), so every endpoint
    refuses it here, at the edge, on either database. Body fields are checked where they are read
    (`model.Fields`); metadata is stored as JSON text, where NUL is escaped.
    """
    query = request.scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:  # else no parameter can hold one (and parsing it is not free)
        for name, value in request.query_params.multi_items():
            if "\x00" in name or "\x00" in value:
                shown = name.replace("\x00", "\\0")
                raise BadRequest(f"query parameter '{shown}' contains a NUL character", shown)
    for name, value in request.path_params.items():
        if isinstance(value, str) and "\x00" in value:
            raise BadRequest(f"path parameter '{name}' contains a NUL character", name)


def parse_json(raw: bytes) -> Any:
    """Strict JSON (UTF-8, no NaN, nesting bounded by orjson); a clear 400 otherwise."""
    if not raw.strip():
        raise BadRequest("Request body is empty; expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"Request body is not valid JSON: {str(exc)[:200]}") from None


MAX_IDEMPOTENCY_KEY = 255


def idempotency_key(request: Request) -> str | None:
    """The `Idempotency-Key` header: a re-send carrying it gets the original answer."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_IDEMPOTENCY_KEY:
        raise BadRequest(f"Idempotency-Key header must be 1 to {MAX_IDEMPOTENCY_KEY} characters", "Idempotency-Key")
    return key


def bearer(request: Request, scheme: str = "Bearer") -> str | None:
    """The credential after `scheme` in the Authorization header, if any."""
    header = request.headers.get("authorization", "")
    prefix, _, value = header.partition(" ")
    if prefix.lower() == scheme.lower() and value.strip():
        return value.strip()
    return None


class RateLimiter:
    """A token bucket per API token: `rate` requests a second, bursts up to twice that."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._buckets: dict[int, tuple[float, float]] = {}

    def check(self, token_id: int) -> None:
        if self.rate <= 0:
            return
        now = time.monotonic()
        capacity = max(1.0, self.rate * 2)
        level, last = self._buckets.get(token_id, (capacity, now))
        level = min(capacity, level + (now - last) * self.rate)
        if level < 1:
            wait = max(1, int((1 - level) / self.rate + 0.999))
            self._buckets[token_id] = (level, now)
            raise RateLimited(f"rate limit of {self.rate:g} requests per second exceeded; retry later",
                              headers={"Retry-After": str(wait)})
        self._buckets[token_id] = (level - 1, now)


# A query parameter is treated as a credential when its decoded name contains one of these words.
SECRET_NAME_WORDS = ("token", "key", "secret", "password", "auth", "signature")
_QUERY = re.compile(r"\?([^\s\"]*)")
_TOKEN_SHAPE = re.compile(r"dt_[A-Za-z0-9_-]{43}")  # a deploytrack secret, wherever it appears


def _decoded_name(name: str) -> str:
    """The parameter name as the application reads it (percent- and plus-decoded), lower-cased;
    decoded again while that changes it, so double encoding hides nothing either."""
    for _ in range(4):
        decoded = unquote_plus(name)
        if decoded == name:
            break
        name = decoded
    return name.lower().replace("-", "_")


def _redact_query(match: re.Match[str]) -> str:
    pairs = re.split(r"([&;])", match.group(1))
    for i in range(0, len(pairs), 2):
        name, eq, _ = pairs[i].partition("=")
        if eq and any(word in _decoded_name(name) for word in SECRET_NAME_WORDS):
            pairs[i] = f"{name}=[redacted]"
    return "?" + "".join(pairs)


def redact(text: str) -> str:
    """`text` with credential query parameters and anything shaped like a token secret blanked."""
    if "?" in text:
        text = _QUERY.sub(_redact_query, text)
    return _TOKEN_SHAPE.sub("[redacted]", text) if "dt_" in text else text


class RedactSecrets(logging.Filter):
    """Blanks credentials in logged URLs (Quanta takes `?auth_token=`; uvicorn's access log prints paths)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def redact_access_log() -> None:
    """Install RedactSecrets on uvicorn's loggers once (after uvicorn has configured logging)."""
    for name in ("uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
