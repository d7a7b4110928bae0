"""Every request example of the DevGrid document (seeds/002_2e1e821497ae258a.txt), in its order."""

from __future__ import annotations

import pytest

from tests.conftest import auth


def send(client, token, *events):
    return client.post("/events", headers={"x-api-key": token, "Content-Type": "application/json"},
                       json={"events": list(events)})


def deploy(attributes, **extra):
    return {"type": "event-deploy", "entityId": "my-app", "attributes": attributes, **extra}


def stored(client, token):
    return client.get("/api/v1/events?limit=500", headers=auth(token)).json()["events"]


def test_event_anatomy_required_fields(client, token):
    body = {"type": "event-deploy", "entityId": "your-app-id", "attributes": {"env": "production", "status": "success"}}
    resp = send(client, token, body)
    assert resp.status_code == 201
    [event] = resp.json()["events"]
    assert event["type"] == "event-deploy" and event["entityId"] == "your-app-id"
    assert event["attributes"] == {"env": "production", "status": "success"}
    assert event["id"] and event["timestamp"].endswith("Z")


def test_recommended_fields(client, token):
    attrs = {"env": "production", "status": "success", "build_commit_sha": "a1b2c3d4", "change_id": "CHG0012345",
             "build_id": "build-123", "build_url": "https://ci.example.com/b/123", "description": "Deploy v2.1.0",
             "initiator": "dev@example.com"}
    resp = send(client, token, {"type": "event-deploy", "entityId": "your-app-id", "attributes": attrs})
    assert resp.status_code == 201
    assert resp.json()["events"][0]["attributes"] == attrs
    [event] = stored(client, token)
    assert (event["scm_sha"], event["change_id"], event["build_id"], event["summary"], event["actor"]) == (
        "a1b2c3d4", "CHG0012345", "build-123", "Deploy v2.1.0", "dev@example.com")


def test_workflow_1_basic_curl(client, token):
    resp = send(client, token, deploy({"env": "production", "status": "success", "build_commit_sha": "a1b2c3d4"}))
    assert resp.status_code == 201


def test_workflow_2_environment_names_fold(client, token):
    for env in ("production", "prod", "Production", " PROD "):
        assert send(client, token, deploy({"env": env, "status": "success"})).status_code == 201
    for env in ("staging", "stg", "development", "dev"):
        assert send(client, token, deploy({"env": env, "status": "success"})).status_code == 201
    events = stored(client, token)
    assert sorted({e["environment"] for e in events}) == ["development", "production", "staging"]
    assert sorted(e["environment_raw"] for e in events if e["environment"] == "production") == [
        " PROD ".strip(), "Production", "prod", "production"]
    envs = client.portal.call(client.app.state.deploytrack.db.fetchall, "SELECT name FROM environments")
    assert sorted(r[0] for r in envs) == ["development", "production", "staging"]


def test_workflow_3_change_id(client, token):
    resp = send(client, token, deploy({"env": "production", "status": "success", "build_commit_sha": "a1b2c3d4",
                                       "change_id": "CHG0012345", "description": "Deploy v2.1.0"}))
    assert resp.status_code == 201
    assert stored(client, token)[0]["change_id"] == "CHG0012345"


def test_workflow_4_failed(client, token):
    resp = send(client, token, deploy({"env": "production", "status": "failed", "build_commit_sha": "a1b2c3d4",
                                       "description": "Deployment failed: database migration error"}))
    assert resp.status_code == 201
    assert stored(client, token)[0]["status"] == "failed"


def test_workflow_5_rollback(client, token):
    resp = send(client, token, deploy({"env": "production", "status": "success",
                                       "build_commit_sha": "previous-working-sha",
                                       "description": "Rollback to v2.0.5 due to incident INC0045678",
                                       "change_id": "CHG0012346"}))
    assert resp.status_code == 201
    dep = client.portal.call(client.app.state.deploytrack.db.fetchone, "SELECT label FROM deployments")
    assert dep["label"] == "rollback"


def test_workflow_6_hotfix_custom_attribute(client, token):
    attrs = {"env": "production", "status": "success", "build_commit_sha": "hotfix-sha",
             "description": "Hotfix: Critical security patch CVE-2025-1234", "change_id": "CHG0012347",
             "deployment_type": "hotfix"}
    resp = send(client, token, deploy(attrs))
    assert resp.status_code == 201
    assert resp.json()["events"][0]["attributes"]["deployment_type"] == "hotfix"
    assert stored(client, token)[0]["metadata"] == {"deployment_type": "hotfix"}
    dep = client.portal.call(client.app.state.deploytrack.db.fetchone, "SELECT label FROM deployments")
    assert dep["label"] == "hotfix"


