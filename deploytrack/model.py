"""The one event model every dialect maps onto, and the field rules all dialects share."""

from __future__ import annotations

import builtins
import functools
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from deploytrack.errors import BadRequest, Unprocessable
from deploytrack.settings import Settings
from deploytrack.timeutil import TimeBounds, parse_timestamp

# A name (product, environment, version, a client's run id, a SHA) is a key of the database's indexes, and
# PostgreSQL indexes an entry of at most 2,704 bytes; the widest index holds four names. So a name is
# bounded in UTF-8 bytes as well as in characters, on both backends alike.
MAX_NAME_BYTES = 512
MAX_KEY_BYTES = 2048  # a client key longer than this is stored as its hash (`client_key`)

KINDS = ("deployment", "build", "config_change", "comment", "cron", "custom")
STATUSES = ("pending", "started", "completed", "failed", "aborted")
UNASSIGNED = "unassigned"

# The Versioner document's table, plus the aliases Versioner's own CLI and GitHub Action send
# (versioner-cli docs/api-contract.md: init -> started, complete/finished, fail, abort/cancel).
STATUS_SYNONYMS = {
    **dict.fromkeys(("pending", "queued", "scheduled"), "pending"),
    **dict.fromkeys(("started", "in_progress", "deploying", "building", "init"), "started"),
    **dict.fromkeys(("success", "completed", "deployed", "built", "complete", "finished"), "completed"),
    **dict.fromkeys(("failed", "failure", "error", "fail"), "failed"),
    **dict.fromkeys(("aborted", "cancelled", "skipped", "abort", "cancel"), "aborted"),
}


@dataclass
class Event:
    """One accepted request (or one item of a batch), before it is stored."""

    dialect: str
    kind: str
    product: str
    status: str = "completed"
    status_raw: str | None = None
    version: str | None = None
    environment_raw: str | None = None
    occurred_at: int | None = None
    scm_sha: str | None = None
    scm_branch: str | None = None
    scm_repository: str | None = None
    commit_time: int | None = None
    build_url: str | None = None
    build_number: str | None = None
    build_id: str | None = None
    source_system: str | None = None
    invoke_id: str | None = None
    actor: str | None = None
    summary: str | None = None
    change_id: str | None = None
    links: list[dict[str, str]] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    client_key: str | None = None


def client_key(token_id: int, dialect: str, *parts: str | None) -> str:
    """The de-duplication key of a client-supplied id (Versioner invoke_id, DevGrid build_id).

    Scoped to the sending token: another token re-sending the same id is another client's event.
    A JSON array, so no separator inside a product or environment name can make two keys equal; past
    MAX_KEY_BYTES its SHA-256 instead (names escaped in JSON can grow it past what an index holds).
    """
    key = orjson.dumps([token_id, dialect, *parts])
    return key.decode() if len(key) <= MAX_KEY_BYTES else "sha256:" + hashlib.sha256(key).hexdigest()


# Stable ids of products, environments and versions: UUIDv5 of the names in this namespace, so the
# same name gives the same id on every server, after a restart, a backup or an export and import.
ID_NAMESPACE = uuid.UUID("68e03ab7-8af7-49c9-9900-119b17f33b8a")


_NAMESPACE_BYTES = ID_NAMESPACE.bytes
# A UUID's 17th hex digit holds the variant (binary 10) in its top bits: random digit -> 8, 9, a or b.
_VARIANT = {digit: "89ab"[int(digit, 16) & 3] for digit in "0123456789abcdef"}


@functools.lru_cache(maxsize=1024)  # thrice per Versioner reply, mostly for the same few names
def stable_id(kind: str, *names: str) -> str:
    """The id of a product (`stable_id("product", name)`), environment (canonical name) or version
    (`stable_id("version", product, version)`): `uuid.uuid5`, formatted here (a new version in every
    deployment misses the cache, and building the UUID object was most of a reply's cost)."""
    digest = hashlib.sha1(_NAMESPACE_BYTES + orjson.dumps([kind, *names]), usedforsecurity=False).hexdigest()
    return f"{digest[:8]}-{digest[8:12]}-5{digest[13:16]}-{_VARIANT[digest[16]]}{digest[17:20]}-{digest[20:32]}"


