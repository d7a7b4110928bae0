"""The OpenAPI document: served, complete (every route, nothing more), and true (schemathesis).

schemathesis generates requests from the document for every operation and sends them to a real
server on 127.0.0.1; no answer may be a 5xx, and every answer must have a documented status code,
content type and body shape. Examples per operation are bounded so this takes seconds.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import checks as st_checks
from starlette.routing import Mount, Route

from deploytrack.app import create_app
from deploytrack.settings import load_settings
from deploytrack.web.openapi import document
from tests.conftest import LiveServer, create_token
from tests.dbcheck import consistency_problems

ROUTES = create_app(load_settings({"db": ":memory:"}, environ={})).routes
SCHEMA = schemathesis.openapi.from_dict(document(ROUTES))
CHECKS = [st_checks.not_a_server_error, st_checks.status_code_conformance, st_checks.content_type_conformance,
          st_checks.response_schema_conformance]


def _routes() -> set[tuple[str, str]]:
    found = set()
    for route in ROUTES:
        if isinstance(route, Mount):
            continue
        assert isinstance(route, Route)
        for method in (route.methods or set()) - {"HEAD"}:
            found.add((method.lower(), re.sub(r"\{([^}:]+):[^}]+\}", r"{\1}", route.path)))
    return found


def test_served_document_is_valid_openapi(client) -> None:
    from openapi_spec_validator import validate

    resp = client.get("/api/v1/openapi.json")
    assert resp.status_code == 200 and resp.headers["content-type"] == "application/json"
    validate(resp.json())
    assert resp.json() == document(ROUTES)


def test_document_describes_every_route_and_only_those() -> None:
    documented = {(m, p) for p, ops in document(ROUTES)["paths"].items() for m in ops}
    routes = _routes()
    for method, path in routes:
        other = path[:-1] if path.endswith("/") and path != "/" else path + "/"
        assert (method, path) in documented or (method, other) in documented, f"{method.upper()} {path} undocumented"
    for method, path in documented:
        assert (method, path) in routes, f"{method.upper()} {path} is documented but not served"


def test_every_operation_declares_security_and_errors() -> None:
    doc = document(ROUTES)
    schemes = set(doc["components"]["securitySchemes"])
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert "security" in op, (method, path)
            for requirement in op["security"]:
                assert set(requirement) <= schemes
            if op["security"]:
                assert {"401", "403"} <= set(op["responses"]) or "303" in op["responses"], (method, path)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    db: Path = tmp_path_factory.mktemp("openapi") / "deploytrack.db"
    secret = create_token(db, "schemathesis", "ingest", "read", "admin", product="st", environment="prod")
    server = LiveServer(db).start()
    try:
        yield {"url": server.url, "secret": secret, "db": db, "server": server}
    finally:
        server.stop(signal.SIGTERM)


def _credentials(case: Any, secret: str) -> dict[str, str]:
    """The token where this operation's API takes it."""
    path = case.operation.path
    if path == "/api/events/push":
        return {"Authorization": f"Token {secret}"}
    if path == "/events":
        return {"x-api-key": secret}
    if path == "/api/deployment-events":
        if isinstance(case.body, dict):
            case.body["integrationKey"] = secret
        return {}
    if path in ("/signin", "/signout"):
        return {}
    return {"Authorization": f"Bearer {secret}"}


@SCHEMA.parametrize()
@settings(max_examples=8, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_document(case: Any, live: dict[str, Any]) -> None:
    headers = _credentials(case, live["secret"])
    response = case.call_and_validate(base_url=live["url"], headers=headers, checks=CHECKS, timeout=10)
    assert response.status_code < 500
    assert live["secret"] not in response.text


def test_after_schemathesis_the_database_is_consistent(live: dict[str, Any]) -> None:
    assert httpx.get(live["url"] + "/healthz", timeout=10).status_code == 200
    assert consistency_problems(live["db"]) == []
    assert not re.search(r"Traceback|unhandled error", live["server"].log.read_text())
