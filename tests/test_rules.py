"""Deployment rules through HTTP: each rule type and mode, where they apply, the pre-flight answer,
overrides, record-only APIs, pages, and parallel starts decided by the single writer."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx2 as httpx
import pytest

from deploytrack.rules.schedule import WEEKDAYS
from tests.conftest import auth, create_token, query

NEW_YORK = ZoneInfo("America/New_York")


@pytest.fixture
def admin(db_path: Any) -> str:
    return create_token(db_path, "admin", "admin")


def add_rule(client: Any, admin: str, **body: Any) -> dict[str, Any]:
    r = client.post("/api/v1/rules", json=body, headers=auth(admin))
    assert r.status_code == 201, r.text
    return r.json()


def deploy(client: Any, token: str, product: str = "api", version: str = "1.0", environment: str = "production",
           status: str = "started", **extra: Any) -> Any:
    return client.post("/deployment-events/", headers=auth(token), json={
        "product_name": product, "version": version, "environment_name": environment, "status": status, **extra})


def window_now(zone: ZoneInfo = NEW_YORK, before: timedelta = timedelta(hours=1),
               after: timedelta = timedelta(hours=2)) -> tuple[dict[str, str], datetime]:
    """A weekly window in `zone` that is active now, and its end (aware, in UTC)."""
    now = datetime.now(zone).replace(second=0, microsecond=0)
    start, end = now - before, now + after
    spec = {"recurrence": "weekly", "timezone": str(zone),
            "start": f"{WEEKDAYS[start.weekday()]} {start:%H:%M}", "end": f"{WEEKDAYS[end.weekday()]} {end:%H:%M}"}
    return spec, end.replace(tzinfo=None).replace(tzinfo=zone).astimezone(UTC)


def violations(client: Any, token: str, **params: str) -> list[dict[str, Any]]:
    r = client.get("/api/v1/rule-violations", params=params, headers=auth(token))
    assert r.status_code == 200, r.text
    return r.json()["violations"]


def stored_counts(db_path: Any) -> tuple[int, int]:
    return query(db_path, "SELECT COUNT(*) FROM events")[0][0], query(db_path, "SELECT COUNT(*) FROM deployments")[0][0]


def test_schedule_window_blocks_with_versioners_preflight_answer(client, token, admin, db_path) -> None:
    spec, end = window_now()
    rule = add_rule(client, admin, name="evening freeze", type="schedule", environments=["prod"],
                    reason="Change freeze for the launch", schedule=spec)
    assert rule["environments"] == ["production"] and rule["window"]["active"] is True
    r = deploy(client, token)
    assert r.status_code == 423
    body = r.json()
    assert body["error"] == "deployment_blocked" and body["code"] == "NO_DEPLOY_WINDOW"
    assert body["retry_after"] == end.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert body["details"]["rule_name"] == "evening freeze"
    assert body["details"]["reason"] == "Change freeze for the launch"
    assert body["details"]["window_end"] == end.astimezone(NEW_YORK).isoformat()
    assert "Change freeze for the launch" in body["message"]
    # Versioner's CLI and GitHub Action read the same fields under "detail".
    assert body["detail"] == {k: v for k, v in body.items() if k != "detail"}
    assert 0 < int(r.headers["retry-after"]) <= 2 * 3600 + 60
    assert stored_counts(db_path) == (0, 0)  # a blocked attempt is never an event or a deployment
    [v] = violations(client, token)
    assert (v["outcome"], v["rule_name"], v["http_status"], v["event_id"]) == ("blocked", "evening freeze", 423, None)
    assert v["attempt"]["product"] == "api" and v["attempt"]["status"] == "started"
    # out of scope: another environment deploys
    assert deploy(client, token, environment="staging").status_code == 200


def test_report_only_records_and_lets_through_and_disabled_is_not_evaluated(client, token, admin) -> None:
    spec, _ = window_now()
    rule = add_rule(client, admin, name="quiet hours", type="schedule", mode="report-only", schedule=spec)
    r = deploy(client, token)
    assert r.status_code == 200
    [v] = violations(client, token)
    assert (v["outcome"], v["event_id"]) == ("reported", r.json()["id"])
    r = client.patch(f"/api/v1/rules/{rule['id']}", json={"mode": "disabled"}, headers=auth(admin))
    assert r.status_code == 200 and r.json()["mode"] == "disabled"
    assert deploy(client, token, version="2.0").status_code == 200
    assert len(violations(client, token)) == 1


def test_backfill_and_later_events_of_a_deployment_are_never_judged(client, token, admin, db_path) -> None:
    assert deploy(client, token, version="0.9", invoke_id="run-1").status_code == 200  # before any rule
    add_rule(client, admin, name="always", type="schedule",
             schedule={"recurrence": "daily", "start": "00:00", "end": "23:59"})
    add_rule(client, admin, name="always too", type="schedule",
             schedule={"recurrence": "daily", "start": "23:59", "end": "00:00"})
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    assert deploy(client, token, version="0.8", status="completed", timestamp=an_hour_ago).status_code == 200
    assert deploy(client, token, version="0.9", status="completed", invoke_id="run-1").status_code == 200
    assert deploy(client, token, version="1.0").status_code == 423
    assert deploy(client, token, version="1.1", status="completed").status_code == 423  # first event, now
    assert deploy(client, token, version="1.2", status="failed").status_code == 200  # not a deployment starting
    assert [v["version"] for v in violations(client, token)] == ["1.1", "1.0"]
    statuses = query(db_path, "SELECT version, status FROM deployments ORDER BY version")
    assert [tuple(s) for s in statuses] == [("0.8", "completed"), ("0.9", "completed"), ("1.2", "failed")]


def test_flow_needs_prerequisites_in_order_and_soak_time(client, token, admin) -> None:
    add_rule(client, admin, name="staging first", type="flow", products=["api"], environments=["production"],
             flow={"prerequisites": ["dev", "stg"], "strict": True})
    r = deploy(client, token, version="2.0")
    assert r.status_code == 428
    body = r.json()
    assert body["code"] == "FLOW_PREREQUISITE" and body["details"]["missing"] == ["development", "staging"]
    assert "retry_after" not in body
    assert deploy(client, token, version="2.0", environment="staging", status="completed").status_code == 200
    assert deploy(client, token, version="2.0", environment="development", status="completed").status_code == 200
    r = deploy(client, token, version="2.0")
    assert r.status_code == 428 and r.json()["details"]["out_of_order"] == ["development", "staging"]
    for env in ("development", "staging"):
        assert deploy(client, token, version="3.0", environment=env, status="completed").status_code == 200
    assert deploy(client, token, version="3.0").status_code == 200
    assert deploy(client, token, product="web", version="1").status_code == 200  # not in the rule's products
    client.post("/api/v1/rules", headers=auth(admin), json={
        "name": "soak", "type": "flow", "environments": ["production"], "flow": {"prerequisites": ["staging"],
                                                                                 "soak_minutes": 60}})
    assert deploy(client, token, version="4.0", environment="staging", status="completed").status_code == 200
    r = deploy(client, token, product="api", version="4.0", status="pending")
    body = r.json()
    assert r.status_code == 428 and body["details"]["rule_name"] == "staging first"  # still out of dev
    r = deploy(client, token, product="web", version="4.0", environment="staging", status="completed")
    r = deploy(client, token, product="web", version="4.0")
    body = r.json()
    assert r.status_code == 428 and body["details"]["rule_name"] == "soak"
    ready = datetime.fromisoformat(body["retry_after"].replace("Z", "+00:00"))
    assert timedelta(minutes=59) < ready - datetime.now(UTC) <= timedelta(minutes=60)


def test_concurrency_one_in_progress_per_product_and_environment(client, token, admin) -> None:
    add_rule(client, admin, name="one at a time", type="concurrency", environments=["production"])
    first = deploy(client, token, version="1.0", invoke_id="a")
    assert first.status_code == 200
    r = deploy(client, token, version="1.1", invoke_id="b")
    assert r.status_code == 409
    details = r.json()["details"]
    assert r.json()["code"] == "CONCURRENT_DEPLOYMENT"
    assert details["conflicting_deployment_status"] == "started" and details["conflicting_version"] == "1.0"
    dep_id = client.get("/api/v1/deployments", params={"version": "1.0"}, headers=auth(token)).json()
    assert details["conflicting_deployment_id"] == dep_id["deployments"][0]["id"]
    assert deploy(client, token, version="1.0", product="web").status_code == 200  # another product
    assert deploy(client, token, version="1.0", invoke_id="a", status="completed").status_code == 200
    assert deploy(client, token, version="1.1", invoke_id="b").status_code == 200
    # the API's own 409 keeps its shape
    deploy(client, token, version="9", status="completed", scm_sha="aaa", product="sha")
    r = deploy(client, token, version="9", status="completed", scm_sha="bbb", product="sha")
    assert r.status_code == 409 and isinstance(r.json()["detail"], str)


def test_override_lets_exactly_one_deployment_through_and_records_who_and_why(client, token, admin, db_path) -> None:
    spec, _ = window_now()
    rule = add_rule(client, admin, name="freeze", type="schedule", schedule=spec)
    r = client.post("/api/v1/rule-overrides", headers=auth(admin), json={
        "product": "api", "environment": "prod", "rule_id": rule["id"], "reason": "security fix CVE-1"})
    assert r.status_code == 201
    override = r.json()
    assert (override["granted_by"], override["environment"], override["used_at"]) == ("admin", "production", None)
    assert deploy(client, token, product="web").status_code == 423  # another product: not covered
    through = deploy(client, token, version="1.0.1")
    assert through.status_code == 200
    assert deploy(client, token, version="1.0.2").status_code == 423  # used once
    [used] = client.get("/api/v1/rule-overrides", headers=auth(token)).json()["overrides"]
    assert used["used_by_event"] == through.json()["id"] and used["used_at"] is not None
    overridden = violations(client, token, outcome="overridden")
    assert [(v["override_id"], v["event_id"]) for v in overridden] == [(override["id"], through.json()["id"])]
    actions = [r[0] for r in query(db_path, "SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["rule_create", "rule_override"]


def test_apis_that_cannot_act_on_a_refusal_record_it_unless_told_to_block(make_client, db_path) -> None:
    ingest = create_token(db_path, "pipeline", "ingest", "read", product="shop", environment="production")
    admin = create_token(db_path, "admin", "admin")
    client = make_client()
    add_rule(client, admin, name="always", type="schedule",
             schedule={"recurrence": "once", "start": "2020-01-01T00:00", "end": "2099-01-01T00:00"})
    devgrid = {"events": [{"type": "event-deploy", "entityId": "shop", "attributes": {"env": "staging",
                                                                                      "status": "started"}},
                          {"type": "event-deploy", "entityId": "shop", "attributes": {"env": "prod",
                                                                                      "status": "started"}}]}
    assert client.post("/events", json=devgrid, headers={"x-api-key": ingest}).status_code == 201
    assert client.post("/api/deployment-events", json={"integrationKey": ingest, "summary": "v2"}).status_code == 202
    r = client.post("/api/events/push", json={"type": "code_deploy", "content": "v3"},
                    headers={"Authorization": f"Token {ingest}"})
    assert r.status_code == 200
    recorded = violations(client, ingest, outcome="recorded")
    # ilert's event (completed, no version) finishes the deployment DevGrid started: not a first event
    assert sorted(v["dialect"] for v in recorded) == ["devgrid", "devgrid", "quanta"]
    blocking = make_client(rules_block_apis="versioner,devgrid")
    before = stored_counts(db_path)
    r = blocking.post("/events", json=devgrid, headers={"x-api-key": ingest})
    # a second "started" begins the next deployment of staging (metrics/rules.py): judged, refused
    assert r.status_code == 423 and r.json()["details"]["index"] == 0
    assert stored_counts(db_path) == before  # all or nothing
    assert blocking.post("/api/deployment-events", json={"integrationKey": ingest, "summary": "v4"}).status_code == 202


def test_rule_definitions_are_validated_and_writes_need_admin(client, token, admin) -> None:
    bad = [
        ({"name": "x", "type": "window"}, "type"),
        ({"name": "x", "type": "schedule", "enviroments": ["prod"]}, "enviroments"),
        ({"name": "x", "type": "schedule", "schedule": {"recurrence": "weekly", "start": "fry 17:00",
                                                        "end": "mon 08:00"}}, "schedule.start"),
        ({"name": "x", "type": "schedule", "schedule": {"recurrence": "daily", "start": "17:00", "end": "08:00",
                                                        "timezone": "Mars/Olympus"}}, "schedule.timezone"),
        ({"name": "x", "type": "schedule", "schedule": {"recurrence": "once", "start": "2026-01-02T00:00",
                                                        "end": "2026-01-01T00:00"}}, "schedule.end"),
        ({"name": "x", "type": "flow", "environments": ["production"], "flow": {"prerequisites": []}},
         "flow.prerequisites"),
        ({"name": "x", "type": "flow", "flow": {"prerequisites": ["staging"]}}, "environments"),
        ({"name": "x", "type": "concurrency", "mode": "on"}, "mode"),
        ({"name": "", "type": "concurrency"}, "name"),
    ]
    for body, field in bad:
        r = client.post("/api/v1/rules", json=body, headers=auth(admin))
        assert r.status_code == 400 and r.json()["error"]["field"] == field, (body, r.text)
    assert client.post("/api/v1/rules", json={"name": "c", "type": "concurrency"},
                       headers=auth(token)).status_code == 403
    rule = add_rule(client, admin, name="c", type="concurrency")
    assert client.post("/api/v1/rules", json={"name": "c", "type": "concurrency"},
                       headers=auth(admin)).status_code == 409
    assert client.patch(f"/api/v1/rules/{rule['id']}", json={"type": "flow"}, headers=auth(admin)).status_code == 409
    assert client.get("/api/v1/rules/999", headers=auth(token)).status_code == 404
    assert client.get("/api/v1/rules/abc", headers=auth(token)).status_code == 404
    r = client.post("/api/v1/rule-overrides", json={"product": "api"}, headers=auth(admin))
    assert r.status_code == 400 and r.json()["error"]["field"] == "reason"
    r = client.post("/api/v1/rule-overrides", json={"product": "api", "reason": "x", "rule_id": 999},
                    headers=auth(admin))
    assert r.status_code == 404
    r = client.delete(f"/api/v1/rules/{rule['id']}", headers=auth(admin))
    assert r.status_code == 200 and client.get("/api/v1/rules", headers=auth(token)).json()["rules"] == []


def test_pages_show_rules_violations_and_the_frozen_mark_escaped(client, token, admin) -> None:
    assert deploy(client, token, status="completed", version="0.1").status_code == 200
    spec, _ = window_now()
    add_rule(client, admin, name="<b>freeze</b>", type="schedule", environments=["production"],
             reason="<script>alert(1)</script>", schedule=spec)
    add_rule(client, admin, name="later", type="schedule",
             schedule={"recurrence": "once", "start": "2098-01-01T00:00", "end": "2098-01-02T00:00"})
    assert deploy(client, token, version="0.2").status_code == 423
    matrix = client.get("/environments", headers=auth(token)).text
    assert ">frozen</a>" in matrix and "&lt;b&gt;freeze&lt;/b&gt;" in matrix and "<b>freeze" not in matrix
    table = matrix.split('<table class="matrix">')[1].split("</table>")[0]  # the page also has phone cards
    assert table.count(">frozen</a>") == 1  # production only
    assert ">frozen</a>" in client.get("/products/api", headers=auth(token)).text
    rules = client.get("/rules", headers=auth(token)).text
    assert "&lt;script&gt;" in rules and "<script>alert" not in rules
    assert "active</span> until" in rules and "next <time" in rules
    page = client.get("/rules/violations", params={"outcome": "blocked"}, headers=auth(token)).text
    assert "NO_DEPLOY_WINDOW" in page and "0.2" in page
    assert client.get("/rules/violations", params={"outcome": "nope"}, headers=auth(token)).status_code == 400


def test_parallel_starts_exactly_one_wins(live_server, token, db_path) -> None:
    admin = create_token(db_path, "admin", "admin")
    r = httpx.post(f"{live_server.url}/api/v1/rules", headers=auth(admin),
                   json={"name": "one at a time", "type": "concurrency"})
    assert r.status_code == 201
    barrier = threading.Barrier(8)
    answers: list[int] = []

    def start(n: int) -> None:
        barrier.wait()
        answer = httpx.post(f"{live_server.url}/deployment-events/", headers=auth(token), timeout=30, json={
            "product_name": "api", "version": f"1.{n}", "environment_name": "production", "status": "started"})
        answers.append(answer.status_code)

    threads = [threading.Thread(target=start, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(answers) == [200] + [409] * 7
    assert query(db_path, "SELECT COUNT(*) FROM deployments WHERE status = 'started'")[0][0] == 1
    assert query(db_path, "SELECT COUNT(*) FROM rule_violations WHERE outcome = 'blocked'")[0][0] == 7
