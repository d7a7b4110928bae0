"""The foreign APIs deploytrack speaks, and the one request path they share.

A dialect is a module with:
- `NAME`, and `SECRET_IN_BODY` (True when the token travels inside the JSON body),
- `secret(request, data)`: where the API document puts the token,
- `payload(request, raw)`: the request data (usually the JSON body),
- `to_events(data, token, ctx)`: the request mapped onto the event model,
- `reply(result, ctx)`: (status, body) the API documents for success,
- `error_body(error)`: that API's error shape.

Adding a fifth API is one new module and one line in `endpoint.routes()`, which also holds the
request path all of them share.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import Request

from deploytrack.model import UNASSIGNED, Limits
from deploytrack.web.auth import Token


@dataclass(frozen=True)
class Context:
    """What a dialect's mapping may consult besides the request data."""

    kind: str
    limits: Limits
    max_batch_events: int
    aliases: Mapping[str, str]
    request: Request
    status: str | None = None  # the status of an event that names none (a path whose events all have one)

    def product_or_default(self, product: str | None, token: Token) -> str:
        """APIs that carry no product use the token's default, else the explicit 'unassigned'."""
        return product or token.product or UNASSIGNED
