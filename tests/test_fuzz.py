"""Property-based fuzzing of every ingestion endpoint: random and hostile payloads.

Whatever arrives — wrong types, huge strings, deep nesting, invalid UTF-8, NaN, numbers out of
range, duplicate keys, SQL and HTML injection strings, wrong content types — the answer is a 2xx
or a 4xx in that API's own shape, never a 5xx, never an echo of the secret, and the database
stays consistent. Example counts are bounded so the module takes seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx2 as httpx
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.conftest import create_token
from tests.dbcheck import consistency_problems, stored_ids

HOSTILE = [
    "' OR 1=1 --", "'); DROP TABLE events; --", "\" OR \"\"=\"", "1; SELECT * FROM tokens", "%", "_", "\\",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "javascript:alert(1)", "\"><svg onload=alert(1)>",
    "{{7*7}}", "${7*7}", "{% raw %}", "\x00", "a\x00b", "\u202e\u0644\u0627", "\ufeff", "\U0001f680" * 50,
    "\r\nSet-Cookie: x=1", "../../etc/passwd", "null", "true", "NaN", "-1e999", "0x10", " ", "",
    "x" * 4096, "x" * 4097, "y" * 70_000, "prod", "PRODUCTION ", "success", "FAILED", "in_progress",
    "2024-01-15T10:30:00Z", "2024-01-15T10:30:00+05:30", "1705314600", "1705314600000", "9999-12-31T23:59:59Z",
    "0001-01-01T00:00:00", "1969-12-31T23:59:59Z",
]
NUMBERS = [1e308, -1.7e308, 1e305, 0, -1, 1, 2**31, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 10**30, -(10**30), 1e11, 1e300,
           -1e300, 1e-300, 0.5, 1705314600, 1705314600000, 1705314600000000, 253402300799, 253402300800]

texts = st.sampled_from(HOSTILE) | st.text(max_size=40)
short_texts = st.sampled_from([h for h in HOSTILE if len(h) < 100]) | st.text(max_size=40)
numbers = st.sampled_from(NUMBERS) | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
scalars = st.none() | st.booleans() | numbers | texts
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(texts, inner, max_size=4), max_leaves=12)


def nested(depth: int, as_list: bool) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = [value] if as_list else {"k": value}
    return value


deep = st.builds(nested, st.sampled_from([31, 32, 33, 64, 100]), st.booleans())
any_value = json_values | deep


def shaped(valid: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """An object with the API's fields: mostly valid, a few hostile or missing, plus unknown extra keys."""
    names = sorted(valid)

    def build(base: dict[str, Any], hostile: dict[str, Any], drop: set[str], extra: dict[str, Any]) -> dict[str, Any]:
        body = {**base, **hostile}
        return {**{k: v for k, v in body.items() if k not in drop}, **extra}

    return st.builds(build, st.fixed_dictionaries(valid),
                     st.dictionaries(st.sampled_from(names), any_value, max_size=2),
                     st.sets(st.sampled_from(names), max_size=1),
                     st.dictionaries(texts, any_value, max_size=2))


STATUS = st.sampled_from(["success", "failed", "started", "pending", "aborted", "Deployed", "weird"])
TIME = st.sampled_from(["2024-01-15T10:30:00Z", 1705314600, 1705314600000, "2024-01-15 10:30:00"])
SHORT = st.text(min_size=1, max_size=12)

VERSIONER = shaped({
    "product_name": SHORT, "version": SHORT, "environment_name": st.sampled_from(["prod", "staging", "qa"]),
    "status": STATUS, "deployed_by": SHORT, "built_by": SHORT, "scm_sha": st.sampled_from(["abc", "def", "0" * 40]),
    "scm_branch": SHORT, "build_url": texts, "invoke_id": SHORT, "description": texts, "timestamp": TIME,
    "commit_timestamp": TIME, "extra_metadata": st.dictionaries(texts, any_value, max_size=5),
})
QUANTA = shaped({
    "type": st.sampled_from(["code_deploy", "config_change", "comment", "cron", "custom", "other"]),
    "content": texts, "product": SHORT, "environment": SHORT, "version": SHORT, "user": SHORT, "timestamp": TIME,
})
DEVGRID_EVENT = shaped({
    "type": st.just("event-deploy"), "entityId": SHORT, "timestamp": TIME,
    "attributes": shaped({"env": SHORT, "status": STATUS, "build_commit_sha": SHORT, "build_id": SHORT,
                          "build_url": texts, "description": texts, "initiator": SHORT, "change_id": SHORT}),
})
DEVGRID = st.builds(lambda events, extra: {"events": events, **extra},
                    st.lists(DEVGRID_EVENT, min_size=0, max_size=4) | any_value,
                    st.dictionaries(texts, any_value, max_size=2))
