"""Versioner's GitHub Action (versioner-io/versioner-github-action) against a live deploytrack.

Requests as the action builds them (src/index.ts, src/api-client.ts, src/github-context.ts):
axios `POST {api_url without trailing slash}/deployment-events/` or `/build-events/` with
`Content-Type: application/json` and `Authorization: Bearer <api_key>`; `status` is one of the
action's inputs `success`, `failure`, `in_progress`; the body carries the GitHub context
(`scm_repository` owner/repo, `invoke_id` the run id, `build_number` the run number, the run URL as
`deploy_url` for deployments and `build_url` for builds), `completed_at` (deployments) or
`started_at` (builds) set to the moment the step runs, `extra_metadata` the vi_gh_ fields merged
with the `metadata` input. JSON.stringify leaves out fields that are undefined (the commit author's
email and name outside push events). The action sets its outputs from the reply: `deployment_id`,
`event_id`, `product_id` for deployments, `id` (build_id), `version_id`, `product_id` for builds.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2 as httpx

from tests.conftest import auth

RUN_ID, RUN_NUMBER, SHA = 12345678901, 42, "9fceb02d0ae598e95dc970b74767f19372d61af8"
RUN_URL = f"https://github.com/acme/web-shop/actions/runs/{RUN_ID}"
VI_GH = {"vi_gh_workflow": "Deploy to Production", "vi_gh_job": "deploy", "vi_gh_run_attempt": "1",
         "vi_gh_event_name": "push", "vi_gh_ref": "refs/heads/main"}


def now_iso() -> str:
    """`new Date().toISOString()`: milliseconds and a Z."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def github_metadata(push: bool = True) -> dict[str, Any]:
    meta = {"scm_repository": "acme/web-shop", "scm_sha": SHA, "scm_branch": "main", "source_system": "github",
            "build_number": str(RUN_NUMBER), "invoke_id": str(RUN_ID), "deployed_by": "octocat"}
    if push:  # the commit author, only known on push events
        meta.update(deployed_by_email="octocat@github.com", deployed_by_name="Mona Octocat")
    return meta


def deployment_payload(version: str, environment: str, status: str = "success", product: str = "",
                       metadata: dict[str, Any] | None = None, push: bool = True) -> dict[str, Any]:
    gh = github_metadata(push)
    body = {"product_name": product or gh["scm_repository"].split("/")[1], "version": version,
            "environment_name": environment, "status": status, "scm_repository": gh["scm_repository"],
            "scm_sha": gh["scm_sha"], "source_system": gh["source_system"], "build_number": gh["build_number"],
            "invoke_id": gh["invoke_id"], "deploy_url": RUN_URL, "deployed_by": gh["deployed_by"],
            "deployed_by_email": gh.get("deployed_by_email"), "deployed_by_name": gh.get("deployed_by_name"),
            "completed_at": now_iso(), "extra_metadata": {**VI_GH, **(metadata or {})}}
    return {k: v for k, v in body.items() if v is not None}  # JSON.stringify drops undefined


def build_payload(version: str, status: str = "success", product: str = "") -> dict[str, Any]:
    gh = github_metadata()
    return {"product_name": product or "web-shop", "version": version, "status": status,
            "build_number": gh["build_number"], "build_url": RUN_URL, "scm_repository": gh["scm_repository"],
            "scm_sha": gh["scm_sha"], "scm_branch": gh["scm_branch"], "source_system": "github",
            "invoke_id": gh["invoke_id"], "built_by": gh["deployed_by"], "built_by_email": gh["deployed_by_email"],
            "built_by_name": gh["deployed_by_name"], "started_at": now_iso(), "extra_metadata": dict(VI_GH)}


def action_post(server, api_key: str, path: str, payload: dict[str, Any], api_url: str | None = None) -> httpx.Response:
    endpoint = (api_url or server.url).rstrip("/") + path
    return httpx.post(endpoint, json=payload, timeout=30,
                      headers={"Content-Type": "application/json", "Authorization": f"Bearer {api_key}"})