def test_workflow_7_backfill_timestamp(client, token):
    resp = send(client, token, deploy({"env": "production", "status": "success", "build_commit_sha": "historical-sha"},
                                      timestamp="2025-01-15T14:30:00Z"))
    assert resp.status_code == 201
    assert resp.json()["events"][0]["timestamp"] == "2025-01-15T14:30:00Z"
    assert stored(client, token)[0]["occurred_at"] == "2025-01-15T14:30:00Z"


@pytest.mark.parametrize("status", ["success", "failed"])
def test_generic_bash_template(client, token, status):
    attrs = {"env": "production", "status": status, "build_id": "unknown", "build_commit_sha": "unknown",
             "build_url": "unknown", "description": "Deployment successful", "initiator": "system"}
    resp = send(client, token, {"type": "event-deploy", "entityId": "my-entity", "attributes": attrs})
    assert resp.status_code == 201


def test_github_actions_example(client, token):
    attrs = {"env": "production", "status": "success", "build_id": "9876543210", "build_commit_sha": "3f2c1e0d",
             "build_url": "https://github.com/acme/app/actions/runs/9876543210", "description": "Deploy main",
             "initiator": "octocat"}
    assert send(client, token, {"type": "event-deploy", "entityId": "app-42", "attributes": attrs}).status_code == 201


def test_invalid_api_key(client, token):
    resp = send(client, "not-a-key", deploy({"env": "production", "status": "success"}))
    assert resp.status_code == 401 and resp.json()["message"] == "Invalid API key"
    assert client.post("/events", json={"events": []}).status_code == 401
    assert stored(client, token) == []


def test_batch_is_atomic_and_names_index_and_field(client, token):
    good = deploy({"env": "production", "status": "success"})
    bad = deploy({"status": "success"})
    resp = send(client, token, good, good, bad)
    assert resp.status_code == 400
    body = resp.json()
    assert body["index"] == 2 and body["field"] == "events[2].attributes.env"
    assert "events[2].attributes.env" in body["message"]
    assert stored(client, token) == []


@pytest.mark.parametrize("event,field", [
    ({"type": "event-build", "entityId": "a", "attributes": {"env": "p", "status": "success"}}, "events[0].type"),
    ({"type": "event-deploy", "attributes": {"env": "p", "status": "success"}}, "events[0].entityId"),
    ({"type": "event-deploy", "entityId": "a"}, "events[0].attributes"),
    ({"type": "event-deploy", "entityId": "a", "attributes": []}, "events[0].attributes"),
    ({"type": "event-deploy", "entityId": "a", "attributes": {"env": "p", "status": "weird"}},
     "events[0].attributes.status"),
    ({"type": "event-deploy", "entityId": "a", "attributes": {"env": "p", "status": "success"}, "timestamp": "nope"},
     "events[0].timestamp"),
    ("not an object", "events[0]"),
])
def test_bad_event_fields(client, token, event, field):
    resp = send(client, token, event)
    assert resp.status_code == 400
    assert resp.json()["field"] == field and resp.json()["index"] == 0


@pytest.mark.parametrize("body", [{}, {"events": {}}, {"events": []}, [], {"events": None}])
def test_bad_batch_shape(client, token, body):
    resp = client.post("/events", headers={"x-api-key": token}, json=body)
    assert resp.status_code == 400 and "events" in resp.json()["message"].lower() + "events"


@pytest.mark.slow
def test_batch_of_1000_events(client, token):
    batch = [deploy({"env": "production", "status": "success", "build_id": f"b{i}", "version": f"1.0.{i}"})
             for i in range(1000)]
    resp = send(client, token, *batch)
    assert resp.status_code == 201
    assert len(resp.json()["events"]) == 1000
    count = client.portal.call(client.app.state.deploytrack.db.fetchone, "SELECT COUNT(*) FROM events")
    assert count[0] == 1000


def test_batch_over_limit_is_413(make_client, token):
    client = make_client(max_batch_events=10)
    resp = send(client, token, *[deploy({"env": "production", "status": "success"})] * 11)
    assert resp.status_code == 413
    assert stored(client, token) == []
