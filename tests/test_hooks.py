"""Inbound webhooks through a real server: each source's documented payloads, good and bad
signatures, idempotent redelivery, ignored events, size limits, and what lands in the database."""

from __future__ import annotations

import time
from urllib.parse import quote, urlencode

import httpx2 as httpx
import pytest

from deploytrack.hooks.endpoint import SOURCES
from tests import hookdata as hd
from tests.conftest import REPO, LiveServer, query, run_cli
from tests.dora import at, now_us


def post(server, path: str, raw: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(server.url + path, content=raw, headers=headers, timeout=10)


def count(db, table: str) -> int:
    return int(query(db, f"SELECT COUNT(*) FROM {table}")[0][0])


def test_github_deployment_status_drives_the_deployment_lifecycle(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "github", "--product", "shop")
    ping = hd.dumps({"zen": "Keep it logically awesome.", "hook_id": 1, "hook": {"type": "Repository"}})
    resp = post(live_server, path, ping, hd.github_headers("ping", "d-ping", secret, ping))
    assert resp.status_code == 200 and resp.json()["status"] == "ignored"
    for n, state in enumerate(("in_progress", "success")):
        raw = hd.dumps(hd.github_deployment_status(state, 100 + n, at(0, 0, 10 + n)))
        resp = post(live_server, path, raw, hd.github_headers("deployment_status", f"d-{n}", secret, raw))
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"] == "accepted" and len(resp.json()["events"]) == 1
    events = query(db_path, "SELECT dialect, product, environment, status, status_raw, scm_sha, invoke_id, actor, "
                            "build_url FROM events ORDER BY seq")
    assert events == [
        ("github", "shop", "production", "started", "in_progress", hd.SHA, "145988746", "octocat",
         "https://ci.example.com/deploy/42/log"),
        ("github", "shop", "production", "completed", "success", hd.SHA, "145988746", "octocat",
         "https://ci.example.com/deploy/42/log")]
    deployments = query(db_path, "SELECT product, environment, version, status, finished_at - started_at "
                                 "FROM deployments")
    assert deployments == [("shop", "production", hd.SHA[:12], "completed", 60_000_000)]


def test_github_signatures_are_checked_and_nothing_is_stored_without_one(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "github", "--product", "shop")
    raw = hd.dumps(hd.github_deployment_status("success", 7, at(0, 0, 5)))
    good = hd.github_headers("deployment_status", "d-1", secret, raw)
    for headers in ({**good, "X-Hub-Signature-256": "sha256=" + hd.hmac_hex("wrong-secret", raw)},
                    {k: v for k, v in good.items() if k != "X-Hub-Signature-256"},
                    {**good, "X-Hub-Signature-256": "sha1=" + hd.hmac_hex(secret, raw)}):
        resp = post(live_server, path, raw, headers)
        assert resp.status_code == 401 and resp.json()["error"]["code"] == "unauthorized"
    tampered = raw.replace(b'"success"', b'"failure"')
    assert post(live_server, path, tampered, good).status_code == 401
    assert post(live_server, path.rsplit("/", 1)[0] + "/999", raw, good).status_code == 401
    assert count(db_path, "events") == 0
    assert post(live_server, path, raw, good).status_code == 200
    assert count(db_path, "events") == 1


def test_a_redelivery_records_nothing_and_answers_the_same(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "github", "--product", "shop")
    raw = hd.dumps(hd.github_deployment_status("failure", 9, at(0, 0, 5)))
    headers = hd.github_headers("deployment_status", "72d3162e-cc78-11e3-81ab-4c9367dc0958", secret, raw)
    first = post(live_server, path, raw, headers).json()
    again = post(live_server, path, raw, headers).json()
    assert first["status"] == "accepted" and again["status"] == "duplicate"
    assert again["events"] == first["events"]
    assert count(db_path, "events") == 1
    # A new delivery id for the same deployment status (GitHub's "redeliver" of an old payload) stores nothing either.
    other = post(live_server, path, raw, hd.github_headers("deployment_status", "d-other", secret, raw)).json()
    assert other["events"] == first["events"] and count(db_path, "events") == 1


def test_github_push_records_commits_for_lead_time(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "github")
    raw = hd.dumps(hd.github_push([(hd.SHA2, "2026-01-10T09:00:00+01:00", "Fix checkout\n\nlong body"),
                                   (hd.SHA, "2026-01-10T10:30:00Z", "Add coupons")]))
    resp = post(live_server, path, raw, hd.github_headers("push", "d-push", secret, raw))
    assert resp.status_code == 200 and resp.json()["commits"] == 2
    rows = query(db_path, "SELECT repository, sha, committed_at, message, author FROM commits ORDER BY committed_at")
    assert rows == [("octo-org/hello-world", hd.SHA2, 1768032000_000000, "Fix checkout\n\nlong body", "Mona Lisa"),
                    ("octo-org/hello-world", hd.SHA, 1768041000_000000, "Add coupons", "Mona Lisa")]
    # The form content type GitHub also offers carries the same JSON in a `payload` field.
    form = urlencode({"payload": hd.dumps(hd.github_push([(hd.SHA2, "2026-01-11T09:00:00Z", "amend")])).decode()})
    headers = {**hd.github_headers("push", "d-form", secret, form.encode()),
               "Content-Type": "application/x-www-form-urlencoded"}
    assert post(live_server, path, form.encode(), headers).json()["commits"] == 1
    assert query(db_path, "SELECT message FROM commits WHERE sha = ?", (hd.SHA2,)) == [("amend",)]


def test_product_from_the_repository_through_the_mapping_setting(db_path, token, tmp_path):
    config = tmp_path / "deploytrack.toml"
    config.write_text('[hook_products]\n"octo-org/hello-world" = "storefront"\n')
    server = LiveServer(db_path, "--config", str(config)).start()
    try:
        path, secret, _ = hd.create_hook(db_path, "github")
        raw = hd.dumps(hd.github_deployment_status("success", 1, at(0, 0, 5)))
        assert post(server, path, raw, hd.github_headers("deployment_status", "d", secret, raw)).status_code == 200
        raw = hd.dumps({**hd.github_deployment_status("success", 2, at(0, 0, 6), deployment_id=2),
                        "repository": {**hd.github_repository(), "full_name": "octo-org/other", "name": "other"}})
        assert post(server, path, raw, hd.github_headers("deployment_status", "e", secret, raw)).status_code == 200
    finally:
        server.stop()
    assert query(db_path, "SELECT product FROM events ORDER BY seq") == [("storefront",), ("other",)]


def deep(levels: int) -> dict:
    value: dict = {}
    for _ in range(levels):
        value = {"a": value}
    return value


def _with_payload(body: dict, payload: dict) -> dict:
    body["deployment"]["payload"] = payload
    return body


def test_bad_input_with_a_good_signature_is_a_400_naming_the_field(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "github", "--product", "shop")
    for raw, field in ((b"{not json", None),
                       (hd.dumps(hd.github_deployment_status("success", 1, "yesterday-ish")),
                        "deployment_status.created_at"),
                       (hd.dumps({**hd.github_deployment_status("success", 1, at(0)), "deployment": "x"}),
                        "deployment"),
                       (hd.dumps(_with_payload(hd.github_deployment_status("success", 1, at(0)), deep(40))),
                        "deployment.payload")):
        resp = post(live_server, path, raw, hd.github_headers("deployment_status", "d", secret, raw))
        assert resp.status_code == 400, resp.text
        if field:
            assert resp.json()["error"]["field"] == field
    bad_push = hd.dumps({**hd.github_push([(hd.SHA, "2026-01-10T10:30:00Z", "x")]), "commits": [{"id": hd.SHA}]})
    resp = post(live_server, path, bad_push, hd.github_headers("push", "p", secret, bad_push))
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "commits[0].timestamp"  # GitHub's name
    assert count(db_path, "events") == 0 and count(db_path, "commits") == 0


def test_gitlab_deployment_and_push_events(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "gitlab", "--product", "diaspora")
    headers = {"X-Gitlab-Event": "Deployment Hook", "X-Gitlab-Token": secret, "Content-Type": "application/json"}
    started = now_us() // 1_000_000 - 3600
    when = [time.strftime("%Y-%m-%d %H:%M:%S +0000", time.gmtime(t)) for t in (started, started + 90)]
    for n, status in enumerate(("running", "success")):
        raw = hd.dumps(hd.gitlab_deployment(status, when[n]))
        resp = post(live_server, path, raw, {**headers, "X-Gitlab-Event-UUID": f"uuid-{n}"})
        assert resp.status_code == 200, resp.text
    assert post(live_server, path, raw, {**headers, "X-Gitlab-Token": "nope"}).status_code == 401
    assert post(live_server, path, raw, {k: v for k, v in headers.items() if k != "X-Gitlab-Token"}).status_code == 401
    events = query(db_path, "SELECT dialect, status, status_raw, scm_sha, invoke_id, actor FROM events ORDER BY seq")
    assert events == [("gitlab", "started", "running", hd.SHA, "15", "root"),
                      ("gitlab", "completed", "success", hd.SHA, "15", "root")]
    assert query(db_path, "SELECT status, finished_at - started_at FROM deployments") == [("completed", 90_000_000)]
    raw = hd.dumps(hd.gitlab_push([(hd.SHA2, "2011-12-12T14:27:31+02:00", "fixed readme")]))
    resp = post(live_server, path, raw, {**headers, "X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "p"})
    assert resp.json()["commits"] == 1
    assert query(db_path, "SELECT repository, committed_at, author FROM commits") == [
        ("mike/diaspora", 1323692851_000000, "Jordi Mallach")]
    issue = hd.dumps({"object_kind": "issue", "event_type": "issue"})
    resp = post(live_server, path, issue, {**headers, "X-Gitlab-Event": "Issue Hook"})
    assert resp.status_code == 200 and resp.json()["status"] == "ignored"


def test_gitlab_times_in_the_utc_form_ruby_writes(live_server, db_path):
    """GitLab writes a time in a UTC zone (its default, and GitLab.com's) as `2026-11-29 19:55:00 UTC`,
    elsewhere as `... +0200`: both are read, in deployment and push events."""
    path, secret, _ = hd.create_hook(db_path, "gitlab", "--product", "diaspora")
    headers = {"X-Gitlab-Event": "Deployment Hook", "X-Gitlab-Token": secret, "Content-Type": "application/json"}
    started = now_us() // 1_000_000 - 3600
    forms = (("running", started, "%Y-%m-%d %H:%M:%S UTC"), ("success", started + 90, "%Y-%m-%d %H:%M:%S +0000"))
    for n, (status, when, form) in enumerate(forms):
        raw = hd.dumps(hd.gitlab_deployment(status, time.strftime(form, time.gmtime(when))))
        resp = post(live_server, path, raw, {**headers, "X-Gitlab-Event-UUID": f"uuid-{n}"})
        assert resp.status_code == 200, resp.text
    assert query(db_path, "SELECT status, started_at, finished_at - started_at FROM deployments") == [
        ("completed", started * 1_000_000, 90_000_000)]
    raw = hd.dumps(hd.gitlab_push([(hd.SHA2, "2011-12-12 12:27:31 UTC", "fixed readme")]))
    resp = post(live_server, path, raw, {**headers, "X-Gitlab-Event": "Push Hook", "X-Gitlab-Event-UUID": "p"})
    assert resp.status_code == 200, resp.text
    assert query(db_path, "SELECT committed_at FROM commits") == [(1323692851_000000,)]
    bad = hd.dumps(hd.gitlab_deployment("failed", "2026-11-29 19:55:00 CET"))
    resp = post(live_server, path, bad, {**headers, "X-Gitlab-Event-UUID": "bad"})
    assert resp.status_code == 400 and resp.json()["error"]["field"] == "status_changed_at"


@pytest.mark.parametrize("source, prefix", [("gitea", "Gitea"), ("forgejo", "Forgejo")])
def test_gitea_and_forgejo_pushes(live_server, db_path, source, prefix):
    path, secret, _ = hd.create_hook(db_path, source)
    raw = hd.dumps(hd.gitea_push([(hd.SHA, "2017-03-13T13:52:11-04:00", "Webhooks Yay!")]))
    headers = {f"X-{prefix}-Event": "push", f"X-{prefix}-Delivery": "f6266f16-1bf3-46a5-9ea4-602e06ead473",
               "Content-Type": "application/json"}
    forged = {**headers, f"X-{prefix}-Signature": hd.hmac_hex("x" * 12, raw)}
    assert post(live_server, path, raw, forged).status_code == 401
    resp = post(live_server, path, raw, {**headers, f"X-{prefix}-Signature": hd.hmac_hex(secret, raw)})
    assert resp.status_code == 200 and resp.json()["commits"] == 1
    assert query(db_path, "SELECT repository, sha, committed_at FROM commits") == [
        ("gitea/webhooks", hd.SHA, 1489427531_000000)]


def test_pagerduty_incident_lifecycle(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "pagerduty", "--secret", "pd-generated-secret-123", "--product", "shop")
    assert secret == "pd-generated-secret-123"
    opened, resolved = at(0, 0, 10), at(0, 0, 40)

    def send(body, sign_with=secret, extra=""):
        raw = hd.dumps(body)
        signature = f"v1={hd.hmac_hex('rotated-old-secret', raw)},v1={hd.hmac_hex(sign_with, raw)}{extra}"
        return post(live_server, path, raw, {"X-PagerDuty-Signature": signature, "Content-Type": "application/json"})

    ping = {"event": {"id": "01BZ", "event_type": "pagey.ping", "resource_type": "pagey", "occurred_at": opened,
                      "data": {"message": "Hello from your friend Pagey!", "type": "ping"}}}
    assert send(ping).json()["status"] == "ignored"
    triggered = hd.pagerduty_event("incident.triggered", "5ac64822-4adc-4fda-ade0-410becf0de4f", opened, opened)
    assert send(triggered, sign_with="not-the-secret").status_code == 401
    assert count(db_path, "incidents") == 0
    first = send(triggered).json()
    assert first["status"] == "accepted" and len(first["incidents"]) == 1
    assert send(triggered).json()["status"] == "duplicate"
    ack = hd.pagerduty_event("incident.acknowledged", "ack-1", opened, opened, status="acknowledged")
    assert send(ack).json()["incidents"] == first["incidents"]
    done = hd.pagerduty_event("incident.resolved", "res-1", resolved, opened, status="resolved")
    assert send(done).json()["incidents"] == first["incidents"]
    rows = query(db_path, "SELECT product, title, severity, status, resolved_at - opened_at FROM incidents")
    assert rows == [("shop", "A little bump in the road", "P1", "resolved", 30 * 60 * 1_000_000)]


def test_pagerduty_service_name_is_the_product_without_one(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "pagerduty", "--secret", "another-pd-secret")
    raw = hd.dumps(hd.pagerduty_event("incident.triggered", "e1", at(0, 0, 1), at(0, 0, 1)))
    assert post(live_server, path, raw, {"X-PagerDuty-Signature": "v1=" + hd.hmac_hex(secret, raw)}).status_code == 200
    assert query(db_path, "SELECT product FROM incidents") == [("API Service",)]


def test_alertmanager_alerts_become_incidents_with_labels_for_product_and_environment(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "alertmanager")
    starts, ends = at(0, 0, 5), at(0, 0, 25)
    labels = {"service": "checkout", "environment": "prod"}
    firing = hd.dumps(hd.alertmanager_group("firing", starts, labels=labels))
    bearer = {"Authorization": f"Bearer {secret}", "Content-Type": "application/json"}
    assert post(live_server, path, firing, {"Authorization": "Bearer wrong"}).status_code == 401
    assert post(live_server, path, firing, {}).status_code == 401
    first = post(live_server, path, firing, bearer).json()
    assert first["status"] == "accepted"
    assert post(live_server, path, firing, bearer).json()["status"] == "duplicate"  # Alertmanager's repeat
    resolved = hd.dumps(hd.alertmanager_group("resolved", starts, ends, labels=labels))
    assert post(live_server, path, resolved, bearer).json()["incidents"] == first["incidents"]
    rows = query(db_path, "SELECT product, environment, title, severity, status, resolved_at - opened_at "
                          "FROM incidents")
    assert rows == [("checkout", "production", "BlackBox Probe Failure: https://server.example.org", "critical",
                     "resolved", 20 * 60 * 1_000_000)]


def test_alert_labels_are_settings(db_path, token):
    server = LiveServer(db_path, "--alert-product-label", "team", "--alert-environment-label", "env").start()
    try:
        path, secret, _ = hd.create_hook(db_path, "alertmanager")
        raw = hd.dumps(hd.alertmanager_group("firing", at(0, 0, 5), labels={"team": "payments", "env": "staging"}))
        assert post(server, path, raw, {"Authorization": f"Bearer {secret}"}).status_code == 200
    finally:
        server.stop()
    assert query(db_path, "SELECT product, environment FROM incidents") == [("payments", "staging")]


def test_opsgenie_secret_in_the_url_or_a_bearer_header(live_server, db_path):
    path, secret, _ = hd.create_hook(db_path, "opsgenie", "--environment", "production")
    created_ms = (now_us() - 600_000_000) // 1000
    raw = hd.dumps(hd.opsgenie_alert("Create", created_ms))
    assert post(live_server, path + "?secret=wrong", raw, {}).status_code == 401
    assert post(live_server, path, raw, {}).status_code == 401
    assert post(live_server, path + "?" + urlencode({"secret": secret}), raw, {}).json()["status"] == "accepted"
    closed_ns = (created_ms + 300_000) * 1_000_000
    raw = hd.dumps(hd.opsgenie_alert("Close", created_ms, closed_ns))
    assert post(live_server, path, raw, {"Authorization": f"Bearer {secret}"}).status_code == 200
    note = hd.dumps(hd.opsgenie_alert("AddNote", created_ms))
    assert post(live_server, path, note, {"Authorization": f"Bearer {secret}"}).json()["status"] == "ignored"
    rows = query(db_path, "SELECT product, environment, title, severity, status, resolved_at - opened_at "
                          "FROM incidents")
    assert rows == [("checkout", "production", "Checkout latency above 2s", "P2", "resolved", 300 * 1_000_000)]


def test_a_secret_in_the_url_is_kept_out_of_the_access_log(db_path, token):
    server = LiveServer(db_path, "--log-level", "debug").start()
    try:
        path, secret, _ = hd.create_hook(db_path, "opsgenie", "--product", "shop")
        raw = hd.dumps(hd.opsgenie_alert("Create", (now_us() - 600_000_000) // 1000))
        assert post(server, path + "?secret=" + secret, raw, {}).status_code == 200
    finally:
        server.stop()
    log = server.log.read_text()
    assert path in log and "secret=[redacted]" in log and secret not in log


def test_hooks_have_their_own_body_limit(db_path, token):
    server = LiveServer(db_path, "--max-body-bytes", "4096", "--hook-max-body-bytes", "200000").start()
    try:
        path, secret, _ = hd.create_hook(db_path, "github")
        commits = [(f"{i:040x}", "2026-01-10T10:30:00Z", "m" * 500) for i in range(100)]  # ~80 KB: over max_body_bytes
        raw = hd.dumps(hd.github_push(commits))
        assert 4096 < len(raw) < 200000
        assert post(server, path, raw, hd.github_headers("push", "big", secret, raw)).json()["commits"] == 100
        huge = hd.dumps(hd.github_push(commits * 3))
        resp = post(server, path, huge, hd.github_headers("push", "huge", secret, huge))
        assert resp.status_code == 413 and resp.json()["error"]["code"] == "payload_too_large"
    finally:
        server.stop()


def test_revoked_hooks_and_unknown_sources(live_server, db_path):
    path, secret, hook_id = hd.create_hook(db_path, "github", "--product", "shop")
    code, out = run_cli("hook", "list", "--db", str(db_path))
    assert code == 0 and path in out and secret not in out and "active" in out
    assert run_cli("hook", "revoke", str(hook_id), "--db", str(db_path))[0] == 0
    raw = hd.dumps(hd.github_deployment_status("success", 1, at(0)))
    assert post(live_server, path, raw, hd.github_headers("deployment_status", "d", secret, raw)).status_code == 401
    assert "revoked" in run_cli("hook", "list", "--db", str(db_path))[1]
    resp = post(live_server, "/hooks/bitbucket/1", raw, {})
    assert resp.status_code == 404 and resp.json()["error"]["field"] == "source"
    assert count(db_path, "events") == 0


def test_a_hook_secret_is_not_an_api_token(live_server, db_path):
    _, secret, _ = hd.create_hook(db_path, "alertmanager", "--product", "shop")
    resp = httpx.post(live_server.url + "/deployment-events/", headers={"Authorization": f"Bearer {secret}"},
                      json={"product_name": "shop", "version": "1", "environment_name": "production",
                            "status": "success"})
    assert resp.status_code == 403


def test_the_bare_source_path_finds_the_hook_by_its_secret(live_server, db_path):
    hd.create_hook(db_path, "alertmanager", "--product", "one")
    _, secret, _ = hd.create_hook(db_path, "alertmanager", "--product", "two")
    raw = hd.dumps(hd.alertmanager_group("firing", at(0, 0, 5)))
    assert post(live_server, "/hooks/alertmanager", raw, {"Authorization": f"Bearer {secret}"}).status_code == 200
    assert query(db_path, "SELECT product FROM incidents") == [("two",)]


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_source_has_its_page(source):
    module = SOURCES[source]
    page = REPO / "docs" / "hooks" / f"{module.NAME}.md"
    text = page.read_text()
    assert "## Where to click" in text and "## What is mapped" in text
    assert f"deploytrack hook create {source}" in text
    assert f"[{module.NAME}.md]({module.NAME}.md)" in (REPO / "docs" / "hooks" / "README.md").read_text()


def test_a_hook_source_sent_in_the_path_never_becomes_a_prometheus_label(live_server, db_path):
    # without a token: a label taken from the path would let anyone write lines into the scrape, and add a
    # series per name sent
    for source in ('q"} 0\nfake_up{job="', "nosuch", "GITHUB"):
        resp = httpx.post(live_server.url + "/hooks/" + quote(source, safe=""), content=b"{}", timeout=10)
        assert resp.status_code == 404, resp.text
    path, secret, _ = hd.create_hook(db_path, "github", "--product", "shop")
    raw = hd.dumps(hd.github_deployment_status("success", 7, at(0, 0, 5)))
    headers = {**hd.github_headers("deployment_status", "d-1", secret, raw), "X-Hub-Signature-256": "sha256=00"}
    assert post(live_server, path, raw, headers).status_code == 401
    rejected = [line for line in httpx.get(live_server.url + "/metrics").text.splitlines()
                if not line.startswith("#") and "rejected" in line or "fake_up" in line]
    assert rejected == ['deploytrack_requests_rejected_total{dialect="hook:github",status="401"} 1',
                        'deploytrack_requests_rejected_total{dialect="hook:unknown",status="404"} 3']
