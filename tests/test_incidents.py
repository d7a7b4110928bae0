"""Incidents API: open, update, resolve, list, and the recorded link rule."""

from __future__ import annotations

import pytest

from tests.conftest import auth, create_token, query
from tests.dora import at, deploy, incident


def deployment_ids(client, token):
    deps = client.get("/api/v1/deployments", headers=auth(token)).json()["deployments"]
    return {(d["version"], d["environment"]): d["id"] for d in deps}


def test_link_rules(client, token):
    deploy(client, token, "1", "success", at(3, 10), change_id="CHG0001")
    deploy(client, token, "2", "success", at(2, 10))
    deploy(client, token, "3", "success", at(2, 11), env="staging")
    ids = deployment_ids(client, token)
    explicit = incident(client, token, opened_at=at(1, 9), deployment_id=ids[("1", "production")])
    assert explicit["link"]["rule"] == "deployment_id" and explicit["deployment_id"] == ids[("1", "production")]
    by_change = incident(client, token, opened_at=at(1, 9), change_id="CHG0001")
    assert by_change["link"]["rule"] == "change_id" and by_change["deployment_id"] == ids[("1", "production")]
    # fallback: the last completed *production* deployment of the product before it opened (not staging v3)
    fallback = incident(client, token, opened_at=at(1, 9), change_id="CHG-unknown")
    assert fallback["link"]["rule"] == "last_deployment"
    assert fallback["deployment_id"] == ids[("2", "production")]
    assert "last completed deployment of the product in the incident's environment" in fallback["link"]["explanation"]
    before_any = incident(client, token, opened_at=at(5, 9))
    assert before_any["deployment_id"] is None and before_any["link"]["rule"] is None
    other = incident(client, token, product="other", opened_at=at(1, 9))
    assert other["deployment_id"] is None


def test_an_incident_whose_named_deployment_was_deleted_can_still_be_changed(client, token, db_path):
    admin = create_token(db_path, "admin", "admin")
    deploy(client, token, "1", "success", at(3, 10), product="gone")
    deploy(client, token, "2", "success", at(2, 10))
    named = incident(client, token, product="gone", opened_at=at(1, 9),
                     deployment_id=deployment_ids(client, token)[("1", "production")])
    assert client.delete("/api/v1/products/gone/events", headers=auth(admin)).status_code == 200
    url = f"/api/v1/incidents/{named['id']}"
    for change in ({"title": "renamed"}, {"status": "resolved"}, {"product": "shop"}):
        resp = client.patch(url, headers=auth(token), json=change)
        assert resp.status_code == 200, resp.text
    # the id it named is ignored (DESIGN §5), the other rules link it; naming a missing one is still refused
    assert resp.json()["link"]["rule"] == "last_deployment" and resp.json()["status"] == "resolved"
    resp = client.patch(url, headers=auth(token), json={"deployment_id": named["deployment_id"]})
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "deployment_id"


def test_resolve_update_and_reopen(client, token):
    created = incident(client, token, opened_at=at(1, 10), severity="sev1", environment="prod")
    assert created["status"] == "open" and created["environment"] == "production"
    assert created["time_to_restore_seconds"] is None
    url = f"/api/v1/incidents/{created['id']}"
    resp = client.patch(url, headers=auth(token), json={"resolved_at": at(1, 11, 30), "title": "db down"})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert (body["status"], body["title"], body["time_to_restore_seconds"]) == ("resolved", "db down", 5400.0)
    assert client.patch(url, headers=auth(token), json={"status": "open"}).json()["resolved_at"] is None
    now_resolved = client.patch(url, headers=auth(token), json={"status": "resolved"}).json()
    assert now_resolved["status"] == "resolved" and now_resolved["resolved_at"] is not None
    got = client.get(url, headers=auth(token))
    assert got.status_code == 200 and got.json()["title"] == "db down"


def test_list_and_filters(client, token):
    for i in range(3):
        incident(client, token, opened_at=at(1, 10 + i), title=f"t{i}")
    incident(client, token, product="web", opened_at=at(1, 9), resolved_at=at(1, 10))
    listed = client.get("/api/v1/incidents", headers=auth(token), params={"limit": 2}).json()
    assert [i["title"] for i in listed["incidents"]] == ["outage", "t2"] and listed["next_before"]
    rest = client.get("/api/v1/incidents", headers=auth(token),
                      params={"limit": 2, "before": listed["next_before"]}).json()
    assert [i["title"] for i in rest["incidents"]] == ["t1", "t0"] and rest["next_before"] is None
    resolved = client.get("/api/v1/incidents", headers=auth(token), params={"status": "resolved"}).json()
    assert [i["product"] for i in resolved["incidents"]] == ["web"]
    shop = client.get("/api/v1/incidents", headers=auth(token), params={"product": "shop"}).json()
    assert len(shop["incidents"]) == 3