LINKS = st.lists(st.fixed_dictionaries({"href": texts, "text": texts}), max_size=3)
ILERT = shaped({"summary": texts, "timestamp": TIME, "userEmail": SHORT,
                "customDetails": st.dictionaries(texts, any_value, max_size=5), "links": LINKS})

RAW_BODIES = [
    b"", b" ", b"{", b"}", b"[]", b"null", b"0", b'"s"', b'{"a": NaN}', b'{"a": Infinity}', b'{"a": -Infinity}',
    b'{"n": 1e400}', b'{"n": 123456789012345678901234567890}', b'{"product_name": "\xff\xfe"}', b"\xff\xfe{\x00}",
    b'\xef\xbb\xbf{"summary": "bom"}', b'{"summary": "\\ud800"}', b'{"a": "\\u0000"}', b"[" * 3000 + b"]" * 3000,
    b'{"status": "success", "status": []}', b'{"events": [], "events": [{}]}', b"{'single': 'quotes'}",
    b'{"a": 1,}', b"\x00" * 64, b"<?xml version='1.0'?><a/>", b"product_name=x&version=1",
]
CONTENT_TYPES = ["application/json", "application/json; charset=utf-8", "text/plain", "", "application/xml",
                 "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "APPLICATION/JSON",
                 "application/json; charset=latin-1", "application/vnd.api+json"]


@dataclass(frozen=True)
class Dialect:
    name: str
    method: str
    path: str
    success: int
    body: st.SearchStrategy[dict[str, Any]]
    put_token: Callable[[dict[str, str], Any, str], Any]  # (headers, body, secret) -> body, sets headers
    error_keys: frozenset[str]


def _bearer(scheme: str) -> Callable[[dict[str, str], Any, str], Any]:
    def put(headers: dict[str, str], body: Any, secret: str) -> Any:
        headers["Authorization"] = f"{scheme} {secret}"
        return body
    return put


def _api_key(headers: dict[str, str], body: Any, secret: str) -> Any:
    headers["x-api-key"] = secret
    return body


def _integration_key(headers: dict[str, str], body: Any, secret: str) -> Any:
    return {"integrationKey": secret, **body} if isinstance(body, dict) else body


DIALECTS = [
    Dialect("versioner-deployment", "POST", "/deployment-events/", 200, VERSIONER, _bearer("Bearer"),
            frozenset({"detail"})),
    Dialect("versioner-build", "POST", "/build-events", 200, VERSIONER, _bearer("Bearer"), frozenset({"detail"})),
    Dialect("quanta", "POST", "/api/events/push", 200, QUANTA, _bearer("Token"), frozenset({"error"})),
    Dialect("devgrid", "POST", "/events", 201, DEVGRID, _api_key, frozenset({"statusCode", "error", "message"})),
    Dialect("ilert", "POST", "/api/deployment-events", 202, ILERT, _integration_key,
            frozenset({"status", "code", "message"})),
]


def check_answer(resp: Any, dialect: Dialect, secret: str) -> None:
    assert resp.status_code < 500, f"{dialect.name}: {resp.status_code} {resp.text[:500]}"
    assert 200 <= resp.status_code < 300 or 400 <= resp.status_code < 500, resp.status_code
    assert secret not in resp.text, "the token was echoed back"
    body = resp.json()
    if resp.status_code < 300:
        assert resp.status_code == dialect.success, resp.text[:300]
    elif resp.status_code not in (404, 405):
        assert dialect.error_keys <= set(body), f"{dialect.name} error shape: {body}"


