"""GET /api/v1/deployments: records with lifecycle, duration and rollback/hotfix labels."""

from __future__ import annotations

from tests.conftest import auth
from tests.dora import at, deploy


def listed(client, token, **params):
    resp = client.get("/api/v1/deployments", headers=auth(token), params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()


def test_lifecycle_labels_and_filters(client, token):
    deploy(client, token, "1", "pending", at(3, 9, 58))
    deploy(client, token, "1", "started", at(3, 10))
    deploy(client, token, "1", "success", at(3, 10, 2, 30))
    deploy(client, token, "2", "success", at(2, 10))
    deploy(client, token, "2.1", "success", at(2, 12), extra_metadata={"deployment_type": "hotfix"})
    deploy(client, token, "1", "success", at(1, 10))  # back to an older version: a rollback of 2.1
    deploy(client, token, "3", "started", at(0, 0, 1), env="staging")
    deps = listed(client, token)["deployments"]
    by_version = {(d["version"], d["environment"]): d for d in deps}
    oldest = deps[-1]  # pending -> started -> completed: one record, timed from `started`
    assert (oldest["version"], oldest["status"], oldest["event_count"]) == ("1", "completed", 3)
    assert oldest["duration_seconds"] == 150.0
    assert by_version[("2.1", "production")]["label"] == "hotfix"
    assert by_version[("2.1", "production")]["rolled_back_by"] == deps[1]["id"]
    assert deps[1]["label"] == "rollback" and deps[1]["version"] == "1"
    assert by_version[("3", "staging")]["status"] == "started" and by_version[("3", "staging")]["finished_at"] is None
    assert [d["version"] for d in listed(client, token, label="rollback")["deployments"]] == ["1"]
    assert [d["version"] for d in listed(client, token, label="hotfix")["deployments"]] == ["2.1"]
    assert len(listed(client, token, environment="prod", status="completed")["deployments"]) == 4
    page = listed(client, token, limit=2)
    assert len(page["deployments"]) == 2 and page["next_cursor"]
    rest = listed(client, token, limit=10, cursor=page["next_cursor"])["deployments"]
    assert [d["id"] for d in page["deployments"] + rest] == [d["id"] for d in deps]


def test_bad_filters_are_400s(client, token):
    for params, field in (({"status": "done"}, "status"), ({"label": "revert"}, "label"),
                          ({"limit": "0"}, "limit"), ({"cursor": "x"}, "cursor"), ({"since": "soon"}, "since")):
        resp = client.get("/api/v1/deployments", headers=auth(token), params=params)
        assert resp.status_code == 400 and resp.json()["error"]["field"] == field, (params, resp.text)
    assert client.get("/api/v1/deployments").status_code == 401


def test_lifecycle_only_moves_forward_on_ingest_and_on_refold(client, token, db_path):
    """A late `started` (a retried step, a clock-skewed runner) does not reopen a finished deployment,
    and the refold that `metrics recompute` runs agrees with the record ingestion built."""
    from tests.conftest import run_cli

    deploy(client, token, "7", "success", at(1, 10), invoke_id="run-1")
    deploy(client, token, "7", "started", at(1, 11), invoke_id="run-1")
    deploy(client, token, "8", "failed", at(1, 10), invoke_id="run-2")
    deploy(client, token, "8", "success", at(1, 10), invoke_id="run-2")  # same instant: ties are settled by rank
    before = {d["version"]: (d["status"], d["event_count"]) for d in listed(client, token)["deployments"]}
    assert before == {"7": ("completed", 2), "8": ("failed", 2)}
    assert run_cli("metrics", "recompute", "--db", str(db_path))[0] == 0
    after = {d["version"]: (d["status"], d["event_count"]) for d in listed(client, token)["deployments"]}
    assert after == before


def test_each_field_folds_in_whatever_event_carries_it_and_agrees_with_the_refold(client, token, db_path):
    """Ingestion updates only the columns an event changes; the record must still hold every field
    the events carried (first SHA-less, then with SHA; actor and change only on later events; a
    hotfix mark on the last event; times out of order) and equal what a full refold builds."""
    from tests.conftest import run_cli

    sha = "a" * 40
    deploy(client, token, "5", "started", at(2, 10, 5), invoke_id="r5")
    deploy(client, token, "5", "pending", at(2, 10), invoke_id="r5", deployed_by="ann")
    deploy(client, token, "5", "failed", at(2, 10, 9), invoke_id="r5", scm_sha=sha, change_id="CHG1")
    deploy(client, token, "5", "success", at(2, 10, 9), invoke_id="r5", deployed_by="bob", change_id="CHG2",
           extra_metadata={"deployment_type": "hotfix"})  # same instant as the failure: the failure stands
    deploy(client, token, "6", "failed", at(1, 9), invoke_id="r6")
    deploy(client, token, "6", "success", at(1, 8), invoke_id="r6")  # an earlier outcome arriving late loses
    before = {d["version"]: d for d in listed(client, token)["deployments"]}
    five = before["5"]
    assert (five["status"], five["event_count"], five["scm_sha"], five["actor"], five["change_id"], five["label"]) == (
        "failed", 4, sha, "ann", "CHG1", "hotfix")
    assert (five["first_at"], five["started_at"], five["finished_at"]) == (at(2, 10), at(2, 10, 5), at(2, 10, 9))
    assert (before["6"]["status"], before["6"]["finished_at"]) == ("failed", at(1, 9))
    assert run_cli("metrics", "recompute", "--refold-all", "--db", str(db_path))[0] == 0
    after = {d["version"]: d for d in listed(client, token)["deployments"]}
    assert after == before


def test_a_deleted_products_deployment_ids_are_never_given_again(make_client, db_path):
    """Ingestion gives new deployment records ids above every id ever used, not above the highest left."""
    from tests.conftest import create_token

    token = create_token(db_path, "ci", "ingest", "read", "admin")
    client = make_client()
    kept = int(deploy(client, token, "1", "success", at(2, 10), product="kept")["deployment_id"])
    gone = int(deploy(client, token, "1", "success", at(2, 11), product="gone")["deployment_id"])
    assert gone > kept
    resp = client.delete("/api/v1/products/gone/events", headers=auth(token))
    assert resp.status_code == 200, resp.text
    later = int(deploy(client, token, "2", "success", at(1, 10), product="kept")["deployment_id"])
    assert later > gone
    assert sorted(d["id"] for d in listed(client, token, product="kept")["deployments"]) == [kept, later]