@pytest.mark.parametrize("body, field", [
    ({"product": "shop"}, "title"),
    ({"title": "x"}, "product"),
    ({"product": "shop", "title": "x", "opened_at": "yesterday"}, "opened_at"),
    ({"product": "shop", "title": "x", "opened_at": "²"}, "opened_at"),
    ({"product": "shop", "title": "x", "colour": "red"}, "colour"),
    ({"product": "shop", "title": "x", "deployment_id": "7"}, "deployment_id"),
    ({"product": "shop", "title": "x", "deployment_id": 999}, "deployment_id"),
    ({"product": "shop", "title": "x", "status": "closed"}, "status"),
    ({"product": "shop", "title": "x", "opened_at": at(1, 10), "resolved_at": at(1, 9)}, "resolved_at"),
    ({"product": 5, "title": "x"}, "product"),
])
def test_bad_input_is_a_400_naming_the_field_and_stores_nothing(client, token, db_path, body, field):
    resp = client.post("/api/v1/incidents", headers=auth(token), json=body)
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["field"] == field
    assert query(db_path, "SELECT COUNT(*) FROM incidents") == [(0,)]


def test_bad_update_leaves_the_incident_unchanged(client, token):
    created = incident(client, token, opened_at=at(1, 10))
    url = f"/api/v1/incidents/{created['id']}"
    resp = client.patch(url, headers=auth(token), json={"title": "new", "resolved_at": at(2, 10)})
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "resolved_at"
    assert client.get(url, headers=auth(token)).json()["title"] == "outage"
    assert client.patch("/api/v1/incidents/999", headers=auth(token), json={"title": "x"}).status_code == 404
    assert client.get("/api/v1/incidents/abc", headers=auth(token)).status_code == 400
    assert client.post("/api/v1/incidents", headers={**auth(token), "Content-Type": "application/json"},
                       content=b"{not json").status_code == 400


def test_scopes(client, token, db_path):
    reader = create_token(db_path, "reader", "read")
    resp = client.post("/api/v1/incidents", headers=auth(reader), json={"product": "shop", "title": "x"})
    assert resp.status_code == 403
    assert client.get("/api/v1/incidents").status_code == 401
    assert client.get("/api/v1/incidents", headers=auth(reader)).status_code == 200
    assert client.post("/api/v1/commits", headers=auth(reader), json=[]).status_code == 403


def test_commits_batch_is_all_or_nothing(client, token, db_path):
    resp = client.post("/api/v1/commits", headers=auth(token), json=[
        {"sha": "a", "committed_at": at(1, 10)}, {"sha": "b", "repository": "r"}])
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "commits[1].committed_at"
    resp = client.post("/api/v1/commits", headers=auth(token), json={"commits": [{"sha": "a", "committed_at": 5,
                                                                                  "branch": "main"}]})
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "commits[0].branch"
    assert client.post("/api/v1/commits", headers=auth(token), json=[]).status_code == 400
    assert query(db_path, "SELECT COUNT(*) FROM commits") == [(0,)]


def test_incident_link_follows_later_deployments_after_recompute(client, token, db_path):
    from tests.conftest import run_cli

    deploy(client, token, "1", "success", at(3, 10))
    opened = incident(client, token, opened_at=at(1, 9))
    deploy(client, token, "2", "success", at(2, 10))  # backfilled: it was running when the incident opened
    assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0
    ids = deployment_ids(client, token)
    after = client.get(f"/api/v1/incidents/{opened['id']}", headers=auth(token)).json()
    assert after["deployment_id"] == ids[("2", "production")]
    assert after["link"]["rule"] == "last_deployment"


def test_idempotency_key_opens_one_incident(client, token):
    headers = {**auth(token), "Idempotency-Key": "pager-alert-42"}
    body = {"product": "shop", "title": "checkout down", "opened_at": "2026-01-05T10:00:00Z"}
    first = client.post("/api/v1/incidents", json=body, headers=headers)
    again = client.post("/api/v1/incidents", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    other = client.post("/api/v1/incidents", json=body, headers={**headers, "Idempotency-Key": "pager-alert-43"})
    assert other.json()["id"] != first.json()["id"]
    listed = client.get("/api/v1/incidents", headers=auth(token)).json()["incidents"]
    assert len(listed) == 2


def test_incidents_relink_after_the_production_environments_change(client, token, db_path, monkeypatch):
    from tests.conftest import run_cli

    deploy(client, token, "1", "success", at(5, 10))
    deploy(client, token, "e1", "success", at(5, 11), env="eu")
    opened = incident(client, token, opened_at=at(5, 12))  # no environment: the production ones
    assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0
    ids = deployment_ids(client, token)
    assert client.get(f"/api/v1/incidents/{opened['id']}", headers=auth(token)).json()["deployment_id"] == \
        ids[("1", "production")]
    # a later refresh relinks only where deployments changed, unless production means something else now
    monkeypatch.setenv("DEPLOYTRACK_PRODUCTION_ENVIRONMENTS", "production,eu")
    deploy(client, token, "2", "success", at(1, 10))
    assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0
    after = client.get(f"/api/v1/incidents/{opened['id']}", headers=auth(token)).json()
    assert after["deployment_id"] == ids[("e1", "eu")] and after["link"]["rule"] == "last_deployment"