def outputs(resp: httpx.Response, *names: str) -> dict[str, str]:
    """core.setOutput(name, response[name]): each must be there, a non-empty string (axios: any 2xx)."""
    assert 200 <= resp.status_code < 300, resp.text
    data = resp.json()
    for name in names:
        assert isinstance(data.get(name), str) and data[name], name
    return {name: data[name] for name in names}


def test_readme_quick_start_workflow(live_server, token):
    """Build in_progress → success, deploy in_progress → success, all from one run (the README's example)."""
    version = SHA
    build_started = outputs(action_post(live_server, token, "/build-events/", build_payload(version, "in_progress")),
                            "id", "version_id", "product_id")
    build_done = outputs(action_post(live_server, token, "/build-events/", build_payload(version, "success")),
                         "id", "version_id", "product_id")
    deploy_started = outputs(action_post(live_server, token, "/deployment-events/",
                                         deployment_payload(version, "production", "in_progress")),
                             "deployment_id", "event_id", "product_id")
    deploy_done = outputs(action_post(live_server, token, "/deployment-events/",
                                      deployment_payload(version, "production", "success")),
                          "deployment_id", "event_id", "product_id")
    assert len({build_started["id"], build_done["id"], deploy_started["event_id"], deploy_done["event_id"]}) == 4
    assert build_started["version_id"] == build_done["version_id"]
    assert build_done["product_id"] == deploy_done["product_id"]
    # in_progress then success of one run is one deployment, and its id is the deployment deploytrack shows
    assert deploy_started["deployment_id"] == deploy_done["deployment_id"]
    page = httpx.get(f"{live_server.url}/deployments/{deploy_done['deployment_id']}", headers=auth(token), timeout=10)
    assert page.status_code == 200 and "web-shop" in page.text
    deployments = httpx.get(f"{live_server.url}/api/v1/deployments", headers=auth(token), timeout=10).json()
    [deployment] = deployments["deployments"]
    assert str(deployment["id"]) == deploy_done["deployment_id"]
    assert (deployment["status"], deployment["invoke_id"]) == ("completed", str(RUN_ID))
    event = httpx.get(f"{live_server.url}/api/v1/events/{deploy_done['event_id']}", headers=auth(token),
                      timeout=10).json()
    assert (event["build_url"], event["actor"], event["source_system"]) == (RUN_URL, "octocat", "github")
    assert event["metadata"]["vi_gh_workflow"] == "Deploy to Production"


def test_in_progress_deployment_with_completed_at(live_server, token):
    """The action stamps `completed_at` even on an in_progress event: tolerated, the event is dated on arrival."""
    before = datetime.now(UTC) - timedelta(seconds=5)
    payload = deployment_payload("1.0.0", "staging", "in_progress", push=False)
    payload["completed_at"] = "2025-01-01T00:00:00.000Z"
    resp = action_post(live_server, token, "/deployment-events/", payload, api_url=live_server.url + "/")
    ids = outputs(resp, "deployment_id", "event_id", "product_id")
    event = httpx.get(f"{live_server.url}/api/v1/events/{ids['event_id']}", headers=auth(token), timeout=10).json()
    assert event["status"] == "started"
    assert datetime.fromisoformat(event["occurred_at"].replace("Z", "+00:00")) >= before
    assert event["metadata"]["completed_at"] == "2025-01-01T00:00:00.000Z"
    assert "deployed_by_email" not in event["metadata"]  # not a push event: the action sent none


def test_failure_status_and_custom_metadata(live_server, token):
    resp = action_post(live_server, token, "/deployment-events/",
                       deployment_payload("2.0.0", "production", "failure", product="checkout",
                                          metadata={"duration_seconds": 120, "deployment_type": "blue-green"}))
    ids = outputs(resp, "deployment_id", "event_id", "product_id")
    assert resp.json()["status"] == "failed"
    event = httpx.get(f"{live_server.url}/api/v1/events/{ids['event_id']}", headers=auth(token), timeout=10).json()
    assert (event["product"], event["status"], event["status_raw"]) == ("checkout", "failed", "failure")
    assert event["metadata"]["duration_seconds"] == 120


