"""Bad input of any kind gets a clear 4xx naming the problem, stores nothing, and never a 500."""

from __future__ import annotations

import pytest

from tests.conftest import auth

GOOD = {"product_name": "svc", "version": "1.0", "environment_name": "production", "status": "success"}


def stored(client) -> int:
    return client.portal.call(client.app.state.deploytrack.db.fetchone, "SELECT COUNT(*) FROM events")[0]


@pytest.mark.parametrize("raw,needle", [
    (b"{", "not valid JSON"),
    (b"", "empty"),
    (b"[1, 2]", "JSON object"),
    (b'"text"', "JSON object"),
    (b"null", "JSON object"),
    (b'{"a": NaN}', "not valid JSON"),
    (b'{"product_name": "\xff\xfe"}', "not valid JSON"),
    (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
    (b'{"n": 1e400}', "not valid JSON"),
])
def test_malformed_bodies(client, token, raw, needle):
    resp = client.post("/deployment-events/", content=raw, headers={**auth(token), "Content-Type": "application/json"})
    assert resp.status_code == 400
    assert needle in resp.json()["detail"]
    assert stored(client) == 0


@pytest.mark.parametrize("field,value,needle", [
    ("product_name", 5, "Field 'product_name' must be a string"),
    ("product_name", "", "Field 'product_name' must not be empty"),
    ("product_name", "   ", "Field 'product_name' must not be empty"),
    ("version", None, "Field 'version' is required"),
    ("version", ["1"], "Field 'version' must be a string"),
    ("environment_name", {"x": 1}, "Field 'environment_name' must be a string"),
    ("status", 1, "Field 'status' must be a string"),
    ("status", "done", "Field 'status' has unknown value"),
    ("deployed_by", True, "Field 'deployed_by' must be a string"),
    ("extra_metadata", "x", "Field 'extra_metadata' must be a JSON object"),
    ("timestamp", "not a time", "Field 'timestamp' is not a valid ISO 8601"),
    ("timestamp", "2999-01-01T00:00:00Z", "Field 'timestamp' is more than 1 day in the future"),
    ("product_name", "x" * 5000, "Field 'product_name' is longer than 4096 characters"),
    ("scm_sha", "a\x00b", "NUL"),
])
def test_bad_fields_name_the_field(client, token, field, value, needle):
    body = {**GOOD, field: value}
    if value is None:
        del body[field]
    resp = client.post("/deployment-events/", json=body, headers=auth(token))
    assert resp.status_code == 400, resp.text
    assert needle in resp.json()["detail"]
    assert stored(client) == 0


def test_body_over_one_mib_is_413(client, token):
    big = {**GOOD, "extra_metadata": {"blob": "x" * (1024 * 1024)}}
    resp = client.post("/deployment-events/", json=big, headers=auth(token))
    assert resp.status_code == 413
    assert "larger than 1048576 bytes" in resp.json()["detail"]
    assert stored(client) == 0


def test_body_over_limit_without_content_length_is_413(client, token):
    def chunks():
        yield b'{"product_name": "'
        for _ in range(40):
            yield b"x" * 32768
        yield b'"}'

    resp = client.post("/deployment-events/", content=chunks(), headers=auth(token))
    assert resp.status_code == 413


def test_too_many_metadata_keys(client, token):
    body = {**GOOD, "extra_metadata": {f"k{i}": i for i in range(201)}}
    resp = client.post("/deployment-events/", json=body, headers=auth(token))
    assert resp.status_code == 400 and "at most 200 allowed" in resp.json()["detail"]


def test_unknown_fields_are_kept_as_metadata(client, token):
    body = {**GOOD, "team": "payments", "ticket": {"id": 7}, "extra_metadata": {"k": "v"}}
    resp = client.post("/deployment-events/", json=body, headers=auth(token))
    assert resp.status_code == 200
    event = client.get(f"/api/v1/events/{resp.json()['id']}", headers=auth(token)).json()
    assert event["metadata"] == {"team": "payments", "ticket": {"id": 7}, "k": "v"}


def test_wrong_method_and_unknown_path(client, token):
    assert client.get("/deployment-events/", headers=auth(token)).status_code == 405
    resp = client.post("/nowhere", json={}, headers=auth(token))
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"


def test_paths_answer_with_and_without_slash_without_redirect(client, token):
    for path in ("/deployment-events", "/deployment-events/", "/build-events", "/build-events/"):
        body = {k: v for k, v in GOOD.items() if "build" not in path or k != "environment_name"}
        resp = client.post(path, json=body, headers=auth(token), follow_redirects=False)
        assert resp.status_code == 200, path
    for path in ("/events", "/events/"):
        resp = client.post(path, follow_redirects=False, headers={"x-api-key": token}, json={"events": [
            {"type": "event-deploy", "entityId": "a", "attributes": {"env": "production", "status": "success"}}]})
        assert resp.status_code == 201, path
    for path in ("/api/events/push", "/api/events/push/"):
        resp = client.get(f"{path}?type=custom&content=x&auth_token={token}", follow_redirects=False)
        assert resp.status_code == 200, path
    for path in ("/api/deployment-events", "/api/deployment-events/"):
        resp = client.post(path, json={"integrationKey": token, "summary": "s"}, follow_redirects=False)
        assert resp.status_code == 202, path
