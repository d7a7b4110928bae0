"""The error catalogue: each error has a stable code and HTTP status.

Errors are raised where the problem is found; each dialect turns them into its own error body.
"""

from __future__ import annotations


class DeploytrackError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: str | None = None, index: int | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.index = index
        self.headers = headers or {}

    def as_dict(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.field is not None:
            body["field"] = self.field
        if self.index is not None:
            body["index"] = self.index
        return body


class BadRequest(DeploytrackError):
    status, code = 400, "bad_request"


class Unauthorized(DeploytrackError):
    status, code = 401, "unauthorized"


class Forbidden(DeploytrackError):
    status, code = 403, "forbidden"


class NotFound(DeploytrackError):
    status, code = 404, "not_found"


class MethodNotAllowed(DeploytrackError):
    status, code = 405, "method_not_allowed"


class Conflict(DeploytrackError):
    status, code = 409, "conflict"


class RequestTimeout(DeploytrackError):
    status, code = 408, "request_timeout"


class HeaderFieldsTooLarge(DeploytrackError):
    status, code = 431, "request_header_fields_too_large"


class PayloadTooLarge(DeploytrackError):
    status, code = 413, "payload_too_large"


class UnsupportedMediaType(DeploytrackError):
    status, code = 415, "unsupported_media_type"


class Unprocessable(DeploytrackError):
    """Well-formed, but not what it claims to be: an Idempotency-Key sent again with another request."""

    status, code = 422, "unprocessable"


class RateLimited(DeploytrackError):
    status, code = 429, "rate_limited"


class Unavailable(DeploytrackError):
    """The database cannot serve this now (full, read-only, busy, unreachable or damaged); retry later."""

    status, code = 503, "unavailable"


class DeploymentBlocked(DeploytrackError):
    """A deployment rule refused a deployment: 423 (no-deploy window), 428 (flow), 409 (concurrency).

    Every API answers it in Versioner's documented pre-flight shape (see `preflight_body`).
    """

    code = "deployment_blocked"

    def __init__(self, status: int, rule_code: str, message: str, retry_after: str | None,
                 details: dict[str, object], retry_seconds: int | None = None) -> None:
        headers = {"Retry-After": str(max(1, retry_seconds))} if retry_seconds is not None else None
        super().__init__(message, headers=headers)
        self.status = status
        self.rule_code = rule_code
        self.retry_after = retry_after
        self.details = details

    def preflight_body(self) -> dict[str, object]:
        """The documented top-level fields, repeated under `detail`, which is where Versioner's own
        CLI and GitHub Action read them (FastAPI wraps errors that way)."""
        body: dict[str, object] = {"error": self.code, "message": self.message, "code": self.rule_code}
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        body["details"] = self.details
        return {**body, "detail": dict(body)}
