"""Two ingest groups at once on one PostgreSQL database (two server processes' writers).

Each group takes the database-wide write lock shared and locks exactly what it decides
(storage/keylocks.py): groups on different keys commit beside each other, a group on the same
key waits for the first and then sees what it stored, and anything else that writes (here the
metrics refresh) waits for every group in flight. Here two connections play the two processes'
writers, so the order of events is the test's; the HTTP tests below send to two real servers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import httpx2 as httpx
import pytest

from deploytrack.metrics import refresh
from deploytrack.model import Event
from deploytrack.rules import store as rule_store
from deploytrack.rules.model import parse_rule
from deploytrack.settings import load_settings
from deploytrack.storage import database as dbmod
from deploytrack.storage.ingest import Ingest, IngestResult, ingest_group
from deploytrack.timeutil import now_us
from tests.conftest import LiveServer, auth, create_token, execute, query, two_live_servers
from tests.pg_cluster import Cluster

pytestmark = pytest.mark.postgres
WAIT = 0.5  # how long a blocked group is watched to stay blocked


def deployment(product: str, version: str, status: str = "completed", **fields: Any) -> Event:
    return Event(dialect="versioner", kind="deployment", product=product, version=version, status=status,
                 environment_raw="production", **fields)


def request(*events: Event, key: str | None = None, token_id: int | None = None) -> Ingest:
    return Ingest(events=list(events), token_id=token_id, received_at=now_us(), aliases={}, idempotency_key=key)


class Writer:
    """One connection writing like a server's writer: an ingest group alone in a transaction, the
    write lock shared. `start` stores the group without committing; `commit` ends it."""

    def __init__(self, url: str) -> None:
        self.conn = dbmod.open_migrated(url)

    def start(self, *batches: Ingest) -> list[Any]:
        self.conn.begin_write(shared=True)
        return ingest_group(self.conn, list(batches))

    def commit(self) -> None:
        self.conn.commit()

    def close(self) -> None:
        self.conn.close()


@pytest.fixture
def writers(pg_url: str) -> Iterator[tuple[Writer, Writer]]:
    a, b = Writer(pg_url), Writer(pg_url)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def in_thread(fn: Any, *args: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    thread.start()
    return thread, out


def test_groups_on_different_keys_commit_beside_each_other(writers, pg_url):
    a, b = writers
    first = a.start(request(deployment("left", "1", scm_sha="a" * 40)))
    thread, out = in_thread(b.start, request(deployment("right", "1", scm_sha="b" * 40)))
    thread.join(30)
    assert not thread.is_alive()  # `b` did not wait for `a`
    second = out[0]
    b.commit()
    a.commit()
    ids = {first[0].rows[0]["deployment_id"], second[0].rows[0]["deployment_id"]}
    assert len(ids) == 2 and None not in ids  # each its own record, ids from the sequence
    assert sorted(query(pg_url, "SELECT product, id FROM deployments")) == sorted(
        [("left", first[0].rows[0]["deployment_id"]), ("right", second[0].rows[0]["deployment_id"])])


@pytest.mark.parametrize("case", ["idempotency key", "client key", "version's sha", "deployment key"])
def test_a_group_on_the_same_key_waits_and_then_sees_the_first(writers, pg_url, case):
    a, b = writers
    token = int(query(pg_url, "SELECT id FROM tokens WHERE name = 'ci'")[0][0]) if case == "idempotency key" else None
    if case == "idempotency key":
        one, two = (request(deployment("svc", v), key="retry-1", token_id=token) for v in ("1", "2"))
    elif case == "client key":
        one, two = (request(deployment("svc", "1", invoke_id="run-1", client_key="run-1/success")) for _ in "ab")
    elif case == "version's sha":
        one, two = (request(deployment("svc", "1", scm_sha=sha * 40)) for sha in "ab")
    else:
        one, two = request(deployment("svc", "1", "started")), request(deployment("svc", "1", "completed"))
    first = a.start(one)
    thread, out = in_thread(b.start, two)
    thread.join(WAIT)
    assert thread.is_alive()  # waiting for `a`'s lock on the key
    a.commit()
    thread.join(30)
    second = out[0][0]
    b.commit()
    stored = query(pg_url, "SELECT id, deployment_id FROM events ORDER BY seq")
    if case in ("idempotency key", "client key"):  # the original answer, replayed; one event
        assert isinstance(second, IngestResult) and second.replayed
        assert [r["id"] for r in second.rows] == [r["id"] for r in first[0].rows]
        assert len(stored) == 1
    elif case == "version's sha":  # the second SHA for the version is the conflict
        assert getattr(second, "status", None) == 409
        assert len(stored) == 1
    else:  # the completion folds into the started deployment: one record
        assert [r[1] for r in stored] == [first[0].rows[0]["deployment_id"]] * 2
        assert query(pg_url, "SELECT status, event_count FROM deployments") == [("completed", 2)]


def test_a_concurrency_rule_lets_one_of_two_groups_through(writers, pg_url):
    """Two versions of one product start at once (different deployment keys): the product's lock
    makes the second group read the first's deployment, so the rule refuses it."""
    conn = dbmod.connect(pg_url)
    try:
        with dbmod.transaction(conn):
            rule_store.insert_rule(conn, parse_rule({"name": "one at a time", "type": "concurrency"}, {}), 0, "ana",
                                   None)
    finally:
        conn.close()
    a, b = writers
    first = a.start(replace(request(deployment("svc", "1", "started", invoke_id="a")), rules="block"))
    thread, out = in_thread(b.start, replace(request(deployment("svc", "2", "started", invoke_id="b")), rules="block"))
    thread.join(WAIT)
    assert thread.is_alive()  # waiting for `a`'s lock on the product
    a.commit()
    thread.join(30)
    b.commit()
    assert isinstance(first[0], IngestResult)
    assert getattr(out[0][0], "rule_code", None) == "CONCURRENT_DEPLOYMENT" and out[0][0].status == 409
    assert query(pg_url, "SELECT version, status FROM deployments") == [("1", "started")]


