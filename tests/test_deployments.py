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
