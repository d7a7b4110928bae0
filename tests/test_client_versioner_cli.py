"""Versioner's own command-line tool (versioner-io/versioner-cli) against a live deploytrack.

Requests are built as the CLI builds them (internal/api/client.go, deployment.go, build.go,
internal/cmd/track_*.go): `POST {api_url}/deployment-events/` or `/build-events/`, headers
`Content-Type: application/json`, `Authorization: Bearer <key>`, `User-Agent: versioner-cli/<v>`,
a body of the Go structs' fields in their order with `omitempty` fields left out, the status
passed through as typed (the API normalizes it), times as RFC 3339. What the CLI reads back:
2xx means success and the body must decode into its response structs (`id`, `product_id`,
`version_id`, `environment_id` are strings, `deployed_at` an RFC 3339 time); anything else is a
failure whose message is the body's `detail`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import httpx2 as httpx

from tests.conftest import auth, create_token

HEADERS = {"Content-Type": "application/json", "User-Agent": "versioner-cli/1.4.0"}
# internal/status/validator.go: every value the CLI accepts and what it tells the user the API makes of it
CLI_STATUSES = {
    "pending": "pending", "queued": "pending", "scheduled": "pending",
    "started": "started", "in_progress": "started", "init": "started", "building": "started", "deploying": "started",
    "completed": "completed", "success": "completed", "complete": "completed", "finished": "completed",
    "built": "completed", "deployed": "completed",
    "failed": "failed", "fail": "failed", "failure": "failed", "error": "failed",
    "aborted": "aborted", "abort": "aborted", "cancelled": "aborted", "cancel": "aborted", "skipped": "aborted",
}
# What cicd.Detect() fills in inside GitHub Actions (GITHUB_* variables), and its vi_gh_ extra metadata.
DETECTED = {"source_system": "github", "build_number": "57", "scm_sha": "4f1c2b9e8d7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e",
            "scm_repository": "myorg/api-service", "invoke_id": "9876543210", "deployed_by": "octocat",
            "deployed_by_email": "octocat@example.com", "deployed_by_name": "The Octocat"}
RUN_URL = "https://github.com/myorg/api-service/actions/runs/9876543210"
VI_GH = {"vi_gh_workflow": "Deploy", "vi_gh_job": "deploy", "vi_gh_run_attempt": "1", "vi_gh_event_name": "push",
         "vi_gh_ref": "refs/heads/main"}


def omitempty(fields: list[tuple[str, Any]]) -> dict[str, Any]:
    """encoding/json with `omitempty`: empty strings, false and nil are left out, order kept."""
    return {k: v for k, v in fields if v not in ("", None, False, {})}


def deployment_body(product: str, environment: str, version: str, status: str, *, completed_at: str = "",
                    detected: dict[str, str] = DETECTED, deploy_url: str = RUN_URL,
                    extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """`versioner track deployment --product ... --status ...` (DeploymentEventCreate, track_deployment.go)."""
    return omitempty([
        ("product_name", product), ("version", version), ("environment_name", environment), ("status", status),
        ("source_system", detected.get("source_system", "")), ("build_number", detected.get("build_number", "")),
        ("scm_sha", detected.get("scm_sha", "")), ("scm_repository", detected.get("scm_repository", "")),
        ("deploy_url", deploy_url), ("invoke_id", detected.get("invoke_id", "")),
        ("deployed_by", detected.get("deployed_by", "")), ("deployed_by_email", detected.get("deployed_by_email", "")),
        ("deployed_by_name", detected.get("deployed_by_name", "")), ("completed_at", completed_at),
        ("skip_preflight_checks", False), ("extra_metadata", {**VI_GH, **(extra or {})}),
    ])


def build_body(product: str, version: str, status: str, *, started_at: str = "", completed_at: str = "",
               detected: dict[str, str] = DETECTED) -> dict[str, Any]:
    """`versioner track build ...` (BuildEventCreate, track_build.go)."""
    return omitempty([
        ("product_name", product), ("version", version), ("status", status),
        ("source_system", detected.get("source_system", "")), ("build_number", detected.get("build_number", "")),
        ("scm_sha", detected.get("scm_sha", "")), ("scm_branch", "main"),
        ("scm_repository", detected.get("scm_repository", "")), ("build_url", RUN_URL),
        ("invoke_id", detected.get("invoke_id", "")), ("built_by", detected.get("deployed_by", "")),
        ("built_by_email", detected.get("deployed_by_email", "")),
        ("built_by_name", detected.get("deployed_by_name", "")), ("started_at", started_at),
        ("completed_at", completed_at),
    ])


def send(server, key: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + path, json=body, headers={**HEADERS, **auth(key)}, timeout=30)


def rfc3339(value: str) -> datetime:
    """What Go's time.Time accepts when it decodes JSON (RFC 3339, 'Z' or an offset)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def cli_reads_deployment(resp: httpx.Response) -> dict[str, Any]:
    """The CLI's success path: a 2xx that decodes into DeploymentResponse (all ids strings)."""
    assert 200 <= resp.status_code < 300, resp.text
    data = resp.json()
    for key in ("id", "product_id", "version_id", "environment_id", "status"):
        assert isinstance(data[key], str) and data[key], key
    for key in ("id", "product_id", "version_id", "environment_id"):
        uuid.UUID(data[key])
    rfc3339(data["deployed_at"])
    return data


