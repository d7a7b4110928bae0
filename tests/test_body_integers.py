"""Integers in JSON bodies (ids, minutes) are checked by one rule through a real server: a value that
does not fit 64 bits, or is not a whole number, is a 400 naming the field, never a 500; and a text
field's error says what is wrong with it."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx
import pytest

from tests.conftest import auth, create_token, query

TOO_BIG = [2**63, 2**64 - 1, 2**64, -(2**63) - 1, 0, -1, 1.5, "7", True]


@pytest.fixture
def admin(db_path: Any) -> str:
    return create_token(db_path, "admin", "admin")


def refused(resp: httpx.Response, field: str, words: str = "") -> None:
    assert resp.status_code == 400, resp.text
    assert resp.json()["error"]["field"] == field, resp.text
    assert words in resp.json()["error"]["message"], resp.text


def counts(db: Any) -> tuple[object, ...]:
    return query(db, "SELECT (SELECT COUNT(*) FROM incidents), (SELECT COUNT(*) FROM rule_overrides), "
                     "(SELECT COUNT(*) FROM rules)")[0]


@pytest.mark.parametrize("value", TOO_BIG)
def test_ids_that_are_not_64_bit_whole_numbers_are_a_400(live_server, token, admin, db_path, value):
    url = live_server.url
    refused(httpx.post(url + "/api/v1/incidents", headers=auth(token),
                       json={"product": "shop", "title": "t", "deployment_id": value}), "deployment_id")
    created = httpx.post(url + "/api/v1/incidents", headers=auth(token), json={"product": "shop", "title": "t"})
    assert created.status_code == 201, created.text
    incident = created.json()["id"]
    refused(httpx.patch(f"{url}/api/v1/incidents/{incident}", headers=auth(token), json={"deployment_id": value}),
            "deployment_id")
    refused(httpx.post(url + "/api/v1/rule-overrides", headers=auth(admin),
                       json={"product": "shop", "reason": "r", "rule_id": value}), "rule_id")
    assert counts(db_path) == (1, 0, 0)


def test_the_largest_64_bit_id_passes_the_check_and_is_looked_up(live_server, token, admin, db_path):
    url, largest = live_server.url, 2**63 - 1
    created = httpx.post(url + "/api/v1/incidents", headers=auth(token),
                         json={"product": "shop", "title": "t", "deployment_id": largest})
    refused(created, "deployment_id", f"no deployment {largest}")
    override = httpx.post(url + "/api/v1/rule-overrides", headers=auth(admin),
                          json={"product": "shop", "reason": "r", "rule_id": largest})
    assert override.status_code == 404 and override.json()["error"]["field"] == "rule_id", override.text
    assert counts(db_path) == (0, 0, 0)


@pytest.mark.parametrize("value", [2**63, 2**64 - 1, 0, 525_601, 1.5, True])
def test_minutes_fields_use_the_same_rule(live_server, admin, db_path, value):
    url = live_server.url
    refused(httpx.post(url + "/api/v1/rule-overrides", headers=auth(admin),
                       json={"product": "shop", "reason": "r", "expires_in_minutes": value}), "expires_in_minutes",
            "525600")
    refused(httpx.post(url + "/api/v1/rules", headers=auth(admin),
                       json={"name": "c", "type": "concurrency", "concurrency": {"stale_after_minutes": value}}),
            "concurrency.stale_after_minutes", "525600")
    refused(httpx.post(url + "/api/v1/rules", headers=auth(admin), json={
        "name": "f", "type": "flow", "environments": ["production"],
        "flow": {"prerequisites": ["staging"], "soak_minutes": value if value != 0 else -1}}), "flow.soak_minutes",
        "525600")
    assert counts(db_path) == (0, 0, 0)


@pytest.mark.parametrize("field", ["product", "environment", "version", "reason"])
def test_an_override_field_with_a_nul_says_so(live_server, admin, db_path, field):
    body = {"product": "shop", "reason": "r", field: "a\u0000"}
    refused(httpx.post(live_server.url + "/api/v1/rule-overrides", headers=auth(admin), json=body), field, "NUL")
    too_long = {"product": "shop", "reason": "r", field: "a" * 1001}
    refused(httpx.post(live_server.url + "/api/v1/rule-overrides", headers=auth(admin), json=too_long), field,
            "longer than")
    refused(httpx.post(live_server.url + "/api/v1/rule-overrides", headers=auth(admin),
                       json={"product": "shop", "reason": "r", field: 5}), field, "must be a string")
    assert counts(db_path) == (0, 0, 0)