def fuzz_settings(examples: int) -> settings:
    # derandomize: CI sees the same examples every run, so a red run is reproducible, and the
    # "reached both 2xx and 4xx" assertions cannot flake on an unlucky draw.
    return settings(max_examples=examples, deadline=None, database=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture
def fuzz_client(make_client, db_path):
    secret = create_token(db_path, "fuzz", "ingest", "read", product="fallback", environment="prod")
    return make_client(max_batch_events=3), secret


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_hostile_json_bodies(fuzz_client, db_path, dialect: Dialect) -> None:
    client, secret = fuzz_client

    seen: set[int] = set()

    @fuzz_settings(80)
    @given(body=dialect.body, idem=st.none() | texts.filter(lambda s: s.isprintable() and s.isascii()))
    def run(body: Any, idem: str | None) -> None:
        headers = {"Content-Type": "application/json"}
        body = dialect.put_token(headers, body, secret)
        if idem is not None:
            headers["Idempotency-Key"] = idem
        raw = json.dumps(body, allow_nan=True).encode()  # stdlib: big ints and NaN go out as sent
        resp = client.request(dialect.method, dialect.path, content=raw, headers=headers)
        check_answer(resp, dialect, secret)
        seen.add(resp.status_code)

    run()
    # the generator must reach storage, not only bounce off validation
    assert dialect.success in seen and 400 in seen, seen
    assert consistency_problems(db_path) == []


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_hostile_raw_bodies_and_content_types(fuzz_client, db_path, dialect: Dialect) -> None:
    client, secret = fuzz_client

    @fuzz_settings(40)
    @given(raw=st.sampled_from(RAW_BODIES) | st.binary(max_size=300), ctype=st.sampled_from(CONTENT_TYPES))
    def run(raw: bytes, ctype: str) -> None:
        headers = {"Content-Type": ctype} if ctype else {}
        dialect.put_token(headers, None, secret)
        resp = client.request(dialect.method, dialect.path, content=raw, headers=headers)
        check_answer(resp, dialect, secret)
        if dialect.name != "ilert":  # ilert's token is in the body, so nothing here authenticates
            assert resp.status_code != 401

    run()
    for raw in RAW_BODIES:  # every hand-picked hostile body, whatever hypothesis chose
        headers = {"Content-Type": "application/json"}
        dialect.put_token(headers, None, secret)
        check_answer(client.request(dialect.method, dialect.path, content=raw, headers=headers), dialect, secret)
    assert consistency_problems(db_path) == []


def test_hostile_quanta_query_strings(fuzz_client, db_path) -> None:
    client, secret = fuzz_client
    dialect = DIALECTS[2]

    @fuzz_settings(60)
    @given(params=st.dictionaries(short_texts | st.sampled_from(["type", "content", "product", "timestamp"]),
                                  short_texts | st.sampled_from(["code_deploy", "comment"]), max_size=6),
           raw_suffix=st.sampled_from(["", "&%FF%FE", "&content=%00", "&type", "&=&=", "&content=%ED%A0%80",
                                       "&type=code_deploy&type=cron", "&" + "a=1&" * 100]))
    def run(params: dict[str, str], raw_suffix: str) -> None:
        query = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}"
                         for k, v in params.items() if "\x00" not in k)
        resp = client.get(f"/api/events/push?auth_token={secret}&{query}{raw_suffix}")
        check_answer(resp, dialect, secret)

    run()
    assert consistency_problems(db_path) == []


@pytest.mark.parametrize("dialect", DIALECTS, ids=lambda d: d.name)
def test_hostile_credentials(fuzz_client, db_path, dialect: Dialect) -> None:
    client, secret = fuzz_client

    @fuzz_settings(25)
    @given(credential=texts.filter(lambda s: s.isprintable() and s.isascii()) | st.sampled_from(
        [secret + " ", secret[:-1], secret.upper(), "x" * 10_000, "dt_" + "A" * 43, secret + secret]))
    def run(credential: str) -> None:
        headers = {"Content-Type": "application/json"}
        body = dialect.put_token(headers, {"summary": "s"}, credential)
        resp = client.request(dialect.method, dialect.path, json=body, headers=headers)
        assert resp.status_code < 500, resp.text[:300]
        if credential.strip() != secret:
            assert resp.status_code == 401, (credential[:40], resp.status_code, resp.text[:200])
        if len(credential) >= 12:  # short strings can occur in any message by chance
            assert credential not in resp.text

    run()
    assert consistency_problems(db_path) == []


