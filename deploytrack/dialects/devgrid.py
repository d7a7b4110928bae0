"""DevGrid: `POST /events` with `x-api-key`, body `{"events": [...]}`; 201 with the stored events.

A batch is all-or-nothing: one bad event rejects it with a 400 naming the event's index and field.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from deploytrack.dialects import Context
from deploytrack.errors import BadRequest, DeploytrackError, PayloadTooLarge
from deploytrack.model import Event, Fields, check_metadata, client_key, normalize_status
from deploytrack.settings import canonical_environment
from deploytrack.storage.ingest import IngestResult
from deploytrack.timeutil import to_iso
from deploytrack.web.auth import Token
from deploytrack.web.http import parse_json

NAME = "devgrid"
SECRET_IN_BODY = False
EVENT_TYPE = "event-deploy"
# attribute name -> event field
ATTRIBUTES = {"build_commit_sha": "scm_sha", "change_id": "change_id", "build_id": "build_id",
              "build_url": "build_url", "description": "summary", "initiator": "actor", "version": "version",
              "build_number": "build_number", "branch": "scm_branch", "repository": "scm_repository"}
_NAMES = frozenset({"scm_sha", "change_id", "build_id", "version"})  # event fields the database indexes
_ATTRIBUTE_OF = {field: name for name, field in ATTRIBUTES.items()}  # an event's field -> the attribute it came from
# The document's bash template sends BUILD_ID="${BUILD_ID:-unknown}": a placeholder names no run, so
# it cannot tell a re-send from the next deployment and is no de-duplication key.
PLACEHOLDER_BUILD_IDS = frozenset({"unknown"})


def secret(request: Request, data: Any) -> str | None:
    return request.headers.get("x-api-key")


def payload(request: Request, raw: bytes) -> Any:
    return parse_json(raw)


def to_events(data: Any, token: Token, ctx: Context) -> list[Event]:
    body = Fields(data, ctx.limits)
    items = body.raw("events")
    if not isinstance(items, list):
        raise BadRequest("Field 'events' is required and must be a list", "events")
    if not items:
        raise BadRequest("Field 'events' must hold at least one event", "events")
    if len(items) > ctx.max_batch_events:
        raise PayloadTooLarge(f"Field 'events' holds {len(items)} events; at most {ctx.max_batch_events} per batch",
                              "events")
    events = []
    for index, item in enumerate(items):
        try:
            events.append(_event(item, index, token, ctx))
        except DeploytrackError as error:
            error.index = index
            raise
    return events


def _event(item: Any, index: int, token: Token, ctx: Context) -> Event:
    prefix = f"events[{index}]."
    f = Fields(item, ctx.limits, prefix=prefix)
    kind = f.str("type", required=True)
    if kind != EVENT_TYPE:
        raise BadRequest(f"Field '{prefix}type' must be '{EVENT_TYPE}'", prefix + "type")
    entity = f.name("entityId", required=True, allow_number=True) or ""
    raw_attributes = f.raw("attributes")
    if raw_attributes is None:
        raise BadRequest(f"Field '{prefix}attributes' is required", prefix + "attributes")
    attrs = Fields(raw_attributes, ctx.limits, prefix=prefix + "attributes.")
    env = attrs.name("env", required=True)
    status_value = attrs.raw("status")
    if status_value is None:
        raise BadRequest(f"Field '{prefix}attributes.status' is required", prefix + "attributes.status")
    status, status_raw = normalize_status(status_value, prefix + "attributes.status")
    # Only the attributes present are read (an absent one is None either way): batches are large.
    values = {field: (attrs.name if field in _NAMES else attrs.str)(name, allow_number=True)
              for name, field in ATTRIBUTES.items() if name in attrs.body}
    event = Event(
        dialect=NAME, kind="deployment", product=entity, environment_raw=env, status=status, status_raw=status_raw,
        occurred_at=f.time("timestamp"), commit_time=attrs.time("commit_timestamp"), **values)
    event.metadata = check_metadata({**f.rest(), **attrs.rest()}, ctx.limits, prefix + "attributes")
    if event.build_id and event.build_id.lower() not in PLACEHOLDER_BUILD_IDS:
        event.client_key = client_key(token.id, NAME, entity, canonical_environment(env or "", ctx.aliases),
                                      event.build_id, status)
    return event


def _attributes(row: dict[str, Any]) -> dict[str, Any]:
    attrs: dict[str, Any] = {"env": row["environment_raw"], "status": row["status_raw"]}
    for name, field in ATTRIBUTES.items():
        if row.get(field) is not None:
            attrs[name] = row[field]
    if row.get("metadata"):
        attrs.update(orjson.loads(row["metadata"]))
    return attrs


def reply(result: IngestResult, ctx: Context) -> tuple[int, dict[str, Any]]:
    return 201, {"events": [{"id": r["id"], "type": EVENT_TYPE, "entityId": r["product"],
                             "timestamp": to_iso(r["occurred_at"]), "attributes": _attributes(r)}
                            for r in result.rows]}


def error_body(error: DeploytrackError) -> dict[str, Any]:
    body: dict[str, Any] = {"statusCode": error.status, "error": error.code, "message": error.message}
    if error.index is not None:
        body["index"] = error.index
    if error.field is not None:  # a conflict found in storage names the event's field: named as sent here
        sent = _ATTRIBUTE_OF.get(error.field) if error.index is not None else None
        body["field"] = f"events[{error.index}].attributes.{sent}" if sent else error.field
    return body
