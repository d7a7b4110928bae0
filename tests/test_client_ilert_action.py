"""ilert's deployment-events GitHub Action (iLert/ilert-deployment-events-action) against a live deploytrack.

Requests as index.js builds them: axios `POST <url>/api/deployment-events` with a JSON body (axios
sets `Content-Type: application/json`), the integration key sent as **`apiKey`**, `timestamp` from
`new Date().toISOString()` (or the pull request's `merged_at`), `customDetails`, top-level `userName`
and `repository`, and `links`. The step fails unless the answer is exactly 202. Three shapes: a
custom event (`custom-event` input), a push, a merged pull request. The integration key's pipeline is
a deploytrack token with a default product and environment. The action itself has no URL input (it
posts to api.ilert.com): docs/api.md says so, and these are the requests a copy pointed here sends.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import auth, create_token

REPO, SERVER_URL, RUN_ID = "acme/web-shop", "https://github.com", "7712345678"
MARKER = {"ilertDeploymentEventsAction": True, "githubActionVersion": "1.0.1"}


@pytest.fixture
def pipeline(db_path, token):
    return create_token(db_path, "ilert-gh", "ingest", "read", product="web-shop", environment="prod")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def custom_event(key: str, summary: str) -> dict[str, Any]:
    """handleCustomEvent: `custom-event: Deployment ${{ steps.check.outputs.status }}`."""
    return {"apiKey": key, "summary": summary, "timestamp": now_iso(), "customDetails": dict(MARKER),
            "repository": REPO, "links": [{"href": f"{SERVER_URL}/{REPO}/actions/runs/{RUN_ID}", "text": "View run"}]}


def push_event(key: str) -> dict[str, Any]:
    """handlePushEvent, from the push payload's ref, compare, repository and sender."""
    return {"apiKey": key, "summary": f"octocat pushed branch main from {REPO}"[:1024], "timestamp": now_iso(),
            "customDetails": dict(MARKER), "userName": "octocat", "repository": REPO,
            "links": [{"href": f"{SERVER_URL}/{REPO}/compare/1a2b3c...4d5e6f", "text": "View on GitHub"},
                      {"href": f"{SERVER_URL}/{REPO}", "text": "Repo"},
                      {"href": f"{SERVER_URL}/octocat", "text": "Sender - octocat"}]}


def pull_request_event(key: str, body: str | None) -> dict[str, Any]:
    """handlePullRequestEvent for a merged pull request (timestamp = merged_at)."""
    return {"apiKey": key, "summary": f"PR merged - {REPO} Add the basket page"[:1024],
            "timestamp": "2024-11-05T22:17:38Z",
            "customDetails": {**MARKER, "body": body, "repo": REPO, "commits": 3, "review_comments": 2,
                              "additions": 120, "deletions": 7, "changed_files": 5},
            "userName": "hubot", "repository": REPO,
            "links": [{"href": f"{SERVER_URL}/{REPO}/pull/17", "text": "View on GitHub"},
                      {"href": f"{SERVER_URL}/octocat", "text": "Merged by - octocat"},
                      {"href": f"{SERVER_URL}/hubot", "text": "Opened by - hubot"}]}


def send(server, payload: dict[str, Any]) -> httpx.Response:
    return httpx.post(server.url + "/api/deployment-events", json=payload, timeout=30)


def event(server, token: str, event_id: str) -> dict[str, Any]:
    resp = httpx.get(f"{server.url}/api/v1/events/{event_id}", headers=auth(token), timeout=10)
    assert resp.status_code == 200
    return resp.json()


def test_custom_event(live_server, pipeline):
    resp = send(live_server, custom_event(pipeline, "Deployment success"))
    assert resp.status_code == 202, resp.text  # the action fails the step on anything else
    stored = event(live_server, pipeline, resp.json()["id"])
    assert (stored["product"], stored["environment"], stored["summary"]) == ("web-shop", "production",
                                                                             "Deployment success")
    assert stored["scm_repository"] == REPO
    assert stored["metadata"] == MARKER
    assert stored["links"][0]["text"] == "View run"
    assert pipeline not in str(stored)  # the key is a credential, never stored


