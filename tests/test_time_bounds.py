"""Times a client sends are bounded: before 2000-01-01 or more than a day ahead is a 400 naming the
field, in the shape of the API it came through, and nothing is stored; the bounds are settings."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from deploytrack.timeutil import now_us, parse_timestamp, to_iso
from tests.conftest import REPO, auth, query, run_cli

HOUR_US = 3_600_000_000
TOO_EARLY = "before 2000-01-01T00:00:00Z, the earliest time accepted"
TOO_LATE = "more than 1 day in the future"


def hours_ahead(hours: float) -> str:
    return to_iso(now_us() + int(hours * HOUR_US)) or ""


# (what the client sends, what the error says); "+48h" is resolved when the test runs
REFUSED = [(0, TOO_EARLY), ("0", TOO_EARLY), (946_684_799, TOO_EARLY), ("1999-12-31T23:59:59Z", TOO_EARLY),
           ("2000-01-01T00:30:00+01:00", TOO_EARLY), ("+48h", TOO_LATE)]


def resolve(value: object) -> object:
    return hours_ahead(48) if value == "+48h" else value


@dataclass
class Api:
    """One way in: how to send a time in a field, and how that API's error body names field and problem."""

    name: str
    send: Callable[[Any, str, str, object], Any]  # (client, token, field, value) -> response
    fields: tuple[str, ...]
    error: Callable[[dict[str, Any]], tuple[str | None, str]]  # 400 body -> (field, if the shape has one; message)
    accepted: int
    stored_time: Callable[[Any, str, Any, str, str], str]  # (client, token, response, field, sent) -> time kept
    rows: int = 1  # rows one accepted request stores


def _event_time(client: Any, token: str, event_id: str, field: str) -> str:
    event = client.get(f"/api/v1/events/{event_id}", headers=auth(token)).json()
    return event["commit_time"] if "commit" in field else event["occurred_at"]


def _events_time(client: Any, token: str, resp: Any, field: str, sent: str) -> str:
    return _event_time(client, token, resp.json()["id"], field)


def _versioner(path: str) -> Callable[[Any, str, str, object], Any]:
    def send(client: Any, token: str, field: str, value: object) -> Any:
        body = {"product_name": "shop", "version": "1.0", "environment_name": "production", "status": "success",
                field: value}
        return client.post(path, json=body, headers=auth(token))
    return send


def _quanta_post(client: Any, token: str, field: str, value: object) -> Any:
    return client.post("/api/events/push", json={"type": "code_deploy", "content": "x", field: value},
                       headers={"Authorization": f"Token {token}"})


def _quanta_get(client: Any, token: str, field: str, value: object) -> Any:
    return client.get("/api/events/push", params={"type": "custom", "content": "x", "auth_token": token,
                                                   field: str(value)})


def _devgrid(client: Any, token: str, field: str, value: object) -> Any:
    good = {"type": "event-deploy", "entityId": "shop", "attributes": {"env": "production", "status": "success"}}
    bad: dict[str, Any] = {**good, "attributes": dict(good["attributes"])}
    if field == "timestamp":
        bad["timestamp"] = value
    else:
        bad["attributes"][field] = value
    return client.post("/events", json={"events": [good, bad]}, headers={"x-api-key": token})


def _devgrid_error(body: dict[str, Any]) -> tuple[str | None, str]:
    assert body["index"] == 1 and body["statusCode"] == 400
    return body["field"], body["message"]


def _devgrid_time(client: Any, token: str, resp: Any, field: str, sent: str) -> str:
    return _event_time(client, token, resp.json()["events"][1]["id"], field)


def _ilert(client: Any, token: str, field: str, value: object) -> Any:
    return client.post("/api/deployment-events", json={"integrationKey": token, "summary": "s", field: value})


def _ilert_error(body: dict[str, Any]) -> tuple[str | None, str]:
    assert body["status"] == 400 and body["code"] == "BAD_REQUEST"
    return None, body["message"]


def _incident(client: Any, token: str, field: str, value: object) -> Any:
    body = {"product": "shop", "title": "outage", "opened_at": hours_ahead(-1), field: value}
    return client.post("/api/v1/incidents", json=body, headers=auth(token))


def _sha(value: object) -> str:
    """A commit per sent value (the same SHA again would update the first)."""
    return hashlib.sha1(str(value).encode()).hexdigest()


