"""Helpers for the DORA tests: post known events through the real HTTP API at chosen times."""

from __future__ import annotations

from typing import Any

from deploytrack.timeutil import day_start_us, now_us, to_iso
from tests.conftest import auth

DAY_US = 86_400_000_000


def today() -> int:
    return day_start_us(now_us())


def at(days_ago: int, hh: int = 12, mm: int = 0, ss: int = 0) -> str:
    """ISO time `days_ago` UTC days before today at hh:mm:ss."""
    return to_iso(today() - days_ago * DAY_US + ((hh * 60 + mm) * 60 + ss) * 1_000_000) or ""


def deploy(client: Any, token: str, version: str, status: str, when: str, product: str = "shop",
           env: str = "production", **extra: Any) -> dict[str, Any]:
    body = {"product_name": product, "version": version, "environment_name": env, "status": status,
            "timestamp": when, **extra}
    resp = client.post("/deployment-events/", headers=auth(token), json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()


def build(client: Any, token: str, version: str, when: str, product: str = "shop", **extra: Any) -> None:
    resp = client.post("/build-events/", headers=auth(token), json={
        "product_name": product, "version": version, "status": "success", "timestamp": when, **extra})
    assert resp.status_code == 200, resp.text


def incident(client: Any, token: str, **body: Any) -> dict[str, Any]:
    resp = client.post("/api/v1/incidents", headers=auth(token), json={"product": "shop", "title": "outage", **body})
    assert resp.status_code == 201, resp.text
    return resp.json()


def metrics(client: Any, token: str, **params: Any) -> dict[str, Any]:
    resp = client.get("/api/v1/metrics", headers=auth(token), params=params)
    assert resp.status_code == 200, resp.text
    return resp.json()
