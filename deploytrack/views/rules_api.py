"""Native API for deployment rules: rules (admin writes), one-time overrides, recorded violations."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from deploytrack.errors import BadRequest, NotFound
from deploytrack.model import integer, whole_number
from deploytrack.rules import store as rule_store
from deploytrack.rules.model import DEFAULT_OVERRIDE_MINUTES, MAX_REASON, OUTCOMES, minutes, parse_rule, text
from deploytrack.rules.status import rule_json
from deploytrack.settings import canonical_environment
from deploytrack.timeutil import now_us, to_iso
from deploytrack.views.api import api, page_limit
from deploytrack.web.http import JSONResponse, parse_json, read_body
from deploytrack.web.sessions import require

_OVERRIDE_FIELDS = {"rule_id", "product", "environment", "version", "reason", "expires_in_minutes"}


def override_json(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "rule_id": row["rule_id"], "rule_name": row.get("rule_name"), "product": row["product"],
            "environment": row["environment"], "version": row["version"], "reason": row["reason"],
            "granted_by": row["granted_by"], "granted_at": to_iso(row["granted_at"]),
            "expires_at": to_iso(row["expires_at"]), "used_at": to_iso(row["used_at"]),
            "used_by_event": row["used_by_event"]}


def violation_json(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: row[k] for k in ("id", "outcome", "rule_id", "rule_name", "rule_type", "code", "http_status", "message",
                               "dialect", "product", "environment", "version", "status", "actor", "event_id",
                               "override_id")}
    out.update(at=to_iso(row["at"]), retry_after=to_iso(row["retry_after"]), violations=orjson.loads(row["violations"]),
               attempt=orjson.loads(row["attempt"]))
    return out


def _actor(token: Any) -> tuple[str | None, int | None]:
    return (token.name, token.id) if token is not None else (None, None)


def _rule_id(request: Request) -> int:
    value = whole_number(str(request.path_params["rule_id"]))
    if value is None:
        raise NotFound("no rule with that id", "rule_id")
    return value


async def _body(request: Request) -> Any:
    app = request.app.state.deploytrack
    return parse_json(await read_body(request, app.settings.max_body_bytes))


@api
async def list_rules(request: Request) -> Response:
    """Every rule, by name."""
    await require(request, "read")
    now = now_us()
    return JSONResponse({"rules": [rule_json(r, now) for r in
                                   await rule_store.list_rules(request.app.state.deploytrack.db)]})


@api
async def get_rule(request: Request) -> Response:
    """One rule."""
    await require(request, "read")
    rule = await rule_store.get_rule(request.app.state.deploytrack.db, _rule_id(request))
    if rule is None:
        raise NotFound("no rule with that id", "rule_id")
    return JSONResponse(rule_json(rule))


@api
async def create_rule(request: Request) -> Response:
    """Admin: create a rule (audit-logged)."""
    token = await require(request, "admin")
    app = request.app.state.deploytrack
    rule = parse_rule(await _body(request), app.settings.environment_aliases)
    stored = await app.db.write(rule_store.insert_rule, rule, now_us(), *_actor(token))
    return JSONResponse(rule_json(stored), status_code=201)


@api
async def update_rule(request: Request) -> Response:
    """Admin: change a rule's fields, e.g. {"mode": "report-only"} (audit-logged)."""
    token = await require(request, "admin")
    app = request.app.state.deploytrack
    rule_id = _rule_id(request)
    changes = await _body(request)
    if not isinstance(changes, dict) or not changes:
        raise BadRequest("Request body must be a JSON object with the fields to change")
    stored = await app.db.write(rule_store.update_rule, rule_id, changes, app.settings.environment_aliases,
                                now_us(), *_actor(token))
    return JSONResponse(rule_json(stored))


@api
async def delete_rule(request: Request) -> Response:
    """Admin: delete a rule and its unused overrides (audit-logged); its violations stay."""
    token = await require(request, "admin")
    app = request.app.state.deploytrack
    rule = await app.db.write(rule_store.delete_rule, _rule_id(request), now_us(), *_actor(token))
    return JSONResponse({"deleted": rule_json(rule)})