def _commit(client: Any, token: str, field: str, value: object) -> Any:
    commit = {"sha": _sha(value), "committed_at": hours_ahead(-1), field: value}
    return client.post("/api/v1/commits", json={"commits": [commit]}, headers=auth(token))


def _native_error(body: dict[str, Any]) -> tuple[str | None, str]:
    return body["error"]["field"], body["error"]["message"]


def _commit_time(client: Any, token: str, resp: Any, field: str, sent: str) -> str:
    assert resp.json() == {"stored": 1}
    return to_iso(query(client.app.state.deploytrack.settings.db,
                        f"SELECT {field} FROM commits WHERE sha = ?", (_sha(sent),))[0][0]) or ""


APIS = [
    Api("versioner-deployment", _versioner("/deployment-events/"), ("timestamp", "completed_at", "commit_timestamp"),
        lambda b: (None, b["detail"]), 200, _events_time),
    Api("versioner-build", _versioner("/build-events/"), ("timestamp",), lambda b: (None, b["detail"]), 200,
        _events_time),
    Api("quanta-post", _quanta_post, ("timestamp",), lambda b: (None, b["error"]), 200, _events_time),
    Api("quanta-get", _quanta_get, ("timestamp",), lambda b: (None, b["error"]), 200, _events_time),
    Api("devgrid", _devgrid, ("timestamp", "commit_timestamp"), _devgrid_error, 201, _devgrid_time, rows=2),
    Api("ilert", _ilert, ("timestamp",), _ilert_error, 202, _events_time),
    Api("incidents", _incident, ("opened_at", "resolved_at"), _native_error, 201,
        lambda client, token, resp, field, sent: resp.json()[field]),
    Api("commits", _commit, ("committed_at", "authored_at"), _native_error, 201, _commit_time),
]
CASES = [(api, field) for api in APIS for field in api.fields]
IDS = [f"{api.name}-{field}" for api, field in CASES]


def field_name(api: Api, field: str) -> str:
    """The name the API's error gives the field: with the batch position for DevGrid and commits."""
    if api.name == "devgrid":
        return f"events[1].{'timestamp' if field == 'timestamp' else 'attributes.' + field}"
    if api.name == "commits":
        return f"commits[0].{field}"
    return field


def stored_rows(db: object) -> int:
    return sum(query(db, f"SELECT COUNT(*) FROM {table}")[0][0] for table in ("events", "incidents", "commits"))


@pytest.mark.parametrize("api,field", CASES, ids=IDS)
@pytest.mark.parametrize("value,problem", REFUSED, ids=["zero", "zero-text", "1999-seconds", "1999", "1999-offset",
                                                         "in-2-days"])
def test_out_of_bounds_times_are_refused_naming_the_field(client, token, db_path, api, field, value, problem):
    resp = api.send(client, token, field, resolve(value))
    assert resp.status_code == 400, resp.text
    named, message = api.error(resp.json())
    name = field_name(api, field)
    assert message == f"Field '{name}' is {problem}"
    assert named in (None, name)
    assert stored_rows(db_path) == 0


@pytest.mark.parametrize("api,field", CASES, ids=IDS)
def test_a_time_23_hours_ahead_and_the_first_moment_of_2000_are_accepted(client, token, db_path, api, field):
    for sent in (hours_ahead(23), "2000-01-01T00:00:00Z"):
        if field == "resolved_at" and sent.startswith("2000"):
            continue  # an incident resolved before it opened is another rule
        before = stored_rows(db_path)
        resp = api.send(client, token, field, sent)
        assert resp.status_code == api.accepted, resp.text
        assert stored_rows(db_path) == before + api.rows
        kept = api.stored_time(client, token, resp, field, sent)
        assert parse_timestamp(kept) == parse_timestamp(sent), (sent, kept)


def test_updating_an_incident_is_bounded_too(client, token, db_path):
    created = client.post("/api/v1/incidents", headers=auth(token),
                          json={"product": "shop", "title": "outage", "opened_at": hours_ahead(-2)}).json()
    url = f"/api/v1/incidents/{created['id']}"
    for field, value, problem in (("resolved_at", hours_ahead(48), TOO_LATE), ("opened_at", 0, TOO_EARLY)):
        resp = client.patch(url, headers=auth(token), json={field: value})
        assert resp.status_code == 400, resp.text
        expected = {"code": "bad_request", "field": field, "message": f"Field '{field}' is {problem}"}
        assert resp.json()["error"] == expected
    got = client.get(url, headers=auth(token)).json()
    assert got["opened_at"] == created["opened_at"] and got["resolved_at"] is None


