"""Limits, in every ingestion API's own error shape: body size and batch size (413), field length and
metadata keys (400), each configurable with a clear message; and the per-token rate limit (429)."""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import auth, create_token

Send = Callable[[Any, str, dict[str, Any]], Any]


def versioner(client: Any, token: str, extra: dict[str, Any]) -> Any:
    body = {"product_name": "lim", "version": "1", "environment_name": "prod", "status": "success", **extra}
    return client.post("/deployment-events/", json=body, headers=auth(token))


def quanta(client: Any, token: str, extra: dict[str, Any]) -> Any:
    return client.post("/api/events/push", json={"type": "custom", "content": "c", **extra},
                       headers={"Authorization": f"Token {token}"})


def devgrid(client: Any, token: str, extra: dict[str, Any]) -> Any:
    event = {"type": "event-deploy", "entityId": "lim", "attributes": {"env": "prod", "status": "success", **extra}}
    return client.post("/events", json={"events": [event]}, headers={"x-api-key": token})


def ilert(client: Any, token: str, extra: dict[str, Any]) -> Any:
    return client.post("/api/deployment-events", json={"integrationKey": token, "summary": "s", "customDetails": extra})


def message(resp: Any) -> str:
    """The human message of any dialect's error body."""
    body = resp.json()
    for key in ("detail", "message"):
        if isinstance(body.get(key), str):
            return body[key]
    return body["error"] if isinstance(body["error"], str) else body["error"]["message"]


DIALECTS = {"versioner": versioner, "quanta": quanta, "devgrid": devgrid, "ilert": ilert}
# a field each dialect reads as text (so its length is checked), and where metadata keys go
TEXT_FIELD = {"versioner": "deployed_by", "quanta": "user", "devgrid": "initiator", "ilert": None}


def stored(client: Any) -> int:
    return client.portal.call(client.app.state.deploytrack.db.fetchone, "SELECT COUNT(*) FROM events")[0]


@pytest.mark.parametrize("name", DIALECTS)
def test_body_size_limit_is_configurable_and_413(make_client, token, name: str) -> None:
    client = make_client(max_body_bytes=2048)
    assert DIALECTS[name](client, token, {"pad": "x" * 1500}).status_code in (200, 201, 202)
    resp = DIALECTS[name](client, token, {"pad": "x" * 2100})
    assert resp.status_code == 413, resp.text
    assert message(resp) == "request body is larger than 2048 bytes"
    assert stored(client) == 1


def test_batch_size_limit_is_413_naming_the_limit(make_client, token) -> None:
    client = make_client(max_batch_events=3)
    event = {"type": "event-deploy", "entityId": "b", "attributes": {"env": "prod", "status": "success"}}
    assert client.post("/events", json={"events": [event] * 3}, headers={"x-api-key": token}).status_code == 201
    resp = client.post("/events", json={"events": [event] * 4}, headers={"x-api-key": token})
    assert resp.status_code == 413
    assert resp.json()["message"] == "Field 'events' holds 4 events; at most 3 per batch"
    assert resp.json()["field"] == "events"
    commits = [{"sha": f"{i:040x}", "committed_at": "2024-01-01T00:00:00Z"} for i in range(4)]
    resp = client.post("/api/v1/commits", json=commits, headers=auth(token))
    assert resp.status_code == 413 and resp.json()["error"]["field"] == "commits"
    assert stored(client) == 3


@pytest.mark.parametrize("name", [n for n, f in TEXT_FIELD.items() if f])
def test_field_length_limit_is_configurable_and_names_the_field(make_client, token, name: str) -> None:
    client = make_client(max_field_chars=100)
    field = TEXT_FIELD[name]
    assert DIALECTS[name](client, token, {field: "x" * 100}).status_code in (200, 201)
    resp = DIALECTS[name](client, token, {field: "x" * 101})
    assert resp.status_code == 400
    assert f"{field}' is longer than 100 characters" in message(resp)
    assert stored(client) == 1


