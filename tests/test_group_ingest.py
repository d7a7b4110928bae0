"""The writer stores every ingestion request queued at once as one group (store.ingest_group): under
concurrent load each request must still be decided as if the requests had come one after another."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from tests.conftest import auth, create_token, run_cli

ROUNDS = 40  # requests in flight at once, so that groups hold many of them


@pytest.mark.slow
def test_concurrent_requests_in_one_group_keep_every_rule(live_server, token, db_path):
    url = live_server.url
    other = create_token(db_path, "other", "ingest")
    assert run_cli("token", "revoke", "other", "--db", str(db_path))[0] == 0
    sha_a, sha_b = "a" * 40, "b" * 40

    def versioner(body: dict, secret: str = token, **headers: str) -> httpx.Response:
        return httpx.post(url + "/deployment-events/", json={"environment_name": "production", **body},
                          headers={**auth(secret), **headers}, timeout=30)

    jobs = []
    for i in range(ROUNDS):
        # one deployment's lifecycle, its events racing each other
        jobs.append(lambda i=i: versioner({"product_name": "shop", "version": f"1.{i}", "status": "started",
                                           "invoke_id": f"run-{i}", "scm_sha": f"{i:040x}"}))
        jobs.append(lambda i=i: versioner({"product_name": "shop", "version": f"1.{i}", "status": "success",
                                           "invoke_id": f"run-{i}", "deployed_by": "ci"}))
        # the same version claimed with two SHAs: exactly one wins
        jobs.append(lambda i=i: versioner({"product_name": "race", "version": f"9.{i}", "status": "success",
                                           "scm_sha": sha_a}))
        jobs.append(lambda i=i: versioner({"product_name": "race", "version": f"9.{i}", "status": "success",
                                           "scm_sha": sha_b}))
        # a re-send under one Idempotency-Key, and a revoked token
        jobs.append(lambda i=i: versioner({"product_name": "idem", "version": f"3.{i}", "status": "success"},
                                          **{"Idempotency-Key": f"key-{i}"}))
        jobs.append(lambda i=i: versioner({"product_name": "idem", "version": f"3.{i}", "status": "success"},
                                          **{"Idempotency-Key": f"key-{i}"}))
        jobs.append(lambda i=i: versioner({"product_name": "revoked", "version": "1", "status": "success"}, other))
        # a DevGrid batch whose last event conflicts: none of it may be stored
        jobs.append(lambda i=i: httpx.post(url + "/events", headers={"x-api-key": token}, timeout=30, json={"events": [
            {"type": "event-deploy", "entityId": "grid", "attributes": {"env": "production", "status": "success",
                                                                         "build_id": f"g{i}"}},
            {"type": "event-deploy", "entityId": "race", "attributes": {
                "env": "production", "status": "success", "version": "fixed", "build_commit_sha": sha_b}},
        ]}))
    first = versioner({"product_name": "race", "version": "fixed", "status": "success", "scm_sha": sha_a})
    assert first.status_code == 200
    with ThreadPoolExecutor(max_workers=32) as pool:
        answers = list(pool.map(lambda job: job(), jobs))

    counters = {line.split()[0]: float(line.split()[1]) for line in httpx.get(url + "/metrics").text.splitlines()
                if line.startswith("deploytrack_write_")}
    # the point of the test: requests really did share groups
    assert counters["deploytrack_write_tasks_total"] > 1.5 * counters["deploytrack_write_commits_total"]

    codes = [r.status_code for r in answers]
    per_round = [codes[k:k + 8] for k in range(0, len(codes), 8)]
    for started, success, claim_a, claim_b, idem_1, idem_2, revoked, grid in per_round:
        assert (started, success) == (200, 200)
        assert sorted((claim_a, claim_b)) == [200, 409]
        assert (idem_1, idem_2, revoked, grid) == (200, 200, 401, 409)
    idem_ids = [(answers[k + 4].json()["id"], answers[k + 5].json()["id"]) for k in range(0, len(answers), 8)]
    assert all(a == b for a, b in idem_ids)

    read = create_token(db_path, "reader", "read")
    deps = httpx.get(url + "/api/v1/deployments", params={"product": "shop", "limit": 200}, headers=auth(read)).json()
    assert len(deps["deployments"]) == ROUNDS
    for dep in deps["deployments"]:
        i = int(dep["version"].split(".")[1])
        assert (dep["status"], dep["event_count"], dep["invoke_id"]) == ("completed", 2, f"run-{i}")
        assert (dep["scm_sha"], dep["actor"]) == (f"{i:040x}", "ci")
    events = httpx.get(url + "/api/v1/events", params={"product": "idem", "limit": 200}, headers=auth(read)).json()
    assert len(events["events"]) == ROUNDS
    assert httpx.get(url + "/api/v1/events", params={"product": "grid"}, headers=auth(read)).json()["events"] == []
    assert httpx.get(url + "/api/v1/events", params={"product": "revoked"}, headers=auth(read)).json()["events"] == []
    # every event of a deployment points at its record; the refold agrees with what ingestion built
    assert run_cli("metrics", "recompute", "--refold-all", "--db", str(db_path))[0] == 0
    again = httpx.get(url + "/api/v1/deployments", params={"product": "shop", "limit": 200}, headers=auth(read)).json()
    assert again == deps
