"""What one tenant's events cost in daily snapshots: a scope has snapshots from its first day with data
only, and none older than SNAPSHOT_DAYS; so a backfilled event costs the days of its own scopes."""

from __future__ import annotations

from deploytrack.metrics.compute import SNAPSHOT_DAYS
from tests.conftest import execute, query, run_cli
from tests.dora import DAY_US, at, deploy, today


def snapshots(db_path, where="1 = 1"):
    return query(db_path, f"SELECT COUNT(*), MIN(day), MAX(day) FROM metric_snapshots WHERE {where}")[0]


def test_one_backfilled_event_costs_its_own_scopes_days_not_every_scopes(client, token, db_path):
    batch = [{"type": "event-deploy", "entityId": f"svc-{i:03d}",
              "attributes": {"env": "production", "status": "success", "version": "1"}} for i in range(40)]
    assert client.post("/events", json={"events": batch}, headers={"x-api-key": token}).status_code == 201
    deploy(client, token, "0", "success", at(30), product="svc-000")  # the one event sent late, 30 days back
    assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0
    # overall, the product, its environment and the pair: 30 days (to yesterday) x 3 windows each
    assert snapshots(db_path) == (4 * 30 * 3, today() - 30 * DAY_US, today() - DAY_US)
    assert snapshots(db_path, "product = 'svc-001'")[0] == 0  # first seen today: no history to show
    series = client.get("/api/v1/metrics", params={"product": "svc-000", "days": 400},
                        headers={"Authorization": f"Bearer {token}"}).json()["series"]
    assert len(series) == 30 and series[0]["deployment_frequency"]["deployments"] == 1


def test_snapshots_reach_back_at_most_snapshot_days_and_older_ones_are_deleted(client, token, db_path):
    deploy(client, token, "1", "success", at(1000))
    # 2,500 days older than SNAPSHOT_DAYS: more than one delete's worth
    execute(db_path, "INSERT INTO metric_snapshots (day, scope, product, environment, window_days, data, computed_at) "
                     "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < 2499) "
                     "SELECT CAST(? AS BIGINT) - (500 + i) * CAST(? AS BIGINT), 'overall', '', '', 7, '{}', 0 "
                     "FROM n", (today(), DAY_US))
    assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0
    first = today() - SNAPSHOT_DAYS * DAY_US
    # overall, product, environment, pair: SNAPSHOT_DAYS days x 3 windows, the old row gone
    assert snapshots(db_path) == (4 * SNAPSHOT_DAYS * 3, first, today() - DAY_US)


def test_an_incident_without_environment_starts_every_production_scope_it_counts_in(client, token, db_path):
    assert client.post("/api/v1/incidents", headers={"Authorization": f"Bearer {token}"}, json={
        "product": "shop", "title": "down", "opened_at": at(40), "resolved_at": at(40, 13)}).status_code == 201
    deploy(client, token, "1", "success", at(10))
    assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0
    for params in ({"product": "shop"}, {"environment": "production"}, {"product": "shop", "environment": "production"},
                   {}):
        series = client.get("/api/v1/metrics", params={**params, "days": 400},
                            headers={"Authorization": f"Bearer {token}"}).json()["series"]
        assert len(series) == 40, params  # the incident counts in production: every such scope starts with it
