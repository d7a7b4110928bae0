"""UI sessions end on the server at sign-out; cookie-authenticated API writes need CSRF proof; any
bytes in a CSRF value or cookie are a 403 or a fresh form, never a 500."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import pytest
from starlette.testclient import TestClient

from deploytrack.app import create_app
from deploytrack.settings import load_settings
from tests.conftest import auth, create_token, query, run_cli
from tests.test_pages import csrf_of, sign_in

INCIDENT = {"title": "checkout down", "product": "shop", "environment": "production"}


@pytest.fixture
def app(db_path: Path, token: str) -> Iterator[TestClient]:
    """One started app (one lifespan, one event loop) that several browsers below take turns on."""
    settings = load_settings({"db": str(db_path), "scheduler": False}, environ={})
    with TestClient(create_app(settings), base_url="https://localhost") as client:
        yield client


class Browser:
    """A browser's own cookie jar over the shared client (TestClient over https: Secure cookies work)."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.cookies: dict[str, str] = {}

    def request(self, method: str, url: str, **kwargs: object) -> httpx.Response:
        self.client.cookies.clear()
        headers = dict(kwargs.pop("headers", None) or {})  # type: ignore[call-overload]
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        resp = self.client.request(method, url, headers=headers, **kwargs)  # type: ignore[arg-type]
        self.client.cookies.clear()
        self.cookies.update({name: value for name, value in resp.cookies.items() if value})
        for header in resp.headers.get_list("set-cookie"):
            if "Max-Age=0" in header or "expires=Thu, 01 Jan 1970" in header:
                self.cookies.pop(header.split("=", 1)[0], None)
        return resp

    def get(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def patch(self, url: str, **kwargs: object) -> httpx.Response:
        return self.request("PATCH", url, **kwargs)


def browser(app: TestClient) -> Browser:
    return Browser(app)


def signed_in(app: TestClient, secret: str) -> Browser:
    client = browser(app)
    assert sign_in(client, secret).status_code == 303  # type: ignore[arg-type]
    return client


def incidents(db_path: Path) -> int:
    return int(query(db_path, "SELECT COUNT(*) FROM incidents")[0][0])


# -- sign-out ends the session ------------------------------------------------------------------


def test_a_copied_cookie_is_refused_after_sign_out(app, token):
    alice = signed_in(app, token)
    stolen = alice.cookies["dt_session"]
    thief = browser(app)
    thief.cookies["dt_session"] = stolen
    assert thief.get("/", follow_redirects=False).status_code == 200  # the copy works while signed in
    page = alice.get("/")
    assert alice.post("/signout", data={"csrf": csrf_of(page.text)}, follow_redirects=False).status_code == 303
    assert thief.get("/", follow_redirects=False).status_code == 303  # to the sign-in form
    assert thief.get("/api/v1/events").status_code == 401


def test_signing_out_one_browser_leaves_the_others_signed_in(app, token):
    laptop, phone = signed_in(app, token), signed_in(app, token)
    page = laptop.get("/")
    laptop.post("/signout", data={"csrf": csrf_of(page.text)}, follow_redirects=False)
    assert laptop.get("/", follow_redirects=False).status_code == 303
    assert phone.get("/", follow_redirects=False).status_code == 200


def test_revoking_the_token_ends_its_sessions(app, token, db_path):
    reader = create_token(db_path, "reader", "read")
    client = signed_in(app, reader)
    assert client.get("/", follow_redirects=False).status_code == 200
    assert run_cli("token", "revoke", "reader", "--db", str(db_path))[0] == 0
    assert client.get("/", follow_redirects=False).status_code == 303


@pytest.mark.sqlite_only
def test_only_a_hash_of_the_session_id_is_stored(app, token, db_path):
    client = signed_in(app, token)
    session_id = client.cookies["dt_session"].split(".")[0]
    raw = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*"))
    assert session_id.encode() not in raw
    with sqlite3.connect(db_path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM sessions").fetchone()[0] == 1


# -- CSRF on cookie-authenticated API writes ----------------------------------------------------


@pytest.mark.parametrize("headers", [
    {"Content-Type": "text/plain"},  # what a cross-site <form enctype="text/plain"> sends
    {"Content-Type": "application/json"},
    {"Content-Type": "text/plain", "Origin": "http://localhost:9999", "Sec-Fetch-Site": "same-site"},  # another port
    {"Content-Type": "application/json", "Origin": "https://evil.example"},
    {"Content-Type": "application/json", "Origin": "null"},
    {"Content-Type": "application/json", "Sec-Fetch-Site": "cross-site"},
    {"Content-Type": "application/json", "X-CSRF-Token": "A" * 43},
    {"Content-Type": "application/json", "X-CSRF-Token": "é".encode() * 21 + b"x"},
], ids=["text-plain", "json-no-proof", "other-port", "other-site", "null-origin", "cross-site", "wrong-token",
        "non-ascii-token"])
def test_cookie_writes_without_same_origin_proof_are_403_and_store_nothing(app, token, db_path, headers):
    client = signed_in(app, token)
    body = b'{"title": "planted", "product": "shop"}'
    resp = client.post("/api/v1/incidents", content=body, headers=headers)
    assert resp.status_code == 403, resp.text
    assert resp.json()["error"]["field"] == "csrf"
    url = "/api/v1/incidents/1"
    assert client.patch(url, content=b'{"status": "resolved"}', headers=headers).status_code in (403, 404)
    assert incidents(db_path) == 0


@pytest.mark.parametrize("proof", ["csrf-header", "origin", "sec-fetch-site"])
def test_cookie_writes_with_same_origin_proof_are_accepted(app, token, db_path, proof):
    client = signed_in(app, token)
    headers = {"csrf-header": {"X-CSRF-Token": client.cookies["dt_csrf"]},
               "origin": {"Origin": "https://localhost"},
               "sec-fetch-site": {"Sec-Fetch-Site": "same-origin"}}[proof]
    resp = client.post("/api/v1/incidents", json=INCIDENT, headers=headers)
    assert resp.status_code == 201, resp.text
    assert incidents(db_path) == 1


def test_bearer_writes_need_no_csrf_proof_but_must_be_json(app, token, db_path):
    client = browser(app)
    resp = client.post("/api/v1/incidents", content=b'{"title": "x"}',
                       headers={**auth(token), "Content-Type": "text/plain"})
    assert resp.status_code == 415 and resp.json()["error"]["field"] == "Content-Type"
    for content_type in (None, "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"):
        headers = {**auth(token), **({"Content-Type": content_type} if content_type else {})}
        assert client.post("/api/v1/commits", content=b'{"commits": []}', headers=headers).status_code == 415
    assert incidents(db_path) == 0
    assert client.post("/api/v1/incidents", json=INCIDENT, headers=auth(token)).status_code == 201
    resp = client.post("/api/v1/incidents", content=b'{"title": "y", "product": "shop"}',
                       headers={**auth(token), "Content-Type": "application/vnd.api+json; charset=utf-8"})
    assert resp.status_code == 201


# -- any bytes in CSRF values and cookies --------------------------------------------------------

HOSTILE = [b"\xff\xfe", "é".encode() * 22, b"\xc3\xa9" * 43, b"\x00" * 43, "ï".encode("latin-1") * 43, b"a" * 5000,
           b'"quoted"', b"a;b=c", b"=" * 43]


@pytest.mark.parametrize("value", HOSTILE, ids=range(len(HOSTILE)))
def test_any_csrf_cookie_or_value_is_403_or_a_fresh_form(app, token, value):
    client = app  # raises any server error instead of answering 500
    client.cookies.clear()
    cookie = b"dt_csrf=" + value + b"; dt_session=" + value
    form = client.get("/signin", headers={"Cookie": cookie})
    assert form.status_code == 200
    fresh = form.cookies.get("dt_csrf")
    assert fresh and len(fresh) == 43 and fresh.encode() != value  # a hostile value is never reused
    body = b"csrf=" + value + b"&token=" + token.encode() + b"&next=/"
    raw_body = b"csrf=%FF%FE&token=x"
    for path in ("/signin", "/signout"):
        for payload in (body, raw_body, b"csrf=" + value):
            resp = client.post(path, content=payload, follow_redirects=False,
                               headers={"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"})
            assert resp.status_code in (400, 403), (path, payload[:40], resp.status_code)
    resp = client.post("/api/v1/incidents", json=INCIDENT, headers={"Cookie": cookie, "X-CSRF-Token": value})
    assert resp.status_code in (401, 403)


@pytest.mark.parametrize("path", ["/signin", "/signout"])
def test_a_page_form_past_its_size_is_413_as_a_page_without_signing_in(app, token, path):
    app.cookies.clear()
    app.get("/signin")  # the CSRF cookie
    body = f"csrf={app.cookies.get('dt_csrf')}&token={token}&next=/&pad=".encode() + b"x" * 20_000
    resp = app.post(path, content=body, follow_redirects=False,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 413 and "larger than 16384 bytes" in resp.text, resp.text[:300]
    assert resp.headers["content-type"].startswith("text/html") and "dt_session" not in resp.cookies