def test_push_and_merged_pull_request(live_server, pipeline):
    push = send(live_server, push_event(pipeline))
    assert push.status_code == 202, push.text
    stored = event(live_server, pipeline, push.json()["id"])
    assert (stored["actor"], stored["scm_repository"], len(stored["links"])) == ("octocat", REPO, 3)
    merged = send(live_server, pull_request_event(pipeline, "Adds the basket.\n\n" + "x" * 60_000))
    assert merged.status_code == 202, merged.text
    stored = event(live_server, pipeline, merged.json()["id"])
    assert (stored["occurred_at"], stored["actor"]) == ("2024-11-05T22:17:38Z", "hubot")
    assert stored["metadata"]["commits"] == 3 and stored["metadata"]["repo"] == REPO
    assert len(stored["metadata"]["body"]) == len("Adds the basket.\n\n") + 60_000
    no_body = send(live_server, pull_request_event(pipeline, None))  # a pull request without a description
    assert no_body.status_code == 202 and event(live_server, pipeline, no_body.json()["id"])["metadata"]["body"] is None


def test_custom_details_say_what_was_deployed_where(live_server, pipeline):
    """customDetails version / sha (or commit) / environment (or env) / service become the event's fields,
    so an ilert-fed product shows its version on "what runs where"."""
    payload = custom_event(pipeline, "Deployment success")
    payload["customDetails"] = {**MARKER, "service": "basket", "version": "4.2.0", "commit": "a" * 40,
                                "environment": "stg", "ticket": "OPS-7"}
    resp = send(live_server, payload)
    assert resp.status_code == 202, resp.text
    stored = event(live_server, pipeline, resp.json()["id"])
    assert (stored["product"], stored["version"], stored["scm_sha"]) == ("basket", "4.2.0", "a" * 40)
    assert (stored["environment"], stored["environment_raw"]) == ("staging", "stg")
    assert stored["metadata"] == {**MARKER, "ticket": "OPS-7"}
    payload["customDetails"] = {"version": 43, "sha": "b" * 40, "env": "production"}
    resp = send(live_server, payload)
    assert resp.status_code == 202, resp.text
    stored = event(live_server, pipeline, resp.json()["id"])
    assert (stored["product"], stored["version"], stored["scm_sha"]) == ("web-shop", "43", "b" * 40)
    page = httpx.get(f"{live_server.url}/environments", headers=auth(pipeline), timeout=10)
    assert page.status_code == 200
    assert "<code>43</code>" in page.text and "<code>4.2.0</code>" in page.text
    assert "(no version)" not in page.text


def test_both_key_names_and_refusals(live_server, pipeline):
    """`integrationKey` (the document's name) keeps working; a wrong key is a 401 (the step fails), mapped
    keys of the wrong type are a 400; neither stores anything."""
    resp = send(live_server, custom_event("il1api-not-a-key", "Deployment success"))
    assert resp.status_code == 401 and resp.json()["message"] == "Invalid API key"
    legacy = {key: value for key, value in custom_event(pipeline, "s").items() if key != "apiKey"}
    assert send(live_server, {**legacy, "integrationKey": pipeline}).status_code == 202
    for details, field in [({"version": 1.5}, "customDetails.version"), ({"sha": ["a"]}, "customDetails.sha"),
                           ({"service": {"name": "x"}}, "customDetails.service")]:
        resp = send(live_server, {**custom_event(pipeline, "s"), "customDetails": details})
        assert resp.status_code == 400 and field in resp.json()["message"], resp.text
        assert resp.json()["code"] == "BAD_REQUEST"
    events = httpx.get(f"{live_server.url}/api/v1/events", headers=auth(pipeline), timeout=10).json()["events"]
    assert len(events) == 1
