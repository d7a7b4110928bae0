"""Every request example of the Versioner document (seeds/001_ce6f513b18f8be22.txt), in its order.

Host swapped for the test app, $VERSIONER_API_KEY for a real token.
"""

from __future__ import annotations

import json
import re
import uuid

import pytest

from tests.conftest import auth

ID_NAMESPACE = uuid.UUID("68e03ab7-8af7-49c9-9900-119b17f33b8a")  # docs/api.md
ISO_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def post(client, path, token, body):
    return client.post(path, headers={**auth(token), "Content-Type": "application/json"}, json=body)


def check_deployment(resp, body):
    assert resp.status_code == 200, resp.text
    data = resp.json()
    uuid.UUID(data["id"])
    assert data["product_name"] == body["product_name"]
    assert data["version"] == body["version"]
    assert data["environment_name"] == body["environment_name"]
    assert ISO_Z.match(data["deployed_at"])
    assert set(data) == {"id", "product_name", "version", "environment_name", "status", "deployed_at", "deployed_by",
                         "product_id", "version_id", "environment_id", "deployment_id", "event_id"}
    names = {"product_id": ["product", body["product_name"]], "version_id": ["version", body["product_name"],
             body["version"]], "environment_id": ["environment", data["environment_name"]]}
    for key, kind_and_names in names.items():  # docs/api.md's recipe
        assert data[key] == str(uuid.uuid5(ID_NAMESPACE, json.dumps(kind_and_names, separators=(",", ":"),
                                                                    ensure_ascii=False))), key
    assert data["event_id"] == data["id"] and data["deployment_id"].isdigit()
    return data


def check_build(resp, body):
    assert resp.status_code == 200, resp.text
    data = resp.json()
    uuid.UUID(data["id"])
    assert (data["product_name"], data["version"]) == (body["product_name"], body["version"])
    assert ISO_Z.match(data["created_at"])
    assert set(data) == {"id", "product_name", "version", "status", "created_at", "product_id", "version_id"}
    uuid.UUID(data["product_id"]), uuid.UUID(data["version_id"])
    return data


def stored(client, token, event_id):
    resp = client.get(f"/api/v1/events/{event_id}", headers=auth(token))
    assert resp.status_code == 200
    return resp.json()


# -- Submit Deployment Event: the request body shown -----------------------------------------

def test_deployment_request_body(client, token):
    body = {"product_name": "my-service", "version": "1.2.3", "environment_name": "production", "status": "success",
            "deployed_by": "john.doe", "scm_branch": "main", "scm_sha": "abc123def456",
            "build_url": "https://ci.example.com/builds/123", "extra_metadata": {"deployment_duration_seconds": 120}}
    data = check_deployment(post(client, "/deployment-events/", token, body), body)
    assert data["status"] == "completed" and data["deployed_by"] == "john.doe"
    event = stored(client, token, data["id"])
    assert event["status_raw"] == "success"
    assert event["metadata"] == {"deployment_duration_seconds": 120}
    assert event["build_url"] == "https://ci.example.com/builds/123"


# -- Examples: three deployment curls --------------------------------------------------------

def test_deployment_example_minimal(client, token):
    body = {"product_name": "my-service", "version": "1.2.3", "environment_name": "production",
            "status": "success", "deployed_by": "john.doe"}
    assert check_deployment(post(client, "/deployment-events/", token, body), body)["status"] == "completed"


def test_deployment_example_failed(client, token):
    body = {"product_name": "my-service", "version": "1.2.3", "environment_name": "production", "status": "failed",
            "extra_metadata": {"error": "Lambda timeout after 30s", "error_code": "TIMEOUT"}}
    data = check_deployment(post(client, "/deployment-events/", token, body), body)
    assert data["status"] == "failed" and data["deployed_by"] is None
    assert stored(client, token, data["id"])["metadata"]["error_code"] == "TIMEOUT"


def test_deployment_example_full(client, token):
    body = {"product_name": "my-service", "version": "1.2.3", "environment_name": "production", "status": "success",
            "deployed_by": "john.doe", "scm_branch": "main", "scm_sha": "abc123def456",
            "scm_repository": "github.com/mycompany/my-service",
            "build_url": "https://github.com/mycompany/my-service/actions/runs/123", "build_number": "456",
            "source_system": "github",
            "extra_metadata": {"deployment_duration_seconds": 120, "deployment_method": "terraform"}}
    data = check_deployment(post(client, "/deployment-events/", token, body), body)
    event = stored(client, token, data["id"])
    for field in ("scm_branch", "scm_sha", "scm_repository", "build_url", "build_number", "source_system"):
        assert event[field] == body[field]


