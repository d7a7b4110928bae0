"""Reads that must find their rows through an index, not walk a table or an index whole (issue 20, m026).

The statements are the ones the code issues (traced on the connection), planned by SQLite on the test's
database file. A deploytrack database has no planner statistics (nothing runs ANALYZE), and without them
SQLite's plan depends on the schema and the statement only, not on how many rows there are: the plan
seen on a few events is the plan at millions, where a walk of every fact or event costs ~0.1 s a read.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from deploytrack.metrics import compute, facts, fold
from deploytrack.settings import load_settings
from deploytrack.storage import database as dbmod
from deploytrack.storage import deployment_queries, event_queries
from deploytrack.storage.database import Database
from deploytrack.timeutil import DAY, day_start_us, now_us
from tests.conftest import run_cli
from tests.dora import at, build, deploy, incident

pytestmark = pytest.mark.parametrize("db_path", ["sqlite"], indirect=True)
# A whole walk is `SCAN table` (or `SCAN table USING [COVERING] INDEX name`); a walk of a product's or a
# pair's whole history is a seek of a time-led facts index without its time.
TIME_LED = ("deployment_facts_time", "metric_lead_facts_time")


@contextmanager
def traced(conn: Any) -> Iterator[list[str]]:
    """The statements `conn` runs inside the block, with their parameters bound."""
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        conn.set_trace_callback(None)


def plan(conn: Any, sql: str) -> list[str]:
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]


def walks(conn: Any, call: Callable[[], object]) -> dict[str, list[str]]:
    """The statements `call` ran that walk a table or an index whole, with their plans."""
    with traced(conn) as statements:
        result = call()
        if isinstance(result, Iterator):
            list(result)
    out = {}
    for sql in statements:
        if not re.match(r"\s*(SELECT|WITH)", sql, re.I):
            continue
        steps = plan(conn, sql)
        if any(step.startswith("SCAN ") or (any(i in step for i in TIME_LED) and "finished_at>" not in step)
               for step in steps):
            out[sql] = steps
    return out


@pytest.fixture
def history(client, token, db_path) -> Iterator[Any]:
    """A few days of builds, deployments (two products, two environments) and incidents, refreshed."""
    for days_ago in range(4, 0, -1):
        for product in ("shop", "cart"):
            build(client, token, f"{days_ago}.0", at(days_ago, 6), product=product, scm_sha=f"{product}{days_ago}")
            for hour, env in ((8, "staging"), (9, "production")):
                deploy(client, token, f"{days_ago}.0", "success", at(days_ago, hour), product=product, env=env)
    deploy(client, token, "9.0", "success", at(0, 0, 1), product="shop", scm_sha="today")
    incident(client, token, environment="production", opened_at=at(1, 10))
    code, out = run_cli("metrics", "recompute", "--db", str(db_path))
    assert code == 0, out
    conn = dbmod.connect(db_path)
    try:
        assert conn.execute("SELECT COUNT(*) FROM metric_lead_facts").fetchone()[0] > 0
        yield conn
    finally:
        conn.close()


def test_metric_reads_of_every_scope_seek_by_product_and_environment(history, db_path):
    settings = load_settings({"db": str(db_path)}, environ={})
    now = now_us()
    since = day_start_us(now) - 29 * DAY
    for product, envs in ((None, None), (None, ["production"]), ("shop", ["production"]), ("shop", None)):
        read = functools.partial(compute.load_facts, history, settings, since, now + 1, product, envs)
        assert walks(history, read) == {}, (product, envs)
    # the snapshot runs' range: every day since the first
    assert walks(history, lambda: compute.load_facts(history, settings, since - 300 * DAY, day_start_us(now))) == {}


def test_what_new_builds_and_commits_touch_is_found_by_key(history):
    found = dict(facts.lead_times_of(history, ["shop3", "cart2", "today"], [("shop", "2.0")]))
    assert {partition for partition in found} == {("shop", "production"), ("shop", "staging"),
                                                  ("cart", "production"), ("cart", "staging")}
    assert walks(history, lambda: facts.lead_times_of(history, ["shop3", "nothing"], [("shop", "2.0")])) == {}
    version_plans = plan(history, "SELECT environment, MIN(finished_at) FROM metric_lead_facts "
                                  "WHERE product = 'shop' AND version = '2.0' GROUP BY environment")
    assert any("COVERING INDEX metric_lead_facts_version" in step for step in version_plans), version_plans


def test_new_events_are_read_by_their_seq_range(history):
    top = history.execute("SELECT MAX(seq) FROM events").fetchone()[0]
    with traced(history) as statements:
        assert fold.dirty_keys(history, top - 3, top)
    # Not through an index led by the kind: that walked every deployment event ever stored, each round.
    assert [step for step in plan(history, statements[0]) if step.startswith(("SEARCH", "SCAN"))] == [
        "SEARCH events USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)"]


def test_the_event_list_filtered_by_a_rare_kind_or_status_seeks_it(history, db_path):
    # events_kind holds every kind but 'deployment' (m026), events_status every status but 'completed':
    # the list names that, or SQLite walks the whole time index for a kind no event has (0.36 s at 1M).
    async def lists_of(db: Database) -> None:
        for flt in (event_queries.EventFilter(kind="comment"), event_queries.EventFilter(kind="build"),
                    event_queries.EventFilter(status="failed"),
                    event_queries.EventFilter(product="shop", kind="build")):
            await event_queries.list_events(db, flt)

    lists = [sql for sql in traced_reads(db_path, lists_of) if sql.startswith("SELECT * FROM events")]
    assert len(lists) == 4
    for sql in lists:
        assert not [step for step in plan(history, sql) if step.startswith("SCAN ")], sql


def traced_reads(db_path: Any, read: Callable[[Database], Any]) -> list[str]:
    """The statements `read` ran on a database of `db_path`, with their parameters bound."""
    async def run() -> list[str]:
        db = Database(db_path, readers=1)
        await db.open()
        statements: list[str] = []
        try:
            await db.read(lambda conn: conn.set_trace_callback(statements.append))
            await read(db)
            await db.read(lambda conn: conn.set_trace_callback(None))
        finally:
            await db.close()
        return statements
    return asyncio.run(run())


def test_a_product_pages_environment_count_skips_from_environment_to_environment(history, db_path):
    # COUNT(DISTINCT environment) walked every deployment of the product on each product page view.
    [sql] = [sql for sql in traced_reads(db_path, lambda db: deployment_queries.environment_count(db, "shop"))
             if "deployments" in sql]
    steps = plan(history, sql)
    assert "RECURSIVE STEP" in steps and any("(product=? AND environment>?)" in step for step in steps), steps
    assert history.execute(sql).fetchone()[0] == 2


def test_whether_a_product_is_known_seeks_its_incidents(history, db_path):
    # Every product page asks; without incidents_product (m030) SQLite walked every incident.
    statements = [sql for sql in traced_reads(db_path, lambda db: deployment_queries.product_known(db, "nothing"))
                  if "incidents" in sql]
    assert len(statements) == 1
    steps = plan(history, statements[0])
    assert "SEARCH incidents USING COVERING INDEX incidents_product (product=?)" in steps, steps
    assert not [step for step in steps if step.startswith("SCAN ")], steps
