"""A one-time no-deploy window must fall inside the calendar once it is turned into UTC: the API
refuses one that does not, and a rule stored before that check (an old database) still lists,
shows and deletes through the API, the page and the CLI."""

from __future__ import annotations

import json
from typing import Any

import httpx2 as httpx
import orjson
import pytest

from tests.conftest import auth, create_token, execute, query, run_cli

EOY = {"recurrence": "once", "timezone": "America/Los_Angeles", "start": "9999-12-31T20:00",
       "end": "9999-12-31T23:00"}  # 20:00 in Los Angeles is 04:00 on 10000-01-01 in UTC


@pytest.fixture
def admin(db_path: Any) -> str:
    return create_token(db_path, "admin", "admin")


def rules(db_path: Any) -> list[tuple[object, ...]]:
    return query(db_path, "SELECT name, definition FROM rules")


@pytest.mark.parametrize("schedule, field", [
    (EOY, "schedule.start"),
    ({**EOY, "start": "9999-12-31T10:00"}, "schedule.end"),
    ({**EOY, "start": "9999-12-31T20:00-08:00", "end": "9999-12-31T23:00-08:00"}, "schedule.start"),
    ({**EOY, "timezone": "UTC", "start": "9999-12-31T10:00", "end": "9999-12-31T23:00-08:00"}, "schedule.end"),
    ({**EOY, "timezone": "UTC", "start": "0001-01-01T00:00+14:00", "end": "0001-01-02T00:00"},
     "schedule.start"),
])
def test_a_one_time_window_past_the_calendar_in_utc_is_a_400_and_stores_nothing(live_server, admin, db_path,
                                                                               schedule, field) -> None:
    r = httpx.post(live_server.url + "/api/v1/rules", headers=auth(admin),
                   json={"name": "eoy", "type": "schedule", "schedule": schedule})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["field"] == field
    assert "UTC" in r.json()["error"]["message"]
    assert rules(db_path) == []


def test_the_last_hours_of_9999_in_utc_are_accepted(live_server, admin) -> None:
    r = httpx.post(live_server.url + "/api/v1/rules", headers=auth(admin), json={
        "name": "eoy", "type": "schedule", "schedule": {**EOY, "timezone": "UTC"}})
    assert r.status_code == 201, r.text
    assert r.json()["window"]["next_end"] == "9999-12-31T23:00:00Z"


def test_patching_a_window_past_the_calendar_is_a_400_and_changes_nothing(live_server, admin, db_path) -> None:
    good = {**EOY, "start": "2030-01-01T00:00", "end": "2030-01-02T00:00"}
    r = httpx.post(live_server.url + "/api/v1/rules", headers=auth(admin),
                   json={"name": "eoy", "type": "schedule", "schedule": good})
    assert r.status_code == 201, r.text
    before = rules(db_path)
    r = httpx.patch(f"{live_server.url}/api/v1/rules/{r.json()['id']}", headers=auth(admin), json={"schedule": EOY})
    assert r.status_code == 400 and r.json()["error"]["field"] == "schedule.start", r.text
    assert rules(db_path) == before


def test_a_rule_stored_before_the_check_still_reads_and_deletes(live_server, admin, db_path) -> None:
    good = {**EOY, "start": "2030-01-01T00:00", "end": "2030-01-02T00:00"}
    r = httpx.post(live_server.url + "/api/v1/rules", headers=auth(admin),
                   json={"name": "eoy", "type": "schedule", "schedule": good})
    rule_id = r.json()["id"]
    definition = {**orjson.loads(rules(db_path)[0][1]), "schedule": EOY}
    execute(db_path, "UPDATE rules SET definition = ? WHERE id = ?", (orjson.dumps(definition).decode(), rule_id))

    listed = httpx.get(live_server.url + "/api/v1/rules", headers=auth(admin))
    assert listed.status_code == 200, listed.text
    window = listed.json()["rules"][0]["window"]
    assert window == {"active": False, "active_until": None, "next_start": "+010000-01-01T04:00:00Z",
                      "next_end": "+010000-01-01T07:00:00Z"}
    one = httpx.get(f"{live_server.url}/api/v1/rules/{rule_id}", headers=auth(admin))
    assert one.status_code == 200 and one.json()["schedule"] == EOY, one.text
    page = httpx.get(live_server.url + "/rules", headers=auth(admin))
    assert page.status_code == 200 and "eoy" in page.text
    code, out = run_cli("rule", "list", "--db", str(db_path))
    assert code == 0 and "eoy" in out, out
    code, out = run_cli("rule", "show", "eoy", "--db", str(db_path))
    assert code == 0 and json.loads(out)["window"]["next_start"] == "+010000-01-01T04:00:00Z", out
    gone = httpx.delete(f"{live_server.url}/api/v1/rules/{rule_id}", headers=auth(admin))
    assert gone.status_code == 200 and gone.json()["deleted"]["name"] == "eoy", gone.text
    assert rules(db_path) == []


def test_the_cli_refuses_it_too(admin, db_path, capsys) -> None:
    code, _ = run_cli("rule", "add", "eoy", "--type", "schedule", "--recurrence", "once", "--timezone",
                        EOY["timezone"], "--start", EOY["start"], "--end", EOY["end"], "--db", str(db_path))
    err = capsys.readouterr().err
    assert code == 2 and "schedule.start" in err and "outside the years 0001 to 9999" in err, err
    assert rules(db_path) == []
