"""The stored metric facts are refreshed where something changed: an incremental `metrics recompute`
gives the same snapshots as `metrics recompute --refold-all`, which derives every fact afresh."""

from __future__ import annotations

from tests.conftest import auth, create_token, query, run_cli
from tests.dora import at, build, deploy, incident, metrics


def snapshots(db_path):
    return query(db_path, "SELECT day, scope, product, environment, window_days, data FROM metric_snapshots "
                          "ORDER BY day, scope, product, environment, window_days")


def recompute(db_path, *flags):
    code, out = run_cli("metrics", "recompute", "--db", str(db_path), *flags)
    assert code == 0, out


def incremental_equals_full(db_path):
    """Snapshots after an incremental recompute; asserts a from-scratch recompute agrees."""
    recompute(db_path)
    incremental = snapshots(db_path)
    recompute(db_path, "--refold-all")
    assert snapshots(db_path) == incremental
    return incremental


def latest_snapshot(client, token, **params):
    """The newest stored snapshot (yesterday) of a scope; nothing happened today, so it equals the live numbers."""
    report = metrics(client, token, window=7, **params)
    day = report["series"][-1]
    for key in ("deployment_frequency", "lead_time", "change_failure_rate", "time_to_restore"):
        assert day[key] == report["latest"][key], key
    return day


def test_commits_builds_and_version_shas_recorded_after_the_deployment(client, token, db_path):
    deploy(client, token, "1", "success", at(5, 12), scm_sha="c1")  # no commit or build yet: no lead time
    deploy(client, token, "2", "success", at(4, 12), scm_sha="c2", commit_timestamp=at(4, 10))  # from the event
    deploy(client, token, "3", "success", at(3, 12))  # no SHA at all yet
    before = incremental_equals_full(db_path)
    assert latest_snapshot(client, token)["lead_time"]["sources"] == {"commit": 0, "event": 1, "build": 0}
    resp = client.post("/api/v1/commits", headers=auth(token), json=[{"sha": "c2", "committed_at": at(4, 6)}])
    assert resp.status_code == 201, resp.text
    assert incremental_equals_full(db_path) != before  # a commit alone: no event names what changed
    assert latest_snapshot(client, token)["lead_time"]["sources"] == {"commit": 1, "event": 0, "build": 0}
    build(client, token, "1", at(5, 9), scm_sha="c1")
    build(client, token, "3", at(3, 8), scm_sha="c3")  # gives version 3 its SHA
    resp = client.post("/api/v1/commits", headers=auth(token), json=[{"sha": "c3", "committed_at": at(3, 11)}])
    assert resp.status_code == 201, resp.text
    after = incremental_equals_full(db_path)
    assert after != before
    lead = latest_snapshot(client, token)["lead_time"]
    assert lead["sources"] == {"commit": 2, "event": 0, "build": 1} and lead["data_points"] == 3
    assert lead["value"] == 3 * 3600.0  # 6 h (commit c2), 3 h (build of c1), 1 h (commit c3)


def test_backfilled_deployments_change_rollbacks_and_first_deployments(client, token, db_path):
    deploy(client, token, "1", "success", at(6, 12), scm_sha="a1", commit_timestamp=at(6, 10))
    deploy(client, token, "2", "success", at(5, 12), scm_sha="b2", commit_timestamp=at(5, 10))
    deploy(client, token, "3", "success", at(3, 12), scm_sha="c3", commit_timestamp=at(3, 11))
    deploy(client, token, "4", "started", at(2, 12), invoke_id="run-4")
    before = incremental_equals_full(db_path)
    assert latest_snapshot(client, token)["change_failure_rate"]["failures"] == 0
    # Late: a rollback between 2 and 3 (of 2), and c3 shipped to production a day earlier.
    deploy(client, token, "7", "success", at(4, 12), extra_metadata={"deployment_type": "rollback"})
    deploy(client, token, "3", "success", at(4, 18), scm_sha="c3", invoke_id="early", commit_timestamp=at(4, 11))
    # The open deployment completes, carrying commits of two repositories in its metadata.
    deploy(client, token, "4", "success", at(2, 13), invoke_id="run-4", scm_sha="d4", extra_metadata={"commits": [
        {"sha": "d4", "repository": "git/shop", "committed_at": at(2, 9)},
        {"sha": "x1", "repository": "git/lib", "committed_at": at(2, 8)}]})
    after = incremental_equals_full(db_path)
    assert after != before
    latest = latest_snapshot(client, token)
    assert latest["change_failure_rate"]["failures"] == 1  # version 2, rolled back on day -4
    lead = latest["lead_time"]
    assert lead["data_points"] == 5 and lead["sources"]["event"] == 5  # a1, b2, c3 (once), d4, x1
    assert lead["value"] == 4 * 3600.0  # 2 h, 2 h, 7 h (c3 first shipped on day -4), 4 h, 5 h


