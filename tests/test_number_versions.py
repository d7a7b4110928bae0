"""A version (or an id) sent as a JSON number: an integer keeps its digits, whatever its size; a number
with a fraction or an exponent is refused with a 400 saying to send a string, in the API's own shape,
storing nothing. Bodies are sent as bytes so the numbers are exactly the literals written here.
"""

from __future__ import annotations

import pytest

from tests.conftest import auth

BIG = "1180591620717411303424"  # 2**70: beyond 64 bits, where a float would keep only 17 digits


def events(client, token):
    return client.get("/api/v1/events", headers=auth(token)).json()["events"]


def versioner(client, token, version_literal: str, extra: str = ""):
    body = ('{"product_name": "svc", "version": %s, "environment_name": "production", "status": "success"%s}'
            % (version_literal, extra))
    return client.post("/deployment-events/", content=body.encode(),
                       headers={**auth(token), "Content-Type": "application/json"})


@pytest.mark.parametrize("literal,expected", [
    (BIG, BIG), ("-" + BIG, "-" + BIG), ("42", "42"), ("0", "0"), ("18446744073709551615", "18446744073709551615"),
    ("1" + "0" * 30, "1" + "0" * 30)])
def test_integers_keep_their_digits(client, token, literal, expected):
    resp = versioner(client, token, literal, ', "extra_metadata": {"ratio": 0.25, "count": 3}')
    assert resp.status_code == 200, resp.text
    assert resp.json()["version"] == expected
    [event] = events(client, token)
    assert event["version"] == expected
    assert event["metadata"] == {"ratio": 0.25, "count": 3}  # the rest of the body is read as before


@pytest.mark.parametrize("literal", ["1.10", "1.0", "1e3", "2.5E-3", "1.1805916207174113e+21", "-0.5"])
def test_fractions_and_exponents_are_refused(client, token, literal):
    resp = versioner(client, token, literal)
    assert resp.status_code == 400
    detail = resp.json()["detail"]
    assert "'version'" in detail and "send it as a string" in detail
    assert events(client, token) == []


def test_each_api(client, token):
    quanta = client.post("/api/events/push", content=('{"type": "code_deploy", "content": "v", "version": %s}'
                                                      % BIG).encode(),
                         headers={"Content-Type": "application/json", "Authorization": f"Token {token}"})
    assert quanta.status_code == 200, quanta.text
    ilert = client.post("/api/deployment-events", content=(
        '{"integrationKey": "%s", "summary": "s", "customDetails": {"version": %s}}' % (token, BIG)).encode(),
        headers={"Content-Type": "application/json"})
    assert ilert.status_code == 202, ilert.text
    devgrid = client.post("/events", content=(
        '{"events": [{"type": "event-deploy", "entityId": %s, "attributes": {"env": "production", "status": "success",'
        ' "version": %s, "build_id": %s}}]}' % (BIG, BIG, BIG)).encode(),
        headers={"Content-Type": "application/json", "x-api-key": token})
    assert devgrid.status_code == 201, devgrid.text
    [stored] = devgrid.json()["events"]
    assert (stored["entityId"], stored["attributes"]["version"], stored["attributes"]["build_id"]) == (BIG, BIG, BIG)
    assert [e["version"] for e in events(client, token)] == [BIG, BIG, BIG]


def test_each_api_refuses_fractions_in_its_shape(client, token):
    quanta = client.post("/api/events/push", content=b'{"type": "code_deploy", "content": "v", "version": 1.10}',
                         headers={"Content-Type": "application/json", "Authorization": f"Token {token}"})
    assert quanta.status_code == 400 and "send it as a string" in quanta.json()["error"]
    ilert = client.post("/api/deployment-events", content=(
        '{"integrationKey": "%s", "summary": "s", "customDetails": {"version": 4.2}}' % token).encode(),
        headers={"Content-Type": "application/json"})
    assert ilert.status_code == 400 and "customDetails.version" in ilert.json()["message"]
    ok = '{"type": "event-deploy", "entityId": "a", "attributes": {"env": "production", "status": "success"}}'
    bad = '{"type": "event-deploy", "entityId": "a", "attributes": {"env": "production", "status": "success", ' \
          '"version": 2.0}}'
    devgrid = client.post("/events", content=('{"events": [%s, %s]}' % (ok, bad)).encode(),
                          headers={"Content-Type": "application/json", "x-api-key": token})
    assert devgrid.status_code == 400
    assert (devgrid.json()["index"], devgrid.json()["field"]) == (1, "events[1].attributes.version")
    assert events(client, token) == []  # the batch is all-or-nothing