def test_the_bounds_are_settings(make_client, token, db_path):
    client = make_client(earliest_timestamp="2020-01-01", max_future_seconds=3600)
    send = _versioner("/deployment-events/")
    for value, problem in (("2019-12-31T23:59:59Z", "before 2020-01-01T00:00:00Z, the earliest time accepted"),
                           (hours_ahead(2), "more than 1 hour in the future")):
        resp = send(client, token, "timestamp", value)
        assert resp.status_code == 400 and resp.json()["detail"] == f"Field 'timestamp' is {problem}"
    for value in ("2020-01-01T00:00:00Z", hours_ahead(0.5)):
        assert send(client, token, "timestamp", value).status_code == 200
    assert stored_rows(db_path) == 2


def test_bad_bound_settings_are_refused_with_a_message(tmp_path):
    config = tmp_path / "deploytrack.toml"
    for line, message in (('earliest_timestamp = "last year"', "setting 'earliest_timestamp': 'last year' is not"),
                          ("max_future_seconds = -1", "setting 'max_future_seconds': must be at least 0, got -1")):
        config.write_text(line + "\n")
        done = subprocess.run([sys.executable, "-m", "deploytrack", "token", "list", "--config", str(config),
                               "--db", str(tmp_path / "x.db")], capture_output=True, text=True, timeout=60,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
        assert done.returncode == 2 and done.stderr.startswith(f"deploytrack: {message}"), done.stderr
    assert not (tmp_path / "x.db").exists()


def test_import_applies_the_same_bounds(db_path, tmp_path, capsys):
    lines = tmp_path / "backfill.jsonl"
    good = ('{"kind": "deployment", "product": "shop", "environment": "production", '
            '"occurred_at": "2001-05-01T10:00:00Z"}')
    for bad, expected in (('{"kind": "build", "product": "p", "occurred_at": 0}', f"'occurred_at' is {TOO_EARLY}"),
                          (f'{{"kind": "build", "product": "p", "commit_time": "{hours_ahead(48)}"}}',
                           f"'commit_time' is {TOO_LATE}"),
                          ('{"kind": "build", "product": "p", "received_at": "1999-01-01"}',
                           f"'received_at' is {TOO_EARLY}")):
        lines.write_text(good + "\n" + bad + "\n")
        assert run_cli("import", str(lines), "--db", str(db_path), "--create")[0] == 1
        err = capsys.readouterr().err
        assert f"line 2: Field {expected}" in err, err
        assert query(db_path, "SELECT COUNT(*) FROM events") == [(0,)]
    lines.write_text(good + "\n")
    assert run_cli("import", str(lines), "--db", str(db_path), "--create")[0] == 0
    assert query(db_path, "SELECT COUNT(*) FROM events") == [(1,)]


@pytest.mark.parametrize("key", ["committed_at", "timestamp"])
@pytest.mark.parametrize("value,problem", [(0, TOO_EARLY), ("1999-12-31T23:59:59Z", TOO_EARLY), ("+48h", TOO_LATE)],
                         ids=["zero", "1999", "in-2-days"])
def test_commit_times_listed_in_metadata_are_bounded(client, token, db_path, key, value, problem):
    commits = [{"sha": "a" * 40, key: hours_ahead(-3)}, {"sha": "b" * 40, key: resolve(value)}]
    body = {"product_name": "shop", "version": "1.0", "environment_name": "production", "status": "success",
            "extra_metadata": {"commits": commits}}
    resp = client.post("/deployment-events/", json=body, headers=auth(token))
    assert resp.status_code == 400, resp.text
    assert resp.json()["detail"] == f"Field 'commits[1].{key}' is {problem}"
    assert stored_rows(db_path) == 0
    commits[1][key] = "not a time"  # not a time at all: lead time ignores it, as before
    assert client.post("/deployment-events/", json=body, headers=auth(token)).status_code == 200
    assert stored_rows(db_path) == 1