def test_incidents_opened_resolved_and_linked_later(client, token, db_path):
    deploy(client, token, "1", "success", at(5, 12))
    deploy(client, token, "2", "success", at(3, 12))
    before = incremental_equals_full(db_path)
    opened = incident(client, token, opened_at=at(2, 10))  # linked to version 2 by the DevLake rule
    assert incremental_equals_full(db_path) != before
    assert latest_snapshot(client, token)["change_failure_rate"]["failures"] == 1
    resp = client.patch(f"/api/v1/incidents/{opened['id']}", headers=auth(token),
                        json={"resolved_at": at(2, 11)})
    assert resp.status_code == 200, resp.text
    deps = {d["version"]: d["id"] for d in client.get("/api/v1/deployments", headers=auth(token)).json()["deployments"]}
    incident(client, token, opened_at=at(4, 10), deployment_id=deps["1"])  # named explicitly
    incremental_equals_full(db_path)
    latest = latest_snapshot(client, token)
    assert latest["change_failure_rate"]["failures"] == 2 and latest["time_to_restore"]["value"] == 3600.0


def test_admin_deletions(client, token, db_path):
    admin = create_token(db_path, "root", "admin")
    deploy(client, token, "1", "success", at(6, 12), scm_sha="a1", commit_timestamp=at(6, 10))
    deploy(client, token, "2", "success", at(5, 12), scm_sha="b2", commit_timestamp=at(5, 10))
    rollback = deploy(client, token, "1", "success", at(4, 12), scm_sha="a1")
    build(client, token, "3", at(3, 8), scm_sha="c3")
    deploy(client, token, "3", "success", at(3, 12), scm_sha="c3")  # lead time from the build
    deploy(client, token, "1", "success", at(6, 12), product="other", scm_sha="c3")  # same SHA, other product
    before = incremental_equals_full(db_path)
    latest = latest_snapshot(client, token)
    assert latest["change_failure_rate"]["failures"] == 1 and latest["lead_time"]["sources"]["build"] == 2
    resp = client.delete(f"/api/v1/events/{rollback['id']}", headers=auth(admin))
    assert resp.status_code == 200, resp.text
    (build_id,) = query(db_path, "SELECT id FROM events WHERE kind = 'build'")[0]
    assert client.delete(f"/api/v1/events/{build_id}", headers=auth(admin)).status_code == 200
    after = incremental_equals_full(db_path)
    assert after != before
    latest = latest_snapshot(client, token)
    assert latest["change_failure_rate"]["failures"] == 0 and latest["lead_time"]["sources"]["build"] == 0
    # The newest event goes and a new one takes its seq: it must still be seen.
    newest = deploy(client, token, "4", "success", at(2, 12), scm_sha="d4", commit_timestamp=at(2, 11))
    recompute(db_path)
    assert client.delete(f"/api/v1/events/{newest['id']}", headers=auth(admin)).status_code == 200
    deploy(client, token, "5", "success", at(2, 13), product="web", scm_sha="e5", commit_timestamp=at(2, 11))
    incremental_equals_full(db_path)
    assert latest_snapshot(client, token)["lead_time"]["data_points"] == 3  # a1, b2, e5 (c3 has no build now)
    # A whole product goes, with the build its SHA shared.
    build(client, token, "9", at(7, 8), product="other", scm_sha="c3")
    recompute(db_path)
    assert latest_snapshot(client, token)["lead_time"]["data_points"] == 5  # c3 of both products again
    assert query(db_path, "SELECT COUNT(*) FROM metric_snapshots WHERE product = 'other'")[0][0] > 0
    assert client.delete("/api/v1/products/other/events", headers=auth(admin)).status_code == 200
    incremental_equals_full(db_path)
    assert latest_snapshot(client, token)["lead_time"]["data_points"] == 3
    assert query(db_path, "SELECT COUNT(*) FROM metric_snapshots WHERE product = 'other'") == [(0,)]