def stored(server, key: str, event_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{server.url}/api/v1/events/{event_id}", headers=auth(key), timeout=10)
    assert resp.status_code == 200
    return resp.json()


def test_track_deployment_backfill_in_github_actions(live_server, token):
    """`--status=success --completed-at=...`: stored at its completion time with the run link as its CI link."""
    body = deployment_body("api-service", "production", "1.2.3", "success", completed_at="2025-10-23T12:10:00+02:00",
                           extra={"region": "eu-west-1"})
    data = cli_reads_deployment(send(live_server, token, "/deployment-events/", body))
    assert data["status"] == "completed"
    assert rfc3339(data["deployed_at"]) == rfc3339("2025-10-23T10:10:00Z")
    event = stored(live_server, token, data["id"])
    assert event["occurred_at"] == "2025-10-23T10:10:00Z"  # the backfill lands on its own day
    assert event["build_url"] == RUN_URL
    assert (event["actor"], event["scm_sha"], event["invoke_id"]) == ("octocat", DETECTED["scm_sha"], "9876543210")
    assert event["metadata"] == {**VI_GH, "region": "eu-west-1", "deployed_by_email": "octocat@example.com",
                                 "deployed_by_name": "The Octocat"}
    # The CLI retries 5xx and 429 with the same body: the same invoke_id + status is one event.
    assert cli_reads_deployment(send(live_server, token, "/deployment-events/", body))["id"] == data["id"]
    events = httpx.get(f"{live_server.url}/api/v1/events", headers=auth(token), timeout=10).json()["events"]
    assert [e["id"] for e in events] == [data["id"]]


def test_ids_in_replies_are_stable(live_server, token):
    """product_id / version_id / environment_id name the same thing the same way, request after request."""
    first = cli_reads_deployment(send(live_server, token, "/deployment-events/",
                                      deployment_body("api-service", "staging", "1.2.3", "success")))
    again = cli_reads_deployment(send(live_server, token, "/deployment-events/",
                                      deployment_body("api-service", "Prod", "1.2.4", "success",
                                                      detected={**DETECTED, "invoke_id": "1"})))
    build = send(live_server, token, "/build-events/", build_body("api-service", "1.2.4", "completed"))
    assert build.status_code == 200
    assert first["product_id"] == again["product_id"] == build.json()["product_id"]
    assert first["version_id"] != again["version_id"] == build.json()["version_id"]
    assert first["environment_id"] != again["environment_id"]
    later = cli_reads_deployment(send(live_server, token, "/deployment-events/",
                                      deployment_body("api-service", "production", "1.2.3", "success",
                                                      detected={**DETECTED, "invoke_id": "2"})))
    assert later["environment_id"] == again["environment_id"]  # "Prod" is production
    assert later["version_id"] == first["version_id"]
    assert first["deployment_id"] != later["deployment_id"]


def test_every_status_the_cli_accepts(live_server, token):
    """The CLI passes the typed status through; each of its aliases is accepted and mapped as it promises."""
    for typed, canonical in CLI_STATUSES.items():
        detected = {**DETECTED, "invoke_id": f"run-{typed}"}
        data = cli_reads_deployment(send(live_server, token, "/deployment-events/",
                                         deployment_body("svc", "staging", "1", typed.upper(), detected=detected)))
        assert data["status"] == canonical, typed
        resp = send(live_server, token, "/build-events/", build_body("svc", "1", typed, detected=detected))
        assert resp.status_code == 200 and resp.json()["status"] == canonical, typed
        uuid.UUID(resp.json()["product_id"]), uuid.UUID(resp.json()["version_id"])


def test_build_times(live_server, token):
    """`--started-at` dates a started build, `--completed-at` a finished one; the other is kept."""
    started = send(live_server, token, "/build-events/",
                   build_body("svc", "2.0.0", "init", started_at="2025-10-23T10:00:00Z"))
    assert started.status_code == 200
    event = stored(live_server, token, started.json()["id"])
    assert (event["status"], event["occurred_at"]) == ("started", "2025-10-23T10:00:00Z")
    done = send(live_server, token, "/build-events/",
                build_body("svc", "2.0.0", "finished", started_at="2025-10-23T10:00:00Z",
                           completed_at="2025-10-23T10:05:00Z"))
    assert done.status_code == 200
    event = stored(live_server, token, done.json()["id"])
    assert (event["status"], event["occurred_at"]) == ("completed", "2025-10-23T10:05:00Z")
    assert event["metadata"]["started_at"] == "2025-10-23T10:00:00Z"
    assert (event["actor"], event["build_url"]) == ("octocat", RUN_URL)


def test_failures_the_cli_reports(live_server, token, db_path):
    """Non-2xx answers carry `detail` as a string, which the CLI prints; nothing is stored."""
    resp = send(live_server, "sk_wrong", "/deployment-events/", deployment_body("svc", "production", "1", "success"))
    assert resp.status_code == 401 and isinstance(resp.json()["detail"], str)
    resp = send(live_server, token, "/deployment-events/", deployment_body("svc", "production", "1", "shipped"))
    assert resp.status_code == 400 and "status" in resp.json()["detail"]
    resp = send(live_server, token, "/build-events/",
                build_body("svc", "1", "completed", completed_at="2025-13-40T00:00:00Z"))
    assert resp.status_code == 400 and "completed_at" in resp.json()["detail"]
    reader = create_token(db_path, "reader", "read")
    resp = send(live_server, reader, "/build-events/", build_body("svc", "1", "completed"))
    assert resp.status_code == 403 and isinstance(resp.json()["detail"], str)
    events = httpx.get(f"{live_server.url}/api/v1/events", headers=auth(token), timeout=10).json()["events"]
    assert events == []