@pytest.mark.parametrize("name,payload,field", [
    ("quanta", {"content": "c" * 16385}, "content"),
    ("ilert", {"summary": "s" * 16385}, "summary"),
])
def test_free_text_fields_have_their_own_longer_limit(client, token, name, payload, field) -> None:
    body = {"integrationKey": token, **payload} if name == "ilert" else {"type": "comment", **payload}
    if name == "ilert":
        resp = client.post("/api/deployment-events", json=body)
    else:
        resp = client.post("/api/events/push", json=body, headers={"Authorization": f"Token {token}"})
    assert resp.status_code == 400 and f"'{field}' is longer than 16384 characters" in message(resp)


@pytest.mark.parametrize("name", DIALECTS)
def test_metadata_key_limit_is_configurable_and_400(make_client, token, name: str) -> None:
    client = make_client(max_metadata_keys=5)
    few = {f"k{i}": i for i in range(3)}
    assert DIALECTS[name](client, token, few).status_code in (200, 201, 202)
    resp = DIALECTS[name](client, token, {f"k{i}": i for i in range(6)})
    assert resp.status_code == 400, resp.text
    assert "keys; at most 5 allowed" in message(resp)
    assert stored(client) == 1


def test_metadata_key_length_is_bounded(client, token) -> None:
    resp = versioner(client, token, {"extra_metadata": {"k" * 257: 1}})
    assert resp.status_code == 400 and "key longer than 256 characters" in message(resp)


# -- rate limit ------------------------------------------------------------------------------


def test_rate_limit_is_off_by_default(client, token) -> None:
    statuses = {versioner(client, token, {"version": str(i)}).status_code for i in range(30)}
    assert statuses == {200}


@pytest.mark.parametrize("name", DIALECTS)
def test_rate_limit_answers_429_with_retry_after_per_token(make_client, db_path, token, name: str) -> None:
    other = create_token(db_path, "other", "ingest", "read")
    client = make_client(rate_limit=1)  # 1 request a second, bursts of 2
    answers = [DIALECTS[name](client, token, {}) for _ in range(4)]
    codes = [a.status_code for a in answers]
    assert codes[:2] == [codes[0]] * 2 and codes[0] in (200, 201, 202)
    limited = [a for a in answers if a.status_code == 429]
    assert limited, codes
    for resp in limited:
        assert int(resp.headers["retry-after"]) >= 1
        assert "rate limit of 1 requests per second exceeded" in message(resp)
    assert DIALECTS[name](client, other, {}).status_code in (200, 201, 202)  # per token, not global
    assert stored(client) == codes.count(codes[0]) + 1


def test_rate_limit_covers_the_native_api_for_bearer_tokens(make_client, token) -> None:
    client = make_client(rate_limit=1)
    codes = [client.get("/api/v1/events", headers=auth(token)).status_code for _ in range(4)]
    assert codes[:2] == [200, 200] and 429 in codes
    resp = client.get("/api/v1/events", headers=auth(token))
    assert resp.status_code == 429 and resp.json()["error"]["code"] == "rate_limited"
    assert int(resp.headers["retry-after"]) >= 1


# Each API's fields that are names (indexed: PostgreSQL indexes at most 2,704 bytes of an entry), in its
# own body: (the base body, where a field sits in it); bodies are built fresh for every request.
NAME_FIELDS = {
    "versioner": ["product_name", "version", "environment_name", "invoke_id", "scm_sha", "change_id"],
    "quanta": ["product", "environment", "version"],
    "devgrid": ["events[0].entityId", "events[0].attributes.env", "events[0].attributes.version",
                "events[0].attributes.build_id", "events[0].attributes.build_commit_sha",
                "events[0].attributes.change_id"],
    "ilert": ["customDetails.service", "customDetails.environment", "customDetails.version", "customDetails.sha"],
}
EMOJI = [chr(c) for c in range(0x1F300, 0x1F600)]  # 4 bytes each in UTF-8


