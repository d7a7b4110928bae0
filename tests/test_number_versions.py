"""A version (or an id) sent as a JSON number: an integer keeps its digits, whatever its size; a number
with a fraction or an exponent is refused with a 400 saying to send a string, in the API's own shape,
storing nothing. Bodies are sent as bytes so the numbers are exactly the literals written here.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tests.conftest import auth

BIG = "1180591620717411303424"  # 2**70: beyond 64 bits, where a float would keep only 17 digits
JSON = {"Content-Type": "application/json"}


class Literal(str):
    """A number to write into the body exactly as spelled."""


def body(value: Any) -> bytes:
    """JSON bytes of `value`, each Literal written as the bare number it spells."""
    literals: list[str] = []

    def mark(obj: Any) -> Any:
        if isinstance(obj, Literal):
            literals.append(str(obj))
            return f"@@{len(literals) - 1}@@"
        if isinstance(obj, dict):
            return {k: mark(v) for k, v in obj.items()}
        return [mark(v) for v in obj] if isinstance(obj, list) else obj

    raw = orjson.dumps(mark(value)).decode()
    for i, literal in enumerate(literals):
        raw = raw.replace(f'"@@{i}@@"', literal)
    return raw.encode()


def events(client, token):
    return client.get("/api/v1/events", headers=auth(token)).json()["events"]


def versioner(client, token, version_literal: str, **extra: Any):
    fields = {"product_name": "svc", "version": Literal(version_literal), "environment_name": "production",
              "status": "success", **extra}
    return client.post("/deployment-events/", content=body(fields), headers={**auth(token), **JSON})


@pytest.mark.parametrize("literal,expected", [
    (BIG, BIG), ("-" + BIG, "-" + BIG), ("42", "42"), ("0", "0"), ("18446744073709551615", "18446744073709551615"),
    ("1" + "0" * 30, "1" + "0" * 30)])
def test_integers_keep_their_digits(client, token, literal, expected):
    resp = versioner(client, token, literal, extra_metadata={"ratio": 0.25, "count": 3})
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
    quanta = client.post("/api/events/push", content=body({"type": "code_deploy", "content": "v",
                                                            "version": Literal(BIG)}),
                         headers={**JSON, "Authorization": f"Token {token}"})
    assert quanta.status_code == 200, quanta.text
    ilert = client.post("/api/deployment-events", headers=JSON, content=body(
        {"integrationKey": token, "summary": "s", "customDetails": {"version": Literal(BIG)}}))
    assert ilert.status_code == 202, ilert.text
    attributes = {"env": "production", "status": "success", "version": Literal(BIG), "build_id": Literal(BIG)}
    devgrid = client.post("/events", headers={**JSON, "x-api-key": token}, content=body(
        {"events": [{"type": "event-deploy", "entityId": Literal(BIG), "attributes": attributes}]}))
    assert devgrid.status_code == 201, devgrid.text
    [stored] = devgrid.json()["events"]
    assert (stored["entityId"], stored["attributes"]["version"], stored["attributes"]["build_id"]) == (BIG, BIG, BIG)
    assert [e["version"] for e in events(client, token)] == [BIG, BIG, BIG]


def test_each_api_refuses_fractions_in_its_shape(client, token):
    quanta = client.post("/api/events/push", headers={**JSON, "Authorization": f"Token {token}"},
                         content=body({"type": "code_deploy", "content": "v", "version": Literal("1.10")}))
    assert quanta.status_code == 400 and "send it as a string" in quanta.json()["error"]
    ilert = client.post("/api/deployment-events", headers=JSON, content=body(
        {"integrationKey": token, "summary": "s", "customDetails": {"version": Literal("4.2")}}))
    assert ilert.status_code == 400 and "customDetails.version" in ilert.json()["message"]
    ok = {"type": "event-deploy", "entityId": "a", "attributes": {"env": "production", "status": "success"}}
    bad = {"type": "event-deploy", "entityId": "a",
           "attributes": {"env": "production", "status": "success", "version": Literal("2.0")}}
    devgrid = client.post("/events", headers={**JSON, "x-api-key": token}, content=body({"events": [ok, bad]}))
    assert devgrid.status_code == 400
    assert (devgrid.json()["index"], devgrid.json()["field"]) == (1, "events[1].attributes.version")
    assert events(client, token) == []  # the batch is all-or-nothing


def test_a_fraction_beside_very_deep_nesting_is_a_400(client, token):
    """Re-reading the body for its exact numbers never turns deep nesting that orjson accepts into a 500."""
    deep = b"[" * 1000 + b"]" * 1000
    raw = body({"product_name": "svc", "version": Literal("1.5"), "environment_name": "production",
                "status": "success", "extra_metadata": {"deep": Literal(deep.decode())}})
    resp = client.post("/deployment-events/", content=raw, headers={**auth(token), **JSON})
    assert resp.status_code == 400 and "detail" in resp.json()
    assert events(client, token) == []
