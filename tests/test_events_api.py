"""GET /api/v1/events: read scope, filters, newest first, cursor paging; /healthz; /metrics."""

from __future__ import annotations

from tests.conftest import auth, create_token


def seed(client, token):
    rows = [("a", "production", "success", "2025-01-01T10:00:00Z"), ("a", "staging", "failed", "2025-01-02T10:00:00Z"),
            ("b", "prod", "started", "2025-01-03T10:00:00Z"), ("b", "production", "success", "2025-01-04T10:00:00Z"),
            ("a", "production", "success", "2025-01-05T10:00:00Z")]
    for i, (product, env, status, ts) in enumerate(rows):
        resp = client.post("/deployment-events/", headers=auth(token), json={
            "product_name": product, "version": f"1.{i}", "environment_name": env, "status": status,
            "timestamp": ts, "description": f"release number {i}"})
        assert resp.status_code == 200
    resp = client.post("/build-events/", headers=auth(token),
                       json={"product_name": "a", "version": "2.0", "status": "building",
                             "timestamp": "2025-01-06T00:00:00Z"})
    assert resp.status_code == 200


def listed(client, token, query=""):
    resp = client.get("/api/v1/events" + query, headers=auth(token))
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_newest_first_and_filters(client, token):
    seed(client, token)
    assert [e["version"] for e in listed(client, token)["events"]] == ["2.0", "1.4", "1.3", "1.2", "1.1", "1.0"]
    assert [e["version"] for e in listed(client, token, "?product=b")["events"]] == ["1.3", "1.2"]
    assert [e["version"] for e in listed(client, token, "?environment=PROD")["events"]] == ["1.4", "1.3", "1.2", "1.0"]
    assert [e["version"] for e in listed(client, token, "?kind=build")["events"]] == ["2.0"]
    assert [e["version"] for e in listed(client, token, "?status=failed")["events"]] == ["1.1"]
    assert [e["version"] for e in listed(client, token, "?status=started")["events"]] == ["2.0", "1.2"]
    window = "?since=2025-01-02T00:00:00Z&until=2025-01-04T10:00:00Z"
    assert [e["version"] for e in listed(client, token, window)["events"]] == ["1.2", "1.1"]
    assert [e["version"] for e in listed(client, token, "?q=number 3")["events"]] == ["1.3"]
    assert listed(client, token, "?q=100%")["events"] == []


def test_cursor_paging_visits_each_event_once(client, token):
    seed(client, token)
    seen, cursor = [], None
    while True:
        page = listed(client, token, "?limit=2" + (f"&cursor={cursor}" if cursor else ""))
        seen += [e["version"] for e in page["events"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == ["2.0", "1.4", "1.3", "1.2", "1.1", "1.0"]


def test_bad_query_parameters(client, token):
    for query, field in (("?kind=deploy", "kind"), ("?status=ok", "status"), ("?since=yesterday", "since"),
                         ("?limit=0", "limit"), ("?limit=x", "limit"), ("?cursor=abc", "cursor")):
        resp = client.get("/api/v1/events" + query, headers=auth(token))
        assert resp.status_code == 400, query
        assert resp.json()["error"]["field"] == field


def test_read_scope_required(client, db_path):
    ingest_only = create_token(db_path, "pipeline", "ingest")
    assert client.get("/api/v1/events").status_code == 401
    assert client.get("/api/v1/events", headers=auth("dt_wrong")).status_code == 401
    resp = client.get("/api/v1/events", headers=auth(ingest_only))
    assert resp.status_code == 403 and "read" in resp.json()["error"]["message"]


def test_public_read_flag(make_client):
    client = make_client(public_read=True)
    assert client.get("/api/v1/events").status_code == 200


def test_healthz_and_metrics_need_no_token(client, token):
    assert client.get("/healthz").json()["status"] == "ok"
    client.post("/deployment-events/", headers=auth(token), json={
        "product_name": "a", "version": "1", "environment_name": "production", "status": "success"})
    text = client.get("/metrics").text
    assert 'deploytrack_events_ingested_total{dialect="versioner"} 1' in text
    assert "deploytrack_write_commits_total" in text
