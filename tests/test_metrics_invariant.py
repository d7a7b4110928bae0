"""The metrics invariant on generated histories (hypothesis), on SQLite and PostgreSQL:

- the same events give the same snapshots whatever order they arrive in;
- an incremental `metrics recompute`, `--since DAY` and `--refold-all` give identical snapshots;
- the live numbers for a day are that day's snapshot;
- the deployments the API lists are the same however the events arrived.

Histories mix out-of-order backfills over more than 90 days, redeploys, rollbacks and hotfixes,
invoke ids, builds, recorded commits, and incidents with and without links.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from deploytrack.app import create_app
from deploytrack.metrics import compute
from deploytrack.settings import load_settings
from deploytrack.storage import database as dbmod
from deploytrack.timeutil import DAY, to_iso
from tests.conftest import auth, create_token, query, run_cli
from tests.dora import today

PRODUCTS = ("shop", "cart")
ENVS = ("production", "staging")
VERSIONS = ("1", "2", "3", "4")


def when(days_ago: int, minute: int) -> str:
    return to_iso(today() - days_ago * DAY + minute * 60_000_000) or ""


deployments = st.fixed_dictionaries({
    "op": st.just("deploy"), "product": st.sampled_from(PRODUCTS), "env": st.sampled_from(ENVS),
    "version": st.sampled_from(VERSIONS), "status": st.sampled_from(("started", "success", "success", "failed")),
    "days_ago": st.integers(0, 120), "minute": st.integers(0, 1439), "invoke": st.sampled_from((None, None, "r1")),
    "mark": st.sampled_from((None, None, None, "rollback", "hotfix")), "sha": st.booleans(),
    "change": st.sampled_from((None, None, "CHG1")), "commits": st.booleans()})
builds = st.fixed_dictionaries({
    "op": st.just("build"), "product": st.sampled_from(PRODUCTS), "version": st.sampled_from(VERSIONS),
    "days_ago": st.integers(0, 120), "minute": st.integers(0, 1439), "sha": st.booleans()})
incidents = st.fixed_dictionaries({
    "op": st.just("incident"), "product": st.sampled_from((*PRODUCTS, None)),
    "env": st.sampled_from((None, *ENVS)), "days_ago": st.integers(0, 120), "minute": st.integers(0, 1439),
    "hours": st.sampled_from((None, 1, 5, 30)), "change": st.sampled_from((None, "CHG1"))})
# A recorded commit is an upsert (the last one sent wins): one time per SHA keeps any order equivalent.
commits = st.fixed_dictionaries({
    "op": st.just("commit"), "product": st.sampled_from(PRODUCTS), "version": st.sampled_from(VERSIONS)})
COMMIT_DAYS_AGO = {"1": 110, "2": 61, "3": 20, "4": 1}
histories = st.lists(st.one_of(deployments, deployments, deployments, builds, incidents, commits),
                     min_size=1, max_size=24)


def _sha(op: dict[str, Any]) -> str:
    return f"{op['product']}-{op['version']}"


def post(client: TestClient, token: str, op: dict[str, Any]) -> None:
    at = when(op["days_ago"], op["minute"]) if "minute" in op else None
    if op["op"] == "deploy":
        body: dict[str, Any] = {"product_name": op["product"], "version": op["version"], "status": op["status"],
                                "environment_name": op["env"], "timestamp": at}
        if op["sha"]:
            body["scm_sha"] = _sha(op)
        if op["invoke"]:
            body["invoke_id"] = f"{op['invoke']}-{op['product']}-{op['version']}"
        if op["mark"]:
            body["extra_metadata"] = {"deployment_type": op["mark"]}
        if op["change"]:
            body["change_id"] = op["change"]
        if op["commits"]:
            body.setdefault("extra_metadata", {})["commits"] = [{"sha": f"m-{op['product']}-{op['version']}"}]
        resp = client.post("/deployment-events/", headers=auth(token), json=body)
    elif op["op"] == "build":
        body = {"product_name": op["product"], "version": op["version"], "status": "success", "timestamp": at}
        if op["sha"]:
            body["scm_sha"] = _sha(op)
        resp = client.post("/build-events/", headers=auth(token), json=body)
    elif op["op"] == "incident":
        body = {"title": "outage", "opened_at": at}
        for key, value in (("product", op["product"]), ("environment", op["env"]), ("change_id", op["change"])):
            if value:
                body[key] = value
        resolved = op["days_ago"] * 1440 - op["minute"] - (op["hours"] or 0) * 60  # minutes before today
        if op["hours"] and resolved > 0:
            body["resolved_at"] = when(op["days_ago"], op["minute"] + op["hours"] * 60)
        if "product" not in body and "change_id" not in body:
            body["product"] = PRODUCTS[0]
        resp = client.post("/api/v1/incidents", headers=auth(token), json=body)
        assert resp.status_code == 201, resp.text
        return
    else:
        resp = client.post("/api/v1/commits", headers=auth(token), json=[
            {"sha": _sha(op), "committed_at": when(COMMIT_DAYS_AGO[op["version"]], PRODUCTS.index(op["product"]))}])
        assert resp.status_code == 201, resp.text
        return
    assert resp.status_code == 200, resp.text


@pytest.fixture
def new_db(request: pytest.FixtureRequest, tmp_path: Path, backend: str) -> Iterator[Any]:
    """Makes fresh databases of the test's backend."""
    count = iter(range(1_000_000))

    def make() -> str:
        if backend == "postgres":
            return str(request.getfixturevalue("pg_cluster").new_database())
        return str(tmp_path / f"history{next(count)}.db")

    yield make