def new_event_id() -> str:
    """A UUIDv7: unique, and sorts by creation time."""
    return new_event_ids(1)[0]


def new_event_ids(count: int) -> list[str]:
    """`count` UUIDv7s of this millisecond (one call for the random bits: hot, once per event)."""
    head = (time.time_ns() // 1_000_000).to_bytes(6, "big").hex()
    prefix = f"{head[:8]}-{head[8:]}-7"
    rand = os.urandom(10 * count).hex()
    # version 7 in the 13th hex digit, the variant (binary 10) in the top bits of the 17th
    return [f"{prefix}{rand[i + 1:i + 4]}-{_VARIANT[rand[i + 4]]}{rand[i + 5:i + 8]}-{rand[i + 8:i + 20]}"
            for i in range(0, 20 * count, 20)]


def normalize_status(value: object, field_name: str = "status") -> tuple[str, str]:
    """Map a client's status onto the five internal ones; return (status, raw)."""
    if not isinstance(value, str):
        raise BadRequest(f"Field '{field_name}' must be a string", field_name)
    raw = value.strip()
    status = STATUS_SYNONYMS.get(raw.lower())
    if status is None:
        raise BadRequest(
            f"Field '{field_name}' has unknown value {raw[:64]!r}; expected one of {', '.join(STATUS_SYNONYMS)}",
            field_name)
    return status, raw


class InexactNumber(BadRequest):
    """A JSON number with a fraction or exponent where text (a version, an id) is expected.

    orjson also parses an integer beyond 64 bits as a float: the request path then parses the body
    again with `exact_json` and maps it again, so only real fractions stay refused.
    """


class WholeNumber(str):
    """An integer literal beyond 64 bits, kept as its digits (made by `exact_json`)."""


def exact_json(raw: bytes) -> Any:
    """Parse JSON keeping integers beyond 64 bits as their digits (`WholeNumber`) instead of floats.

    The standard library's parser, slower than orjson: only for the rare body where a text field
    held such a number. In metadata those integers are then stored as strings of their digits.
    """
    try:
        return json.loads(raw, parse_int=_integer)
    except ValueError:
        raise BadRequest("Request body is not valid JSON") from None
    except RecursionError:  # orjson allows 1,024 levels, this parser about 1,000
        raise BadRequest("Request body nests JSON too deeply") from None


def _integer(text: str) -> int | WholeNumber:
    digits = text.lstrip("-")
    if len(digits) <= 20:  # never more: int() refuses over 4,300 digits
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return WholeNumber(text)


def fingerprint(raw: bytes) -> str:
    """What tells a re-send from another request under one Idempotency-Key: its body's SHA-256."""
    return hashlib.sha256(raw).hexdigest()


def check_resend(stored: str | None, sent: str | None) -> None:
    """An Idempotency-Key sent again with another body is refused (422, as the IETF's Idempotency-Key draft
    says) rather than answered with the first request's result: the second request would be lost unseen.
    (Keys stored before fingerprints were kept have none.)"""
    if stored is not None and sent is not None and stored != sent:
        raise Unprocessable("the Idempotency-Key was used before with another request body; use a new key for a "
                            "new request", "Idempotency-Key")


# Control characters (C0, DEL, C1): a name holding one cannot be addressed in a URL path or shown on one line.
_DOTS = frozenset((".", ".."))
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


class Fields:
    """Reads typed, bounded fields out of one JSON object and remembers which it used.

    Whatever the dialect does not read becomes metadata, so nothing a client sends is dropped.
    """

    def __init__(self, body: object, limits: Limits, prefix: str = "") -> None:
        if not isinstance(body, dict):
            where = prefix.rstrip(".")
            raise BadRequest(f"Field '{where}' must be a JSON object" if where
                             else "Request body must be a JSON object", where or None)
        self.body: dict[str, Any] = body
        self.limits = limits
        self.prefix = prefix
        self.used: set[str] = set()

    def _name(self, key: str) -> str:
        return self.prefix + key

    def str(self, key: str, required: bool = False, allow_number: bool = False,
            max_chars: int | None = None) -> str | None:
        self.used.add(key)
        value = self.body.get(key)
        if value.__class__ is not builtins.str:  # the common case, plain text, skips these checks
            if value is None:
                if required:
                    raise BadRequest(f"Field '{self._name(key)}' is required", self._name(key))
                return None
            if allow_number and isinstance(value, int) and not isinstance(value, bool):
                value = builtins.str(value)
            elif allow_number and isinstance(value, float):
                raise InexactNumber(f"Field '{self._name(key)}' is a number with a fraction or an exponent, which "
                                    f"does not keep its digits; send it as a string (\"1.10\", not 1.10)",
                                    self._name(key))
            if not isinstance(value, builtins.str):
                raise BadRequest(f"Field '{self._name(key)}' must be a string", self._name(key))
        value = value.strip()
        if required and not value:
            raise BadRequest(f"Field '{self._name(key)}' must not be empty", self._name(key))
        limit = max_chars or self.limits.max_field_chars
        if len(value) > limit:
            raise BadRequest(f"Field '{self._name(key)}' is longer than {limit} characters", self._name(key))
        if "\x00" in value:
            raise BadRequest(f"Field '{self._name(key)}' contains a NUL character", self._name(key))
        return value or None

    def name(self, key: builtins.str, required: bool = False, allow_number: bool = False,
             max_bytes: int = MAX_NAME_BYTES) -> builtins.str | None:
        """`str` for a name the database indexes: a product, environment, version, run id or SHA."""
        value = self.str(key, required=required, allow_number=allow_number)
        if value is not None and not value.isprintable() and _CONTROL.search(value):  # (isprintable: C-fast)
            raise BadRequest(f"Field '{self._name(key)}' contains a control character (a line break, say); "
                             "a name is one line of text", self._name(key))
        if value in _DOTS:  # (a browser resolves /products/.. to /)
            raise BadRequest(f"Field '{self._name(key)}' must not be '{value}': a name is a path of the pages",
                             self._name(key))
        if value is not None and len(value) > max_bytes // 4 and len(value.encode()) > max_bytes:
            raise BadRequest(f"Field '{self._name(key)}' is longer than {max_bytes} bytes (UTF-8)", self._name(key))
        return value

    def time(self, key: builtins.str, parse: Callable[[Any, builtins.str], int] = parse_timestamp) -> int | None:
        """A timestamp field as epoch µs, refused when outside the accepted span (Limits.times).

        `parse`: how to read a source's own time format (GitLab's, Opsgenie's nanoseconds) into epoch µs."""
        self.used.add(key)
        value = self.body.get(key)
        if value is None:
            return None
        return self.limits.times.check(parse(value, self._name(key)), self._name(key))

    def obj(self, key: builtins.str) -> dict[builtins.str, Any] | None:
        self.used.add(key)
        value = self.body.get(key)
        if value is None:
            return None
        if not isinstance(value, dict):
            raise BadRequest(f"Field '{self._name(key)}' must be a JSON object", self._name(key))
        return value

    def raw(self, key: builtins.str) -> Any:
        self.used.add(key)
        return self.body.get(key)

    def rest(self) -> dict[builtins.str, Any]:
        """The fields not read by the dialect."""
        return {k: v for k, v in self.body.items() if k not in self.used}


MAX_METADATA_DEPTH = 32  # stored metadata is re-serialized by orjson, which refuses more than 254 levels


@dataclass(frozen=True)
class Limits:
    """The bounds on what one client-sent record may hold, from the settings."""

    max_field_chars: int = 4096
    max_metadata_keys: int = 200
    max_summary_chars: int = 16384
    times: TimeBounds = TimeBounds()

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        return cls(max_field_chars=settings.max_field_chars, max_metadata_keys=settings.max_metadata_keys,
                   times=settings.time_bounds)


def check_metadata(metadata: Mapping[str, Any], limits: Limits, field_name: str = "metadata") -> dict[str, Any]:
    """Bound the metadata object's size; keep it verbatim."""
    if len(metadata) > limits.max_metadata_keys:
        raise BadRequest(f"Field '{field_name}' has {len(metadata)} keys; at most {limits.max_metadata_keys} allowed",
                         field_name)
    for key in metadata:
        if len(key) > 256:
            raise BadRequest(f"Field '{field_name}' has a key longer than 256 characters", field_name)
    # Most metadata is flat: only a nested value needs the walk.
    if any(isinstance(v, dict | list) for v in metadata.values()) and _depth(metadata) > MAX_METADATA_DEPTH:
        raise BadRequest(f"Field '{field_name}' is nested more than {MAX_METADATA_DEPTH} levels deep", field_name)
    _check_commit_times(metadata.get("commits"), limits.times)
    return dict(metadata)


def _check_commit_times(commits: Any, bounds: TimeBounds) -> None:
    """Commit times listed in metadata (`commits[i].committed_at` or `.timestamp`) start lead times: they are
    held to the same bounds as every other time. A time that does not parse is not one (lead time ignores it)."""
    for i, item in enumerate(commits if isinstance(commits, list) else []):
        for key in ("committed_at", "timestamp"):
            value = item.get(key) if isinstance(item, dict) else None
            if value is None:
                continue
            name = f"commits[{i}].{key}"
            try:
                at = parse_timestamp(value, name)
            except BadRequest:
                continue
            bounds.check(at, name)


def _depth(value: Any) -> int:
    """How deeply lists and objects nest in a JSON value (iterative: hostile input can be very deep)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level <= MAX_METADATA_DEPTH:  # no need to walk past the limit
                stack.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def check_links(value: object, limits: Limits, field_name: str = "links") -> list[dict[str, str]] | None:
    """Links are a list of {href, text}; kept as sent (only http(s) ones are rendered as links)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise BadRequest(f"Field '{field_name}' must be a list of objects with 'href' and 'text'", field_name)
    if len(value) > 50:
        raise BadRequest(f"Field '{field_name}' has more than 50 links", field_name)
    links = []
    for i, item in enumerate(value):
        f = Fields(item, limits, prefix=f"{field_name}[{i}].")
        href = f.str("href", required=True)
        text = f.str("text")
        links.append({"href": href or "", "text": text or ""})
    return links


MAX_INTEGER = 2**63 - 1  # SQLite's INTEGER


def integer(value: object, field: str, least: int = 1, most: int = MAX_INTEGER, what: str = "a whole number") -> int:
    """A JSON body's integer (an id, a count of minutes) within [least, most], never past what SQLite's
    INTEGER holds (ids are 64-bit); else a 400 naming the field."""
    if isinstance(value, bool) or not isinstance(value, int) or not least <= value <= min(most, MAX_INTEGER):
        raise BadRequest(f"Field '{field}' must be {what} from {least} to {min(most, MAX_INTEGER)}", field)
    return value


def whole_number(text: str | None, signed: bool = False) -> int | None:
    """The integer `text` spells in ASCII digits (a leading '-' if `signed`), if SQLite can store it; else None.

    `str.isdigit()` is not enough: it accepts '²', which int() refuses, and any length.
    """
    if not text:
        return None
    digits = text[1:] if signed and text.startswith("-") else text
    if not (digits.isascii() and digits.isdigit()) or len(digits) > 19:
        return None
    value = int(text)
    return value if -MAX_INTEGER <= value <= MAX_INTEGER else None


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
