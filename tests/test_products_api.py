"""GET /api/v1/products, /api/v1/products/{name}, /api/v1/environments: what version runs where, as JSON."""

from __future__ import annotations

import httpx2 as httpx

from tests.conftest import auth
from tests.dora import at


def send(server, token, product, version, env, status, when):
    resp = httpx.post(server.url + "/deployment-events/", headers=auth(token), timeout=10, json={
        "product_name": product, "version": version, "environment_name": env, "status": status, "timestamp": when})
    assert resp.status_code == 200, resp.text
    return resp.json()


def get(server, token, path, **params):
    return httpx.get(server.url + path, headers=auth(token), params=params, timeout=10)


def test_what_version_runs_where(live_server, token):
    first = send(live_server, token, "shop", "1.0", "production", "success", at(3))
    send(live_server, token, "shop", "1.1", "staging", "success", at(2))
    send(live_server, token, "shop", "1.1", "production", "failed", at(1))  # production still runs 1.0
    send(live_server, token, "team/api", "7", "prod", "success", at(1))
    listed = get(live_server, token, "/api/v1/products").json()
    assert [p["name"] for p in listed["products"]] == ["shop", "team/api"] and listed["next_cursor"] is None
    shop = listed["products"][0]
    assert shop["id"] == first["product_id"] and shop["more_environments"] is False
    where = {e["environment"]: e for e in shop["environments"]}
    assert list(where) == ["production", "staging"]  # production first
    production = where["production"]
    assert (production["version"], production["version_id"]) == ("1.0", first["version_id"])
    assert production["environment_id"] == first["environment_id"]
    assert production["current"]["id"] == int(first["deployment_id"])
    assert production["pending_or_failed"]["version"] == "1.1"
    assert production["pending_or_failed"]["status"] == "failed"
    assert where["staging"]["version"] == "1.1" and where["staging"]["pending_or_failed"] is None
    # one product, its name sent as it is or encoded, and the same answer as in the list
    assert get(live_server, token, "/api/v1/products/shop").json() == shop
    for path in ("/api/v1/products/team/api", "/api/v1/products/team%2Fapi"):
        one = get(live_server, token, path).json()
        assert one["name"] == "team/api" and one["environments"][0]["environment"] == "production"
    missing = get(live_server, token, "/api/v1/products/nope")
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "name"


def test_products_and_environments_page_by_cursor(live_server, token):
    for n in range(3):
        send(live_server, token, f"svc-{n}", "1", f"env-{n}", "success", at(1))
    names, cursor = [], None
    while True:
        page = get(live_server, token, "/api/v1/products", limit=2, **({"cursor": cursor} if cursor else {})).json()
        names += [p["name"] for p in page["products"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert names == ["svc-0", "svc-1", "svc-2"]
    first = get(live_server, token, "/api/v1/environments", limit=2).json()
    rest = get(live_server, token, "/api/v1/environments", limit=2, cursor=first["next_cursor"]).json()
    assert [e["name"] for e in first["environments"] + rest["environments"]] == ["env-0", "env-1", "env-2"]
    assert rest["next_cursor"] is None and first["environments"][0]["first_seen_at"].endswith("Z")


def test_a_name_as_long_as_ingestion_takes_is_found_and_paged_past(live_server, token):
    long = [n * 512 for n in ("a", "b")]  # the longest names ingestion takes (model.MAX_NAME_BYTES)
    for name in long:
        send(live_server, token, name, "1", "production", "success", at(1))
    first = get(live_server, token, "/api/v1/products", limit=1).json()
    assert first["next_cursor"] == long[0]
    rest = get(live_server, token, "/api/v1/products", limit=1, cursor=first["next_cursor"])
    assert rest.status_code == 200 and [p["name"] for p in rest.json()["products"]] == [long[1]]
    assert get(live_server, token, "/api/v1/products/" + long[1]).json()["name"] == long[1]


def test_bad_parameters_and_no_token(live_server, token):
    for path, params in (("/api/v1/products", {"limit": "0"}), ("/api/v1/products", {"limit": "26"}),
                         ("/api/v1/environments", {"limit": "x"}), ("/api/v1/products", {"cursor": "c" * 5000})):
        resp = get(live_server, token, path, **params)
        assert resp.status_code == 400 and resp.json()["error"]["field"] in ("limit", "cursor"), (path, params)
    for path in ("/api/v1/products", "/api/v1/products/shop", "/api/v1/environments"):
        assert httpx.get(live_server.url + path, timeout=10).status_code == 401


def test_a_product_with_more_environments_than_listed_names_the_rest_on_request(live_server, token):
    envs = [f"env-{i:02d}" for i in range(52)]
    batch = [{"type": "event-deploy", "entityId": "wide", "attributes": {"env": e, "status": "success",
                                                                          "version": e}} for e in [*envs, "prod"]]
    resp = httpx.post(live_server.url + "/events", json={"events": batch}, headers={"x-api-key": token}, timeout=10)
    assert resp.status_code == 201, resp.text
    listed = get(live_server, token, "/api/v1/products/wide").json()
    assert len(listed["environments"]) == 50 and listed["more_environments"] is True
    named = get(live_server, token, "/api/v1/products/wide", environment=["env-51", "prod", "nowhere"]).json()
    assert [(e["environment"], e["version"]) for e in named["environments"]] == [
        ("production", "prod"), ("env-51", "env-51")]  # production first; the alias folded, as ingestion does
    for bad in ([""], [f"e{i}" for i in range(51)]):
        resp = get(live_server, token, "/api/v1/products/wide", environment=bad)
        assert resp.status_code == 400 and resp.json()["error"]["field"] == "environment"
