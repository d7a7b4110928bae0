"""A method an ingestion path does not take is refused in that API's error shape, with the methods it does."""

from __future__ import annotations

import httpx2 as httpx
import pytest

from tests.conftest import auth, query

SHAPES = {  # each API's error body: its keys, and where the message is
    "versioner": ({"detail"}, "detail"),
    "quanta": ({"error"}, "error"),
    "devgrid": ({"statusCode", "error", "message"}, "message"),
    "ilert": ({"status", "code", "message"}, "message"),
}


@pytest.mark.parametrize("method,path,api,allow", [
    ("GET", "/deployment-events/", "versioner", "POST"),
    ("PUT", "/build-events", "versioner", "POST"),
    ("PUT", "/api/events/push", "quanta", "GET, POST"),
    ("DELETE", "/api/events/push/", "quanta", "GET, POST"),
    ("PUT", "/api/deployment-events", "ilert", "POST"),
    ("PATCH", "/events/", "devgrid", "POST"),
])
def test_a_method_the_path_does_not_take_is_refused_in_its_apis_shape(live_server, token, db_path, method, path,
                                                                      api, allow):
    resp = httpx.request(method, live_server.url + path, headers=auth(token), json={"summary": "x"}, timeout=10)
    assert resp.status_code == 405 and resp.headers["allow"] == allow, resp.text
    keys, message = SHAPES[api]
    assert set(resp.json()) == keys and method in resp.json()[message] and allow in resp.json()[message]
    assert query(db_path, "SELECT COUNT(*) FROM events") == [(0,)]


def test_the_event_list_page_shares_a_path_with_devgrid_and_keeps_its_own_answers(live_server, token):
    page = httpx.get(live_server.url + "/events", timeout=10, follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"].startswith("/signin")  # the page's sign-in
    resp = httpx.put(live_server.url + "/events", headers=auth(token), timeout=10)
    assert resp.status_code == 405 and resp.json()["error"]["code"] == "method_not_allowed"  # the native shape


@pytest.mark.parametrize("method,path,status", [("PUT", "/api/v1/events", 405), ("PUT", "/api/v1/commits", 405),
                                                ("PATCH", "/api/v1/metrics", 405), ("PUT", "/api/v1/nothing", 404)])
def test_a_native_path_refuses_a_method_it_does_not_take_by_routing_whatever_the_content_type(live_server, token,
                                                                                             method, path, status):
    resp = httpx.request(method, live_server.url + path, headers={**auth(token), "Content-Type": "text/plain"},
                         content=b"x", timeout=10)
    assert resp.status_code == status and ("allow" in resp.headers) == (status == 405), resp.text
    taken = httpx.post(live_server.url + "/api/v1/commits", headers={**auth(token), "Content-Type": "text/plain"},
                       content=b"x", timeout=10)
    assert taken.status_code == 415 and taken.json()["error"]["field"] == "Content-Type"  # a route that takes it


def test_a_browsers_405_page_names_the_methods_the_path_takes(live_server):
    """A page's error carries the error's headers as the API's answer does (Allow with a 405)."""
    page = httpx.get(live_server.url + "/signout", headers={"Accept": "text/html"}, timeout=10)
    api = httpx.get(live_server.url + "/signout", timeout=10)
    assert page.status_code == api.status_code == 405 and "text/html" in page.headers["content-type"]
    assert page.headers["allow"] == api.headers["allow"] and "POST" in page.headers["allow"]
