"""Product pages through a real server: every product a page links to has a page, and a product's
page shows each environment's deployments however many another environment has."""

from __future__ import annotations

import re

import httpx2 as httpx

from tests.conftest import auth, create_token
from tests.dora import at
from tests.test_rules import window_now


def get(server, token, path):
    resp = httpx.get(server.url + path, headers=auth(token), timeout=30)
    assert resp.status_code == 200, (path, resp.status_code, resp.text[:300])
    return resp.text


def test_every_product_the_pages_link_has_a_page_and_a_productless_incident_is_no_product(
        live_server, token, db_path):
    post = lambda path, body, key=token: httpx.post(live_server.url + path, headers=auth(key), json=body,  # noqa: E731
                                                    timeout=30)
    assert post("/api/v1/incidents", {"product": "payments", "title": "card outage"}).status_code == 201
    assert post("/api/v1/incidents", {"change_id": "CHG-404", "title": "nobody's"}).status_code == 201
    admin = create_token(db_path, "admin", "admin")
    spec, _ = window_now()
    resp = post("/api/v1/rules", {"name": "freeze", "type": "schedule", "environments": ["production"],
                                  "products": ["frozen"], "schedule": spec}, admin)
    assert resp.status_code == 201, resp.text
    assert post("/deployment-events/", {"product_name": "frozen", "version": "1", "environment_name": "production",
                                        "status": "started"}).status_code == 423
    home = get(live_server, token, "/")
    violations = get(live_server, token, "/rules/violations")
    incident = get(live_server, token, "/incidents")
    linked = set(re.findall(r'href="/products/([^"?]*)"', home + violations + incident))
    assert linked == {"payments", "frozen"}
    for name in linked:
        page = get(live_server, token, f"/products/{name}")
        assert f"No deployments of {name} recorded yet" in page
    assert "only incidents" in get(live_server, token, "/products/payments")
    assert 'href="/incidents?product=&amp;' not in home
    assert httpx.get(live_server.url + "/products/", headers=auth(token), timeout=30).status_code == 404
    assert httpx.get(live_server.url + "/products/nothing", headers=auth(token), timeout=30).status_code == 404
    assert "no product" in get(live_server, token, "/incidents")


def test_a_busy_environment_never_hides_a_quiet_ones_deployments(live_server, token):
    for n in range(10):
        resp = httpx.post(live_server.url + "/deployment-events/", headers=auth(token), timeout=30, json={
            "product_name": "shop", "version": f"p{n}", "environment_name": "production", "status": "success",
            "timestamp": at(20, 10, n)})
        assert resp.status_code == 200, resp.text
    for start in range(0, 600, 200):
        batch = [{"type": "event-deploy", "entityId": "shop", "timestamp": at(n % 4, 0, n // 4 % 60, n % 60),
                  "attributes": {"env": "development", "status": "success", "version": f"d{n}"}}
                 for n in range(start, start + 200)]
        resp = httpx.post(live_server.url + "/events", json={"events": batch}, headers={"x-api-key": token},
                          timeout=60)
        assert resp.status_code == 201, resp.text
    html = get(live_server, token, "/products/shop")
    lanes = dict(re.findall(r'<section class="lane-list">\s*<h3>([^<]+)</h3>(.*?)</section>', html, re.S))
    assert "No deployments in the last 30 days" not in lanes["production"]
    assert lanes["production"].count("<li") == 10 and lanes["development"].count("<li") == 20
    assert "development had more in these 30 days" in html
    assert "more are in" not in html  # two environments, both drawn: no hidden ones
    for n in range(60):  # more environments than the grid reads (50) and the timeline draws (8)
        resp = httpx.post(live_server.url + "/deployment-events/", headers=auth(token), timeout=30, json={
            "product_name": "shop", "version": "1", "environment_name": f"qa{n:02d}", "status": "success"})
        assert resp.status_code == 200, resp.text
    html = get(live_server, token, "/products/shop")
    assert "The timeline shows 8 environments, production first; 54 more are in" in html


def test_a_product_page_shows_its_four_numbers_as_the_home_page_and_the_api_count_them(live_server, token):
    for n, status in enumerate(("success", "success", "failed", "success")):
        resp = httpx.post(live_server.url + "/deployment-events/", headers=auth(token), timeout=30, json={
            "product_name": "shop", "version": f"1.{n}", "environment_name": "production", "status": status,
            "timestamp": at(4 - n, 10)})  # (all in the past: at(0, 10) is future before 10:00)
        assert resp.status_code == 200, resp.text
    for n in range(5):  # staging is not production: none of these may count
        resp = httpx.post(live_server.url + "/deployment-events/", headers=auth(token), timeout=30, json={
            "product_name": "shop", "version": f"2.{n}", "environment_name": "staging", "status": "success",
            "timestamp": at(2, n)})
        assert resp.status_code == 200, resp.text
    api = httpx.get(live_server.url + "/api/v1/metrics", headers=auth(token), timeout=30,
                    params={"product": "shop", "window": "30"}).json()["latest"]
    rate = api["change_failure_rate"]["value"]
    per_week = api["deployment_frequency"]["per_week"]
    html = get(live_server, token, "/products/shop")
    scores = re.search(r'<dl class="scores">(.*?)</dl>', html, re.S)
    assert scores is not None, "the product page has no scores"
    shown = dict(re.findall(r"<dt>([^<]+)</dt><dd><a [^>]*>([^<]+)</a>", scores.group(1)))
    assert api["deployment_frequency"]["deployments"] == 3  # the production ones that completed
    assert shown == {"Deployment frequency": f"{per_week:.1f} / week",
                     "Lead time for changes": "no data",  # no builds or commit times sent
                     "Change failure rate": f"{rate * 100:.1f}%",
                     "Time to restore service": "no data"}
    home = get(live_server, token, "/")
    for text in shown.values():
        assert text in home  # the same reading, counted the same way
