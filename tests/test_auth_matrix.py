"""Every endpoint, without a token, with a wrong, a revoked and a wrong-scope token.

The endpoint list comes from the application's own route table, so a new endpoint cannot escape:
it is either in PUBLIC (with the reason) or it must refuse each bad credential in its API's shape.
Against a real server with the access log on, and afterwards no secret may appear in the log, in
any answer, or in the database file (tokens are stored only as SHA-256 hashes).
"""

from __future__ import annotations

import hashlib
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from starlette.routing import Mount, Route

from deploytrack.app import create_app
from deploytrack.settings import load_settings
from tests.conftest import LiveServer, auth, create_token, run_cli

# (method, path): why it needs no token
PUBLIC = {
    ("GET", "/healthz"): "liveness probe for load balancers and systemd; says only ok/error and the version",
    ("GET", "/metrics"): "Prometheus scrape target; aggregate counters only, no event data",
    ("GET", "/signin"): "the sign-in form",
    ("POST", "/signin"): "the sign-in form's target (CSRF-protected; the token is the credential)",
    ("POST", "/signout"): "clears the session cookie (CSRF-protected)",
    ("GET", "/api/v1/openapi.json"): "the API description; no data",
    ("GET", "/openapi.json"): "the same API description, where tools look first",
}
PUBLIC_MOUNTS = {"/static": "CSS shipped in the package"}

GOOD_BODY = {
    "versioner": {"product_name": "auth", "version": "1", "environment_name": "prod", "status": "success"},
    "quanta": {"type": "code_deploy", "content": "auth test"},
    "devgrid": {"events": [{"type": "event-deploy", "entityId": "auth",
                            "attributes": {"env": "prod", "status": "success"}}]},
    "ilert": {"summary": "auth test"},
}


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # with path parameters filled in
    api: str  # versioner | quanta | devgrid | ilert | native | page


def endpoints(event_id: str) -> list[Endpoint]:
    app = create_app(load_settings({"db": ":memory:"}, environ={}))
    found = []
    for route in app.routes:
        if isinstance(route, Mount):
            assert route.path in PUBLIC_MOUNTS, f"mount {route.path} is not classified"
            continue
        assert isinstance(route, Route), f"unknown route type {route!r}"
        name = route.endpoint.__name__
        api = name.split("_")[0] if name.split("_")[0] in GOOD_BODY else \
            "native" if route.path.startswith("/api/v1/") else "hook" if route.path.startswith("/hooks/") else "page"
        path = re.sub(r"\{event_id\}", event_id, route.path).replace("{source}", "github")
        path = re.sub(r"\{[^}]+\}", "1", path)
        for method in sorted((route.methods or set()) - {"HEAD"}):
            if (method, route.path) not in PUBLIC:
                found.append(Endpoint(method, path, api))
    return sorted(found, key=lambda ep: ep.method == "DELETE")  # deletes last: they remove the test event


_HTTP: dict[str, httpx.Client] = {}


def send(server: LiveServer, ep: Endpoint, secret: str | None, via_query: bool = False) -> httpx.Response:
    headers: dict[str, str] = {"Accept": "text/html" if ep.api == "page" else "application/json"}
    body: Any = GOOD_BODY.get(ep.api, {})
    params = {}
    if secret is not None:
        if ep.api == "quanta":
            if via_query:
                params["auth_token"] = secret
            else:
                headers["Authorization"] = f"Token {secret}"
        elif ep.api == "devgrid":
            headers["x-api-key"] = secret
        elif ep.api == "ilert":
            body = {**body, "integrationKey": secret}
        else:
            headers.update(auth(secret))
    if ep.method == "GET" and ep.api == "quanta":
        params.update(body)
    kwargs: dict[str, Any] = {"json": body} if ep.method != "GET" else {}
    if server.url not in _HTTP:  # one client for the run: building one (its TLS context) costs ~100 ms
        _HTTP[server.url] = httpx.Client(timeout=10)
    client = _HTTP[server.url]
    return client.request(ep.method, server.url + ep.path, headers=headers, params=params, follow_redirects=False,
                          **kwargs)


def check_refusal(resp: httpx.Response, ep: Endpoint, status: int) -> None:
    where = f"{ep.method} {ep.path}"
    if ep.api == "page":
        if status == 401:
            assert resp.status_code == 303, (where, resp.status_code)
            assert resp.headers["location"].startswith("/signin"), where
        else:
            assert resp.status_code == status and "text/html" in resp.headers["content-type"], (where, resp.status_code)
        return
    assert resp.status_code == status, (where, resp.status_code, resp.text[:200])
    body = resp.json()
    code = {401: "unauthorized", 403: "forbidden"}[status]
    if ep.api == "native":
        assert body["error"]["code"] == code and body["error"]["message"], (where, body)
    elif ep.api == "versioner":
        assert set(body) == {"detail"} and body["detail"], (where, body)
    elif ep.api == "quanta":
        assert set(body) == {"error"} and body["error"], (where, body)
    elif ep.api == "devgrid":
        assert body["statusCode"] == status and body["error"] == code and body["message"], (where, body)
    elif ep.api == "ilert":
        assert body["status"] == status and body["code"] == code.upper() and body["message"], (where, body)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, Any]]:
    db = tmp_path / "deploytrack.db"
    secrets = {
        "full": create_token(db, "full", "ingest", "read"),
        "ingest": create_token(db, "ingest-only", "ingest"),
        "read": create_token(db, "read-only", "read"),
        "admin": create_token(db, "admin", "admin"),
        "revoked": create_token(db, "gone", "ingest", "read", "admin"),
    }
    code, _ = run_cli("token", "revoke", "gone", "--db", str(db))
    assert code == 0
    server = LiveServer(db, "--log-level", "debug")  # access log on: the strictest place for a leak
    server.start()
    try:
        made = httpx.post(server.url + "/deployment-events/", json=GOOD_BODY["versioner"],
                          headers=auth(secrets["full"]), timeout=10)
        assert made.status_code == 200, made.text
        yield {"server": server, "db": db, "secrets": secrets, "event_id": made.json()["id"]}
    finally:
        if server.url in _HTTP:
            _HTTP.pop(server.url).close()
        server.stop(signal.SIGTERM)