@pytest.fixture
def pg_url(pg_cluster: Cluster) -> str:
    """A database with a token, and the products and environment the tests use already named (two
    groups naming the same new product do wait for each other: the second insert of the name waits
    to see whether the first commits)."""
    url = pg_cluster.new_database()
    create_token(url, "ci", "ingest", "read")
    for table, name in [("environments", "production")] + [("products", p) for p in ("left", "right", "svc",
                                                                                    "late", "early")]:
        execute(url, f"INSERT INTO {table} (name, created_at) VALUES (?, 0)", (name,))
    return url


def test_the_refresh_waits_for_groups_in_flight_and_skips_no_event(writers, pg_url):
    """A group that took a lower seq commits after one with a higher seq: the refresh must not move
    its watermark past the lower one before it is committed (it would never look at it again)."""
    a, b = writers
    a.start(request(deployment("late", "1")))  # seq 1, not committed yet
    thread, _ = in_thread(b.start, request(deployment("early", "1")))  # seq 2
    thread.join(30)
    assert not thread.is_alive()
    b.commit()
    conn = dbmod.connect(pg_url)
    try:
        read, write = dbmod.on_connection(conn)
        settings = load_settings({"db": pg_url, "scheduler": False}, environ={})
        thread, _ = in_thread(refresh.refresh, read, write, settings)
        thread.join(WAIT)
        assert thread.is_alive()  # waiting for the group in flight
        a.commit()
        thread.join(60)
        assert not thread.is_alive()
        assert query(pg_url, "SELECT value FROM kv WHERE key = 'derived_seq'") == [("2",)]
        assert sorted(query(pg_url, "SELECT product, status FROM deployment_facts")) == [
            ("early", "completed"), ("late", "completed")]
        assert refresh.refresh(read, write, settings).keys_refolded == 0  # nothing left behind
    finally:
        conn.close()


# -- two real server processes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two(pg_cluster: Cluster) -> Iterator[tuple[LiveServer, LiveServer, str, str, httpx.Client]]:
    with two_live_servers(pg_cluster) as servers:
        yield servers


def test_two_processes_give_every_new_deployment_its_own_id(two):
    a, b, token, url, http = two
    sends = [(server, {"product_name": f"app-{i % 5}", "version": f"5.{i}", "environment_name": "production",
                       "status": status, "invoke_id": f"ship-{i}"})
             for i in range(40) for server, status in ((a if i % 2 else b, "started"), (b if i % 2 else a, "success"))]

    def send(item: tuple[LiveServer, dict[str, Any]]) -> tuple[str, int, int]:
        server, body = item
        resp = http.post(server.url + "/deployment-events/", json=body, headers=auth(token))
        return body["invoke_id"], resp.status_code, int(resp.json().get("deployment_id") or 0)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, sends))
    assert {status for _, status, _ in answers} == {200}, answers
    records = query(url, "SELECT id, invoke_id, event_count, status FROM deployments WHERE invoke_id LIKE 'ship-%'")
    assert len(records) == 40 and len({r[0] for r in records}) == 40  # one record per deployment, no id twice
    assert {r[2:] for r in records} == {(2, "completed")}
    by_invoke = {r[1]: r[0] for r in records}
    assert all(dep_id == by_invoke[invoke] for invoke, _, dep_id in answers)  # each reply names its record
    assert query(url, "SELECT COUNT(*) FROM events e JOIN deployments d ON d.id = e.deployment_id "
                      "WHERE e.invoke_id LIKE 'ship-%' AND d.invoke_id = e.invoke_id") == [(80,)]


def test_two_processes_one_idempotency_key_one_event_the_answer_replayed(two):
    a, b, token, url, http = two

    def send(server: LiveServer) -> tuple[int, str]:
        body = {"product_name": "keyed", "version": "1", "environment_name": "production", "status": "success"}
        resp = http.post(server.url + "/deployment-events/", json=body,
                         headers={**auth(token), "Idempotency-Key": "same-key"})
        return resp.status_code, resp.json()["id"]

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(send, [a, b] * 8))
    assert {status for status, _ in answers} == {200} and len({i for _, i in answers}) == 1, answers
    assert query(url, "SELECT COUNT(*) FROM events WHERE product = 'keyed'") == [(1,)]


def test_two_processes_one_version_two_shas_exactly_one_409(two):
    a, b, token, url, http = two

    def send(item: tuple[LiveServer, str]) -> int:
        server, sha = item
        body = {"product_name": "sealed", "version": "7", "environment_name": "production", "status": "success",
                "scm_sha": sha * 40}
        return http.post(server.url + "/deployment-events/", json=body, headers=auth(token)).status_code

    started = time.monotonic()
    with ThreadPoolExecutor(2) as pool:
        statuses = sorted(pool.map(send, [(a, "a"), (b, "b")]))
    assert statuses == [200, 409], (statuses, time.monotonic() - started)
    assert len(query(url, "SELECT scm_sha FROM versions WHERE product = 'sealed'")) == 1
    assert query(url, "SELECT COUNT(*) FROM events WHERE product = 'sealed'") == [(1,)]