def name_of(n_bytes: int, seed: int) -> str:
    """Random text (so no database compresses it) of exactly `n_bytes` in UTF-8, mostly 4-byte characters."""
    rnd = random.Random(seed)
    wide = "".join(rnd.choice(EMOJI) for _ in range(n_bytes // 4 - 1))
    return wide + "".join(rnd.choice(string.ascii_letters) for _ in range(n_bytes - len(wide.encode())))


def named_request(client: Any, token: str, name: str, values: dict[str, str]) -> Any:
    bodies = {
        "versioner": {"product_name": "lim", "version": "1", "environment_name": "prod", "status": "success"},
        "quanta": {"type": "code_deploy", "content": "c"},
        "devgrid": {"events": [{"type": "event-deploy", "entityId": "lim", "attributes": {"env": "prod",
                                                                                      "status": "success"}}]},
        "ilert": {"integrationKey": token, "summary": "s", "customDetails": {}},
    }
    body: Any = bodies[name]
    for path, value in values.items():
        *parents, last = path.replace("[0]", ".0").split(".")
        place = body
        for part in parents:
            place = place[int(part)] if part.isdigit() else place[part]
        place[last] = value
    paths = {"versioner": "/deployment-events/", "quanta": "/api/events/push", "devgrid": "/events",
             "ilert": "/api/deployment-events"}
    headers = {"versioner": auth(token), "quanta": {"Authorization": f"Token {token}"},
               "devgrid": {"x-api-key": token}, "ilert": {}}
    return client.post(paths[name], json=body, headers=headers[name])


@pytest.mark.parametrize("name", NAME_FIELDS)
def test_names_of_512_bytes_are_stored_on_both_backends_and_513_refused(client, token, name: str) -> None:
    fields = NAME_FIELDS[name]
    values = {field: name_of(512, i) for i, field in enumerate(fields)}
    assert named_request(client, token, name, values).status_code in (200, 201, 202)
    assert client.get("/api/v1/metrics", headers=auth(token)).status_code == 200  # facts hold the names too
    for i, field in enumerate(fields):
        resp = named_request(client, token, name, {**values, field: name_of(513, 100 + i)})
        assert resp.status_code == 400, resp.text
        assert message(resp) == f"Field '{field}' is longer than 512 bytes (UTF-8)"
    assert stored(client) == 1


@pytest.mark.parametrize("name", NAME_FIELDS)
def test_a_name_with_a_control_character_or_only_dots_is_refused_naming_the_field(client, token, name: str) -> None:
    """A product called "a\\nb" could be stored but never addressed (/products/a%0Ab is no path)."""
    for i, field in enumerate(NAME_FIELDS[name]):
        resp = named_request(client, token, name, {field: ("a\n", "b\x1b", "c\x85")[i % 3] + "z"})
        assert resp.status_code == 400, resp.text
        assert message(resp) == f"Field '{field}' contains a control character (a line break, say); " \
                                "a name is one line of text"
    for dots in (".", ".."):  # /products/.. is / to a browser
        resp = named_request(client, token, name, {NAME_FIELDS[name][0]: dots})
        assert resp.status_code == 400 and message(resp).endswith("a name is a path of the pages"), resp.text
    assert named_request(client, token, name, {NAME_FIELDS[name][0]: "caf\u00e9 \u00a0\U0001F680"}).status_code < 300
    assert stored(client) == 1


def test_a_client_key_escaped_past_what_an_index_holds_is_hashed_and_still_dedupes(client, token) -> None:
    # Quotes and backslashes take 2 bytes each in the key's JSON, which grows past MAX_KEY_BYTES.
    rnd = random.Random(7)
    values = {key: "".join(rnd.choice('"\\') for _ in range(500)) + "x"
              for key in ("product_name", "environment_name", "invoke_id")}
    first = named_request(client, token, "versioner", values)
    assert first.status_code == 200, first.text
    again = named_request(client, token, "versioner", values)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    assert stored(client) == 1
    key = client.portal.call(client.app.state.deploytrack.db.fetchone, "SELECT client_key FROM events")[0]
    assert key.startswith("sha256:") and len(key) == 71