# -- Submit Build Event and its three curls --------------------------------------------------

def test_build_request_body(client, token):
    body = {"product_name": "my-service", "version": "1.2.3", "status": "completed", "built_by": "github-actions",
            "scm_branch": "main", "scm_sha": "abc123def456", "build_url": "https://github.com/...",
            "extra_metadata": {"build_duration_seconds": 180, "docker_image": "mycompany/my-service:1.2.3"}}
    data = check_build(post(client, "/build-events/", token, body), body)
    assert data["status"] == "completed"
    assert stored(client, token, data["id"])["actor"] == "github-actions"


def test_build_example_minimal(client, token):
    body = {"product_name": "my-service", "version": "1.2.3", "status": "completed", "built_by": "github-actions",
            "scm_sha": "abc123def456"}
    check_build(post(client, "/build-events/", token, body), body)


def test_build_example_failed(client, token):
    body = {"product_name": "my-service", "version": "1.2.3", "status": "failed",
            "extra_metadata": {"error": "Compilation failed", "exit_code": 1}}
    assert check_build(post(client, "/build-events/", token, body), body)["status"] == "failed"


def test_build_example_full(client, token):
    body = {"product_name": "my-service", "version": "1.2.3", "status": "completed", "built_by": "github-actions",
            "scm_branch": "main", "scm_sha": "abc123def456", "scm_repository": "github.com/mycompany/my-service",
            "build_url": "https://github.com/mycompany/my-service/actions/runs/123", "build_number": "456",
            "source_system": "github",
            "extra_metadata": {"build_duration_seconds": 180, "docker_image": "mycompany/my-service:1.2.3",
                               "test_coverage": "85%"}}
    data = check_build(post(client, "/build-events/", token, body), body)
    assert stored(client, token, data["id"])["metadata"]["test_coverage"] == "85%"


# -- Status Values tables --------------------------------------------------------------------

@pytest.mark.parametrize("raw,expected", [
    ("pending", "pending"), ("queued", "pending"), ("scheduled", "pending"),
    ("started", "started"), ("in_progress", "started"), ("deploying", "started"),
    ("success", "completed"), ("completed", "completed"), ("deployed", "completed"),
    ("failed", "failed"), ("failure", "failed"), ("error", "failed"),
    ("aborted", "aborted"), ("cancelled", "aborted"), ("skipped", "aborted"), ("SUCCESS", "completed"),
])
def test_deployment_status_table(client, token, raw, expected):
    body = {"product_name": "p", "version": "1", "environment_name": "production", "status": raw}
    assert check_deployment(post(client, "/deployment-events/", token, body), body)["status"] == expected


@pytest.mark.parametrize("raw,expected", [
    ("started", "started"), ("in_progress", "started"), ("building", "started"),
    ("success", "completed"), ("completed", "completed"), ("built", "completed"),
    ("failed", "failed"), ("failure", "failed"), ("error", "failed"),
    ("aborted", "aborted"), ("cancelled", "aborted"), ("skipped", "aborted"),
])
def test_build_status_table(client, token, raw, expected):
    body = {"product_name": "p", "version": "1", "status": raw}
    assert check_build(post(client, "/build-events/", token, body), body)["status"] == expected


def test_unknown_status_is_400(client, token):
    resp = post(client, "/deployment-events/", token,
                {"product_name": "p", "version": "1", "environment_name": "production", "status": "done-ish"})
    assert resp.status_code == 400
    assert "status" in resp.json()["detail"]


# -- Auto-Creation Behavior ------------------------------------------------------------------

def test_auto_creation(client, token):
    body = {"product_name": "my-service", "version": "1.2.3", "environment_name": "production", "status": "success"}
    check_deployment(post(client, "/deployment-events/", token, body), body)
    app = client.app.state.deploytrack
    products = client.portal.call(app.db.fetchall, "SELECT name FROM products")
    envs = client.portal.call(app.db.fetchall, "SELECT name FROM environments")
    versions = client.portal.call(app.db.fetchall, "SELECT product, version FROM versions")
    assert [r[0] for r in products] == ["my-service"]
    assert [r[0] for r in envs] == ["production"]
    assert [tuple(r) for r in versions] == [("my-service", "1.2.3")]


# -- Version Immutability --------------------------------------------------------------------

