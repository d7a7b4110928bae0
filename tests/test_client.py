"""The CI client (`deploytrack send`, `deploytrack wrap`) run as a subprocess, as a pipeline runs it.

Against a real server on 127.0.0.1, a port where nothing listens, a socket that never answers,
and a small real HTTP server that fails a few times before passing requests on to the real one.
Every run gets a controlled environment, so the CI variables of whatever runs this suite never leak in.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from conftest import REPO, LiveServer, auth, create_token, free_port

FAST = ["--retries", "2", "--backoff", "0.01", "--timeout", "5"]
SHA = "4f2c9e1b7a6d5c3e2f1a0b9c8d7e6f5a4b3c2d1e"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, str]]:
    """One live server for the module (each test uses its own product name)."""
    db = tmp_path_factory.mktemp("client") / "deploytrack.db"
    token = create_token(db, "ci", "ingest", "read")
    live = LiveServer(db).start()
    try:
        yield live, token
    finally:
        live.stop()


def product() -> str:
    return "svc-" + uuid.uuid4().hex[:10]


def start_client(*argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start `python -m deploytrack ARGV` with only the variables given (plus what Python needs)."""
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}
    return subprocess.Popen([sys.executable, "-m", "deploytrack", *argv], env={**base, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO))


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def run_client(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return finish(start_client(*argv, env=env), timeout)


def connect(live: LiveServer, token: str) -> dict[str, str]:
    return {"DEPLOYTRACK_URL": live.url, "DEPLOYTRACK_TOKEN": token}


def stored(live: LiveServer, token: str, name: str) -> list[dict[str, Any]]:
    """The product's events, oldest first, through the read API."""
    r = httpx.get(f"{live.url}/api/v1/events", params={"product": name, "limit": "100"}, headers=auth(token))
    assert r.status_code == 200, r.text
    return list(reversed(r.json()["events"]))


def assert_no_secret(result: subprocess.CompletedProcess[str], *secrets: str) -> None:
    for secret in secrets:
        assert secret not in result.stdout and secret not in result.stderr


# -- CI variables, as each CI sets them ----------------------------------------------------

CI_CASES: dict[str, tuple[dict[str, str], dict[str, str]]] = {
    "github": ({
        "CI": "true", "GITHUB_ACTIONS": "true", "GITHUB_SHA": SHA, "GITHUB_REF": "refs/heads/main",
        "GITHUB_REF_NAME": "main", "GITHUB_REF_TYPE": "branch", "GITHUB_HEAD_REF": "",
        "GITHUB_REPOSITORY": "acme/shop", "GITHUB_SERVER_URL": "https://github.com", "GITHUB_RUN_ID": "7301",
        "GITHUB_RUN_NUMBER": "42", "GITHUB_RUN_ATTEMPT": "2", "GITHUB_ACTOR": "octocat",
        "GITHUB_TRIGGERING_ACTOR": "octocat", "GITHUB_JOB": "deploy",
    }, {
        "scm_branch": "main", "scm_repository": "https://github.com/acme/shop",
        "build_url": "https://github.com/acme/shop/actions/runs/7301", "build_number": "42",
        "invoke_id": "7301-2", "actor": "octocat", "source_system": "github",
    }),
    "gitlab": ({
        "CI": "true", "GITLAB_CI": "true", "CI_COMMIT_SHA": SHA, "CI_COMMIT_BRANCH": "release",
        "CI_COMMIT_REF_NAME": "release", "CI_PROJECT_URL": "https://gitlab.example.com/acme/shop",
        "CI_PIPELINE_ID": "9001", "CI_PIPELINE_IID": "17", "CI_JOB_ID": "55501",
        "CI_PIPELINE_URL": "https://gitlab.example.com/acme/shop/-/pipelines/9001",
        "CI_JOB_URL": "https://gitlab.example.com/acme/shop/-/jobs/55501",
        "GITLAB_USER_EMAIL": "dev@example.com", "GITLAB_USER_LOGIN": "dev",
    }, {
        "scm_branch": "release", "scm_repository": "https://gitlab.example.com/acme/shop",
        "build_url": "https://gitlab.example.com/acme/shop/-/jobs/55501", "build_number": "17",
        "invoke_id": "55501", "actor": "dev@example.com", "source_system": "gitlab",
    }),
    "jenkins": ({
        "JENKINS_URL": "https://jenkins.example.com/", "BUILD_NUMBER": "314", "JOB_NAME": "shop/deploy",
        "BUILD_TAG": "jenkins-shop-deploy-314", "BUILD_URL": "https://jenkins.example.com/job/shop/job/deploy/314/",
        "GIT_COMMIT": SHA, "GIT_BRANCH": "origin/main", "GIT_URL": "https://git.example.com/acme/shop.git",
        "BUILD_USER_ID": "jdoe", "STAGE_NAME": "Deploy EU",
    }, {
        "scm_branch": "main", "scm_repository": "https://git.example.com/acme/shop.git",
        "build_url": "https://jenkins.example.com/job/shop/job/deploy/314/", "build_number": "314",
        "invoke_id": "jenkins-shop-deploy-314", "actor": "jdoe", "source_system": "jenkins",
    }),
    "circleci": ({
        "CI": "true", "CIRCLECI": "true", "CIRCLE_SHA1": SHA, "CIRCLE_BRANCH": "main",
        "CIRCLE_REPOSITORY_URL": "git@github.com:acme/shop.git", "CIRCLE_BUILD_NUM": "808",
        "CIRCLE_BUILD_URL": "https://circleci.com/gh/acme/shop/808", "CIRCLE_USERNAME": "circler",
        "CIRCLE_WORKFLOW_ID": "6f1d2c3b-0000-4000-8000-000000000001",
        "CIRCLE_WORKFLOW_JOB_ID": "6f1d2c3b-0000-4000-8000-000000000002",
    }, {
        "scm_branch": "main", "scm_repository": "git@github.com:acme/shop.git",
        "build_url": "https://circleci.com/gh/acme/shop/808", "build_number": "808",
        "invoke_id": "6f1d2c3b-0000-4000-8000-000000000002", "actor": "circler", "source_system": "circleci",
    }),
    "azure": ({
        # Azure Pipelines exports Build.SourceVersion as BUILD_SOURCEVERSION, and so on.
        "TF_BUILD": "True", "BUILD_SOURCEVERSION": SHA, "BUILD_SOURCEBRANCH": "refs/heads/feature/login",
        "BUILD_SOURCEBRANCHNAME": "login", "BUILD_REPOSITORY_URI": "https://dev.azure.com/acme/Shop/_git/shop",
        "BUILD_BUILDID": "1234", "BUILD_BUILDNUMBER": "20261123.3", "SYSTEM_JOBATTEMPT": "1",
        "SYSTEM_JOBID": "0c8f2a4e-5b1d-5e3f-9a7c-6d2e1f0b3a94",
        "SYSTEM_COLLECTIONURI": "https://dev.azure.com/acme/", "SYSTEM_TEAMPROJECT": "Shop Team",
        "BUILD_REQUESTEDFOR": "Ada Lovelace", "BUILD_REQUESTEDFOREMAIL": "ada@example.com",
    }, {
        "scm_branch": "feature/login", "scm_repository": "https://dev.azure.com/acme/Shop/_git/shop",
        "build_url": "https://dev.azure.com/acme/Shop%20Team/_build/results?buildId=1234",
        "build_number": "20261123.3", "invoke_id": "1234-1", "actor": "ada@example.com",
        "source_system": "azure-devops",
    }),
    "bitbucket": ({
        "CI": "true", "BITBUCKET_BUILD_NUMBER": "77", "BITBUCKET_COMMIT": SHA, "BITBUCKET_BRANCH": "main",
        "BITBUCKET_REPO_FULL_NAME": "acme/shop", "BITBUCKET_GIT_HTTP_ORIGIN": "http://bitbucket.org/acme/shop",
        "BITBUCKET_PIPELINE_UUID": "{aaaa-1}", "BITBUCKET_STEP_UUID": "{bbbb-2}",
        "BITBUCKET_STEP_TRIGGERER_UUID": "{cccc-3}",
    }, {
        "scm_branch": "main", "scm_repository": "http://bitbucket.org/acme/shop",
        "build_url": "https://bitbucket.org/acme/shop/pipelines/results/77", "build_number": "77",
        "invoke_id": "{bbbb-2}", "actor": "{cccc-3}", "source_system": "bitbucket",
    }),
    "buildkite": ({
        "CI": "true", "BUILDKITE": "true", "BUILDKITE_COMMIT": SHA, "BUILDKITE_BRANCH": "main",
        "BUILDKITE_REPO": "git@github.com:acme/shop.git", "BUILDKITE_BUILD_NUMBER": "1500",
        "BUILDKITE_BUILD_URL": "https://buildkite.com/acme/shop/builds/1500",
        "BUILDKITE_BUILD_ID": "01890000-aaaa-bbbb-cccc-000000000001", "BUILDKITE_JOB_ID": "01890000-job",
        "BUILDKITE_BUILD_CREATOR_EMAIL": "kite@example.com",
    }, {
        "scm_branch": "main", "scm_repository": "git@github.com:acme/shop.git",
        "build_url": "https://buildkite.com/acme/shop/builds/1500#01890000-job", "build_number": "1500",
        "invoke_id": "01890000-job", "actor": "kite@example.com", "source_system": "buildkite",
    }),
}


def test_send_deployment_fills_fields_from_each_ci(server: tuple[LiveServer, str]) -> None:
    live, token = server
    names = {ci: product() for ci in CI_CASES}
    procs = {ci: start_client("send", "deployment", "--product", names[ci], "--environment", "prod",  # all at once
                              "--status", "success", *FAST, env={**ci_vars, **connect(live, token)})
             for ci, (ci_vars, _) in CI_CASES.items()}
    for ci, proc in procs.items():
        result = finish(proc)
        expected = CI_CASES[ci][1]
        assert result.returncode == 0, (ci, result.stderr)
        assert result.stderr == "", ci
        answer = json.loads(result.stdout)
        events = stored(live, token, names[ci])
        assert len(events) == 1, ci
        event = events[0]
        assert answer["id"] == event["id"]
        assert event["kind"] == "deployment" and event["dialect"] == "versioner"
        assert event["status"] == "completed" and event["status_raw"] == "success"
        assert event["environment"] == "production" and event["environment_raw"] == "prod"
        assert event["scm_sha"] == SHA and event["version"] == SHA[:12], ci
        assert {k: event[k] for k in expected} == expected, ci
        assert_no_secret(result, token)


def test_flags_win_over_ci_variables_and_meta_lands_in_metadata(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    result = run_client(
        "send", "build", "--product", name, "--version", "2.0.0", "--sha", "abc123", "--branch", "hotfix",
        "--actor", "release-bot", "--build-number", "9", "--summary", "nightly", "--status", "built",
        "--meta", "runner=linux", "--meta", "note=a=b", "--timestamp", "2026-01-02T03:04:05Z", *FAST,
        env={**CI_CASES["gitlab"][0], **connect(live, token)})
    assert result.returncode == 0, result.stderr
    [event] = stored(live, token, name)
    assert event["kind"] == "build" and event["environment"] is None
    assert (event["version"], event["scm_sha"], event["scm_branch"]) == ("2.0.0", "abc123", "hotfix")
    assert (event["actor"], event["build_number"], event["summary"]) == ("release-bot", "9", "nightly")
    assert event["scm_repository"] == "https://gitlab.example.com/acme/shop"  # not overridden: from the CI
    assert event["occurred_at"] == "2026-01-02T03:04:05Z"
    assert event["metadata"] == {"runner": "linux", "note": "a=b"}


def test_outside_ci_without_version_or_sha_is_a_usage_error(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    result = run_client("send", "deployment", "--product", name, "--environment", "staging", *FAST,
                        env=connect(live, token))
    assert result.returncode == 2
    assert "--version" in result.stderr
    bad_status = run_client("send", "deployment", "--product", name, "--environment", "staging", "--version", "1",
                            "--status", "sort-of", env=connect(live, token))
    assert bad_status.returncode == 2 and "unknown status 'sort-of'" in bad_status.stderr
    assert stored(live, token, name) == []


# -- failures never fail the pipeline unless --strict ----------------------------------------


def test_unreachable_server_warns_and_exits_0_or_1_with_strict(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    env = {"DEPLOYTRACK_URL": url, "DEPLOYTRACK_TOKEN": "dt_secret_never_printed"}
    argv = ("send", "deployment", "--product", "web", "--environment", "prod", "--version", "1", *FAST)
    procs = start_client(*argv, env=env), start_client(*argv, "--strict", env=env)
    relaxed, strict = finish(procs[0]), finish(procs[1])
    assert relaxed.returncode == 0
    assert relaxed.stdout == ""
    assert "warning" in relaxed.stderr and "after 3 attempts" in relaxed.stderr
    assert "cannot reach the server" in relaxed.stderr
    assert strict.returncode == 1
    assert "error" in strict.stderr and "after 3 attempts" in strict.stderr
    assert_no_secret(relaxed, "dt_secret_never_printed")
    assert_no_secret(strict, "dt_secret_never_printed")


def test_server_that_never_answers_times_out() -> None:
    with socket.socket() as listener:  # accepts connections in the kernel backlog, never replies
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        result = run_client("send", "build", "--product", "web", "--version", "1", "--server", url,
                            "--token", "t0k3n", "--timeout", "0.3", "--retries", "1", "--backoff", "0.01",
                            "--strict", timeout=30)
    assert result.returncode == 1
    assert "after 2 attempts" in result.stderr
    assert "timed out" in result.stderr or "no answer within 0.3 s" in result.stderr
    assert_no_secret(result, "t0k3n")


def test_rejected_token_is_not_retried_and_stores_nothing(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    env = {"DEPLOYTRACK_URL": live.url, "DEPLOYTRACK_TOKEN": "dt_wrong_token_value"}
    argv = ("send", "deployment", "--product", name, "--environment", "prod", "--version", "1", *FAST)
    procs = start_client(*argv, env=env), start_client(*argv, "--strict", env=env)
    relaxed, strict = finish(procs[0]), finish(procs[1])
    assert relaxed.returncode == 0
    assert "rejected the token" in relaxed.stderr and "in 1 attempt" in relaxed.stderr
    assert strict.returncode == 1 and "rejected the token" in strict.stderr
    assert_no_secret(relaxed, "dt_wrong_token_value")
    assert_no_secret(strict, "dt_wrong_token_value")
    assert stored(live, token, name) == []


def test_bad_field_answer_is_shown_and_not_retried(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    result = run_client("send", "deployment", "--product", name, "--environment", "prod", "--version", "1",
                        "--timestamp", "yesterday-ish", "--strict", *FAST, env=connect(live, token))
    assert result.returncode == 1
    assert "HTTP 400" in result.stderr and "timestamp" in result.stderr and "in 1 attempt" in result.stderr
    assert stored(live, token, name) == []


def test_missing_or_broken_url_or_token_warns_unless_strict() -> None:
    argv = ("send", "deployment", "--product", "web", "--environment", "prod", "--version", "1")
    procs = (start_client(*argv, env={"DEPLOYTRACK_TOKEN": "x"}),
             start_client(*argv, "--strict", env={"DEPLOYTRACK_URL": "http://127.0.0.1:9"}),
             start_client(*argv, "--strict", env={"DEPLOYTRACK_URL": "http://127.0.0.1:port",
                                                  "DEPLOYTRACK_TOKEN": "dt_token_for_bad_url"}))
    no_url, no_token, bad_url = (finish(p) for p in procs)
    assert no_url.returncode == 0 and "DEPLOYTRACK_URL" in no_url.stderr
    assert no_token.returncode == 1 and "DEPLOYTRACK_TOKEN" in no_token.stderr
    assert bad_url.returncode == 1 and "in 1 attempt: invalid server URL" in bad_url.stderr
    assert_no_secret(bad_url, "dt_token_for_bad_url")


def test_dry_run_prints_the_request_with_the_token_hidden(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    result = run_client("send", "deployment", "--product", name, "--environment", "prod", "--dry-run",
                        "--meta", "k=v", env={**CI_CASES["github"][0], **connect(live, token)})
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout)
    assert request["method"] == "POST" and request["url"] == f"{live.url}/deployment-events/"
    assert request["headers"]["Authorization"] == "Bearer ***"
    assert request["headers"]["Idempotency-Key"]
    assert request["body"]["product_name"] == name and request["body"]["scm_sha"] == SHA
    assert request["body"]["extra_metadata"] == {"k": "v"}
    assert_no_secret(result, token)
    assert stored(live, token, name) == []


# -- retries under one idempotency key ----------------------------------------------------


class FlakyProxy:
    """A real HTTP server on 127.0.0.1 that plays a script of answers, then passes requests on.

    Script steps: "500" / "503" / "429" answer that status without passing the request on;
    "lost" passes it on to the real server, then answers 502 as if the reply was lost;
    "pass" passes it on and relays the real answer.
    """

    def __init__(self, upstream: str, script: list[str]) -> None:
        self.upstream = upstream
        self.script = list(script)
        self.keys: list[str | None] = []
        self.forwarded = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                proxy.keys.append(self.headers.get("Idempotency-Key"))
                step = proxy.script.pop(0) if proxy.script else "pass"
                if step in ("500", "503", "429"):
                    self._answer(int(step), b'{"detail": "try again"}', {"Retry-After": "0"})
                    return
                status, answer = proxy.forward(self.path, dict(self.headers), body)
                if step == "lost":
                    self._answer(502, b"bad gateway", {})
                else:
                    self._answer(status, answer, {})

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for k, v in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def forward(self, path: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        self.forwarded += 1
        keep = {k: v for k, v in headers.items() if k.lower() in ("authorization", "content-type", "idempotency-key")}
        req = urllib.request.Request(self.upstream + path, data=body, headers=keep, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read()

    def __enter__(self) -> FlakyProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_retries_reuse_one_idempotency_key_and_store_one_event(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    # No CI variables, so no invoke_id: only the Idempotency-Key can stop the double count.
    with FlakyProxy(live.url, ["500", "429", "lost", "pass"]) as proxy:
        result = run_client("send", "deployment", "--product", name, "--environment", "prod", "--version", "3.1",
                            "--retries", "4", "--backoff", "0.01",
                            env={"DEPLOYTRACK_URL": proxy.url, "DEPLOYTRACK_TOKEN": token})
    assert result.returncode == 0, result.stderr
    assert len(proxy.keys) == 4 and proxy.forwarded == 2
    assert len(set(proxy.keys)) == 1 and proxy.keys[0]
    events = stored(live, token, name)
    assert len(events) == 1
    assert json.loads(result.stdout)["id"] == events[0]["id"]


def test_two_logical_sends_use_two_keys(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    with FlakyProxy(live.url, []) as proxy:
        for _ in range(2):
            result = run_client("send", "deployment", "--product", name, "--environment", "prod", "--version", "3.2",
                                *FAST, env={"DEPLOYTRACK_URL": proxy.url, "DEPLOYTRACK_TOKEN": token})
            assert result.returncode == 0, result.stderr
    assert len(proxy.keys) == 2 and proxy.keys[0] != proxy.keys[1]
    assert len(stored(live, token, name)) == 2


def test_retries_give_up_after_the_limit() -> None:
    with FlakyProxy("http://127.0.0.1:9", ["500"] * 10) as proxy:
        result = run_client("send", "build", "--product", "web", "--version", "1", "--retries", "2",
                            "--backoff", "0.01",
                            env={"DEPLOYTRACK_URL": proxy.url, "DEPLOYTRACK_TOKEN": "dt_short_lived"})
    assert result.returncode == 0
    assert len(proxy.keys) == 3 and "after 3 attempts: HTTP 500: try again" in result.stderr


# -- wrap ----------------------------------------------------------------------------------


def deployments(live: LiveServer, name: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(f"file:{live.db}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return conn.execute("SELECT * FROM deployments WHERE product = ?", (name,)).fetchall()
    finally:
        conn.close()


def py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_wrap_success_passes_output_through_and_folds_into_one_deployment(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    result = run_client("wrap", "--product", name, "--environment", "production", "--version", "5.0", *FAST, "--",
                        *py("import sys; print('deploying'); print('to stderr', file=sys.stderr)"),
                        env=connect(live, token))
    assert result.returncode == 0
    assert result.stdout == "deploying\n" and result.stderr == "to stderr\n"
    started, completed = stored(live, token, name)
    assert (started["status"], completed["status"]) == ("started", "completed")
    assert started["invoke_id"] == completed["invoke_id"] and len(started["invoke_id"]) == 36
    assert completed["metadata"]["exit_code"] == 0
    assert 0 <= completed["metadata"]["duration_seconds"] < 30
    [dep] = deployments(live, name)
    assert (dep["status"], dep["event_count"], dep["version"]) == ("completed", 2, "5.0")
    assert dep["started_at"] is not None and dep["finished_at"] >= dep["started_at"]
    assert started["deployment_id"] == completed["deployment_id"] == dep["id"]


@pytest.mark.parametrize("ci, job_var", [("github", "GITHUB_JOB"), ("jenkins", "STAGE_NAME"),
                                         ("azure", "SYSTEM_JOBID")])
def test_two_jobs_of_one_run_deploying_one_product_are_two_deployments(server: tuple[LiveServer, str], ci: str,
                                                                       job_var: str) -> None:
    """Jobs of one CI run share the run's id; each job's deployment is its own record (docs/ci.md)."""
    live, token = server
    name = product()
    procs = [start_client("wrap", "--product", name, "--environment", "production", *FAST, "--", *py("pass"),
                          env={**CI_CASES[ci][0], job_var: job, **connect(live, token)}) for job in ("eu", "us")]
    assert [finish(p).returncode for p in procs] == [0, 0]
    events = stored(live, token, name)
    assert len({e["invoke_id"] for e in events}) == 2 and len(events) == 4
    assert sorted((d["status"], d["event_count"]) for d in deployments(live, name)) == [("completed", 2)] * 2


@pytest.mark.parametrize("ci, job_var", [("github", "GITHUB_JOB"), ("jenkins", "STAGE_NAME"),
                                         ("azure", "SYSTEM_JOBID")])
def test_send_started_by_one_job_and_the_outcome_by_a_later_one_is_one_deployment(server: tuple[LiveServer, str],
                                                                                   ci: str, job_var: str) -> None:
    """A deploy job sends `started`, a verify job (Jenkins: the pipeline's `post`) the outcome: `send` keeps the
    run's id, so they fold into one record (only `wrap`, one job by construction, is per job)."""
    live, token = server
    name = product()
    for job, status in (("deploy", "started"), ("verify", "success")):
        result = run_client("send", "deployment", "--product", name, "--environment", "production", "--status",
                            status, *FAST, env={**CI_CASES[ci][0], job_var: job, **connect(live, token)})
        assert result.returncode == 0, result.stderr
    assert len({e["invoke_id"] for e in stored(live, token, name)}) == 1  # (a read: every event in its tables)
    assert [(d["status"], d["event_count"]) for d in deployments(live, name)] == [("completed", 2)]


def test_wrap_failure_exits_with_the_command_code(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    result = run_client("wrap", "--product", name, "--environment", "staging", "--meta", "tool=helm", *FAST, "--",
                        *py("raise SystemExit(3)"), env={**CI_CASES["gitlab"][0], **connect(live, token)})
    assert result.returncode == 3
    started, failed = stored(live, token, name)
    assert failed["status"] == "failed" and failed["metadata"]["exit_code"] == 3
    assert failed["metadata"]["tool"] == "helm"
    assert started["invoke_id"] == failed["invoke_id"] == "55501"  # the GitLab job id
    assert failed["scm_sha"] == SHA and failed["version"] == SHA[:12]
    assert deployments(live, name)[0]["status"] == "failed"


def test_wrap_command_killed_by_a_signal_exits_128_plus_n(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    result = run_client("wrap", "--product", name, "--environment", "prod", "--version", "1", *FAST, "--",
                        *py("import os, signal; os.kill(os.getpid(), signal.SIGKILL)"), env=connect(live, token))
    assert result.returncode == 128 + signal.SIGKILL
    _, final = stored(live, token, name)
    assert final["status"] == "failed"
    assert final["metadata"]["exit_code"] == 137 and final["metadata"]["signal"] == "SIGKILL"


def test_wrap_cancelled_forwards_the_signal_and_records_aborted(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), **connect(live, token)}
    child = "import sys, time; print('ready', flush=True); time.sleep(60)"
    with subprocess.Popen([sys.executable, "-m", "deploytrack", "wrap", "--product", name, "--environment",
                           "prod", "--version", "1", *FAST, "--", *py(child)],
                          env=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO)) as proc:
        try:  # the with-block closes the pipes (an open one is a ResourceWarning, an error here)
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            proc.send_signal(signal.SIGTERM)  # what a CI runner does when the job is cancelled
            code = proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert code == 128 + signal.SIGTERM
    _, final = stored(live, token, name)
    assert final["status"] == "aborted" and final["metadata"]["signal"] == "SIGTERM"
    assert deployments(live, name)[0]["status"] == "aborted"


def test_wrap_with_server_down_still_runs_the_command(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    env = {"DEPLOYTRACK_URL": f"http://127.0.0.1:{free_port()}", "DEPLOYTRACK_TOKEN": "dt_hidden"}
    flags = ("wrap", "--product", "web", "--environment", "prod", "--version", "1", *FAST)
    command = ("--", *py(f"open({str(marker)!r}, 'w').close(); raise SystemExit(5)"))
    relaxed = run_client(*flags, *command, env=env)
    assert relaxed.returncode == 5 and marker.exists()
    assert relaxed.stderr.count("warning") == 2  # started and failed both undelivered
    marker.unlink()
    strict = run_client(*flags, "--strict", *command, env=env)
    assert strict.returncode == 1 and not marker.exists()
    assert "not running the command" in strict.stderr
    assert_no_secret(relaxed, "dt_hidden")
    assert_no_secret(strict, "dt_hidden")


def test_wrap_outside_ci_without_a_version_warns_and_still_runs_the_command(server: tuple[LiveServer, str],
                                                                           tmp_path: Path) -> None:
    """No --version and no SHA: nothing can be recorded, but the deployment itself is not stopped."""
    live, token = server
    name = product()
    marker = tmp_path / "ran"
    flags = ("wrap", "--product", name, "--environment", "prod", *FAST)
    command = ("--", *py(f"open({str(marker)!r}, 'w').close(); print('deploying'); raise SystemExit(4)"))
    relaxed = run_client(*flags, *command, env=connect(live, token))
    assert relaxed.returncode == 4 and marker.exists() and relaxed.stdout == "deploying\n"
    assert relaxed.stderr.count("deploytrack: warning:") == 1 and "--version" in relaxed.stderr
    marker.unlink()
    strict = run_client(*flags, "--strict", *command, env=connect(live, token))
    assert strict.returncode == 1 and not marker.exists()
    assert "--version" in strict.stderr and "not running the command" in strict.stderr
    assert stored(live, token, name) == []


def test_wrap_command_not_found_is_127_and_recorded(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    result = run_client("wrap", "--product", name, "--environment", "prod", "--version", "1", *FAST, "--",
                        "/nonexistent/deploy.sh", env=connect(live, token))
    assert result.returncode == 127 and "command not found" in result.stderr
    _, final = stored(live, token, name)
    assert final["status"] == "failed" and final["metadata"]["exit_code"] == 127


def test_wrap_needs_a_command() -> None:
    result = run_client("wrap", "--product", "web", "--environment", "prod", "--version", "1", "--")
    assert result.returncode == 2 and "needs a command" in result.stderr


# -- incidents -----------------------------------------------------------------------------


def test_send_incident_dry_run_matches_the_incidents_contract() -> None:
    result = run_client("send", "incident", "--product", "shop", "--environment", "production",
                        "--title", "checkout down", "--severity", "critical", "--change-id", "CHG0012345",
                        "--deployment-id", "12", "--opened-at", "2026-11-23T10:00:00Z", "--dry-run",
                        env={"DEPLOYTRACK_URL": "http://127.0.0.1:9", "DEPLOYTRACK_TOKEN": "dt_x"})
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout)
    assert request["url"] == "http://127.0.0.1:9/api/v1/incidents"
    assert request["body"] == {"product": "shop", "environment": "production", "title": "checkout down",
                               "severity": "critical", "opened_at": "2026-11-23T10:00:00Z",
                               "change_id": "CHG0012345", "deployment_id": 12}
    assert_no_secret(result, "dt_x")


def incidents_of(live: LiveServer, token: str, name: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{live.url}/api/v1/incidents", params={"product": name}, headers=auth(token))
    assert r.status_code == 200, r.text
    return list(r.json()["incidents"])


def test_send_incident_opens_one_incident_linked_to_the_wrapped_deployment(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    deploy = run_client("send", "deployment", "--product", name, "--environment", "production", "--version", "7",
                        "--change-id", "CHG0099", *FAST, env=connect(live, token))
    assert deploy.returncode == 0, deploy.stderr
    result = run_client("send", "incident", "--product", name, "--environment", "production",
                        "--title", "checkout down", "--severity", "critical", "--change-id", "CHG0099",
                        "--meta", "pager=INC-1", *FAST, env=connect(live, token))
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    [incident] = incidents_of(live, token, name)
    assert incident["id"] == answer["id"]
    assert (incident["title"], incident["severity"], incident["status"]) == ("checkout down", "critical", "open")
    assert incident["metadata"] == {"pager": "INC-1"}
    assert incident["link"]["rule"] == "change_id"
    assert incident["deployment_id"] == deployments(live, name)[0]["id"]
    assert_no_secret(result, token)


def test_send_incident_bad_field_and_bad_deployment_id(server: tuple[LiveServer, str]) -> None:
    live, token = server
    name = product()
    usage = run_client("send", "incident", "--product", name, "--title", "x", "--deployment-id", "abc")
    assert usage.returncode == 2 and "deployment id" in usage.stderr
    rejected = run_client("send", "incident", "--product", name, "--title", "x", "--opened-at", "not-a-time",
                          "--strict", *FAST, env=connect(live, token))
    assert rejected.returncode == 1
    assert "HTTP 400" in rejected.stderr and "opened_at" in rejected.stderr
    assert incidents_of(live, token, name) == []


def test_incident_is_not_resent_after_a_lost_answer(server: tuple[LiveServer, str]) -> None:
    """The incidents endpoint ignores Idempotency-Key, so an ambiguous failure must not be retried."""
    live, token = server
    name = product()
    env_argv = ("send", "incident", "--product", name, "--title", "db down", "--retries", "3", "--backoff", "0.01")
    with FlakyProxy(live.url, ["503", "lost"]) as proxy:
        result = run_client(*env_argv, env={"DEPLOYTRACK_URL": proxy.url, "DEPLOYTRACK_TOKEN": token})
    assert result.returncode == 0
    assert "after 2 attempts: HTTP 502" in result.stderr  # 503 retried (not processed); 502 not (maybe processed)
    assert len(proxy.keys) == 2 and proxy.forwarded == 1
    assert len(incidents_of(live, token, name)) == 1


@pytest.mark.parametrize("url", ["http://[::1", "https://[deploytrack.internal]", "http://]x"])
def test_a_url_the_standard_library_cannot_parse_warns_and_wrap_still_runs_the_command(tmp_path: Path,
                                                                                      url: str) -> None:
    marker = tmp_path / "ran"
    env = {"DEPLOYTRACK_URL": url, "DEPLOYTRACK_TOKEN": "dt_hidden"}
    sent = run_client("send", "deployment", "--product", "web", "--environment", "prod", "--version", "1", *FAST,
                      env=env)
    assert sent.returncode == 0 and "invalid server URL" in sent.stderr and "Traceback" not in sent.stderr
    wrapped = run_client("wrap", "--product", "web", "--environment", "prod", "--version", "1", *FAST, "--",
                         *py(f"open({str(marker)!r}, 'w').close(); raise SystemExit(7)"), env=env)
    assert wrapped.returncode == 7 and marker.exists() and "Traceback" not in wrapped.stderr