@pytest.mark.parametrize("depth", [32, 33, 254, 255, 300, 1000, 1023])
@pytest.mark.parametrize("as_list", [False, True])
def test_deeply_nested_metadata_is_a_clear_400(client, token, db_path, depth: int, as_list: bool) -> None:
    """Deep JSON parses (orjson allows 1024 levels) but could not be stored again: refuse it up front."""
    inner = depth - 1  # the metadata object itself is the first level
    value = "[" * inner + '"bottom"' + "]" * inner if as_list else '{"k":' * inner + '"bottom"' + "}" * inner
    raw = ('{"product_name": "deep", "version": "' + str(depth) + '", "environment_name": "prod", '
           '"status": "success", "extra_metadata": {"x": ' + value + "}}").encode()
    resp = client.post("/deployment-events/", content=raw,
                       headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    if depth <= 32:
        assert resp.status_code == 200, resp.text
    else:
        assert resp.status_code == 400, resp.text
        assert resp.json()["detail"] == "Field 'extra_metadata' is nested more than 32 levels deep"
    assert consistency_problems(db_path) == []


@pytest.mark.parametrize("value", [1e308, -1e308, 1.7976931348623157e308, 10**30, "1e308", "-1e308"])
def test_out_of_range_timestamps_are_a_clear_400(client, token, value: Any) -> None:
    body = {"product_name": "ts", "version": "1", "environment_name": "prod", "status": "success", "timestamp": value}
    resp = client.post("/deployment-events/", json=body, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 400, resp.text
    assert "Field 'timestamp'" in resp.json()["detail"]


def test_huge_and_malformed_headers_over_real_http(live_server, token, db_path) -> None:
    """uvicorn's own limits answer these before the app; the server stays up and stores nothing."""
    import socket

    def raw_request(head: bytes) -> bytes:
        with socket.create_connection(("127.0.0.1", live_server.port), timeout=10) as sock:
            sock.sendall(head)
            chunks = []
            try:
                while chunk := sock.recv(65536):
                    chunks.append(chunk)
            except (ConnectionResetError, TimeoutError):
                pass
            return b"".join(chunks)

    body = b'{"product_name": "h", "version": "1", "environment_name": "prod", "status": "success"}'
    cases = [
        b"X-Pad: " + b"a" * 200_000,
        b"Authorization: Bearer " + token.encode() + b"\r\nX-Many: 1" * 2000,
        b"Authorization: Bearer \xff\xfe" + token.encode(),
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: -1",
        b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 99999999999999999999",
        b"Authorization: " + b"B" * 70_000,
    ]
    for extra in cases:
        head = (b"POST /deployment-events/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                b"Connection: close\r\n" + extra + b"\r\n\r\n" + body)
        answer = raw_request(head)
        status_line = answer.split(b"\r\n", 1)[0]
        assert status_line.startswith(b"HTTP/1.1 4"), (extra[:60], answer[:300])
        assert token.encode() not in answer
    assert httpx.get(live_server.url + "/healthz", timeout=10).status_code == 200
    assert stored_ids(db_path) == set()


INCIDENT = shaped({"product": SHORT, "title": texts, "environment": SHORT, "severity": SHORT,
                   "opened_at": TIME, "resolved_at": TIME, "status": st.sampled_from(["open", "resolved"]),
                   "change_id": SHORT, "deployment_id": st.none(),
                   "metadata": st.dictionaries(texts, any_value, max_size=4)})
COMMIT = shaped({"sha": st.sampled_from(["a" * 40, "b" * 7]), "repository": SHORT, "committed_at": TIME,
                 "authored_at": TIME, "message": texts, "author": SHORT})


def test_hostile_native_writes(fuzz_client, db_path) -> None:
    """The native write endpoints (incidents, commits) under the same rules, in the native error shape."""
    client, secret = fuzz_client
    native = Dialect("native", "POST", "", 201, INCIDENT, _bearer("Bearer"), frozenset({"error"}))
    seen: set[int] = set()

    @fuzz_settings(60)
    @given(target=st.sampled_from(["incident", "update", "commits", "commit-list"]), incident=INCIDENT,
           commits=st.lists(COMMIT, min_size=1, max_size=3) | st.lists(COMMIT, max_size=5) | any_value)
    @example(target="incident", incident={"product": "shop", "title": "checkout down"}, commits=[])
    @example(target="commits", incident={}, commits=[{"sha": "a" * 40, "committed_at": "2026-01-01T00:00:00Z"}])
    def run(target: str, incident: Any, commits: Any) -> None:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {secret}"}
        path, method, body, ok = {
            "incident": ("/api/v1/incidents", "POST", incident, 201),
            "update": ("/api/v1/incidents/1", "PATCH", incident, 200),
            "commits": ("/api/v1/commits", "POST", {"commits": commits}, 201),
            "commit-list": ("/api/v1/commits", "POST", commits, 201),
        }[target]
        resp = client.request(method, path, content=json.dumps(body, allow_nan=True).encode(), headers=headers)
        check_answer(resp, Dialect(target, method, path, ok, native.body, native.put_token, native.error_keys), secret)
        if resp.status_code >= 400 and resp.status_code != 404:
            assert set(resp.json()["error"]) >= {"code", "message"}
        seen.add(resp.status_code)

    run()
    assert 201 in seen and 400 in seen, seen
    assert consistency_problems(db_path) == []
