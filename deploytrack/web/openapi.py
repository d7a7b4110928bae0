"""The OpenAPI 3.1 document of deploytrack's whole HTTP API, served at `GET /api/v1/openapi.json`.

Hand-written: the four foreign APIs keep their own request and error shapes, which no generator
would infer. A test checks that every route in the app is described here and nothing else is.
Ingestion paths also answer with the other trailing-slash form; only the documented form is listed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from deploytrack import __version__
from deploytrack.metrics.compute import SNAPSHOT_DAYS
from deploytrack.model import KINDS, STATUS_SYNONYMS, STATUSES
from deploytrack.web.http import JSONResponse

JSON = "application/json"
Schema = dict[str, Any]

STR: Schema = {"type": "string"}
NSTR: Schema = {"type": ["string", "null"]}
INT: Schema = {"type": "integer"}
NINT: Schema = {"type": ["integer", "null"]}
NNUM: Schema = {"type": ["number", "null"]}
TIME: Schema = {"description": "ISO 8601 (no offset means UTC), epoch seconds or epoch milliseconds",
                "oneOf": [{"type": "string"}, {"type": "number"}]}
ISO: Schema = {"type": ["string", "null"], "description": "ISO 8601 UTC, e.g. 2024-01-15T10:30:00Z"}
OBJ: Schema = {"type": "object"}
STATUS_IN: Schema = {"type": "string", "description": "case-insensitive; one of " + ", ".join(STATUS_SYNONYMS)}

ERROR_TEXT = {400: "Bad input: the message names the field and the problem", 401: "Missing or wrong token",
              403: "The token lacks the scope", 404: "Not found", 405: "Method not allowed",
              409: "Conflict (a version's SHA is immutable; a rule's name is taken)", 413: "Body or batch too large",
              415: "Wrong Content-Type", 422: "The Idempotency-Key was used before for another kind of request",
              429: "Rate limit exceeded; see Retry-After",
              503: "The database cannot take writes now (disk full, read-only); retry later"}
HEALTH: Schema = {"status": STR, "version": STR,
                  "integrity": {"type": "string", "enum": ["ok", "failed", "not checked yet"]},
                  "integrity_checked_at": ISO}
INGEST_ERRORS = (400, 401, 403, 405, 409, 413, 422, 429, 503)
READ_ERRORS = (400, 401, 403)


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        out["headers"] = headers
    return out


def _errors(codes: tuple[int, ...], shape: str) -> dict[str, Any]:
    out = {}
    for code in codes:
        headers = {"Retry-After": {"schema": {"type": "string"}}} if code in (429, 503) else None
        out[str(code)] = _json(_ref(shape), ERROR_TEXT[code], headers)
    return out


def _blocked(shape: str) -> dict[str, Any]:
    """409/423/428 from deployment rules, in Versioner's pre-flight shape (409 is also the API's own conflict)."""
    blocked = _ref("DeploymentBlocked")
    retry = {"Retry-After": {"schema": {"type": "string"}}}
    return {"409": _json({"anyOf": [_ref(shape), blocked]}, "Conflict: a version's SHA is immutable, or another "
                                                             "deployment is in progress (concurrency rule)"),
            "423": _json(blocked, "Blocked: a no-deploy window is active (schedule rule)", retry),
            "428": _json(blocked, "Blocked: prerequisite environments or soak time missing (flow rule)", retry)}


def _query(name: str, description: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema or STR}


def _path(name: str, schema: Schema | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or STR}


def _body(schema: Schema, required: bool = True, media: str = JSON) -> dict[str, Any]:
    return {"required": required, "content": {media: {"schema": schema}}}


def _obj(properties: dict[str, Schema], required: tuple[str, ...] = (), extra: bool = True) -> Schema:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if not extra:
        schema["additionalProperties"] = False
    return schema


# -- schemas ----------------------------------------------------------------------------------

EVENT_FIELDS = ("id", "dialect", "kind", "product", "version", "environment", "environment_raw", "status",
                "status_raw", "scm_sha", "scm_branch", "scm_repository", "build_url", "build_number", "build_id",
                "source_system", "invoke_id", "actor", "summary", "change_id")

SCHEMAS: dict[str, Schema] = {
    "NativeError": _obj({"error": _obj({"code": STR, "message": STR, "field": STR, "index": INT},
                                       ("code", "message"))}, ("error",)),
    "VersionerError": _obj({"detail": STR}, ("detail",)),
    "QuantaError": _obj({"error": STR}, ("error",)),
    "DevGridError": _obj({"statusCode": INT, "error": STR, "message": STR, "index": INT, "field": STR},
                         ("statusCode", "error", "message")),
    "IlertError": _obj({"status": INT, "code": STR, "message": STR}, ("status", "code", "message")),
    "Event": _obj({
        **{k: NSTR for k in EVENT_FIELDS}, "id": STR, "kind": {"type": "string", "enum": list(KINDS)},
        "status": {"type": "string", "enum": list(STATUSES)}, "product": STR, "dialect": STR,
        "deployment_id": NINT, "occurred_at": ISO, "received_at": ISO, "commit_time": ISO,
        "links": {"type": "array", "items": _obj({"href": STR, "text": STR})}, "metadata": OBJ,
    }, ("id", "kind", "product", "status", "occurred_at", "received_at")),
    "Deployment": _obj({
        "id": INT, "product": STR, "environment": STR, "version": NSTR, "invoke_id": NSTR,
        "status": {"type": "string", "enum": list(STATUSES)}, "label": NSTR, "first_at": ISO, "started_at": ISO,
        "finished_at": ISO, "duration_seconds": NNUM, "scm_sha": NSTR, "actor": NSTR, "change_id": NSTR,
        "event_count": INT, "rolled_back_by": NINT,
    }, ("id", "product", "environment", "status")),
    "Where": _obj({
        "environment": STR, "environment_id": STR, "version": NSTR, "version_id": NSTR,
        "current": {"anyOf": [_ref("Deployment"), {"type": "null"}]},
        "pending_or_failed": {"anyOf": [_ref("Deployment"), {"type": "null"}]},
    }, ("environment", "environment_id", "version", "current")),
    "Product": _obj({
        "name": STR, "id": STR, "environments": {"type": "array", "items": _ref("Where")},
        "more_environments": {"type": "boolean"},
    }, ("name", "id", "environments")),
    "Incident": _obj({
        "id": INT, "product": NSTR, "environment": NSTR, "title": STR, "severity": NSTR,
        "status": {"type": "string", "enum": ["open", "resolved"]}, "opened_at": ISO, "resolved_at": ISO,
        "time_to_restore_seconds": NNUM, "change_id": NSTR, "deployment_id": NINT,
        "link": _obj({"deployment_id": NINT, "rule": NSTR, "explanation": STR}), "metadata": OBJ,
        "created_at": ISO, "updated_at": ISO,
    }, ("id", "product", "title", "status", "opened_at", "link")),
    "IncidentInput": _obj({
        "product": STR, "title": STR, "environment": NSTR, "severity": NSTR, "opened_at": TIME, "resolved_at": TIME,
        "status": {"type": "string", "enum": ["open", "resolved"]}, "change_id": NSTR,
        "deployment_id": {"type": ["integer", "null"], "minimum": 1}, "metadata": {"type": ["object", "null"]},
    }, extra=False),
    "DeploymentBlocked": _obj({
        "error": {"type": "string", "const": "deployment_blocked"}, "message": STR,
        "code": {"type": "string", "enum": ["NO_DEPLOY_WINDOW", "FLOW_PREREQUISITE", "CONCURRENT_DEPLOYMENT"]},
        "retry_after": {"type": "string", "description": "ISO 8601 UTC: when to retry"},
        "details": _obj({"rule_id": INT, "rule_name": STR, "rule_type": STR, "violation_id": INT}),
        "detail": {"type": "object", "description": "the same fields again (where Versioner's clients read them)"},
    }, ("error", "message", "code", "details", "detail")),
    "Rule": _obj({
        "id": INT, "name": STR, "type": {"type": "string", "enum": ["schedule", "flow", "concurrency"]},
        "mode": {"type": "string", "enum": ["enabled", "report-only", "disabled"]},
        "products": {"type": ["array", "null"], "items": STR},
        "environments": {"type": ["array", "null"], "items": STR},
        "reason": NSTR, "description": STR, "schedule": OBJ, "flow": OBJ, "concurrency": OBJ,
        "window": _obj({"active": {"type": "boolean"}, "active_until": ISO, "next_start": ISO, "next_end": ISO}),
        "created_at": ISO, "updated_at": ISO, "created_by": NSTR,
    }, ("id", "name", "type", "mode", "products", "environments", "description")),
    "RuleInput": _obj({
        "name": STR, "type": {"type": "string", "enum": ["schedule", "flow", "concurrency"]},
        "mode": {"type": "string", "enum": ["enabled", "report-only", "disabled"]},
        "products": {"type": ["array", "null"], "items": STR},
        "environments": {"type": ["array", "null"], "items": STR}, "reason": NSTR,
        "schedule": _obj({"recurrence": {"type": "string", "enum": ["once", "one-time", "daily", "weekly", "monthly"]},
                          "timezone": STR, "start": STR, "end": STR}, ("recurrence", "start", "end"), extra=False),
        "flow": _obj({"prerequisites": {"type": "array", "items": STR}, "strict": {"type": "boolean"},
                      "soak_minutes": INT}, ("prerequisites",), extra=False),
        "concurrency": _obj({"stale_after_minutes": INT}, extra=False),
    }, extra=False),
    "Override": _obj({
        "id": INT, "rule_id": NINT, "rule_name": NSTR, "product": STR, "environment": NSTR, "version": NSTR,
        "reason": STR, "granted_by": NSTR, "granted_at": ISO, "expires_at": ISO, "used_at": ISO, "used_by_event": NSTR,
    }, ("id", "product", "reason", "granted_at", "used_at")),
    "OverrideInput": _obj({"product": STR, "reason": STR, "environment": NSTR, "version": NSTR,
                           "rule_id": {"type": ["integer", "null"], "minimum": 1},
                           "expires_in_minutes": {"type": "integer", "minimum": 1, "maximum": 525600}},
                          ("product", "reason"), extra=False),
    "Violation": _obj({
        "id": INT, "at": ISO, "outcome": {"type": "string", "enum": ["blocked", "reported", "recorded", "overridden"]},
        "rule_id": NINT, "rule_name": STR, "rule_type": STR, "code": STR, "http_status": INT, "message": STR,
        "retry_after": ISO, "dialect": STR, "product": STR, "environment": STR, "version": NSTR, "status": STR,
        "actor": NSTR, "event_id": NSTR, "override_id": NINT, "violations": {"type": "array", "items": OBJ},
        "attempt": OBJ,
    }, ("id", "at", "outcome", "rule_name", "code", "product", "environment", "violations", "attempt")),
    "Commit": _obj({"sha": STR, "repository": STR, "committed_at": TIME, "authored_at": TIME, "message": STR,
                    "author": STR}, ("sha", "committed_at"), extra=False),
}

WHOLE_OR_TEXT: Schema = {"oneOf": [STR, {"type": "integer"}],
                         "description": "a string, or an integer (kept as its digits); no fractions"}
VERSIONER_COMMON: dict[str, Schema] = {
    "product_name": STR, "version": WHOLE_OR_TEXT, "status": STATUS_IN,
    "scm_sha": STR, "scm_branch": STR, "scm_repository": STR, "build_url": STR, "build_number": STR,
    "deploy_url": {"type": "string", "description": "the CI link when build_url is absent"},
    "source_system": STR, "invoke_id": STR, "description": STR, "change_id": STR, "timestamp": TIME,
    "started_at": {**TIME, "description": "the time of a started event when timestamp is absent"},
    "completed_at": {**TIME, "description": "the time of a finished event when timestamp is absent"},
    "commit_timestamp": TIME, "extra_metadata": OBJ,
}
UUID_ID: Schema = {"type": "string", "format": "uuid", "description": "stable: UUIDv5 of the names"}


def _versioner(kind: str, versions: bool = False) -> dict[str, Any]:
    """`versions`: the older `/version-events/` (a finished build: no status)."""
    deployment = kind == "deployment"
    actor = "deployed_by" if deployment else "built_by"
    props = {**VERSIONER_COMMON, "environment_name": STR, actor: STR, f"{actor}_email": STR, f"{actor}_name": STR,
             **({} if deployment else {"built_at": TIME})}
    required = ("product_name", "version", "environment_name", "status") if deployment else \
        ("product_name", "version") if versions else ("product_name", "version", "status")
    reply = _obj({"id": STR, "product_name": STR, "version": STR, "status": STR, "product_id": UUID_ID,
                  "version_id": UUID_ID,
                  **({"environment_name": NSTR, "deployed_at": ISO, "deployed_by": NSTR, "environment_id": UUID_ID,
                      "event_id": STR, "deployment_id": NSTR} if deployment else {"created_at": ISO})},
                 ("id", "product_name", "version", "status", "product_id", "version_id"))
    return {
        "tags": ["Versioner"],
        "summary": "Record a built version (Versioner API before /build-events/)" if versions else
        f"Record a {kind} event (Versioner API)",
        "security": [{"bearer": []}], "requestBody": _body(_obj(props, required)),
        "responses": {"200": _json(reply, "Stored and committed to disk"), **_errors(INGEST_ERRORS, "VersionerError"),
                      **_blocked("VersionerError")},
    }


QUANTA_FIELDS: dict[str, Schema] = {
    "type": {"type": "string", "enum": ["code_deploy", "config_change", "comment", "cron", "custom"]},
    "content": STR, "product": STR, "environment": STR, "version": STR, "user": STR, "timestamp": TIME,
}
QUANTA_REPLY = _json(_obj({"success": {"type": "boolean"}, "id": STR}, ("success",)), "Stored")
QUANTA_SECURITY = [{"quantaToken": []}, {"quantaQuery": []}]

DEVGRID_EVENT = _obj({
    "type": {"type": "string", "const": "event-deploy"}, "entityId": STR, "timestamp": TIME,
    "attributes": _obj({"env": STR, "status": STATUS_IN, "build_commit_sha": STR, "change_id": STR, "build_id": STR,
                        "build_url": STR, "description": STR, "initiator": STR}, ("env", "status")),
}, ("type", "entityId", "attributes"))

ILERT_INPUT = _obj({
    "integrationKey": {"type": "string", "description": "the deploytrack token (ingest scope)"},
    "apiKey": {"type": "string", "description": "the same, as ilert's GitHub Action names it"},
    "summary": STR, "timestamp": TIME, "userEmail": STR, "userName": STR, "repository": STR,
    "customDetails": {"type": "object", "description": "service, version, sha or commit, environment or env "
                      "become the event's fields; other keys are kept as metadata"},
    "links": {"type": "array", "items": _obj({"href": STR, "text": STR}, ("href",))},
}, ("summary",))

PAGE = {"content": {"text/html": {"schema": STR}}}
# errors raised before a page handler runs (routing, form parsing) follow the Accept header
PAGE_ERROR = {"content": {"text/html": {"schema": STR}, JSON: {"schema": _ref("NativeError")}}}
SIGNIN_REDIRECT = {"description": "Not signed in: to the sign-in form", "headers": {"Location": {"schema": STR}}}


def _page(summary: str, params: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"tags": ["UI"], "summary": summary, "security": [{"session": []}, {"bearer": []}],
            "parameters": params or [],
            "responses": {"200": {"description": "The page", **PAGE}, "303": SIGNIN_REDIRECT,
                          **{str(c): {"description": ERROR_TEXT[c], **PAGE_ERROR} for c in (400, 403, 404)}}}


def _read(summary: str, schema: Schema, params: list[dict[str, Any]] | None = None,
          errors: tuple[int, ...] = READ_ERRORS) -> dict[str, Any]:
    return {"tags": ["Native"], "summary": summary, "security": [{"bearer": []}, {"session": []}],
            "parameters": params or [], "responses": {"200": _json(schema, "OK"), **_errors(errors, "NativeError")}}


def _write(summary: str, scope: str, status: int, schema: Schema, body: Schema | None,
           params: list[dict[str, Any]] | None = None, errors: tuple[int, ...] = ()) -> dict[str, Any]:
    op: dict[str, Any] = {
        "tags": ["Native"], "summary": f"{summary} (scope: {scope})", "security": [{"bearer": []}],
        "parameters": params or [],
        "responses": {str(status): _json(schema, "Committed to disk"),
                      **_errors((400, 401, 403, 413, 503, *errors, *((415,) if body is not None else ())),
                                "NativeError")}}
    if body is not None:
        op["requestBody"] = _body(body)
    return op


HOOK_REPLY = _obj({"status": {"type": "string", "enum": ["accepted", "duplicate", "ignored"]},
                   "events": {"type": "array", "items": STR}, "commits": INT,
                   "incidents": {"type": "array", "items": INT}, "reason": STR}, ("status",))


def _hook(with_id: bool) -> dict[str, Any]:
    params = [_path("source", {"type": "string", "enum": ["github", "gitlab", "gitea", "forgejo", "pagerduty",
                                                           "alertmanager", "opsgenie"]})]
    if with_id:
        params.append(_path("hook_id", INT))
    return {"tags": ["Hooks"], "security": [], "parameters": params, "requestBody": _body(OBJ),
            "summary": "A webhook delivery from a forge or paging tool" + (
                "" if with_id else " (the hook is found by its secret among the source's hooks)"),
            "description": "Authenticated by the source's own scheme (HMAC signature header, token header, bearer "
                           "secret, or ?secret=); see docs/hooks/. Nothing is stored before it is verified.",
            "responses": {"200": _json(HOOK_REPLY, "Recorded (or a duplicate, or an event that is not used)"),
                          **_errors((400, 401, 404, 413, 429, 503), "NativeError")}}


EVENT_FILTERS = [
    _query("product", "exact product name"), _query("environment", "environment (aliases folded)"),
    _query("kind", "event kind", {"type": "string", "enum": list(KINDS)}),
    _query("status", "normalized status", {"type": "string", "enum": list(STATUSES)}),
    _query("since", "occurred at or after (ISO 8601 or epoch)"), _query("until", "occurred before"),
    _query("q", "text anywhere in the summary, A-Z in either case; a search its index cannot answer may "
                 "return a short page that still has a next_cursor (docs/api.md, Searching events)"),
]
PAGING = [_query("limit", "page size, 1 to 500", {"type": "integer", "minimum": 1, "maximum": 500}),
          _query("cursor", "next_cursor from the previous page")]


def _template(path: str) -> str:
    """Starlette's `{name:path}` as OpenAPI's `{name}`."""
    return re.sub(r"\{([^}:]+):[^}]+\}", r"{\1}", path)


def _pages(routes: Iterable[BaseRoute], documented: dict[str, Any]) -> dict[str, Any]:
    """HTML pages of the route table not written out below, described generically from their docstrings."""
    found: dict[str, Any] = {}
    for route in routes:
        if not isinstance(route, Route) or "GET" not in (route.methods or set()):
            continue
        path = _template(route.path)
        if path in documented or path.startswith("/api/") or path in ("/healthz", "/metrics"):
            continue
        doc = (route.endpoint.__doc__ or "").strip().splitlines()
        params = [_path(name) for name in re.findall(r"\{([^}]+)\}", path)]
        found[path] = {"get": _page(f"{doc[0] if doc else route.name} (HTML)", params)}
    return found


def document(routes: Iterable[BaseRoute] = ()) -> dict[str, Any]:
    """The whole document (a fresh dict each call); HTML pages of `routes` not listed here are added."""
    doc = _document()
    doc["paths"].update(_pages(routes, doc["paths"]))
    # GET /events is the event list page; POST /events is DevGrid's ingestion (one path, two operations)
    doc["paths"]["/events"]["get"] = _page("Event list (HTML)", EVENT_FILTERS + [PAGING[1]])
    return doc


def _document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "deploytrack", "version": __version__,
                 "description": "Records builds and deployments and computes DORA metrics. Ingestion speaks four "
                                "foreign APIs unchanged (Quanta, Versioner, DevGrid, ilert); a 2xx means the event "
                                "is committed to disk. Ingestion paths also answer with the other trailing-slash "
                                "form, without a redirect."},
        "servers": [{"url": "/"}],
        "tags": [{"name": n} for n in ("Versioner", "Quanta", "DevGrid", "ilert", "Hooks", "Native", "UI",
                                        "Operations")],
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <token>"},
                "quantaToken": {"type": "apiKey", "in": "header", "name": "Authorization",
                                "description": "Authorization: Token <token> (Quanta)"},
                "quantaQuery": {"type": "apiKey", "in": "query", "name": "auth_token",
                                "description": "?auth_token=<token> (Quanta)"},
                "devgridKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
                "session": {"type": "apiKey", "in": "cookie", "name": "dt_session",
                            "description": "UI session after POST /signin"},
            },
            "schemas": SCHEMAS,
        },
        "paths": {
            "/deployment-events/": {"post": _versioner("deployment")},
            "/build-events/": {"post": _versioner("build")},
            "/version-events/": {"post": _versioner("build", versions=True)},
            "/api/events/push": {
                "post": {"tags": ["Quanta"], "summary": "Push an event (Quanta DEM)", "security": QUANTA_SECURITY,
                         "requestBody": _body(_obj(QUANTA_FIELDS, ("type",))),
                         "responses": {"200": QUANTA_REPLY, **_errors((*INGEST_ERRORS, 415), "QuantaError"),
                                       **_blocked("QuantaError")}},
                "get": {"tags": ["Quanta"], "summary": "Push an event with query parameters (Quanta DEM)",
                        "security": QUANTA_SECURITY,
                        "parameters": [{**_query(k, k, v), "required": k == "type"} for k, v in QUANTA_FIELDS.items()],
                        "responses": {"200": QUANTA_REPLY, **_errors(INGEST_ERRORS, "QuantaError"),
                                      **_blocked("QuantaError")}},
            },
            "/events": {"post": {
                "tags": ["DevGrid"], "summary": "Record a batch of deployment events (all or nothing)",
                "security": [{"devgridKey": []}],
                "requestBody": _body(_obj({"events": {"type": "array", "items": DEVGRID_EVENT, "minItems": 1}},
                                          ("events",))),
                "responses": {"201": _json(_obj({"events": {"type": "array", "items": OBJ}}, ("events",)),
                                           "Stored"), **_errors(INGEST_ERRORS, "DevGridError"),
                              **_blocked("DevGridError")}}},
            "/api/deployment-events": {"post": {
                "tags": ["ilert"],
                "summary": "Record a deployment event; the token is the body's integrationKey (or apiKey)",
                "security": [], "requestBody": _body(ILERT_INPUT),
                "responses": {"202": _json(_obj({"id": STR}, ("id",)), "Accepted (stored)"),
                              **_errors(INGEST_ERRORS, "IlertError"), **_blocked("IlertError")}}},
            "/hooks/{source}": {"post": _hook(False)},
            "/hooks/{source}/{hook_id}": {"post": _hook(True)},
            "/api/v1/events": {"get": _read(
                "Events newest first", _obj({"events": {"type": "array", "items": _ref("Event")}, "next_cursor": NSTR},
                                            ("events", "next_cursor")), EVENT_FILTERS + PAGING)},
            "/api/v1/events/{event_id}": {
                "get": _read("One event", _ref("Event"), [_path("event_id")], (*READ_ERRORS, 404)),
                "delete": _write("Delete one event (audit-logged)", "admin", 200, OBJ, None, [_path("event_id")],
                                 (404,)),
            },
            "/api/v1/products": {"get": _read(
                "Products with deployments, by name, each with the version running in each environment",
                _obj({"products": {"type": "array", "items": _ref("Product")}, "next_cursor": NSTR}, ("products",)),
                [_query("limit", "page size, 1 to 25", {"type": "integer", "minimum": 1, "maximum": 25}),
                 _query("cursor", "next_cursor from the previous page")])},
            "/api/v1/products/{name}": {"get": _read(
                "One product: the version running in each environment (the first 50 by name; "
                "more_environments says there are more), or in the environments named", _ref("Product"),
                [_path("name"), _query("environment", "an environment to show (repeatable, up to 50); "
                                                      "aliases are folded")],
                (*READ_ERRORS, 404))},
            "/api/v1/environments": {"get": _read(
                "Environments by name",
                _obj({"environments": {"type": "array", "items": _obj({"name": STR, "id": STR, "first_seen_at": ISO},
                                                                       ("name", "id"))},
                      "next_cursor": NSTR}, ("environments",)),
                [_query("limit", "page size, 1 to 500", {"type": "integer", "minimum": 1, "maximum": 500}),
                 _query("cursor", "next_cursor from the previous page")])},
            "/api/v1/products/{name}/events": {"delete": _write(
                "Delete all events of a product (audit-logged)", "admin", 200, OBJ, None, [_path("name")], (404,))},
            "/api/v1/incidents": {
                "get": _read("Incidents newest first", _obj({"incidents": {"type": "array", "items": _ref("Incident")},
                                                             "next_before": NINT}, ("incidents",)),
                             [_query("product", "product"), _query("environment", "environment"),
                              _query("status", "open or resolved", {"type": "string", "enum": ["open", "resolved"]}),
                              _query("before", "next_before from the previous page", INT), PAGING[0]]),
                "post": _write("Open (or record) an incident", "ingest", 201, _ref("Incident"),
                               {**_ref("IncidentInput")}),
            },
            "/api/v1/incidents/{incident_id}": {
                "get": _read("One incident", _ref("Incident"), [_path("incident_id", INT)], (*READ_ERRORS, 404)),
                "patch": _write("Change or resolve an incident", "ingest", 200, _ref("Incident"),
                                _ref("IncidentInput"), [_path("incident_id", INT)], (404,)),
            },
            "/api/v1/commits": {"post": _write(
                "Record commits (for lead time)", "ingest", 201, _obj({"stored": INT}, ("stored",)),
                {"oneOf": [{"type": "array", "items": _ref("Commit"), "minItems": 1},
                           _obj({"commits": {"type": "array", "items": _ref("Commit"), "minItems": 1}},
                                ("commits",), extra=False)]})},
            "/api/v1/deployments": {"get": _read(
                "Deployment records newest first",
                _obj({"deployments": {"type": "array", "items": _ref("Deployment")}, "next_cursor": NSTR},
                     ("deployments",)),
                [_query(n, n) for n in ("product", "environment", "version")]
                + [_query("status", "status", {"type": "string", "enum": list(STATUSES)}),
                   _query("label", "rollback or hotfix", {"type": "string", "enum": ["rollback", "hotfix"]}),
                   _query("since", "first event at or after"), _query("until", "first event before"), *PAGING])},
            "/api/v1/metrics": {"get": _read(
                "DORA metrics: live numbers and the daily snapshot series", OBJ,
                [_query("product", "product"), _query("environment", "environment"),
                 _query("window", "7, 30 or 90 days",
                        {"type": "string", "enum": ["7", "30", "90", "7d", "30d", "90d"]}),
                 _query("days", f"how many days back the series reaches, 1 to {SNAPSHOT_DAYS} (it starts at the "
                                "scope's first day with data)",
                        {"type": "integer", "minimum": 1, "maximum": SNAPSHOT_DAYS})])},
            "/api/v1/rules": {
                "get": _read("Deployment rules by name", _obj({"rules": {"type": "array", "items": _ref("Rule")}},
                                                              ("rules",))),
                "post": _write("Create a deployment rule (audit-logged)", "admin", 201, _ref("Rule"),
                               _ref("RuleInput"), errors=(409,)),
            },
            "/api/v1/rules/{rule_id}": {
                "get": _read("One deployment rule", _ref("Rule"), [_path("rule_id")], (*READ_ERRORS, 404)),
                "patch": _write("Change a rule's fields, e.g. its mode (audit-logged)", "admin", 200, _ref("Rule"),
                                _ref("RuleInput"), [_path("rule_id")], (404, 409)),
                "delete": _write("Delete a rule and its unused overrides (audit-logged)", "admin", 200,
                                 _obj({"deleted": _ref("Rule")}, ("deleted",)), None, [_path("rule_id")], (404,)),
            },
            "/api/v1/rule-overrides": {
                "get": _read("One-time overrides, newest first",
                             _obj({"overrides": {"type": "array", "items": _ref("Override")}}, ("overrides",)),
                             [PAGING[0]]),
                "post": _write("Grant a one-time override for the next matching blocked deployment (audit-logged)",
                               "admin", 201, _ref("Override"), _ref("OverrideInput"), errors=(404,)),
            },
            "/api/v1/rule-violations": {"get": _read(
                "Deployments a rule blocked or objected to, newest first",
                _obj({"violations": {"type": "array", "items": _ref("Violation")}, "next_before": NINT},
                     ("violations", "next_before")),
                [_query("product", "product"),
                 _query("outcome", "outcome", {"type": "string", "enum": ["blocked", "reported", "recorded",
                                                                          "overridden"]}),
                 _query("before", "next_before from the previous page", INT), PAGING[0]])},
            "/api/v1/openapi.json": {"get": {"tags": ["Operations"], "summary": "This document", "security": [],
                                             "responses": {"200": _json(OBJ, "OpenAPI 3.1")}}},
            "/openapi.json": {"get": {"tags": ["Operations"], "summary": "This document (the usual place tools look)",
                                      "security": [], "responses": {"200": _json(OBJ, "OpenAPI 3.1")}}},
            "/healthz": {"get": {"tags": ["Operations"], "summary": "Liveness, a database round trip and the nightly "
                                 "quick integrity check's result", "security": [],
                                 "responses": {"200": _json(_obj(HEALTH), "Healthy"),
                                               "503": _json(_obj({**HEALTH, "error": STR}), "Unhealthy")}}},
            "/metrics": {"get": {"tags": ["Operations"], "summary": "Prometheus counters", "security": [],
                                 "responses": {"200": {"description": "Prometheus text format",
                                                       "content": {"text/plain": {"schema": STR}}}}}},
            "/": {"get": _page("Production at a glance: each product's version in production, 30-day DORA numbers, "
                               "open incidents and today's failures, those needing attention first (HTML)",
                               [_query("after", "the product name the previous page ended with")])},
            "/dora/{metric}": {"get": _page("The deployments or incidents one DORA number counts (HTML)", [
                _path("metric", {"type": "string", "enum": ["deployment_frequency", "lead_time",
                                                            "change_failure_rate", "time_to_restore"]}),
                _query("product", "exact product name"), _query("environment", "environment (default: production)"),
                _query("window", "7d, 30d or 90d"), PAGING[1]])},
            "/incidents/{incident_id}": {
                "get": _page("One incident: its linked deployment and the rule, the deployments before it (HTML)",
                             [_path("incident_id", INT)]),
                "post": {"tags": ["UI"], "summary": "Resolve, reopen or re-link an incident (admin scope, "
                                                    "CSRF-protected form)",
                         "security": [{"session": []}, {"bearer": []}], "parameters": [_path("incident_id", INT)],
                         "requestBody": _body(_obj({"csrf": STR, "action": {"type": "string", "enum": [
                             "resolve", "reopen", "link"]}, "deployment_id": {
                                 "type": "string", "description": "a deployment id, or empty for the link rules"}},
                             ("csrf", "action")), media="application/x-www-form-urlencoded"),
                         "responses": {"303": {"description": "Changed (or not signed in): to the incident page "
                                                              "(or the sign-in form)",
                                               "headers": {"Location": {"schema": STR}}},
                                       **{str(c): {"description": ERROR_TEXT[c], **PAGE_ERROR}
                                          for c in (400, 403, 404)}}},
            },
            "/events/{event_id}": {"get": _page("One event (HTML)", [_path("event_id")])},
            "/deployments": {"get": _page("Deployments with lifecycle and duration (HTML)", [
                _query("product", "exact product name"), _query("environment", "environment (aliases folded)"),
                _query("status", "deployment status", {"type": "string", "enum": list(STATUSES)}),
                _query("label", "rollback or hotfix", {"type": "string", "enum": ["rollback", "hotfix"]}),
                PAGING[1]])},
            "/deployments/{deployment_id}": {"get": _page("One deployment, its events and incidents (HTML)",
                                                          [_path("deployment_id", {"type": "integer"})])},
            "/environments": {"get": _page("What version runs where: product x environment (HTML)")},
            "/products/{name}": {"get": _page("A product: what runs where and its timeline (HTML)", [
                _path("name"), _query("days", "timeline span", {"type": "integer", "enum": [7, 30, 90]})])},
            "/dora": {"get": _page("DORA dashboard: metrics, bands, 90-day trends (HTML)", [
                _query("product", "exact product name"), _query("environment", "environment (default: production)"),
                _query("window", "7d, 30d or 90d")])},
            "/incidents": {"get": _page("Incidents, open or resolved, with their linked deployments (HTML)", [
                _query("state", "open or resolved", {"type": "string", "enum": ["open", "resolved"]}),
                _query("product", "exact product name"), PAGING[1]])},
            "/rules": {"get": _page("Deployment rules: scope, mode, next no-deploy window; overrides (HTML)")},
            "/rules/violations": {"get": _page("Deployments a rule blocked or objected to (HTML)", [
                _query("outcome", "outcome", {"type": "string", "enum": ["blocked", "reported", "recorded",
                                                                          "overridden"]}),
                _query("product", "exact product name"), _query("before", "paging", INT)])},
            "/signin": {
                "get": {"tags": ["UI"], "summary": "Sign-in form", "security": [],
                        "parameters": [_query("next", "same-site path to return to")],
                        "responses": {"200": {"description": "The form", **PAGE}}},
                "post": {"tags": ["UI"], "summary": "Sign in with a read token (CSRF-protected)", "security": [],
                         "requestBody": _body(_obj({"token": STR, "csrf": STR, "next": STR}, ("token", "csrf")),
                                              media="application/x-www-form-urlencoded"),
                         "responses": {"303": {"description": "Signed in: to `next`"},
                                       **{str(c): {"description": ERROR_TEXT[c], **PAGE_ERROR}
                                          for c in (400, 401, 403)}}},
            },
            "/signout": {"post": {
                "tags": ["UI"], "summary": "Sign out (CSRF-protected)", "security": [],
                "requestBody": _body(_obj({"csrf": STR}), media="application/x-www-form-urlencoded"),
                "responses": {"303": {"description": "Signed out"},
                              **{str(c): {"description": ERROR_TEXT[c], **PAGE_ERROR} for c in (400, 403)}}}},
        },
    }


async def openapi_json(request: Request) -> Response:
    """GET /api/v1/openapi.json: no auth (it describes the API, holds no data)."""
    return JSONResponse(document(request.app.routes))