def parse_override(body: object, aliases: Mapping[str, str]) -> dict[str, Any]:
    """Validate an override request; a 400 names the field."""
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object with product and reason")
    unknown = sorted(set(body) - _OVERRIDE_FIELDS)
    if unknown:
        raise BadRequest(f"Field '{unknown[0]}' is not an override field", unknown[0])
    out: dict[str, Any] = {name: text(body.get(name), name, limit, required)
                           for name, limit, required in (("product", 512, True), ("environment", 512, False),
                                                         ("version", 512, False), ("reason", MAX_REASON, True))}
    if out["environment"] is not None:
        out["environment"] = canonical_environment(out["environment"], aliases)
    rule_id = body.get("rule_id")
    out["rule_id"] = None if rule_id is None else integer(rule_id, "rule_id",
                                                          what="a rule's id (absent for every rule): a whole number")
    out["expires_in_minutes"] = minutes(body.get("expires_in_minutes", DEFAULT_OVERRIDE_MINUTES),
                                        "expires_in_minutes", 1)
    return out


@api
async def create_override(request: Request) -> Response:
    """Admin: a one-time override letting the next matching deployment a rule would block through."""
    token = await require(request, "admin")
    app = request.app.state.deploytrack
    o = parse_override(await _body(request), app.settings.environment_aliases)
    now = now_us()
    row = await app.db.write(rule_store.grant_override, o["rule_id"], o["product"], o["environment"], o["version"],
                             o["reason"], now + o["expires_in_minutes"] * 60_000_000, now, *_actor(token))
    return JSONResponse(override_json(row), status_code=201)


@api
async def list_overrides(request: Request) -> Response:
    """Overrides newest first (used ones show who used them)."""
    await require(request, "read")
    rows = await rule_store.list_overrides(request.app.state.deploytrack.db, page_limit(request))
    return JSONResponse({"overrides": [override_json(r) for r in rows]})


def violation_filters(request: Request) -> dict[str, Any]:
    """product, outcome and before (paging) from the query string."""
    product = (request.query_params.get("product") or "").strip() or None
    if product is not None and len(product) > 512:
        raise BadRequest("query parameter 'product' is too long", "product")
    outcome = (request.query_params.get("outcome") or "").strip() or None
    if outcome is not None and outcome not in OUTCOMES:
        raise BadRequest(f"query parameter 'outcome' must be one of {', '.join(OUTCOMES)}", "outcome")
    before_text = request.query_params.get("before")
    before = whole_number(before_text) if before_text else None
    if before_text and before is None:
        raise BadRequest("query parameter 'before' must be a whole number", "before")
    return {"product": product, "outcome": outcome, "before": before}


@api
async def list_violations(request: Request) -> Response:
    """Deployments a rule objected to, newest first: blocked, reported, recorded or overridden."""
    await require(request, "read")
    limit = page_limit(request)
    rows = await rule_store.list_violations(request.app.state.deploytrack.db, limit, **violation_filters(request))
    return JSONResponse({"violations": [violation_json(r) for r in rows],
                         "next_before": rows[-1]["id"] if len(rows) == limit else None})


def routes() -> list[Route]:
    return [
        Route("/api/v1/rules", list_rules, methods=["GET"]),
        Route("/api/v1/rules", create_rule, methods=["POST"]),
        Route("/api/v1/rules/{rule_id}", get_rule, methods=["GET"]),
        Route("/api/v1/rules/{rule_id}", update_rule, methods=["PATCH"]),
        Route("/api/v1/rules/{rule_id}", delete_rule, methods=["DELETE"]),
        Route("/api/v1/rule-overrides", list_overrides, methods=["GET"]),
        Route("/api/v1/rule-overrides", create_override, methods=["POST"]),
        Route("/api/v1/rule-violations", list_violations, methods=["GET"]),
    ]
