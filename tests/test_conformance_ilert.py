"""The request example of the ilert document (seeds/003_98f8c8d7f8025884.txt) and its field rules."""

from __future__ import annotations

import pytest

from tests.conftest import auth, create_token

EXAMPLE = {
    "summary": "My custom deployment event",
    "timestamp": "2024-11-05T22:17:38Z",
    "customDetails": {"some": "customData"},
    "links": [{"href": "http://google.com", "text": "A custom link to the source of this deployment event"}],
}


@pytest.fixture
def pipeline(db_path):
    return create_token(db_path, "ilert-pipeline", "ingest", "read", product="checkout", environment="prod")


def test_sample_curl(make_client, pipeline):
    client = make_client()
    resp = client.post("/api/deployment-events", headers={"Content-Type": "application/json"},
                       json={"integrationKey": pipeline, **EXAMPLE})
    assert resp.status_code == 202
    event = client.get(f"/api/v1/events/{resp.json()['id']}", headers=auth(pipeline)).json()
    assert event["summary"] == "My custom deployment event"
    assert event["occurred_at"] == "2024-11-05T22:17:38Z"
    assert event["metadata"] == {"some": "customData"}
    assert event["links"] == EXAMPLE["links"]
    assert (event["product"], event["environment"], event["environment_raw"]) == ("checkout", "production", "prod")
    assert pipeline not in resp.text and pipeline not in str(event)


def test_only_integration_key_and_summary_required(make_client, pipeline):
    client = make_client()
    assert client.post("/api/deployment-events", json={"integrationKey": pipeline, "summary": "s"}).status_code == 202
    resp = client.post("/api/deployment-events", json={"integrationKey": pipeline})
    assert resp.status_code == 400 and "summary" in resp.json()["message"]


@pytest.mark.parametrize("value,iso", [(1730845058, "2024-11-05T22:17:38Z"),
                                       (1730845058123, "2024-11-05T22:17:38.123000Z"),
                                       ("2024-11-05T22:17:38Z", "2024-11-05T22:17:38Z"),
                                       ("2024-11-05T23:17:38+01:00", "2024-11-05T22:17:38Z")])
def test_timestamp_forms(make_client, pipeline, value, iso):
    client = make_client()
    resp = client.post("/api/deployment-events", json={"integrationKey": pipeline, "summary": "s", "timestamp": value})
    assert resp.status_code == 202
    assert client.get(f"/api/v1/events/{resp.json()['id']}", headers=auth(pipeline)).json()["occurred_at"] == iso


@pytest.mark.parametrize("value", ["yesterday", "2024-13-45T00:00:00Z", True, {"a": 1}, -5, 1e300])
def test_bad_timestamp_is_400_naming_it(client, token, value):
    resp = client.post("/api/deployment-events", json={"integrationKey": token, "summary": "s", "timestamp": value})
    assert resp.status_code == 400
    assert "timestamp" in resp.json()["message"]


@pytest.mark.parametrize("body", [{"summary": "s"}, {"integrationKey": "il-wrong", "summary": "s"},
                                  {"integrationKey": 5, "summary": "s"}])
def test_bad_integration_key_is_401(client, token, body):
    resp = client.post("/api/deployment-events", json=body)
    assert resp.status_code == 401
    assert resp.json()["message"] == "Invalid API key"
    assert client.get("/api/v1/events", headers=auth(token)).json()["events"] == []


@pytest.mark.parametrize("links", ["http://x", [{"text": "no href"}], [{"href": 5}]])
def test_bad_links_are_400(client, token, links):
    resp = client.post("/api/deployment-events", json={"integrationKey": token, "summary": "s", "links": links})
    assert resp.status_code == 400 and "links" in resp.json()["message"]
