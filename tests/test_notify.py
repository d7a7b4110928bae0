"""Notifications out, through a real server and a receiver on 127.0.0.1: what is announced, in
which shape, retries with backoff, nothing lost across a kill, and a dead receiver never slows ingestion."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from deploytrack.cli.main import main as cli_main
from tests import hookdata as hd
from tests.conftest import LiveServer, auth, free_port, query, run_cli
from tests.dora import at


class Receiver:
    """An incoming-webhook endpoint on 127.0.0.1 that records what it is sent."""

    def __init__(self, port: int | None = None, statuses: list[int] | None = None) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.statuses = list(statuses or [])
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("content-length", "0")))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if status == 200:
                    receiver.bodies.append(orjson.loads(raw))
                self.send_response(status)
                self.send_header("content-length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/XXXX"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, n: int, timeout: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(self.bodies) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(self.bodies) >= n, self.bodies
        return self.bodies


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def notifying(db_path: Any, url: str, *extra: str) -> LiveServer:
    return LiveServer(db_path, "--notify-urls", url, "--notify-interval", "0.1", "--notify-retry-seconds", "0.2",
                      *extra).start()


def deploy(server: LiveServer, token: str, version: str, status: str, env: str = "production", **extra: Any) -> None:
    body = {"product_name": "shop", "version": version, "environment_name": env, "status": status, **extra}
    resp = httpx.post(server.url + "/deployment-events/", headers=auth(token), json=body, timeout=10)
    assert resp.status_code == 200, resp.text


def wait_until(check: Callable[[], bool], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_failures_rollbacks_and_incidents_are_announced_in_slack_shape(db_path, token, receiver):
    server = notifying(db_path, receiver.url)
    try:
        deploy(server, token, "1", "failed", env="staging")  # not production: not announced
        deploy(server, token, "2", "failed", deployed_by="alice")
        receiver.wait_for(1)
        deploy(server, token, "3", "success", extra_metadata={"deployment_type": "rollback"})
        receiver.wait_for(2)
        created = httpx.post(server.url + "/api/v1/incidents", headers=auth(token), timeout=10,
                             json={"product": "shop", "title": "<!channel> db & cache down", "severity": "sev1",
                                   "opened_at": at(0, 0, 1)}).json()
        receiver.wait_for(3)
        resp = httpx.patch(f"{server.url}/api/v1/incidents/{created['id']}", headers=auth(token), timeout=10,
                           json={"resolved_at": at(0, 0, 31)})
        assert resp.status_code == 200
        texts = [b["text"] for b in receiver.wait_for(4)]
    finally:
        server.stop()
    dep = dict(query(db_path, "SELECT version, id FROM deployments"))
    assert texts[0] == (f"Deployment failed: shop 2 to production (by alice). "
                        f"<{server.url}/deployments/{dep['2']}|deployment {dep['2']}>")
    assert texts[1] == (f"Rollback deployed: shop 3 to production. "
                        f"<{server.url}/deployments/{dep['3']}|deployment {dep['3']}>")
    assert texts[2].startswith("Incident opened: [sev1] &lt;!channel&gt; db &amp; cache down (shop). <")
    assert texts[3].startswith("Incident resolved after 30m: &lt;!channel&gt; db &amp; cache down (shop). <")
    assert all(set(b) == {"text"} for b in receiver.bodies) and len(receiver.bodies) == 4
    assert query(db_path, "SELECT COUNT(*) FROM notify_outbox WHERE sent_at IS NOT NULL") == [(4,)]


def test_a_failed_deployment_arriving_by_webhook_is_announced(db_path, token, receiver):
    server = notifying(db_path, receiver.url, "--notify-format", "json")
    try:
        path, secret, _ = hd.create_hook(db_path, "github", "--product", "shop")
        raw = hd.dumps(hd.github_deployment_status("failure", 1, at(0, 0, 5)))
        resp = httpx.post(server.url + path, content=raw, timeout=10,
                          headers=hd.github_headers("deployment_status", "d-1", secret, raw))
        assert resp.status_code == 200, resp.text
        body = receiver.wait_for(1)[0]
    finally:
        server.stop()
    assert body["event"] == "deployment_failed"
    assert {k: body["data"][k] for k in ("product", "environment", "version", "status", "actor")} == {
        "product": "shop", "environment": "production", "version": hd.SHA[:12], "status": "failed",
        "actor": "octocat"}


def test_a_rollback_marked_in_a_github_deployment_payload_is_labelled_and_announced(db_path, token, receiver):
    """docs/hooks/github.md: `deployment.payload` holding `"deployment_type": "rollback"` (an object, or the
    same as the JSON text GitHub keeps when the deployment was created with one) marks a rollback."""
    server = notifying(db_path, receiver.url, "--notify-format", "json")
    path, secret, _ = hd.create_hook(db_path, "github", "--product", "shop")
    payloads = ({}, {"deployment_type": "rollback"}, '{"deployment_type": "rollback"}', "not json", ["rollback"])
    try:
        for n, payload in enumerate(payloads):
            body = hd.github_deployment_status("success", n, at(0, 0, 5 + n), deployment_id=n + 1, sha=f"{n + 1}" * 40)
            body["deployment"]["payload"] = payload
            raw = hd.dumps(body)
            resp = httpx.post(server.url + path, content=raw, timeout=10,
                              headers=hd.github_headers("deployment_status", f"d-{n}", secret, raw))
            assert resp.status_code == 200, resp.text
        bodies = receiver.wait_for(2)
        listed = httpx.get(server.url + "/api/v1/deployments?product=shop", headers=auth(token), timeout=10).json()
        cfr = httpx.get(server.url + "/api/v1/metrics?product=shop&window=7", headers=auth(token),
                        timeout=10).json()["latest"]["change_failure_rate"]
        time.sleep(0.5)  # several more rounds: no other rollback may come
    finally:
        server.stop()
    labels = {d["version"]: d["label"] for d in listed["deployments"]}
    assert labels == {f"{n + 1}" * 12: label for n, label in enumerate((None, "rollback", "rollback", None, None))}
    assert [b["event"] for b in receiver.bodies] == ["rollback", "rollback"]
    assert sorted(b["data"]["version"] for b in bodies) == ["2" * 12, "3" * 12]
    assert (cfr["failures"], cfr["data_points"]) == (2, 5)


def test_generic_json_and_the_choice_of_events(db_path, token, receiver):
    server = notifying(db_path, receiver.url, "--notify-format", "json", "--notify-events", "incident_opened")
    try:
        deploy(server, token, "1", "failed")
        resp = httpx.post(server.url + "/api/v1/incidents", headers=auth(token), timeout=10,
                          json={"product": "shop", "title": "checkout down", "environment": "prod"})
        assert resp.status_code == 201
        body = receiver.wait_for(1)[0]
        time.sleep(0.5)  # several more rounds: nothing else may come
    finally:
        server.stop()
    assert len(receiver.bodies) == 1
    assert body["event"] == "incident_opened" and body["source"] == "deploytrack"
    assert body["data"]["incident_id"] == resp.json()["id"] and body["data"]["environment"] == "production"
    assert body["text"].startswith("Incident opened: checkout down (shop, production). incident ")


def test_a_failing_receiver_is_retried_with_backoff(db_path, token):
    receiver = Receiver(statuses=[500, 503])
    server = notifying(db_path, receiver.url)
    try:
        deploy(server, token, "1", "failed")
        receiver.wait_for(1)
    finally:
        server.stop()
        receiver.close()
    [(attempts, error, sent, created)] = query(
        db_path, "SELECT attempts, last_error, sent_at, created_at FROM notify_outbox")
    assert attempts == 3 and error is None and sent is not None
    assert sent - created >= 600_000  # waited 0.2 s, then 0.4 s, between the three tries


def test_pending_notifications_are_sent_after_a_kill(db_path, token):
    port = free_port()  # nothing listens here yet: the receiver is down
    url = f"http://127.0.0.1:{port}/hook"
    server = notifying(db_path, url)
    deploy(server, token, "1", "failed")
    wait_until(lambda: query(db_path, "SELECT attempts FROM notify_outbox")[:1] not in ([], [(0,)]))
    assert server.stop(signal.SIGKILL) != 0
    assert query(db_path, "SELECT sent_at FROM notify_outbox") == [(None,)]
    receiver = Receiver(port=port)
    server = notifying(db_path, url)
    try:
        bodies = receiver.wait_for(1)
        time.sleep(0.5)
    finally:
        server.stop()
        receiver.close()
    assert len(bodies) == 1 and bodies[0]["text"].startswith("Deployment failed: shop 1 to production.")
    assert query(db_path, "SELECT COUNT(*) FROM notify_outbox WHERE sent_at IS NOT NULL") == [(1,)]


def test_a_dead_receiver_never_slows_ingestion(db_path, token):
    with socket.socket() as dead:
        dead.bind(("127.0.0.1", 0))
        dead.listen(64)  # connections complete in the kernel's backlog; nothing ever answers
        url = f"http://127.0.0.1:{dead.getsockname()[1]}/hook"
        server = notifying(db_path, url, "--notify-timeout", "60")
        try:
            deploy(server, token, "0", "failed")
            wait_until(lambda: query(db_path, "SELECT COUNT(*) FROM notify_outbox")[0][0] == 1)
            time.sleep(0.3)  # the sender is now waiting on the receiver
            started = time.monotonic()
            for n in range(1, 11):
                deploy(server, token, str(n), "failed")
            elapsed = time.monotonic() - started
            # New notifications are still queued while the first waits on the receiver.
            wait_until(lambda: query(db_path, "SELECT COUNT(*) FROM notify_outbox")[0][0] == 11)
        finally:
            server.stop()
    assert elapsed < 10, elapsed  # far below the 60 s the sender waits on the receiver
    assert query(db_path, "SELECT COUNT(*) FROM notify_outbox WHERE sent_at IS NOT NULL") == [(0,)]
    assert query(db_path, "SELECT COUNT(*) FROM events") == [(11,)]


def test_a_metric_changing_band_is_announced(db_path, token, receiver):
    server = notifying(db_path, receiver.url, "--notify-format", "json", "--notify-events", "band_changed")
    try:
        for days_ago in (5, 4, 3, 2, 1):  # the 30-day window gains its fifth deploy day yesterday: medium -> high
            deploy(server, token, str(days_ago), "success", timestamp=at(days_ago, 10))
        code, out = run_cli("metrics", "recompute", "--db", str(server.db))
        assert code == 0, out
        bodies = receiver.wait_for(1)
        time.sleep(0.5)
    finally:
        server.stop()
    changes = {(b["data"]["scope"], b["data"]["metric"], b["data"]["from"], b["data"]["to"]) for b in bodies}
    assert changes == {("overall", "deployment_frequency", "medium", "high"),
                       ("product", "deployment_frequency", "medium", "high")}
    assert all(b["event"] == "band_changed" for b in bodies)
    assert any(b["text"] == "Deployment frequency for shop (30 days) moved from medium to high. DORA dashboard: "
               f"{server.url}/dora" for b in bodies)


def test_notification_settings_are_checked_up_front(tmp_path, capsys):
    for flags, message in ((["--notify-urls", "ftp://example"], "not an http(s) URL"),
                           (["--notify-events", "deployment_failed,coffee"], "unknown coffee"),
                           (["--notify-format", "xml"], "'notify_format': must be one of slack, json")):
        assert cli_main(["serve", "--db", str(tmp_path / "x.db"), *flags]) == 2
        assert message in capsys.readouterr().err, flags  # the one line a shell shows on stderr
        assert not (tmp_path / "x.db").exists()  # refused before anything was opened


def test_old_facts_are_not_announced_however_they_arrive(db_path, token, receiver, tmp_path):
    server = notifying(db_path, receiver.url, "--notify-format", "json")
    try:
        deploy(server, token, "old", "failed", timestamp=at(19))
        resp = httpx.post(server.url + "/api/v1/incidents", headers=auth(token), timeout=10,
                          json={"product": "shop", "title": "long ago", "opened_at": at(61), "resolved_at": at(60)})
        assert resp.status_code == 201, resp.text
        june = tmp_path / "june.jsonl"
        june.write_text('{"kind": "deployment", "product": "shop", "version": "june", "environment": "production", '
                        '"status": "failed", "occurred_at": "2026-06-15T12:00:00Z"}\n')
        code, out = run_cli("import", str(june), "--db", str(db_path))
        assert code == 0, out
        # News after the old facts: a failure now, and an incident opened two days ago resolved now.
        deploy(server, token, "new", "failed")
        late = httpx.post(server.url + "/api/v1/incidents", headers=auth(token), timeout=10,
                          json={"product": "shop", "title": "late", "opened_at": at(2)}).json()
        resp = httpx.patch(f"{server.url}/api/v1/incidents/{late['id']}", headers=auth(token), timeout=10,
                           json={"resolved_at": at(0, 0, 0)})
        assert resp.status_code == 200, resp.text
        receiver.wait_for(2)
        time.sleep(0.6)  # several more rounds: nothing else may come
    finally:
        server.stop()
    announced = sorted((b["event"], b["data"].get("version") or b["data"].get("title")) for b in receiver.bodies)
    assert announced == [("deployment_failed", "new"), ("incident_resolved", "late")]


def test_many_facts_at_once_make_one_digest_and_a_dead_receiver_one_warning(db_path, token, receiver):
    dead = f"http://127.0.0.1:{free_port()}/hook"  # nothing listens: every post to it fails
    server = notifying(db_path, f"{receiver.url},{dead}", "--notify-format", "json")
    try:
        batch = [{"type": "event-deploy", "entityId": f"app-{i:02d}", "attributes": {
            "env": "production", "status": "failure", "version": "1.0"}} for i in range(40)]
        resp = httpx.post(server.url + "/events", json={"events": batch}, timeout=30,
                          headers={"x-api-key": token})
        assert resp.status_code == 201, resp.text
        [body] = receiver.wait_for(1)
        wait_until(lambda: query(db_path, "SELECT MAX(attempts) FROM notify_outbox")[0][0] >= 3)
        time.sleep(0.5)  # several more rounds: nothing else may come
    finally:
        server.stop()
    assert len(receiver.bodies) == 1
    assert body["event"] == "digest" and body["data"]["event"] == "deployment_failed"
    assert body["data"]["count"] == 40 and len(body["data"]["first"]) == 5
    assert body["text"] == ("40 production deployments failed: app-00 1.0, app-01 1.0, app-02 1.0, app-03 1.0, "
                            f"app-04 1.0 and 35 more. deployments: {server.url}/deployments?status=failed")
    # One digest row per URL; each fact keeps a row per URL, never posted, naming the digest.
    assert query(db_path, "SELECT kind, COUNT(*) FROM notify_outbox WHERE gave_up_at IS NULL GROUP BY kind") == [
        ("digest", 2)]
    assert query(db_path, "SELECT COUNT(*), MIN(last_error), MAX(attempts) FROM notify_outbox "
                          "WHERE kind = 'deployment_failed'") == [(80, "summarised in digest:deployment_failed:1", 0)]
    log = server.log.read_text()
    assert log.count("failed (attempt") == 1, log  # the dead receiver failed 3+ times: one warning a minute


def test_incident_notifications_link_the_incident_and_send_null_for_no_product(db_path, token, receiver):
    server = notifying(db_path, receiver.url, "--notify-format", "json", "--notify-events", "incident_opened")
    try:
        resp = httpx.post(server.url + "/api/v1/incidents", headers=auth(token), timeout=10,
                          json={"change_id": "CHG-1", "title": "who broke it"})
        assert resp.status_code == 201, resp.text
        [body] = receiver.wait_for(1)
    finally:
        server.stop()
    incident_id = resp.json()["id"]
    assert resp.json()["product"] is None and body["data"]["product"] is None
    assert body["data"]["url"] == f"{server.url}/incidents/{incident_id}"
    assert body["text"] == f"Incident opened: who broke it (no product). incident {incident_id}: {body['data']['url']}"
