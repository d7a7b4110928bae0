"""The metrics core's measured defects, each as a regression test through HTTP and the CLI.

Every path - live ("latest"), the nightly snapshot, `metrics recompute`, `--since DAY`,
`--refold-all` - reads the same stored facts, so these check both the number and that the paths agree.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import auth, query, run_cli
from tests.dora import DAY_US, at, build, deploy, incident, metrics, today


def recompute(db: Any, *flags: str) -> None:
    code, out = run_cli("metrics", "recompute", "--db", str(db), *flags)
    assert code == 0, out


def snapshot(db: Any, day: int, kind: str = "overall", window: int = 7, product: str = "",
             environment: str = "") -> dict[str, Any]:
    import orjson

    rows = query(db, "SELECT data FROM metric_snapshots WHERE day = ? AND scope = ? AND product = ? "
                     "AND environment = ? AND window_days = ?", (day, kind, product, environment, window))
    assert rows, f"no snapshot for {kind} {product} {environment} {window} on {day}"
    return orjson.loads(rows[0][0])


def all_snapshots(db: Any) -> list[tuple[Any, ...]]:
    return query(db, "SELECT day, scope, product, environment, window_days, data FROM metric_snapshots "
                     "ORDER BY day, scope, product, environment, window_days")


def deployments(client: Any, token: str, **params: Any) -> list[dict[str, Any]]:
    resp = client.get("/api/v1/deployments", headers=auth(token), params={"limit": 200, **params})
    assert resp.status_code == 200, resp.text
    return resp.json()["deployments"]


def test_restore_counts_a_failure_deployed_before_the_window(make_client, token, db_path):
    """v1.0 failed at today-7d 23:00, v1.1 completed at today-6d 01:00: 2 h to recover, in the 7-day window."""
    client = make_client(count_failed_deployments=True)
    deploy(client, token, "1.0", "failed", at(7, 23))
    deploy(client, token, "1.1", "success", at(6, 1))
    live = metrics(client, token, window=7)["latest"]["time_to_restore"]
    assert (live["value"], live["data_points"]) == (7200.0, 1)
    recompute(db_path, "--count-failed-deployments")
    yesterday = snapshot(db_path, today() - DAY_US)["time_to_restore"]
    assert (yesterday["value"], yesterday["data_points"]) == (7200.0, 1)


def test_commits_listed_again_by_the_next_version_count_once(client, token, db_path):
    deploy(client, token, "1.0", "success", at(10, 12), extra_metadata={"commits": [
        {"sha": "m1", "committed_at": at(10, 10)}]})
    deploy(client, token, "2.0", "success", at(2, 12), commit_timestamp=at(2, 11), extra_metadata={"commits": [
        {"sha": "m1", "committed_at": at(10, 10)}, {"sha": "m2", "committed_at": at(2, 6)}]})
    lead = metrics(client, token, window=7)["latest"]["lead_time"]
    # 2.0 itself (3600 s from the commit time it sent) and m2 (6 h): m1 was deployed by 1.0 already
    assert lead["data_points"] == 2
    assert lead["value"] == (3600 + 6 * 3600) / 2
    recompute(db_path)
    assert snapshot(db_path, today() - DAY_US)["lead_time"]["data_points"] == 2


def test_a_retagged_sha_is_one_change(client, token, db_path):
    """Builds of 1.0-rc and 1.0 share SHA r1; the deployments send no SHA; 1.0 is not a new change."""
    build(client, token, "1.0-rc", at(9, 8), scm_sha="r1")
    build(client, token, "1.0", at(9, 9), scm_sha="r1")
    deploy(client, token, "1.0-rc", "success", at(9, 10))
    deploy(client, token, "1.0", "success", at(1, 10))
    lead = metrics(client, token, window=7)["latest"]["lead_time"]
    assert lead["data_points"] == 0 and lead["value"] is None
    lead30 = metrics(client, token, window=30)["latest"]["lead_time"]
    assert lead30["data_points"] == 1 and lead30["value"] == 7200.0  # from the first build of r1


def test_since_gives_the_numbers_of_a_full_recompute(client, token, db_path):
    """More than 90 days of history: `recompute --since DAY` and a full recompute agree day by day."""
    for days_ago, version in ((130, "1"), (100, "2"), (95, "1"), (60, "3"), (20, "4"), (3, "3")):
        build(client, token, version, at(days_ago, 6))
        deploy(client, token, version, "success", at(days_ago, 12))
    incident(client, token, opened_at=at(59, 12), resolved_at=at(59, 14))
    recompute(db_path, "--refold-all")
    full = all_snapshots(db_path)
    since = today() - 40 * DAY_US
    recompute(db_path, "--since", at(40, 0)[:10])
    after = all_snapshots(db_path)
    assert [r for r in after if r[0] >= since] == [r for r in full if r[0] >= since]
    assert after == full


def test_rollback_mark_beats_hotfix_on_one_event_or_two(client, token):
    def devgrid(entity, status, when, **attributes):
        resp = client.post("/events", headers={"x-api-key": token}, json={"events": [{
            "type": "event-deploy", "entityId": entity, "timestamp": when,
            "attributes": {"env": "production", "status": status, "version": "1.1", **attributes}}]})
        assert resp.status_code == 201, resp.text

    devgrid("one", "success", at(1, 10), description="Revert to 1.0", deployment_type="hotfix")
    devgrid("two", "started", at(1, 10), description="Revert to 1.0")
    devgrid("two", "success", at(1, 11), deployment_type="hotfix")
    labels = {d["product"]: d["label"] for d in deployments(client, token)}
    assert labels == {"one": "rollback", "two": "rollback"}


def test_a_staging_incident_counts_in_staging_not_production(client, token):
    deploy(client, token, "1", "success", at(2, 10))
    deploy(client, token, "2", "success", at(2, 11), env="staging")
    linked = incident(client, token, environment="staging", opened_at=at(2, 12))
    staging = [d for d in deployments(client, token) if d["environment"] == "staging"][0]
    assert (linked["deployment_id"], linked["link"]["rule"]) == (staging["id"], "last_deployment")
    assert metrics(client, token, window=7)["latest"]["change_failure_rate"]["failures"] == 0
    cfr = metrics(client, token, window=7, environment="staging")["latest"]["change_failure_rate"]
    assert (cfr["failures"], cfr["value"]) == (1, 1.0)


def test_page_and_api_agree_on_rollbacks_durations_and_rolled_back_by(client, token):
    deploy(client, token, "1", "success", at(3, 10))
    deploy(client, token, "2", "success", at(2, 10))
    deploy(client, token, "1", "success", at(1, 10))  # brings 1 back: an inferred rollback of 2
    api = deployments(client, token)
    by_version_time = {(d["version"], d["finished_at"]): d for d in api}
    second = by_version_time[("2", at(2, 10))]
    back = by_version_time[("1", at(1, 10))]
    assert back["label"] == "rollback" and back["rollback_of"] == second["id"]
    assert second["rolled_back_by"] == back["id"]
    assert second["duration_seconds"] is None  # known only from its final event: no duration, not 0
    assert [d["id"] for d in deployments(client, token, label="rollback")] == [back["id"]]
    page = client.get("/deployments", params={"label": "rollback"}, headers=auth(token))
    assert page.status_code == 200
    assert f'/deployments/{back["id"]}"' in page.text and f'/deployments/{second["id"]}"' not in page.text
    detail = client.get(f"/deployments/{second['id']}", headers=auth(token)).text
    assert f'/deployments/{back["id"]}' in detail  # "rolled back by" links to the rollback
    cfr = metrics(client, token, window=7)["latest"]["change_failure_rate"]
    assert cfr["failures"] == 1


def _delete(client: Any, admin: str, event_id: str) -> None:
    resp = client.delete(f"/api/v1/events/{event_id}", headers=auth(admin))
    assert resp.status_code == 200, resp.text


def test_deleting_events_never_moves_a_deployment_id(make_client, db_path):
    from tests.conftest import create_token

    token = create_token(db_path, "ci", "ingest", "read", "admin")
    finals = []
    for order in ("final_first", "start_first"):
        client = make_client()
        product = f"shop-{order}"
        a_start = deploy(client, token, "1", "started", at(5, 10), product=product)
        a_done = deploy(client, token, "1", "success", at(5, 10, 10), product=product)
        deploy(client, token, "1", "started", at(3, 10), product=product)
        deploy(client, token, "1", "success", at(3, 10, 10), product=product)
        ids = sorted(d["id"] for d in deployments(client, token, product=product))
        a_id, b_id = ids
        linked = incident(client, token, product=product, opened_at=at(5, 11), deployment_id=a_id)
        assert linked["link"]["rule"] == "deployment_id"
        first, second = (a_done, a_start) if order == "final_first" else (a_start, a_done)
        _delete(client, token, first["id"])
        left = {d["id"]: d for d in deployments(client, token, product=product)}
        assert set(left) == {a_id, b_id} and left[b_id]["status"] == "completed"
        _delete(client, token, second["id"])
        left = {d["id"]: d for d in deployments(client, token, product=product)}
        assert set(left) == {b_id}
        now = client.get(f"/api/v1/incidents/{linked['id']}", headers=auth(token)).json()
        assert now["deployment_id"] is None and now["link"]["rule"] is None
        finals.append([(d["version"], d["status"], d["finished_at"]) for d in left.values()])
    assert finals[0] == finals[1]


def test_incidents_may_name_only_a_change_or_a_deployment(client, token):
    deploy(client, token, "1", "success", at(2, 10), change_id="CHG0012345")
    by_change = client.post("/api/v1/incidents", headers=auth(token),
                            json={"title": "checkout errors", "change_id": "CHG0012345", "opened_at": at(1, 10)})
    assert by_change.status_code == 201, by_change.text
    body = by_change.json()
    assert (body["product"], body["link"]["rule"]) == ("shop", "change_id")
    dep_id = body["deployment_id"]
    by_dep = client.post("/api/v1/incidents", headers=auth(token), json={"title": "x", "deployment_id": dep_id})
    assert by_dep.status_code == 201 and by_dep.json()["product"] == "shop"
    neither = client.post("/api/v1/incidents", headers=auth(token), json={"title": "x"})
    assert neither.status_code == 400 and "product" in neither.text
    assert metrics(client, token, window=7, product="shop")["latest"]["change_failure_rate"]["failures"] == 1
