"""DORA metrics through the real API: known events in, hand-computed numbers out."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from deploytrack.app import create_app
from deploytrack.settings import load_settings
from tests.conftest import auth, create_token, query, run_cli
from tests.dora import DAY_US, at, build, deploy, incident, metrics, today


def no_data(metric):
    return metric["value"] is None and metric["band"] is None


def test_no_deployments_is_no_data_not_zero(client, token):
    report = metrics(client, token, window=30)
    latest = report["latest"]
    assert report["bands"].startswith("DORA 2023")
    for key in ("deployment_frequency", "lead_time", "change_failure_rate", "time_to_restore"):
        assert no_data(latest[key]), key
        assert latest[key]["data_points"] == 0
    assert report["series"] == []


def test_only_failures(make_client, token):
    client = make_client()
    deploy(client, token, "1", "failed", at(1, 10))
    deploy(client, token, "2", "aborted", at(2, 10))
    latest = metrics(client, token, window=7)["latest"]
    freq = latest["deployment_frequency"]
    assert (freq["value"], freq["deployments"], freq["data_points"], freq["band"]) == (0.0, 0, 2, "low")
    assert no_data(latest["change_failure_rate"]) and latest["change_failure_rate"]["data_points"] == 0
    assert no_data(latest["lead_time"])


def test_only_failures_counted_when_the_operator_asks(make_client, token):
    client = make_client(count_failed_deployments=True)
    deploy(client, token, "1", "failed", at(1, 10))
    cfr = metrics(client, token, window=7)["latest"]["change_failure_rate"]
    assert (cfr["value"], cfr["failures"], cfr["data_points"], cfr["band"]) == (1.0, 1, 1, "low")


def post_scenario(client, token):
    """Three days of shop deployments; expectations below are worked out by hand."""
    build(client, token, "1", at(3, 8), scm_sha="a1")
    deploy(client, token, "1", "started", at(3, 10), scm_sha="a1")
    deploy(client, token, "1", "success", at(3, 10, 10), scm_sha="a1")  # commit 06:00 -> 4h10m = 15000 s
    deploy(client, token, "1", "success", at(3, 9), env="staging", scm_sha="a1")  # not production
    resp = client.post("/api/v1/commits", headers=auth(token),
                       json=[{"sha": "a1", "repository": "git/shop", "committed_at": at(3, 6)}])
    assert resp.status_code == 201, resp.text
    deploy(client, token, "2", "success", at(2, 12), scm_sha="b2", commit_timestamp=at(2, 11))  # 3600 s, from event
    deploy(client, token, "3", "failed", at(2, 15))
    build(client, token, "3", at(1, 7))
    deploy(client, token, "3", "success", at(1, 9))  # no SHA: from the build of version 3, 7200 s
    opened = incident(client, token, opened_at=at(1, 10), resolved_at=at(1, 10, 45))  # 2700 s to restore
    deploy(client, token, "2", "success", at(1, 11), scm_sha="b2")  # brings back v2: a rollback of v3
    return opened


def test_hand_computed_window_7(client, token):
    opened = post_scenario(client, token)
    assert opened["link"]["rule"] == "last_deployment"
    latest = metrics(client, token, window=7)["latest"]
    freq = latest["deployment_frequency"]
    # completed production: v1, v2, v3, v2 again = 4; attempts add the failed v3 = 5; 3 deploy days
    assert freq["deployments"] == 4 and freq["data_points"] == 5 and freq["deploy_days"] == 3
    assert freq["value"] == pytest.approx(4 / 7, abs=1e-6) and freq["per_week"] == 4.0
    assert freq["deploy_days_per_week"] == 3.0 and freq["band"] == "high"
    lead = latest["lead_time"]
    assert lead["value"] == 7200.0 and lead["data_points"] == 3 and lead["band"] == "elite"
    assert lead["measured_from_build"] is True and lead["sources"] == {"commit": 1, "event": 1, "build": 1}
    cfr = latest["change_failure_rate"]  # v3: incident and rollback, counted once
    assert (cfr["value"], cfr["failures"], cfr["data_points"], cfr["band"]) == (0.25, 1, 4, "low")
    ttr = latest["time_to_restore"]
    assert (ttr["value"], ttr["data_points"], ttr["band"], ttr["unresolved_incidents"]) == (2700.0, 1, "elite", 0)


def test_hand_computed_window_30_band_and_scopes(client, token):
    post_scenario(client, token)
    freq = metrics(client, token, window="30d")["latest"]["deployment_frequency"]
    assert freq["value"] == pytest.approx(4 / 30, abs=1e-6)
    assert freq["band"] == "medium"  # 3 deploy days in 30: under 1 a week, at least 1 a month
    staging = metrics(client, token, window=7, environment="stg")
    assert staging["scope"] == {"kind": "environment", "product": None, "environment": "staging"}
    assert staging["latest"]["deployment_frequency"]["deployments"] == 1
    assert staging["latest"]["lead_time"]["value"] == 3 * 3600.0
    assert no_data(staging["latest"]["time_to_restore"])  # the incident had no environment: production
    other = metrics(client, token, window=7, product="nothing-here")["latest"]
    assert no_data(other["deployment_frequency"])


def test_count_failed_deployments_option(make_client, token):
    client = make_client(count_failed_deployments=True)
    post_scenario(client, token)
    latest = metrics(client, token, window=7)["latest"]
    assert latest["change_failure_rate"]["value"] == 0.4  # (1 + failed v3) / (4 + 1)
    # restore: the incident (2700 s) and failed v3 (day -2 15:00) until the next completed deploy (day -1 09:00)
    assert latest["time_to_restore"]["value"] == (2700 + 18 * 3600) / 2
    assert latest["time_to_restore"]["band"] == "high"


def test_snapshots_are_as_of_the_end_of_each_day(client, token, db_path):
    post_scenario(client, token)
    code, out = run_cli("metrics", "recompute", "--db", str(db_path))
    assert code == 0 and "Recomputed 3 days" in out, out
    report = metrics(client, token, window=7)
    series = {row["day"][:10]: row for row in report["series"]}
    day2 = series[at(2)[:10]]
    # by the end of day -2: v1 and v2 completed, v3 failed; the incident had not opened yet
    assert day2["deployment_frequency"]["deployments"] == 2 and day2["deployment_frequency"]["data_points"] == 3
    assert day2["lead_time"]["value"] == (15000 + 3600) / 2
    assert day2["change_failure_rate"]["value"] == 0.0 and day2["change_failure_rate"]["band"] == "elite"
    assert no_data(day2["time_to_restore"])
    day1 = series[at(1)[:10]]
    for key in ("deployment_frequency", "lead_time", "change_failure_rate", "time_to_restore"):
        assert day1[key] == report["latest"][key], key


def test_incident_never_resolved(client, token):
    deploy(client, token, "1", "success", at(2, 9))
    incident(client, token, opened_at=at(2, 10))
    latest = metrics(client, token, window=7)["latest"]
    assert latest["change_failure_rate"]["value"] == 1.0
    ttr = latest["time_to_restore"]
    assert no_data(ttr) and ttr["data_points"] == 0 and ttr["unresolved_incidents"] == 1


def test_events_exactly_at_midnight(client, token, db_path):
    deploy(client, token, "1", "success", at(7, 23, 59, 59))  # the last second before the 7-day window
    deploy(client, token, "2", "success", at(6, 0, 0, 0))  # the window's first instant
    assert metrics(client, token, window=7)["latest"]["deployment_frequency"]["deployments"] == 1
    assert metrics(client, token, window=30)["latest"]["deployment_frequency"]["deployments"] == 2
    assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0
    series = {row["day"][:10]: row["deployment_frequency"] for row in metrics(client, token, window=7)["series"]}
    assert series[at(7)[:10]]["deployments"] == 1 and series[at(7)[:10]]["deploy_days"] == 1
    assert series[at(6)[:10]]["deployments"] == 2 and series[at(6)[:10]]["deploy_days"] == 2
    assert series[at(1)[:10]]["deployments"] == 2  # day -1's window is days -7 .. -1


def test_backfill_across_midnight(client, token, db_path):
    # sent late and in reverse order: completed first, then started
    deploy(client, token, "1", "success", at(1, 0, 3), invoke_id="run-9")
    deploy(client, token, "1", "started", at(2, 23, 58), invoke_id="run-9")
    dirty = {r[0] for r in query(db_path, "SELECT day FROM dirty_days")}
    assert dirty == {today() - DAY_US, today() - 2 * DAY_US}
    deps = client.get("/api/v1/deployments", headers=auth(token)).json()["deployments"]
    assert len(deps) == 1 and deps[0]["duration_seconds"] == 300.0 and deps[0]["status"] == "completed"
    assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0
    series = {row["day"][:10]: row for row in metrics(client, token, window=7)["series"]}
    assert at(2)[:10] not in series  # it finished after midnight: no data, so no snapshot, before day -1
    assert series[at(1)[:10]]["deployment_frequency"]["deployments"] == 1


def test_same_events_any_order_same_numbers(make_client, token, tmp_path):
    events = [("1", "started", at(3, 10)), ("1", "success", at(3, 10, 20)), ("2", "started", at(2, 9)),
              ("2", "failed", at(2, 9, 5)), ("2", "started", at(2, 9, 30)), ("2", "success", at(2, 9, 40)),
              ("1", "success", at(1, 8))]
    results = []
    for name, order in (("a", events), ("b", list(reversed(events)))):
        db = tmp_path / f"{name}.db"
        secret = create_token(db, "ci", "ingest", "read")
        with TestClient(create_app(load_settings({"db": str(db), "scheduler": False}, environ={}))) as c:
            for version, status, when in order:
                deploy(c, secret, version, status, when)
        assert run_cli("metrics", "recompute", "--db", str(db))[0] == 0
        with TestClient(create_app(load_settings({"db": str(db), "scheduler": False}, environ={}))) as c:
            deps = c.get("/api/v1/deployments", headers=auth(secret)).json()["deployments"]
            latest = metrics(c, secret, window=7)["latest"]
        results.append(([{k: d[k] for k in ("version", "status", "started_at", "finished_at", "duration_seconds",
                                            "label")} for d in deps], latest))
    assert results[0] == results[1]
    deps, latest = results[0]
    assert [d["status"] for d in deps] == ["completed", "completed", "failed", "completed"]
    assert deps[0]["label"] == "rollback"  # v1 again after v2
    assert latest["change_failure_rate"]["value"] == round(1 / 3, 6)


def test_deployment_with_commits_of_several_repositories(client, token):
    resp = client.post("/api/v1/commits", headers=auth(token), json={"commits": [
        {"sha": "f1", "repository": "git/front", "committed_at": at(2, 6), "authored_at": at(2, 5)},
        {"sha": "b1", "repository": "git/back", "committed_at": at(2, 8)},
    ]})
    assert resp.status_code == 201 and resp.json() == {"stored": 2}
    deploy(client, token, "1", "success", at(2, 12), extra_metadata={"commits": [
        {"sha": "f1", "repository": "git/front"}, {"sha": "b1", "repository": "git/back"},
        {"sha": "x9", "repository": "git/lib", "committed_at": at(2, 11)}]})
    lead = metrics(client, token, window=7)["latest"]["lead_time"]
    assert lead["data_points"] == 3 and lead["value"] == 4 * 3600.0  # 6 h, 4 h, 1 h
    assert lead["sources"] == {"commit": 2, "event": 1, "build": 0} and lead["measured_from_build"] is False


def test_metrics_api_errors_and_scope(client, token, db_path):
    for params, field in (({"window": "14"}, "window"), ({"window": "x"}, "window"), ({"days": "0"}, "days")):
        resp = client.get("/api/v1/metrics", headers=auth(token), params=params)
        assert resp.status_code == 400 and resp.json()["error"]["field"] == field
    assert client.get("/api/v1/metrics").status_code == 401


def test_admin_deletes_an_event_and_its_days_are_recomputed(client, token, db_path):
    admin = create_token(db_path, "root", "admin")
    bad = deploy(client, token, "9", "success", at(2, 10))
    deploy(client, token, "1", "success", at(2, 12))
    assert metrics(client, token, window=7)["latest"]["deployment_frequency"]["deployments"] == 2
    assert client.delete(f"/api/v1/events/{bad['id']}", headers=auth(token)).status_code == 403
    resp = client.delete(f"/api/v1/events/{bad['id']}", headers=auth(admin))
    assert resp.status_code == 200 and resp.json()["deleted"] == 1
    assert client.delete(f"/api/v1/events/{bad['id']}", headers=auth(admin)).status_code == 404
    assert metrics(client, token, window=7)["latest"]["deployment_frequency"]["deployments"] == 1
    audit = query(db_path, "SELECT action, actor FROM audit_log")
    dirty = [r[0] for r in query(db_path, "SELECT day FROM dirty_days")]
    assert audit == [("delete_event", "root")] and today() - 2 * DAY_US in dirty
    resp = client.delete("/api/v1/products/shop/events", headers=auth(admin))
    assert resp.status_code == 200 and resp.json() == {"deleted": 1, "product": "shop"}
    assert no_data(metrics(client, token, window=7)["latest"]["deployment_frequency"])
    assert client.delete("/api/v1/products/shop/events", headers=auth(admin)).status_code == 404
    # the product's versions went too, so a corrected SHA for version 1 is accepted
    deploy(client, token, "1", "success", at(1, 12), scm_sha="fixed")
    # a name with a slash is one product, whether its slash is sent as it is or encoded
    for sent in ("team/svc", "team%2Fsvc"):
        deploy(client, token, "1", "success", at(1, 12), product="team/svc")
        resp = client.delete(f"/api/v1/products/{sent}/events", headers=auth(admin))
        assert resp.status_code == 200 and resp.json() == {"deleted": 1, "product": "team/svc"}, sent


def test_metrics_show_cli(client, token, db_path):
    post_scenario(client, token)
    code, out = run_cli("metrics", "show", "--db", str(db_path), "--window", "7d")
    assert code == 0
    assert "4.00/week" in out and "2.0h" in out and "(measured from build)" in out and "25.0%" in out
    code, out = run_cli("metrics", "show", "--db", str(db_path), "--product", "shop", "--environment", "prod",
                        "--window", "7", "--json")
    data = json.loads(out)
    assert code == 0 and data["scope"]["kind"] == "product_environment"
    assert data["latest"]["deployment_frequency"]["deployments"] == 4
    assert run_cli("metrics", "show", "--db", str(db_path), "--window", "12d")[0] == 2


def test_sliding_medians_match_a_plain_median():
    import random
    import statistics

    from deploytrack.metrics.compute import _sliding_medians

    rng = random.Random(4)
    points = [(rng.randint(0, 40), rng.randint(0, 3000)) for _ in range(6000)]  # duplicates, block splits
    for window in (1, 7, 30):
        for first, last in ((0, 40), (30, 40), (20, 21)):  # from day 0, from later (earlier days never count), few days
            got = _sliding_medians(points, first, last, window)
            for t in range(first, last + 1):
                values = [v for d, v in points if t - window < d <= t]
                assert got[t - first] == ((statistics.median(values) if values else None), len(values))


def test_a_commit_counts_once_even_when_first_deployed_before_the_window(client, token):
    client.post("/api/v1/commits", headers=auth(token), json=[
        {"sha": "a1", "committed_at": at(41, 10)}, {"sha": "b2", "committed_at": at(3, 9)}])
    deploy(client, token, "1", "success", at(40, 10), scm_sha="a1")
    deploy(client, token, "2", "success", at(3, 10), scm_sha="b2")
    deploy(client, token, "1", "success", at(2, 10))  # a rollback to v1 (SHA a1 through its version)
    lead = metrics(client, token, window=7)["latest"]["lead_time"]
    assert (lead["data_points"], lead["value"]) == (1, 3600.0)  # only b2: a1 reached production 40 days ago
    assert metrics(client, token, window=90)["latest"]["lead_time"]["data_points"] == 2
