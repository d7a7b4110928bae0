"""A retried request must not count twice: Idempotency-Key, invoke_id+status, DevGrid build_id+status+env."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from tests.conftest import auth, create_token

DEPLOY = {"product_name": "svc", "version": "1.0", "environment_name": "production", "status": "success"}


def count(client) -> int:
    row = client.portal.call(client.app.state.deploytrack.db.fetchone, "SELECT COUNT(*) FROM events")
    return row[0]


@pytest.mark.parametrize("path,body,headers_of", [
    ("/deployment-events/", DEPLOY, lambda t: auth(t)),
    ("/events", {"events": [{"type": "event-deploy", "entityId": "a",
                             "attributes": {"env": "p", "status": "success"}}]}, lambda t: {"x-api-key": t}),
    ("/api/events/push", {"type": "code_deploy", "content": "v1"}, lambda t: {"Authorization": f"Token {t}"}),
])
def test_idempotency_key_replays_original(client, token, path, body, headers_of):
    headers = {**headers_of(token), "Idempotency-Key": "run-77-attempt"}
    first = client.post(path, json=body, headers=headers)
    second = client.post(path, json=body, headers=headers)
    assert first.status_code == second.status_code and first.status_code in (200, 201)
    assert first.json() == second.json()
    assert count(client) == 1


@pytest.mark.parametrize("path,body,headers_of,ids_of", [
    ("/deployment-events/", DEPLOY, lambda t: auth(t), lambda r: [r["id"]]),
    ("/events", {"events": [{"type": "event-deploy", "entityId": entity,
                             "attributes": {"env": "p", "status": "success"}} for entity in ("a", "b")]},
     lambda t: {"x-api-key": t}, lambda r: [e["id"] for e in r["events"]]),
    ("/api/events/push", {"type": "code_deploy", "content": "v1"}, lambda t: {"Authorization": f"Token {t}"},
     lambda r: [r["id"]]),
    ("/api/deployment-events", {"summary": "deploy"}, lambda t: {}, lambda r: [r["id"]]),
])
def test_a_resend_after_the_original_was_deleted_is_stored_again(live_server, token, db_path, path, body, headers_of,
                                                                   ids_of):
    admin = create_token(db_path, "admin", "admin")
    body = {**body, "integrationKey": token} if path == "/api/deployment-events" else body
    headers = {**headers_of(token), "Idempotency-Key": "deleted-since"}

    def send() -> httpx.Response:
        return httpx.post(live_server.url + path, json=body, headers=headers, timeout=10)

    first = send()
    assert first.status_code in (200, 201, 202), first.text
    gone = ids_of(first.json())[0]
    assert httpx.delete(f"{live_server.url}/api/v1/events/{gone}", headers=auth(admin), timeout=10).status_code == 200
    again = send()
    assert again.status_code == first.status_code, again.text
    ids = ids_of(again.json())
    assert gone not in ids and ids[1:] == ids_of(first.json())[1:]  # a DevGrid batch's other event is kept
    listed = httpx.get(live_server.url + "/api/v1/events", headers=auth(token), timeout=10).json()["events"]
    assert set(ids) <= {e["id"] for e in listed}
    assert send().json() == again.json()  # and the key answers with the new events from now on
    if path == "/events":  # a batch of another size under the key is another request: refused, nothing stored
        assert httpx.delete(f"{live_server.url}/api/v1/events/{ids[0]}", headers=auth(admin), timeout=10).is_success
        other = httpx.post(live_server.url + path, json={"events": body["events"][:1]}, headers=headers, timeout=10)
        assert other.status_code == 422 and other.json()["field"] == "Idempotency-Key"
        listed = httpx.get(live_server.url + "/api/v1/events", headers=auth(token), timeout=10).json()["events"]
        assert [e["id"] for e in listed] == ids[1:]


def test_a_key_sent_again_with_another_kind_of_request_is_a_422_and_stores_nothing(client, token):
    headers = {**auth(token), "Idempotency-Key": "one-step"}
    assert client.post("/deployment-events/", json=DEPLOY, headers=headers).status_code == 200
    build = client.post("/build-events/", json={"product_name": "svc", "version": "1.0", "status": "success"},
                        headers=headers)
    assert build.status_code == 422 and "Idempotency-Key" in build.json()["detail"]  # Versioner's shape
    devgrid = client.post("/events", headers={"x-api-key": token, "Idempotency-Key": "one-step"}, json={
        "events": [{"type": "event-deploy", "entityId": "svc",
                    "attributes": {"env": "production", "status": "success"}}]})
    assert devgrid.status_code == 422 and devgrid.json()["field"] == "Idempotency-Key"  # DevGrid's shape
    assert count(client) == 1


@pytest.mark.parametrize("path,body,other,headers_of,refused", [
    ("/deployment-events/", DEPLOY, {**DEPLOY, "version": "1.1"}, lambda t: auth(t),
     lambda r: "another request body" in r.json()["detail"]),
    ("/events", {"events": [{"type": "event-deploy", "entityId": "a", "attributes": {"env": "p", "status": "built"}}]},
     {"events": [{"type": "event-deploy", "entityId": "b", "attributes": {"env": "p", "status": "built"}}]},
     lambda t: {"x-api-key": t}, lambda r: r.json()["field"] == "Idempotency-Key"),
    ("/api/events/push", {"type": "code_deploy", "content": "v1"}, {"type": "code_deploy", "content": "v2"},
     lambda t: {"Authorization": f"Token {t}"}, lambda r: "another request body" in r.text),
    ("/api/v1/incidents", {"title": "down", "product": "svc"}, {"title": "down again", "product": "svc"},
     lambda t: auth(t),
     lambda r: r.json()["error"]["field"] == "Idempotency-Key"),
])
def test_a_key_sent_again_with_another_body_is_a_422_and_stores_nothing(client, token, path, body, other, headers_of,
                                                                         refused):
    """The IETF draft's answer: the second request is not lost unseen behind the first one's result."""
    headers = {**headers_of(token), "Idempotency-Key": "reused-by-mistake"}
    first = client.post(path, json=body, headers=headers)
    assert first.status_code in (200, 201), first.text
    second = client.post(path, json=other, headers=headers)
    assert second.status_code == 422 and refused(second), second.text
    again = client.post(path, json=body, headers=headers)  # the original, re-sent, still gets its answer
    assert again.status_code == first.status_code and again.json() == first.json()
    rows = client.portal.call(client.app.state.deploytrack.db.fetchone,
                              "SELECT (SELECT COUNT(*) FROM events) + (SELECT COUNT(*) FROM incidents)")
    assert rows[0] == 1


def test_idempotency_key_ilert(client, token):
    body = {"integrationKey": token, "summary": "deploy"}
    first = client.post("/api/deployment-events", json=body, headers={"Idempotency-Key": "k1"})
    second = client.post("/api/deployment-events", json=body, headers={"Idempotency-Key": "k1"})
    assert (first.status_code, second.status_code) == (202, 202) and first.json() == second.json()
    third = client.post("/api/deployment-events", json=body, headers={"Idempotency-Key": "k2"})
    assert third.json()["id"] != first.json()["id"]
    assert count(client) == 2


def test_idempotency_key_too_long(client, token):
    resp = client.post("/deployment-events/", json=DEPLOY, headers={**auth(token), "Idempotency-Key": "x" * 300})
    assert resp.status_code == 400 and "Idempotency-Key" in resp.json()["detail"]


def test_invoke_id_and_status(client, token):
    body = {**DEPLOY, "invoke_id": "gh-run-5"}
    first = client.post("/deployment-events/", json=body, headers=auth(token))
    again = client.post("/deployment-events/", json=body, headers=auth(token))
    assert first.json() == again.json() and again.status_code == 200
    started = client.post("/deployment-events/", json={**body, "status": "started"}, headers=auth(token))
    assert started.json()["id"] != first.json()["id"]
    assert count(client) == 2
    # both fold into one deployment record (same invoke_id)
    deps = client.portal.call(client.app.state.deploytrack.db.fetchall, "SELECT status, event_count FROM deployments")
    assert [tuple(d) for d in deps] == [("completed", 2)]


def test_devgrid_build_id_status_env(client, token):
    def send(env):
        return client.post("/events", headers={"x-api-key": token}, json={"events": [
            {"type": "event-deploy", "entityId": "app", "attributes": {"env": env, "status": "success",
                                                                       "build_id": "b-9"}}]})
    first, again, alias = send("production"), send("production"), send("prod")
    assert first.status_code == again.status_code == alias.status_code == 201
    assert first.json()["events"][0]["id"] == again.json()["events"][0]["id"] == alias.json()["events"][0]["id"]
    assert send("staging").json()["events"][0]["id"] != first.json()["events"][0]["id"]
    assert count(client) == 2



def test_devgrid_batch_mixing_stored_new_and_repeated_events(client, token):
    def event(build_id):
        return {"type": "event-deploy", "entityId": "app", "attributes": {"env": "production", "status": "success",
                                                                          "build_id": build_id}}

    first = client.post("/events", headers={"x-api-key": token}, json={"events": [event("b-1")]})
    batch = client.post("/events", headers={"x-api-key": token},
                        json={"events": [event("b-2"), event("b-1"), event("b-2"), event("b-3")]})
    assert first.status_code == batch.status_code == 201
    ids = [e["id"] for e in batch.json()["events"]]
    assert ids[1] == first.json()["events"][0]["id"]  # stored by an earlier request
    assert ids[0] == ids[2]  # repeated inside the batch
    assert len({ids[0], ids[1], ids[3]}) == 3
    assert batch.json()["events"][2] == batch.json()["events"][0]
    assert count(client) == 3


@pytest.mark.slow
def test_concurrent_identical_resends_store_one(live_server, token):
    body = {**DEPLOY, "version": "9.9"}
    headers = {**auth(token), "Idempotency-Key": "same-request"}

    def send(_: int) -> httpx.Response:
        return httpx.post(live_server.url + "/deployment-events/", json=body, headers=headers, timeout=10)

    with ThreadPoolExecutor(max_workers=16) as pool:
        responses = list(pool.map(send, range(32)))
    assert {r.status_code for r in responses} == {200}
    assert len({r.json()["id"] for r in responses}) == 1
    listed = httpx.get(live_server.url + "/api/v1/events", headers=auth(token), timeout=10).json()["events"]
    assert len(listed) == 1


def test_version_immutability_across_dialects(client, token):
    assert client.post("/build-events/", json={"product_name": "app", "version": "2.0", "status": "success",
                                               "scm_sha": "aaa"}, headers=auth(token)).status_code == 200
    resp = client.post("/events", headers={"x-api-key": token}, json={"events": [
        {"type": "event-deploy", "entityId": "app", "attributes": {"env": "production", "status": "success",
                                                                   "version": "2.0", "build_commit_sha": "bbb"}}]})
    assert resp.status_code == 409
    assert resp.json()["message"] == "Version 2.0 already exists with different SHA" and resp.json()["index"] == 0
    assert resp.json()["field"] == "events[0].attributes.build_commit_sha"  # named as the client sent it
    assert count(client) == 1
