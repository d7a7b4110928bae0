"""The incident page through a real server: linking by hand stays within the incident's product,
and an incident without a product reads sensibly."""

from __future__ import annotations

import httpx2 as httpx

from tests.conftest import auth, create_token, query


def test_linking_by_hand_refuses_a_deployment_of_another_product(live_server, token, db_path):
    admin = create_token(db_path, "admin", "admin", "read")
    http = httpx.Client(base_url=live_server.url, timeout=30)
    for product, status in (("shop", "success"), ("other", "failed")):
        resp = http.post("/deployment-events/", headers=auth(token), json={
            "product_name": product, "version": "1", "environment_name": "production", "status": status})
        assert resp.status_code == 200, resp.text
    ids = dict(query(db_path, "SELECT product, id FROM deployments"))
    incident = http.post("/api/v1/incidents", headers=auth(token), json={"product": "shop", "title": "down"}).json()
    resp = http.post(f"/incidents/{incident['id']}", headers=auth(admin),
                     data={"action": "link", "deployment_id": str(ids["other"])}, follow_redirects=False)
    assert resp.status_code == 400 and "deployment_id" in resp.text and "other" in resp.text, resp.text
    assert query(db_path, "SELECT deployment_id FROM incidents") == [(ids["shop"],)]  # as the rules linked it
    resp = http.post(f"/incidents/{incident['id']}", headers=auth(admin),
                     data={"action": "link", "deployment_id": str(ids["shop"])}, follow_redirects=False)
    assert resp.status_code == 303
    assert query(db_path, "SELECT deployment_id, link_rule FROM incidents") == [(ids["shop"], "deployment_id")]
    # An incident sent by change id alone, linked to nothing: no product, any deployment may be named.
    lone = http.post("/api/v1/incidents", headers=auth(token), json={"change_id": "CHG-1", "title": "who?"}).json()
    page = http.get(f"/incidents/{lone['id']}", headers=auth(admin)).text
    assert "Deployments of  to" not in page and "names no product" in page
    assert 'name="deployment_id" inputmode="numeric"' in page
    resp = http.post(f"/incidents/{lone['id']}", headers=auth(admin),
                     data={"action": "link", "deployment_id": str(ids["other"])}, follow_redirects=False)
    assert resp.status_code == 303
    http.close()


def test_the_api_refuses_linking_to_a_deployment_of_another_product_as_the_page_does(live_server, token, db_path):
    http = httpx.Client(base_url=live_server.url, timeout=30)
    for product in ("shop", "other"):
        resp = http.post("/deployment-events/", headers=auth(token), json={
            "product_name": product, "version": "1", "environment_name": "production", "status": "success"})
        assert resp.status_code == 200, resp.text
    ids = dict(query(db_path, "SELECT product, id FROM deployments"))
    resp = http.post("/api/v1/incidents", headers=auth(token),
                     json={"product": "shop", "title": "down", "deployment_id": ids["other"]})
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "deployment_id", resp.text
    assert "'other'" in resp.json()["error"]["message"]
    incident = http.post("/api/v1/incidents", headers=auth(token), json={"product": "shop", "title": "down"}).json()
    url = f"/api/v1/incidents/{incident['id']}"
    resp = http.patch(url, headers=auth(token), json={"deployment_id": ids["other"]})
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "deployment_id", resp.text
    assert query(db_path, "SELECT product, requested_deployment_id FROM incidents") == [("shop", None)]
    # Moving the incident to the other product in the same change is allowed.
    resp = http.patch(url, headers=auth(token), json={"product": "other", "deployment_id": ids["other"]})
    assert resp.status_code == 200 and resp.json()["deployment_id"] == ids["other"], resp.text
    http.close()
