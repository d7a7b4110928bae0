"""Behaviour the speed work must keep: keyset paging over equal times, and revocation with the token cache."""

from __future__ import annotations

from tests.conftest import auth, create_token, run_cli


def test_paging_over_equal_times_with_a_filter_visits_each_event_once(client, token):
    # Six events at one instant (ties broken by arrival), two products interleaved.
    for i in range(6):
        resp = client.post("/deployment-events/", headers=auth(token), json={
            "product_name": "ab"[i % 2], "version": f"1.{i}", "environment_name": "production",
            "status": "failed" if i % 3 == 0 else "success", "timestamp": "2025-03-01T12:00:00Z"})
        assert resp.status_code == 200
    for query, expected in (("", ["1.5", "1.4", "1.3", "1.2", "1.1", "1.0"]), ("&product=a", ["1.4", "1.2", "1.0"]),
                            ("&status=failed", ["1.3", "1.0"])):
        seen, cursor = [], None
        while True:
            resp = client.get(f"/api/v1/events?limit=1{query}" + (f"&cursor={cursor}" if cursor else ""),
                              headers=auth(token))
            assert resp.status_code == 200, resp.text
            seen += [e["version"] for e in resp.json()["events"]]
            cursor = resp.json()["next_cursor"]
            if not cursor:
                break
        assert seen == expected, query


def test_revoked_token_is_refused_at_once_though_ingest_cached_it(make_client, db_path):
    secret = create_token(db_path, "ci", "ingest", "read")
    reader = create_token(db_path, "reader", "read")
    client = make_client()
    batch = {"events": [{"type": "event-deploy", "entityId": "app", "attributes": {"env": "production",
                                                                                  "status": "success"}}] * 3}
    assert client.post("/events", headers={"x-api-key": secret}, json=batch).status_code == 201
    assert run_cli("token", "revoke", "ci", "--db", str(db_path))[0] == 0
    resp = client.post("/events", headers={"x-api-key": secret}, json=batch)
    assert resp.status_code == 401 and resp.json()["statusCode"] == 401
    resp = client.post("/deployment-events/", headers=auth(secret), json={
        "product_name": "app", "version": "9", "environment_name": "production", "status": "success"})
    assert resp.status_code == 401 and resp.json() == {"detail": "Invalid API key"}
    assert client.get("/api/v1/events", headers=auth(secret)).status_code == 401
    events = client.get("/api/v1/events", headers=auth(reader)).json()["events"]
    assert len(events) == 3  # the refused batch wrote nothing