@pytest.fixture(params=("sqlite", "postgres"))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def ingest(db: str, history: list[dict[str, Any]]) -> dict[str, Any]:
    """Post a history through HTTP; return what the API says of it afterwards."""
    token = create_token(db, "ci", "ingest", "read")
    app_settings = load_settings({"db": db, "scheduler": False}, environ={})
    with TestClient(create_app(app_settings), base_url="http://localhost") as client:
        for n, op in enumerate(history):
            post(client, token, op)
            if n % 3 == 2:  # a read brings derived data up to date: later events are folded in incrementally
                assert client.get("/api/v1/deployments", headers=auth(token), params={"limit": 1}).status_code == 200
        listed = client.get("/api/v1/deployments", headers=auth(token), params={"limit": 500}).json()["deployments"]
        live = {(p, w): client.get("/api/v1/metrics", headers=auth(token),
                                   params={"window": w, **({"product": p} if p else {})}).json()["latest"]
                for p in (None, "shop") for w in (7, 90)}
    keys = ("product", "environment", "version", "status", "label", "first_at", "finished_at", "duration_seconds")
    return {"deployments": sorted(tuple(str(d[k]) for k in keys) for d in listed), "live": live}


def snapshots(db: str) -> list[tuple[Any, ...]]:
    return query(db, "SELECT day, scope, product, environment, window_days, data FROM metric_snapshots "
                     "ORDER BY day, scope, product, environment, window_days")


def recompute(db: str, *flags: str) -> list[tuple[Any, ...]]:
    code, out = run_cli("metrics", "recompute", "--db", db, *flags)
    assert code == 0, out
    return snapshots(db)


@settings(max_examples=int(os.environ.get("DEPLOYTRACK_HYPOTHESIS_EXAMPLES", "25")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(history=histories, order=st.randoms(use_true_random=False), since=st.integers(1, 100))
def test_one_computation(new_db, history, order, since):
    # Two events with one invoke id and status are a retry: the first to arrive is kept, which depends on
    # the order. Keep one of each, so any order stores the same events.
    seen = set()
    history = [op for op in history if op["op"] != "deploy" or not op["invoke"] or not (
        (key := (op["product"], op["env"], op["version"], op["status"])) in seen or seen.add(key))]
    # Deployments of one product/environment at the same instant are taken in arrival order (DESIGN: "ties
    # by arrival"), so such a history is not the same whatever the order: give each its own minute.
    instants = set()
    history = [op for op in history if op["op"] != "deploy" or not (
        (instant := (op["product"], op["env"], op["days_ago"], op["minute"])) in instants or instants.add(instant))]
    first_db, second_db = new_db(), new_db()
    shuffled = list(history)
    order.shuffle(shuffled)
    note(f"history: {history!r}\nshuffled: {shuffled!r}")
    first, second = ingest(first_db, history), ingest(second_db, shuffled)
    assert first["deployments"] == second["deployments"]
    assert first["live"] == second["live"]

    incremental = recompute(first_db)
    assert recompute(second_db) == incremental
    assert recompute(first_db, "--refold-all") == incremental
    assert recompute(first_db, "--since", str(to_iso(today() - since * DAY))[:10]) == incremental

    # live numbers as of the end of yesterday are yesterday's snapshot
    yesterday = today() - DAY
    conn = dbmod.connect(first_db)
    with contextlib.closing(conn):
        app_settings = load_settings({"db": first_db}, environ={})
        for scope in (compute.Scope("overall"), compute.Scope("product", "shop"),
                      compute.Scope("environment", "", "staging")):
            for window in compute.WINDOWS:
                live = compute.live(conn, app_settings, scope, window, yesterday + DAY - 1)
                rows = query(first_db, "SELECT data FROM metric_snapshots WHERE day = ? AND scope = ? AND product = ? "
                                       "AND environment = ? AND window_days = ?",
                             (yesterday, scope.kind, scope.product, scope.environment, window))
                assert live.pop("day") == to_iso(yesterday)
                if rows:
                    assert live == orjson.loads(rows[0][0])
                else:
                    assert not live["deployment_frequency"]["data_points"] and not live["lead_time"]["data_points"]
