"""What a webhook delivery becomes, and the mapping helpers every source shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from starlette.requests import Request

from deploytrack.errors import BadRequest, DeploytrackError
from deploytrack.metrics import incidents
from deploytrack.model import UNASSIGNED, Event, Fields, Limits
from deploytrack.settings import Settings
from deploytrack.timeutil import to_iso
from deploytrack.web.http import parse_json

MAX_DELIVERY_ID = 255


@dataclass(frozen=True)
class Hook:
    """One configured webhook: its token row, source, secret and defaults."""

    token_id: int
    source: str
    secret: str
    product: str | None
    environment: str | None


@dataclass(frozen=True)
class Context:
    hook: Hook
    settings: Settings
    limits: Limits

    def product(self, *names: object) -> str:
        """The hook's product, else the first payload name through `hook_products`, else that name."""
        if self.hook.product:
            return self.hook.product
        mapping: Mapping[str, str] = self.settings.hook_products
        found = [n.strip() for n in names if isinstance(n, str) and n.strip()]
        for name in found:
            if name in mapping:
                return mapping[name]
        return found[-1] if found else UNASSIGNED


@dataclass
class IncidentChange:
    """Open, resolve or reopen the incident a source knows by `key` (created if not yet known)."""

    key: str
    data: dict[str, Any]  # validated incident fields (incidents.parse) for creating it
    state: str  # "open", "resolved", or "seen" (acknowledged: make sure it exists, change nothing)
    resolved_at: int | None = None
    reopen: bool = False


@dataclass
class Delivery:
    delivery_id: str | None = None
    events: list[Event] = field(default_factory=list)
    commits: list[tuple[Any, ...]] = field(default_factory=list)  # commits.parse_batch rows
    incidents: list[IncidentChange] = field(default_factory=list)
    ignored: str | None = None


def ignored(reason: str, delivery_id: str | None = None) -> Delivery:
    return Delivery(delivery_id=delivery_id, ignored=reason)


def json_body(request: Request, raw: bytes) -> dict[str, Any]:
    """The JSON object of a delivery; forms (`payload=...`, GitHub and Gitea's other content type) too."""
    if request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        try:
            values = parse_qs(raw.decode("utf-8"), strict_parsing=True).get("payload")
        except (UnicodeDecodeError, ValueError):
            values = None
        if not values:
            raise BadRequest("form body must carry the JSON in a 'payload' field", "payload")
        raw = values[0].encode()
    data = parse_json(raw)
    if not isinstance(data, dict):
        raise BadRequest("Request body must be a JSON object")
    return data


def nested(f: Fields, key: str) -> Fields:
    """A nested object of a payload (empty when absent), read by the same rules; its errors name its path."""
    return Fields(f.obj(key) or {}, f.limits, prefix=f"{f.prefix}{key}.")


def text(f: Fields, key: str, max_chars: int | None = None) -> str | None:
    """A string (or whole number) field by the APIs' rules: stripped; too long or holding a NUL is a 400
    naming the field as the source sent it, never clipped (DESIGN §2); None when absent or empty."""
    return f.str(key, allow_number=True, max_chars=max_chars)


def name(f: Fields, key: str) -> str | None:
    """`text` for a name the database indexes (a repository, environment, SHA or id): bounded in bytes too."""
    return f.name(key, allow_number=True)


CLIP_MARK = " [clipped]"


def clip(value: Any, max_chars: int) -> Any:
    """A descriptive text (stripped, as every field is) past `max_chars`, cut with a visible mark; anything
    else as it is."""
    if not isinstance(value, str) or len(value := value.strip()) <= max_chars:
        return value
    if max_chars <= 2 * len(CLIP_MARK):  # (a limit set that low has no room for the mark)
        return value[:max_chars]
    return value[: max_chars - len(CLIP_MARK)] + CLIP_MARK


def prose(f: Fields, key: str) -> str | None:
    """`text`, for a descriptive field the source cannot shorten (a commit message, an alert's summary or
    URL): past the APIs' field limit it is cut with a visible mark, not refused. A refused delivery loses
    every event in it: a forge does not send it again, Alertmanager does not retry a 4xx."""
    if key in f.body:
        f.body[key] = clip(f.body[key], f.limits.max_field_chars)
    return text(f, key)


def sent_as(error: DeploytrackError, names: Mapping[str, str]) -> DeploytrackError:
    """An API's error on one of its own fields, renamed to the payload field it was mapped from."""
    sent = names.get(error.field or "")
    if sent is not None:
        error.message = error.message.replace(f"'{error.field}'", f"'{sent}'")
        error.field = sent
    return error


def delivery_id(value: str | None) -> str | None:
    if value is None or not value.strip():
        return None
    if len(value) > MAX_DELIVERY_ID:
        raise BadRequest(f"delivery id is longer than {MAX_DELIVERY_ID} characters")
    return value.strip()


def incident_data(ctx: Context, sent: Mapping[str, str], **fields: Any) -> dict[str, Any]:
    """Incident fields validated by the incidents API's own rules (`opened_at` in epoch µs); an error
    names the payload field each was mapped from (`sent`: API field -> payload field)."""
    body = {k: v for k, v in fields.items() if v is not None}
    if isinstance(body.get("opened_at"), int):  # epoch µs here; the API takes ISO 8601
        body["opened_at"] = to_iso(body["opened_at"])
    try:
        return incidents.parse(body, ctx.limits, ctx.settings.environment_aliases, partial=False)
    except DeploytrackError as error:
        raise sent_as(error, sent) from None