def test_version_immutability(client, token):
    first = {"product_name": "my-service", "version": "1.2.3", "scm_sha": "abc123", "status": "completed"}
    assert post(client, "/build-events/", token, first).status_code == 200
    second = {**first, "scm_sha": "def456"}
    resp = post(client, "/build-events/", token, second)
    assert resp.status_code == 409
    assert resp.json() == {"detail": "Version 1.2.3 already exists with different SHA"}
    # the same SHA again is fine, and the refused event was not stored
    assert post(client, "/build-events/", token, first).status_code == 200
    events = client.get("/api/v1/events", headers=auth(token)).json()["events"]
    assert [e["scm_sha"] for e in events] == ["abc123", "abc123"]


def test_version_without_sha_gets_one_later(client, token):
    base = {"product_name": "s", "version": "2.0", "status": "started"}
    assert post(client, "/build-events/", token, base).status_code == 200
    assert post(client, "/build-events/", token, {**base, "status": "completed", "scm_sha": "aaa"}).status_code == 200
    resp = post(client, "/deployment-events/", token,
                {**base, "environment_name": "staging", "status": "success", "scm_sha": "bbb"})
    assert resp.status_code == 409


# -- Common Workflows ------------------------------------------------------------------------

def test_workflow_build_and_deploy(client, token):
    steps = [
        ("/build-events/", {"product_name": "my-service", "version": "1.2.3", "status": "started"}),
        ("/build-events/", {"product_name": "my-service", "version": "1.2.3", "status": "completed",
                            "scm_sha": "abc123"}),
        ("/deployment-events/", {"product_name": "my-service", "version": "1.2.3", "environment_name": "staging",
                                 "status": "success"}),
        ("/deployment-events/", {"product_name": "my-service", "version": "1.2.3",
                                 "environment_name": "production", "status": "success"}),
    ]
    for path, body in steps:
        assert post(client, path, token, body).status_code == 200
    kinds = [e["kind"] for e in client.get("/api/v1/events", headers=auth(token)).json()["events"]]
    assert sorted(kinds) == ["build", "build", "deployment", "deployment"]


def test_workflow_deployment_lifecycle(client, token):
    ids = []
    for status in ("pending", "started", "success"):
        body = {"product_name": "my-service", "version": "1.2.3", "environment_name": "production", "status": status}
        data = check_deployment(post(client, "/deployment-events/", token, body), body)
        ids.append(stored(client, token, data["id"])["deployment_id"])
    assert ids[0] == ids[1] == ids[2] is not None
    app = client.app.state.deploytrack
    dep = client.portal.call(app.db.fetchone, "SELECT * FROM deployments WHERE id = ?", (ids[0],))
    assert dep["status"] == "completed" and dep["event_count"] == 3
    assert dep["started_at"] is not None and dep["finished_at"] >= dep["started_at"]


# -- Error Handling --------------------------------------------------------------------------

def test_error_400_shape(client, token):
    resp = post(client, "/deployment-events/", token, {"version": "1", "environment_name": "p", "status": "success"})
    assert resp.status_code == 400
    assert resp.json() == {"detail": "Field 'product_name' is required"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Token x"}])
def test_error_401_shape(client, headers):
    resp = client.post("/deployment-events/", headers=headers,
                       json={"product_name": "p", "version": "1", "environment_name": "e", "status": "success"})
    assert resp.status_code == 401
    assert resp.json() == {"detail": "Invalid API key"}


# -- Integration Examples (GitHub Actions, Jenkins, GitLab CI) with their variables filled -------

@pytest.mark.parametrize("body", [
    {"product_name": "my-service", "version": "3f2c1e0d9b8a", "environment_name": "production", "status": "success",
     "deployed_by": "octocat", "scm_branch": "main", "scm_sha": "3f2c1e0d9b8a",
     "build_url": "https://github.com/acme/my-service/actions/runs/42"},
    {"product_name": "my-service", "version": "118", "environment_name": "production", "status": "success",
     "deployed_by": "jenkins", "build_url": "https://jenkins.example.com/job/deploy/118/"},
    {"product_name": "my-service", "version": "3f2c1e0d", "environment_name": "production", "status": "success",
     "deployed_by": "alice", "scm_branch": "main", "scm_sha": "3f2c1e0d9b8a7f6e",
     "build_url": "https://gitlab.example.com/acme/my-service/-/jobs/7"},
])
def test_integration_examples(client, token, body):
    check_deployment(post(client, "/deployment-events/", token, body), body)