def test_every_endpoint_refuses_missing_wrong_revoked_and_wrong_scope_tokens(world: dict[str, Any]) -> None:
    server, secrets = world["server"], world["secrets"]
    wrong = "dt_" + "x" * 43
    checked = endpoints(world["event_id"])
    assert {ep.api for ep in checked} >= {"versioner", "quanta", "devgrid", "ilert", "native", "page"}
    answers = []
    for ep in checked:
        if ep.api == "hook":  # hooks take no API token, only their source's signature (tests/test_hooks.py)
            for secret in (None, wrong, secrets["revoked"], secrets["admin"]):
                resp = send(server, ep, secret)
                assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized", (ep, resp.text)
                answers.append(resp)
            continue
        for secret in (None, wrong, secrets["revoked"]):
            resp = send(server, ep, secret)
            check_refusal(resp, ep, 401)
            answers.append(resp)
            if ep.api == "quanta" and secret is not None:
                resp = send(server, ep, secret, via_query=True)
                check_refusal(resp, ep, 401)
                answers.append(resp)
        # a token of the other scope: ingestion wants `ingest`, reading wants `read`
        other = secrets["read"] if ep.api in GOOD_BODY else secrets["ingest"]
        resp = send(server, ep, other)
        if ep.method == "GET" or ep.api in GOOD_BODY:
            check_refusal(resp, ep, 403)
        else:  # a native write: at least one of the two single-scope tokens must be refused
            alt = send(server, ep, secrets["read"])
            assert 403 in (resp.status_code, alt.status_code), (ep, resp.status_code, alt.status_code)
        answers.append(resp)
        # and a token with every scope gets past authentication
        right = send(server, ep, secrets["admin"])
        assert right.status_code not in (401, 403), (ep, right.status_code, right.text[:200])
        answers.append(right)
    for resp in answers:
        for secret in secrets.values():
            assert secret not in resp.text and secret not in str(resp.headers), resp.request.url


def test_public_endpoints_are_public_and_listed(world: dict[str, Any]) -> None:
    server = world["server"]
    for method, path in PUBLIC:
        if method == "GET":
            resp = httpx.get(server.url + path, timeout=10)
            assert resp.status_code == 200, (path, resp.status_code)
    assert httpx.get(server.url + "/static/app.css", timeout=10).status_code == 200


def test_secrets_never_in_logs_pages_or_database(world: dict[str, Any]) -> None:
    server, secrets, db = world["server"], world["secrets"], world["db"]
    full = secrets["full"]
    # the secret in every place a client may put it, on accepted and refused requests alike
    httpx.get(server.url + "/api/events/push", params={"auth_token": full, "type": "comment", "content": "q"},
              timeout=10)
    httpx.get(server.url + "/api/events/push", params={"auth_token": full + "x", "type": "comment"}, timeout=10)
    httpx.post(server.url + "/api/deployment-events", json={"integrationKey": full, "summary": "s"}, timeout=10)
    httpx.post(server.url + "/events", headers={"x-api-key": full}, json=GOOD_BODY["devgrid"], timeout=10)
    # the UI: sign in with the secret, then every page (cookies are Secure, so carried by hand over http)
    with httpx.Client(base_url=server.url, timeout=10) as browser:
        form = browser.get("/signin")
        csrf = form.cookies["dt_csrf"]
        jar = {"Cookie": f"dt_csrf={csrf}"}
        signed_in = browser.post("/signin", data={"token": full, "csrf": csrf, "next": "/"}, headers=jar)
        assert signed_in.status_code == 303, signed_in.text[:300]
        session = {"Cookie": f"dt_csrf={csrf}; dt_session={signed_in.cookies['dt_session']}"}
        pages = [browser.get(p, headers=session) for p in ("/", f"/events/{world['event_id']}", "/signin")]
        assert [p.status_code for p in pages] == [200, 200, 200]
        failed = browser.post("/signin", data={"token": secrets["revoked"], "csrf": csrf, "next": "/"}, headers=jar)
        assert failed.status_code == 401
        for page in [*pages, signed_in, failed]:
            for secret in secrets.values():
                assert secret not in page.text and secret not in str(page.headers)
    server.stop(signal.SIGTERM)
    log = server.log.read_text()
    assert "GET /api/events/push" in log  # the access log was on
    for secret in secrets.values():
        assert secret not in log, "a token secret was written to the server log"
    raw = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    for name, secret in secrets.items():
        assert secret.encode() not in raw, f"the {name} token's secret is in the database file"
        assert hashlib.sha256(secret.encode()).hexdigest().encode() in raw
