"""Numbers in paths, query strings and cookies: too big for SQLite or not ASCII digits ('²' passes
str.isdigit() but not int()). Each is a clear 400 (or no session), never a 500."""

from __future__ import annotations

import socket

import pytest

from tests.conftest import auth

BIG = "9" * 30
URLS = [
    f"/api/v1/events?cursor={BIG}.{BIG}", f"/api/v1/events?cursor=-{BIG}.1", "/api/v1/events?cursor=1.²",
    f"/api/v1/events?limit={BIG}", "/api/v1/events?limit=²", "/api/v1/events?limit=-1",
    f"/api/v1/incidents?before={BIG}", "/api/v1/incidents?before=²", "/api/v1/incidents?limit=²",
    f"/api/v1/incidents/{BIG}", "/api/v1/incidents/²", f"/api/v1/deployments?cursor={BIG}.{BIG}",
    "/api/v1/deployments?cursor=².²", "/api/v1/deployments?limit=²", "/api/v1/metrics?days=²",
    f"/api/v1/metrics?days={BIG}", "/api/v1/metrics?window=²", f"/api/v1/metrics?window={BIG}",
    f"/events?cursor={BIG}.{BIG}", "/events?cursor=1.²", f"/dora/lead_time?cursor={BIG}.{BIG}",
    "/dora/time_to_restore?cursor=1.²", "/dora/change_failure_rate?window=²",
    f"/deployments?cursor={BIG}.{BIG}", "/deployments?cursor=1.²", f"/incidents?cursor={BIG}.1",
    "/incidents?cursor=².1", "/products/x?days=²", f"/dora?window={BIG}", "/dora?window=²",
]


@pytest.mark.parametrize("url", URLS)
def test_hostile_numbers_are_a_clear_400(client, token, url: str) -> None:
    resp = client.get(url, headers=auth(token))
    assert resp.status_code == 400, resp.text[:300]
    if url.startswith("/api/"):
        error = resp.json()["error"]
        assert error["code"] == "bad_request"
        assert error["field"] in ("cursor", "limit", "before", "id", "days", "window")


@pytest.mark.parametrize("method", ["PATCH"])
def test_hostile_incident_id_on_update(client, token, method: str) -> None:
    for incident in (BIG, "²"):
        resp = client.request(method, f"/api/v1/incidents/{incident}", headers=auth(token), json={"title": "x"})
        assert resp.status_code == 400 and resp.json()["error"]["field"] == "id"


COOKIES = [f"{BIG}.{BIG}.abc", "\xb2.\xb2.abc", "1.\xb9.abc", "..", "1.2.\xff"]


def test_hostile_session_cookies_are_no_session(live_server) -> None:
    """Sent over a raw socket: HTTP clients refuse non-ASCII cookies, browsers and attackers need not."""
    for cookie in COOKIES:
        head = (b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/html\r\nConnection: close\r\n"
                b"Cookie: dt_session=" + cookie.encode("latin-1") + b"\r\n\r\n")
        with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
            sock.sendall(head)
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
        status = answer.split(b"\r\n", 1)[0]
        assert status == b"HTTP/1.1 303 See Other", (cookie, answer[:300])  # not signed in: to the sign-in form


@pytest.mark.parametrize("url", [f"/deployments/{BIG}", "/deployments/²", "/deployments/-1"])
def test_hostile_deployment_ids_are_not_found(client, token, url: str) -> None:
    resp = client.get(url, headers={**auth(token), "Accept": "text/html"})
    assert resp.status_code == 404 and "no deployment with that id" in resp.text
