"""Webhook fields follow the APIs' rules through a real server: every time a hook records is held
to `earliest_timestamp` / `max_future_seconds`, text fields have the APIs' limits (refused, never
clipped), and every error names the field as the source sent it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from tests import hookdata as hd
from tests.conftest import query
from tests.dora import at, now_us

FUTURE_ISO = "2099-01-01T00:00:00Z"
PAST_ISO = "1990-01-01T00:00:00Z"


def post(server: Any, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    raw = body if isinstance(body, bytes) else hd.dumps(body)
    return httpx.post(server.url + path, content=raw, headers={"Content-Type": "application/json", **headers},
                      timeout=10)


def refused(resp: httpx.Response, field: str, words: str = "") -> None:
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["field"] == field, error
    assert words in error["message"], error


def stored(db: Any) -> tuple[object, ...]:
    return query(db, "SELECT (SELECT COUNT(*) FROM events), (SELECT COUNT(*) FROM commits), "
                     "(SELECT COUNT(*) FROM incidents), (SELECT COUNT(*) FROM incidents WHERE resolved_at IS NULL)")[0]


def github(server: Any, path: str, secret: str, event: str, body: Any, delivery: str = "d") -> httpx.Response:
    raw = hd.dumps(body)
    return post(server, path, raw, hd.github_headers(event, delivery, secret, raw))


def gitlab_time(us: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime(us // 1_000_000))


# -- times ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value, words", [("2099-01-01 00:00:00 +0000", "in the future"),
                                          ("1990-01-01 00:00:00 +0000", "earliest"), (5, "earliest"),
                                          ("5", "earliest")])
def test_gitlab_status_changed_at_is_bounded(live_server, db_path, value, words):
    path, secret, _ = hd.create_hook(db_path, "gitlab", "--product", "diaspora")
    body = {**hd.gitlab_deployment("success", gitlab_time(now_us())), "status_changed_at": value}
    resp = post(live_server, path, body, {"X-Gitlab-Event": "Deployment Hook", "X-Gitlab-Token": secret})
    refused(resp, "status_changed_at", words)
    assert stored(db_path) == (0, 0, 0, 0)


@pytest.mark.parametrize("value", [FUTURE_ISO, PAST_ISO])
def test_github_deployment_status_created_at_is_bounded(live_server, db_path, value):
    path, secret, _ = hd.create_hook(db_path, "github", "--product", "shop")
    refused(github(live_server, path, secret, "deployment_status", hd.github_deployment_status("success", 1, value)),
            "deployment_status.created_at")
    assert stored(db_path) == (0, 0, 0, 0)


def test_github_push_names_githubs_own_timestamp_field(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "github")
    for when, words in (("yesterday", "ISO 8601"), (FUTURE_ISO, "in the future"), (PAST_ISO, "earliest")):
        body = hd.github_push([(hd.SHA2, at(0, 0, 1), "first"), (hd.SHA, when, "second")])
        refused(github(live_server, path, secret, "push", body), "commits[1].timestamp", words)
    missing = hd.github_push([(hd.SHA, at(0, 0, 1), "x")])
    del missing["commits"][0]["timestamp"]
    refused(github(live_server, path, secret, "push", missing), "commits[0].timestamp", "required")
    assert stored(db_path) == (0, 0, 0, 0)


def pagerduty_sender(server: Any, db_path: Any) -> Callable[[Any], httpx.Response]:
    """A PagerDuty hook (product shop) and a function that sends it a signed event."""
    path, secret, _ = hd.create_hook(db_path, "pagerduty", "--secret", "pd-secret-for-fields", "--product", "shop")

    def send(body: Any) -> httpx.Response:
        raw = hd.dumps(body)
        return post(server, path, raw, {"X-PagerDuty-Signature": "v1=" + hd.hmac_hex(secret, raw)})

    return send


def test_pagerduty_times_are_bounded(live_server, db_path):
    send = pagerduty_sender(live_server, db_path)
    opened = at(0, 0, 10)
    refused(send(hd.pagerduty_event("incident.triggered", "e0", opened, PAST_ISO)), "event.data.created_at",
            "earliest")
    assert send(hd.pagerduty_event("incident.triggered", "e1", opened, opened)).status_code == 200
    for n, when in enumerate((FUTURE_ISO, PAST_ISO)):
        resp = send(hd.pagerduty_event("incident.resolved", f"r{n}", when, opened, status="resolved"))
        refused(resp, "event.occurred_at")
    assert stored(db_path) == (0, 0, 1, 1)  # the incident is still open


def test_opsgenie_times_are_bounded(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "opsgenie", "--environment", "production")
    created_ms = (now_us() - 600_000_000) // 1000
    bearer = {"Authorization": f"Bearer {secret}"}
    refused(post(live_server, path, hd.opsgenie_alert("Create", 631152000000), bearer), "alert.createdAt", "earliest")
    assert post(live_server, path, hd.opsgenie_alert("Create", created_ms), bearer).status_code == 200
    for updated in (4102444800000000000, 631152000000000000):  # 2100 and 1990, in nanoseconds
        refused(post(live_server, path, hd.opsgenie_alert("Close", created_ms, updated), bearer), "alert.updatedAt")
    assert stored(db_path) == (0, 0, 1, 1)


def test_alertmanager_times_are_bounded_and_named_as_sent(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "alertmanager")
    bearer = {"Authorization": f"Bearer {secret}"}
    refused(post(live_server, path, hd.alertmanager_group("firing", FUTURE_ISO), bearer), "alerts[0].startsAt",
            "in the future")
    starts = at(0, 0, 5)
    assert post(live_server, path, hd.alertmanager_group("firing", starts), bearer).status_code == 200
    refused(post(live_server, path, hd.alertmanager_group("resolved", starts, FUTURE_ISO), bearer),
            "alerts[0].endsAt", "in the future")
    assert stored(db_path) == (0, 0, 1, 1)


# -- field limits --------------------------------------------------------------------------------------


def test_github_deployment_fields_have_the_apis_limits(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "github", "--product", "shop")
    long_env = hd.github_deployment_status("success", 1, at(0, 0, 1), environment="e" * 5000)
    refused(github(live_server, path, secret, "deployment_status", long_env), "deployment_status.environment",
            "longer than 4096")
    refused(github(live_server, path, secret, "deployment_status",
                   hd.github_deployment_status("success", 1, at(0, 0, 1), sha="a" * 5000)), "deployment.sha",
            "longer than 4096")
    refused(github(live_server, path, secret, "deployment_status",
                   hd.github_deployment_status("success", 1, at(0, 0, 1), sha="a\u0000")), "deployment.sha", "NUL")
    creator = hd.github_deployment_status("success", 1, at(0, 0, 1))
    creator["deployment_status"]["creator"]["login"] = "x\u0000"
    refused(github(live_server, path, secret, "deployment_status", creator), "deployment_status.creator.login", "NUL")
    assert stored(db_path) == (0, 0, 0, 0)
    # What the APIs store in full, the hook stores in full: no clipping below their limits.
    env, sha = "staging-" + "e" * 300, "b" * 200
    resp = github(live_server, path, secret, "deployment_status",
                  hd.github_deployment_status("success", 2, at(0, 0, 2), environment=env, sha=sha))
    assert resp.status_code == 200, resp.text
    assert query(db_path, "SELECT environment_raw, scm_sha FROM events") == [(env, sha)]


def test_product_names_from_a_payload_are_not_clipped(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "github")
    name = "r" * 400  # once clipped to 256
    body = hd.github_deployment_status("success", 1, at(0, 0, 1))
    body["repository"].update(name=name, full_name="octo-org/" + name)
    assert github(live_server, path, secret, "deployment_status", body).status_code == 200
    assert query(db_path, "SELECT product, scm_repository FROM events") == [(name, "octo-org/" + name)]


def test_gitlab_fields_have_the_apis_limits(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "gitlab", "--product", "diaspora")
    headers = {"X-Gitlab-Event": "Deployment Hook", "X-Gitlab-Token": secret}
    when = gitlab_time(now_us() - 60_000_000)
    refused(post(live_server, path, hd.gitlab_deployment("success", when, environment="e" * 5000), headers),
            "environment", "longer than 4096")
    body = hd.gitlab_deployment("success", when)
    body["user"]["username"] = "root\u0000"
    refused(post(live_server, path, body, headers), "user.username", "NUL")
    push = hd.gitlab_push([(hd.SHA, at(0, 0, 1), "m")])
    push["project"]["path_with_namespace"] = "mike/" + "p" * 5000
    refused(post(live_server, path, push, {**headers, "X-Gitlab-Event": "Push Hook"}), "project.path_with_namespace",
            "longer than 4096")
    assert stored(db_path) == (0, 0, 0, 0)


def test_commit_messages_are_kept_in_full_up_to_the_commits_apis_limit_and_marked_clipped_past_it(live_server,
                                                                                                  db_path):
    path, secret, _ = hd.create_hook(db_path, "gitea")
    message = "Fix checkout\n\n" + "details " * 300  # 2,414 characters: once clipped to 1,000
    raw = hd.dumps(hd.gitea_push([(hd.SHA, at(0, 0, 1), message)]))
    headers = {"X-Gitea-Event": "push", "X-Gitea-Signature": hd.hmac_hex(secret, raw)}
    assert post(live_server, path, raw, headers).status_code == 200
    assert query(db_path, "SELECT message FROM commits") == [(message.strip(),)]
    # a squash merge's message can run past the limit: the push is kept (the forge would not send it again)
    raw = hd.dumps(hd.gitea_push([(hd.SHA2, at(0, 0, 2), "m" * 5000)]))
    headers = {"X-Gitea-Event": "push", "X-Gitea-Signature": hd.hmac_hex(secret, raw)}
    assert post(live_server, path, raw, headers).status_code == 200
    clipped = query(db_path, "SELECT message FROM commits WHERE sha = ?", (hd.SHA2,))[0][0]
    assert len(clipped) == 4096 and clipped.endswith("m [clipped]")
    raw = hd.dumps(hd.gitea_push([(hd.SHA2 + "\u0000", at(0, 0, 2), "m")]))
    headers = {"X-Gitea-Event": "push", "X-Gitea-Signature": hd.hmac_hex(secret, raw)}
    refused(post(live_server, path, raw, headers), "commits[0].id", "NUL")
    assert query(db_path, "SELECT COUNT(*) FROM commits") == [(2,)]


def test_incident_hooks_have_the_incident_apis_limits(live_server, db_path):
    send = pagerduty_sender(live_server, db_path)
    opened = at(0, 0, 10)
    long_title = hd.pagerduty_event("incident.triggered", "e1", opened, opened, incident_id="PLONG01")
    long_title["event"]["data"]["title"] = "t" * 5000
    assert send(long_title).status_code == 200  # a description: clipped with a mark, not refused
    assert query(db_path, "SELECT title FROM incidents") == [("t" * 4086 + " [clipped]",)]
    nul = hd.pagerduty_event("incident.triggered", "e2", opened, opened)
    nul["event"]["data"]["service"]["summary"] = "API\u0000"
    refused(send(nul), "event.data.service.summary", "NUL")
    title = "A little bump " + "b" * 2000  # once clipped to 1,000
    kept = hd.pagerduty_event("incident.triggered", "e3", opened, opened)
    kept["event"]["data"]["title"] = title
    assert send(kept).status_code == 200
    assert query(db_path, "SELECT title FROM incidents WHERE title LIKE 'A little%'") == [(title,)]

    am_path, am_secret, _ = hd.create_hook(db_path, "alertmanager")
    bearer = {"Authorization": f"Bearer {am_secret}"}
    service = "checkout-" + "s" * 400  # once clipped to 256
    labels = {"service": service, "environment": "prod", "note": "n" * 2000}
    group = hd.alertmanager_group("firing", opened, labels=labels)
    group["alerts"][0]["generatorURL"] = "http://prometheus:9090/graph?g0.expr=" + "q" * 5000  # a long PromQL
    assert post(live_server, am_path, group, bearer).status_code == 200
    assert query(db_path, "SELECT product, metadata FROM incidents WHERE product <> 'shop'")[0][0] == service
    stored = orjson.loads(query(db_path, "SELECT metadata FROM incidents WHERE product = ?", (service,))[0][0])
    assert stored["labels"]["note"] == "n" * 2000
    assert len(stored["url"]) == 4096 and stored["url"].endswith("q [clipped]")
    bad = hd.alertmanager_group("firing", opened, labels={"service": "x\u0000"})
    refused(post(live_server, am_path, bad, bearer), "alerts[0].labels.service", "NUL")
    bad = hd.alertmanager_group("firing", opened, labels={"service": "cart", "environment": "e" * 300})
    refused(post(live_server, am_path, bad, bearer), "alerts[0].labels.environment", "longer than 256")
    bad = hd.alertmanager_group("firing", opened, labels={"service": "cart", "severity": "s" * 300})
    refused(post(live_server, am_path, bad, bearer), "alerts[0].labels.severity", "longer than 256")

    og_path, og_secret, _ = hd.create_hook(db_path, "opsgenie")
    alert = hd.opsgenie_alert("Create", (now_us() - 60_000_000) // 1000)
    alert["alert"]["entity"] = "e" * 5000
    refused(post(live_server, og_path, alert, {"Authorization": f"Bearer {og_secret}"}), "alert.entity",
            "longer than 4096")
    assert query(db_path, "SELECT COUNT(*) FROM incidents") == [(3,)]


def test_names_from_payloads_are_held_to_the_apis_512_bytes(live_server, db_path):
    """Product, environment, SHA and ids become indexed names: past 512 bytes of UTF-8 a 400 names the field
    as the source sent it (PostgreSQL cannot index such an entry), below it they are stored whole."""
    wide = "é" * 257  # 514 bytes in UTF-8, 257 characters
    gh_path, gh_secret, _ = hd.create_hook(db_path, "github")
    body = hd.github_deployment_status("success", 1, at(0, 0, 1))
    body["repository"]["full_name"] = "octo-org/" + wide
    refused(github(live_server, gh_path, gh_secret, "deployment_status", body), "repository.full_name", "512 bytes")
    refused(github(live_server, gh_path, gh_secret, "deployment_status",
                   hd.github_deployment_status("success", 1, at(0, 0, 1), sha=wide)), "deployment.sha", "512 bytes")
    gl_path, gl_secret, _ = hd.create_hook(db_path, "gitlab", "--product", "diaspora")
    refused(post(live_server, gl_path, hd.gitlab_deployment("success", gitlab_time(now_us() - 60_000_000),
                                                            environment=wide),
                 {"X-Gitlab-Event": "Deployment Hook", "X-Gitlab-Token": gl_secret}), "environment", "512 bytes")
    send = pagerduty_sender(live_server, db_path)
    event = hd.pagerduty_event("incident.triggered", "e1", at(0, 0, 10), at(0, 0, 10))
    event["event"]["data"]["service"]["summary"] = wide
    refused(send(event), "event.data.service.summary", "512 bytes")
    og_path, og_secret, _ = hd.create_hook(db_path, "opsgenie")
    alert = hd.opsgenie_alert("Create", (now_us() - 60_000_000) // 1000)
    alert["alert"]["entity"] = wide
    refused(post(live_server, og_path, alert, {"Authorization": f"Bearer {og_secret}"}), "alert.entity", "512 bytes")
    am_path, am_secret, _ = hd.create_hook(db_path, "alertmanager")
    group = hd.alertmanager_group("firing", at(0, 0, 10), labels={"service": wide})
    refused(post(live_server, am_path, group, {"Authorization": f"Bearer {am_secret}"}), "alerts[0].labels.service",
            "512 bytes")
    assert stored(db_path) == (0, 0, 0, 0)
