"""Client-id de-duplication (Versioner invoke_id, DevGrid build_id) is one token's own, and its key is exact.

Two tokens are two tenants: one must never get the other's stored event back, nor lose its own event
because the other sent the same ids first. And no choice of ':' (or any character) inside a product or
environment name may make two different events look like one.
"""

from __future__ import annotations

import pytest

from tests.conftest import auth, create_token


@pytest.fixture
def other(db_path, token):
    return create_token(db_path, "tenant-b", "ingest", "read")


def devgrid(client, key, entity, env, build_id, **attributes):
    batch = {"events": [{"type": "event-deploy", "entityId": entity,
                         "attributes": {"env": env, "status": "success", "build_id": build_id, **attributes}}]}
    resp = client.post("/events", json=batch, headers={"x-api-key": key})
    assert resp.status_code == 201, resp.text
    return resp.json()["events"][0]


def versioner(client, key, product, env, invoke_id, **fields):
    body = {"product_name": product, "version": "1.0", "environment_name": env, "status": "success",
            "invoke_id": invoke_id, **fields}
    resp = client.post("/deployment-events/", json=body, headers=auth(key))
    assert resp.status_code == 200, resp.text
    return resp.json()


def stored_ids(client, key):
    return sorted(e["id"] for e in client.get("/api/v1/events?limit=100", headers=auth(key)).json()["events"])


def test_devgrid_build_id_is_scoped_to_the_token(client, token, other):
    mine = devgrid(client, token, "billing", "production", "build-123", release_notes="A's private notes")
    theirs = devgrid(client, other, "billing", "production", "build-123", release_notes="B's notes")
    assert theirs["id"] != mine["id"]
    assert theirs["attributes"]["release_notes"] == "B's notes"  # B's own event, not A's
    assert "A's private notes" not in str(theirs)
    assert stored_ids(client, token) == sorted([mine["id"], theirs["id"]])
    again = devgrid(client, token, "billing", "production", "build-123", release_notes="A's private notes")
    assert again["id"] == mine["id"]  # a re-send by the same token is still the same event
    assert len(stored_ids(client, token)) == 2


def test_versioner_invoke_id_is_scoped_to_the_token(client, token, other):
    mine = versioner(client, token, "billing", "production", "run-9", extra_metadata={"owner": "A"})
    theirs = versioner(client, other, "billing", "production", "run-9", extra_metadata={"owner": "B"})
    assert theirs["id"] != mine["id"]
    event = client.get(f"/api/v1/events/{theirs['id']}", headers=auth(other)).json()
    assert event["metadata"] == {"owner": "B"}
    assert versioner(client, other, "billing", "production", "run-9")["id"] == theirs["id"]
    assert len(stored_ids(client, token)) == 2


@pytest.mark.parametrize("first,second", [(("p:q", "r"), ("p", "q:r")), (("a", "b:c:d"), ("a:b", "c:d")),
                                          (('x","y', "z"), ("x", 'y","z'))])
def test_names_with_separators_do_not_collide(client, token, first, second):
    one = devgrid(client, token, first[0], first[1], "b-1")
    two = devgrid(client, token, second[0], second[1], "b-1")
    assert one["id"] != two["id"] and (two["entityId"], two["attributes"]["env"]) == second
    three = versioner(client, token, first[0], first[1], "i-1")
    four = versioner(client, token, second[0], second[1], "i-1")
    assert three["id"] != four["id"] and four["product_name"] == second[0]
    assert len(stored_ids(client, token)) == 4


def test_environment_aliases_are_one_environment_for_dedupe(client, token):
    """`prod` and `production` are one environment everywhere, so a retry naming it either way is one event."""
    first = versioner(client, token, "svc", "production", "run-1")
    assert versioner(client, token, "svc", "Prod", "run-1")["id"] == first["id"]
    retried = devgrid(client, token, "svc", "PRODUCTION", "b-1")
    assert devgrid(client, token, "svc", "prod", "b-1")["id"] == retried["id"]
    assert len(stored_ids(client, token)) == 2