def test_errors_the_action_explains(live_server, token):
    """401 → "Authentication failed"; 409 (a version rebuilt from another commit) → "rejected"; no partial write."""
    resp = action_post(live_server, "sk_not_a_key", "/deployment-events/", deployment_payload("1", "production"))
    assert resp.status_code == 401
    assert outputs(action_post(live_server, token, "/build-events/", build_payload("7.0.0")), "id")
    conflicting = {**build_payload("7.0.0"), "scm_sha": "0" * 40, "invoke_id": str(RUN_ID + 1)}  # a later run
    resp = action_post(live_server, token, "/build-events/", conflicting)
    assert resp.status_code == 409 and "7.0.0" in resp.json()["detail"]
    events = httpx.get(f"{live_server.url}/api/v1/events", headers=auth(token), timeout=10).json()["events"]
    assert len(events) == 1


def test_releases_before_build_events_post_a_built_version_to_version_events(live_server, token):
    """The action's releases before `/build-events/` sent builds as `POST /version-events/`: no status,
    the build's time as `built_at`, and outputs `version_id`, `product_id`, `version`, `created_at`; their
    deployments named the environment `environment` (src/types.ts of those releases)."""
    gh = github_metadata()
    payload = {"product_name": "web-shop", "version": "3.1.0", "scm_repository": gh["scm_repository"],
               "scm_sha": SHA, "scm_branch": "main", "source_system": "github", "build_number": gh["build_number"],
               "invoke_id": gh["invoke_id"], "build_url": RUN_URL, "built_by": "octocat",
               "built_at": "2026-11-20T10:00:00.000Z", "extra_metadata": dict(VI_GH)}
    resp = action_post(live_server, token, "/version-events/", payload)
    ids = outputs(resp, "version_id", "product_id", "version", "created_at")
    assert (ids["version"], ids["created_at"][:19]) == ("3.1.0", "2026-11-20T10:00:00")
    [event] = httpx.get(f"{live_server.url}/api/v1/events", headers=auth(token), timeout=10).json()["events"]
    assert (event["kind"], event["status"], event["scm_sha"]) == ("build", "completed", SHA)
    assert event["build_url"] == RUN_URL
    # those releases named a deployment's environment `environment`
    old_deploy = {"product_name": "web-shop", "version": "3.1.0", "environment": "production", "status": "success",
                  "scm_repository": gh["scm_repository"], "scm_sha": SHA, "source_system": "github",
                  "build_number": gh["build_number"], "invoke_id": gh["invoke_id"], "build_url": RUN_URL,
                  "deployed_by": "octocat", "extra_metadata": dict(VI_GH)}
    deployed = outputs(action_post(live_server, token, "/deployment-events/", old_deploy),
                       "deployment_id", "event_id", "product_id", "version_id", "environment_id")
    assert deployed["version_id"] == ids["version_id"]
    [record] = httpx.get(f"{live_server.url}/api/v1/deployments", headers=auth(token), timeout=10).json()["deployments"]
    assert (record["environment"], record["version"], str(record["id"])) == ("production", "3.1.0",
                                                                            deployed["deployment_id"])
    # the same version from another commit is still a conflict, whichever path the build came through
    resp = action_post(live_server, token, "/deployment-events/",
                       {**old_deploy, "scm_sha": "0" * 40, "invoke_id": str(RUN_ID + 1)})  # a later run
    assert resp.status_code == 409
    resp = action_post(live_server, token, "/deployment-events/", {**old_deploy, "environment": None})
    assert resp.json() == {"detail": "Field 'environment_name' is required"}
    assert action_post(live_server, token, "/version-events/", {"version": "3.1.1"}).json() == {
        "detail": "Field 'product_name' is required"}
