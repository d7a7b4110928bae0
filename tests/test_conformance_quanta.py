"""Every request example of the Quanta DEM push document (seeds/000_10377389ed781de3.txt).

Host swapped for a real server on 127.0.0.1 where curl's own flags (-L, -m 10) matter, token for a real one.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tests.conftest import auth, create_token


@pytest.fixture
def site_token(db_path):
    return create_token(db_path, "dem-site", "ingest", "read", product="shop", environment="production")


def events(client, token):
    return client.get("/api/v1/events", headers=auth(token)).json()["events"]


def test_post_example_code_deploy(make_client, site_token):
    client = make_client()
    resp = client.post("/api/events/push", content=b'{"type": "code_deploy", "content": "version 42.0"}',
                       headers={"Content-Type": "application/json", "Authorization": f"Token {site_token}"})
    assert resp.status_code == 200
    assert resp.json()["success"] is True
    [event] = events(client, site_token)
    assert (event["kind"], event["summary"], event["status"]) == ("deployment", "version 42.0", "completed")
    assert (event["product"], event["environment"]) == ("shop", "production")  # the token's defaults


def test_get_example_custom_with_auth_token_param(make_client, site_token):
    client = make_client()
    resp = client.get(f"/api/events/push?content=bonjour&type=custom&auth_token={site_token}")
    assert resp.status_code == 200 and resp.json()["success"] is True
    [event] = events(client, site_token)
    assert (event["kind"], event["summary"]) == ("custom", "bonjour")
    assert "auth_token" not in event["metadata"]


@pytest.mark.parametrize("type_,kind", [("code_deploy", "deployment"), ("config_change", "config_change"),
                                        ("comment", "comment"), ("cron", "cron"), ("custom", "custom")])
def test_every_type(make_client, site_token, type_, kind):
    client = make_client()
    resp = client.post("/api/events/push", json={"type": type_, "content": "x"},
                       headers={"Authorization": f"Token {site_token}"})
    assert resp.status_code == 200
    assert events(client, site_token)[0]["kind"] == kind


def test_unknown_type_is_400_with_error(client, token):
    resp = client.post("/api/events/push", json={"type": "deploy", "content": "x"},
                       headers={"Authorization": f"Token {token}"})
    assert resp.status_code == 400
    assert "type" in resp.json()["error"]


def test_post_without_json_content_type_is_refused(client, token):
    resp = client.post("/api/events/push", content=b'{"type": "custom", "content": "x"}',
                       headers={"Authorization": f"Token {token}", "Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 415
    assert "Content-Type" in resp.json()["error"]
    assert events(client, token) == []


@pytest.mark.parametrize("headers,query", [({}, ""), ({"Authorization": "Token wrong"}, ""), ({}, "&auth_token=wrong")])
def test_bad_token_is_401_with_error(client, token, headers, query):
    resp = client.get(f"/api/events/push?type=custom&content=x{query}", headers=headers)
    assert resp.status_code == 401
    assert set(resp.json()) == {"error"}
    assert events(client, token) == []


def test_no_default_product_means_unassigned(client, token):
    resp = client.get(f"/api/events/push?type=comment&content=hi&auth_token={token}")
    assert resp.status_code == 200
    assert events(client, token)[0]["product"] == "unassigned"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_documents_curl_commands_verbatim(live_server, db_path):
    """The two curl lines of the document, flags and all, against a real server."""
    site = create_token(db_path, "dem", "ingest", "read", product="shop")
    post = subprocess.run(
        ["curl", "-s", "-L", "-m", "10", "-X", "POST", "-d", '{"type": "code_deploy", "content": "version 42.0"}',
         "-H", "Content-Type: application/json", "-H", f"Authorization: Token {site}",
         f"{live_server.url}/api/events/push", "-w", "\n%{http_code}"], capture_output=True, text=True, timeout=15)
    body, code = post.stdout.rsplit("\n", 1)
    assert code == "200" and '"success":true' in body
    get = subprocess.run(["curl", "-s", "-L", "-m", "10", "-w", "\n%{http_code}",
                          f"{live_server.url}/api/events/push?content=bonjour&type=custom&auth_token={site}"],
                         capture_output=True, text=True, timeout=15)
    body, code = get.stdout.rsplit("\n", 1)
    assert code == "200" and '"success":true' in body


def test_free_form_deploy_message_keeps_the_last_known_version(make_client, site_token):
    """The document's `"content": "version 42.0"` names no version field: "what runs where" keeps showing
    the last version a deployment named, and the message stays the event's summary."""
    client = make_client()
    headers = {"Authorization": f"Token {site_token}"}
    first = client.post("/api/events/push", json={"type": "code_deploy", "content": "released", "version": "41.0"},
                        headers=headers)
    assert first.status_code == 200
    assert client.post("/api/events/push", json={"type": "code_deploy", "content": "version 42.0"},
                       headers=headers).status_code == 200
    assert events(client, site_token)[0]["summary"] == "version 42.0"
    page = client.get("/environments", headers=auth(site_token))
    assert page.status_code == 200
    assert "<code>41.0</code>" in page.text and "(no version)" not in page.text


def test_only_free_form_deploys_show_no_version(make_client, site_token):
    """With no deployment naming a version, the newest completed one is still shown, as "(no version)"."""
    client = make_client()
    assert client.post("/api/events/push", json={"type": "code_deploy", "content": "version 42.0"},
                       headers={"Authorization": f"Token {site_token}"}).status_code == 200
    page = client.get("/environments", headers=auth(site_token))
    assert page.status_code == 200 and "(no version)" in page.text and "nothing completed" not in page.text


def test_a_head_to_the_get_push_records_nothing(client, token):
    """Starlette answers HEAD for GET routes; a HEAD (a link checker's) to a push URL must not record a
    deployment: 405, with the methods that do."""
    resp = client.head(f"/api/events/push?content=bonjour&type=custom&auth_token={token}")
    assert resp.status_code == 405
    assert sorted(m.strip() for m in resp.headers["allow"].split(",")) == ["GET", "POST"]
    assert events(client, token) == []
    assert client.get(f"/api/events/push?content=bonjour&type=custom&auth_token={token}").status_code == 200
    assert len(events(client, token)) == 1
