"""Webhook payloads as each service documents them (fields and shapes from their public docs),
filled with test values; and the signatures each service puts on them."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any
from urllib.parse import urlsplit

import orjson

from tests.conftest import run_cli

SHA = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
SHA2 = "7638417db6d59f3c431d3e1f261cc637155684cd"


def create_hook(db: Any, source: str, *args: str) -> tuple[str, str, int]:
    """`deploytrack hook create`; returns (path, secret, hook id) as it printed them."""
    code, out = run_cli("hook", "create", source, "--db", str(db), *args)
    assert code == 0, out
    url = re.search(r"URL:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    secret = re.search(r"Secret:\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    path = urlsplit(url).path
    return path, secret, int(path.rsplit("/", 1)[1])


def dumps(body: Any) -> bytes:
    return orjson.dumps(body)


def hmac_hex(secret: str, raw: bytes) -> str:
    return hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()


# -- GitHub ---------------------------------------------------------------------------------------

def github_headers(event: str, delivery: str, secret: str, raw: bytes) -> dict[str, str]:
    return {"X-GitHub-Event": event, "X-GitHub-Delivery": delivery, "Content-Type": "application/json",
            "X-Hub-Signature-256": "sha256=" + hmac_hex(secret, raw), "User-Agent": "GitHub-Hookshot/044aadd"}


def github_repository() -> dict[str, Any]:
    return {"id": 1296269, "node_id": "MDEwOlJlcG9zaXRvcnkxMjk2MjY5", "name": "hello-world",
            "full_name": "octo-org/hello-world", "private": False, "owner": {"login": "octo-org", "id": 1},
            "html_url": "https://github.com/octo-org/hello-world", "default_branch": "main"}


def github_deployment_status(state: str, status_id: int, when: str, environment: str = "production",
                             deployment_id: int = 145988746, sha: str = SHA) -> dict[str, Any]:
    user = {"login": "octocat", "id": 1, "type": "User"}
    base = f"https://api.github.com/repos/octo-org/hello-world/deployments/{deployment_id}"
    return {
        "action": "created",
        "deployment_status": {
            "url": f"{base}/statuses/{status_id}", "id": status_id, "node_id": "MDE2OkRlcGxveW1lbnRTdGF0dXMx",
            "state": state, "creator": user, "description": f"Deployment {state}", "environment": environment,
            "target_url": "https://ci.example.com/deploy/42", "log_url": "https://ci.example.com/deploy/42/log",
            "environment_url": "https://shop.example.com", "created_at": when, "updated_at": when,
            "deployment_url": base, "repository_url": "https://api.github.com/repos/octo-org/hello-world"},
        "deployment": {
            "url": base, "id": deployment_id, "node_id": "MDEwOkRlcGxveW1lbnQx", "sha": sha, "ref": "main",
            "task": "deploy", "payload": {}, "original_environment": environment, "environment": environment,
            "description": "Deploy request from hubot", "creator": user, "created_at": when, "updated_at": when,
            "statuses_url": f"{base}/statuses", "repository_url": "https://api.github.com/repos/octo-org/hello-world",
            "transient_environment": False, "production_environment": environment == "production"},
        "repository": github_repository(),
        "sender": user,
    }


def github_push(commits: list[tuple[str, str, str]]) -> dict[str, Any]:
    """commits: (sha, ISO timestamp, message)."""
    def commit(sha: str, when: str, message: str) -> dict[str, Any]:
        person = {"name": "Mona Lisa", "email": "mona@example.com", "username": "mona"}
        return {"id": sha, "tree_id": "f9d2a07e9488b91af2641b26b9407fe22a451433", "distinct": True,
                "message": message, "timestamp": when, "url": f"https://github.com/octo-org/hello-world/commit/{sha}",
                "author": person, "committer": person, "added": [], "removed": [], "modified": ["README.md"]}
    items = [commit(*c) for c in commits]
    return {"ref": "refs/heads/main", "before": "0" * 40, "after": commits[-1][0] if commits else "0" * 40,
            "created": False, "deleted": False, "forced": False, "base_ref": None,
            "compare": "https://github.com/octo-org/hello-world/compare/000000...6dcb09b", "commits": items,
            "head_commit": items[-1] if items else None, "repository": github_repository(),
            "pusher": {"name": "mona", "email": "mona@example.com"}, "sender": {"login": "mona", "id": 2}}


# -- GitLab ---------------------------------------------------------------------------------------

def gitlab_project() -> dict[str, Any]:
    return {"id": 15, "name": "Diaspora", "description": "", "web_url": "http://example.com/mike/diaspora",
            "avatar_url": None, "git_ssh_url": "git@example.com:mike/diaspora.git",
            "git_http_url": "http://example.com/mike/diaspora.git", "namespace": "Mike", "visibility_level": 0,
            "path_with_namespace": "mike/diaspora", "default_branch": "main"}


def gitlab_deployment(status: str, when: str, environment: str = "production",
                      deployment_id: int = 15) -> dict[str, Any]:
    return {
        "object_kind": "deployment", "status": status, "status_changed_at": when, "deployment_id": deployment_id,
        "deployable_id": 796, "deployable_url": "http://example.com/mike/diaspora/-/jobs/796",
        "environment": environment, "environment_tier": "production", "environment_slug": environment,
        "environment_external_url": "https://diaspora.example.com", "project": gitlab_project(),
        "short_sha": SHA[:8], "user": {"id": 1, "name": "Administrator", "username": "root",
                                       "avatar_url": "https://www.gravatar.com/avatar/e64c7d89",
                                       "email": "admin@example.com"},
        "user_url": "http://example.com/root", "commit_url": f"http://example.com/mike/diaspora/-/commit/{SHA}",
        "commit_title": "Add new file"}


def gitlab_push(commits: list[tuple[str, str, str]]) -> dict[str, Any]:
    return {
        "object_kind": "push", "event_name": "push", "before": "0" * 40, "after": commits[-1][0],
        "ref": "refs/heads/main", "ref_protected": True, "checkout_sha": commits[-1][0], "user_id": 4,
        "user_name": "John Smith", "user_username": "jsmith", "user_email": "john@example.com", "project_id": 15,
        "project": gitlab_project(),
        "commits": [{"id": sha, "message": message, "title": message.splitlines()[0], "timestamp": when,
                     "url": f"http://example.com/mike/diaspora/commit/{sha}",
                     "author": {"name": "Jordi Mallach", "email": "jordi@softcatala.org"},
                     "added": ["CHANGELOG"], "modified": ["app/controller/application.rb"], "removed": []}
                    for sha, when, message in commits],
        "total_commits_count": len(commits),
        "repository": {"name": "Diaspora", "url": "git@example.com:mike/diaspora.git", "description": "",
                       "homepage": "http://example.com/mike/diaspora"}}


# -- Gitea / Forgejo --------------------------------------------------------------------------------

def gitea_push(commits: list[tuple[str, str, str]]) -> dict[str, Any]:
    person = {"name": "Gitea", "email": "someone@gitea.io", "username": "gitea"}
    return {
        "ref": "refs/heads/develop", "before": "28e1879d029cb852e4844d9c718537df08844e03", "after": commits[-1][0],
        "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879...bffeb74",
        "commits": [{"id": sha, "message": message, "url": f"http://localhost:3000/gitea/webhooks/commit/{sha}",
                     "author": person, "committer": person, "timestamp": when} for sha, when, message in commits],
        "repository": {"id": 140, "owner": {"id": 1, "login": "gitea", "full_name": "Gitea",
                                            "email": "someone@gitea.io", "username": "gitea"},
                       "name": "webhooks", "full_name": "gitea/webhooks", "private": False, "fork": False,
                       "html_url": "http://localhost:3000/gitea/webhooks", "default_branch": "master"},
        "pusher": person, "sender": person}


# -- PagerDuty ----------------------------------------------------------------------------------------

def pagerduty_event(event_type: str, event_id: str, occurred: str, created: str,
                    incident_id: str = "PGR0VU2", status: str = "triggered") -> dict[str, Any]:
    return {"event": {
        "id": event_id, "event_type": event_type, "resource_type": "incident", "occurred_at": occurred,
        "agent": {"html_url": "https://acme.pagerduty.com/users/PLH1HKV", "id": "PLH1HKV",
                  "self": "https://api.pagerduty.com/users/PLH1HKV", "summary": "Tenex Engineer",
                  "type": "user_reference"},
        "client": None,
        "data": {
            "id": incident_id, "type": "incident", "self": f"https://api.pagerduty.com/incidents/{incident_id}",
            "html_url": f"https://acme.pagerduty.com/incidents/{incident_id}", "number": 2, "status": status,
            "incident_key": "d3640fbd41094207a1c11e58e46b1662", "created_at": created,
            "title": "A little bump in the road",
            "service": {"html_url": "https://acme.pagerduty.com/services/PF9KMXH", "id": "PF9KMXH",
                        "self": "https://api.pagerduty.com/services/PF9KMXH", "summary": "API Service",
                        "type": "service_reference"},
            "assignees": [],
            "escalation_policy": {"id": "PGGG9PS", "summary": "Default", "type": "escalation_policy_reference"},
            "teams": [], "priority": {"id": "PSO75BM", "summary": "P1", "type": "priority_reference"},
            "urgency": "high", "conference_bridge": None, "resolve_reason": None}}}


# -- Alertmanager -----------------------------------------------------------------------------------

def alertmanager_group(status: str, starts: str, ends: str = "0001-01-01T00:00:00Z",
                       labels: dict[str, str] | None = None) -> dict[str, Any]:
    alert_labels = {"alertname": "ProbeFailure", "instance": "https://server.example.org", "job": "http_checks",
                    "severity": "critical", **(labels or {})}
    return {
        "receiver": "deploytrack", "status": status,
        "alerts": [{"status": status, "labels": alert_labels,
                    "annotations": {"description": "Instance https://server.example.org has been down for over 5m.",
                                    "summary": "BlackBox Probe Failure: https://server.example.org"},
                    "startsAt": starts, "endsAt": ends,
                    "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=probe_success+%3D%3D+0",
                    "fingerprint": "1a30ba71cca2921f"}],
        "groupLabels": {"alertname": "ProbeFailure"}, "commonLabels": alert_labels,
        "commonAnnotations": {"summary": "BlackBox Probe Failure: https://server.example.org"},
        "externalURL": "http://prometheus.example.org:9093", "version": "4",
        "groupKey": "{}/{severity=\"critical\"}:{alertname=\"ProbeFailure\"}", "truncatedAlerts": 0}


# -- Opsgenie -----------------------------------------------------------------------------------------

def opsgenie_alert(action: str, created_ms: int, updated_ns: int | None = None) -> dict[str, Any]:
    alert = {"alertId": "44f717bf-44bd-11c9-44c7-2d0cf1d07b23", "message": "Checkout latency above 2s",
             "tags": ["checkout"], "tinyId": "1791", "entity": "checkout", "alias": "checkout-latency",
             "createdAt": created_ms, "username": "john@example.com", "userId": "4d3b2b8e",
             "description": "p99 latency", "team": "", "responders": [], "teams": [], "actions": [],
             "details": {}, "priority": "P2", "source": "prometheus"}
    if updated_ns is not None:
        alert["updatedAt"] = updated_ns
    return {"action": action, "alert": alert, "source": {"name": "", "type": "web"},
            "integrationName": "deploytrack", "integrationId": "8ae25bd0-f5c4-4e86-8b2f-9dc4bc2c0a3a",
            "integrationType": "Webhook"}
