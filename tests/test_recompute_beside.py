"""`metrics recompute` beside a running server: it writes only what differs, and the server's writer
gets the write lock between its short transactions."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx2 as httpx
import pytest

from deploytrack.storage import sqlite as sqlite_storage
from tests.conftest import REPO, LiveServer, auth, query, run_cli
from tests.dora import at, build, deploy

pytestmark = pytest.mark.parametrize("db_path", ["sqlite"], indirect=True)

FACT_TABLES = ("deployment_facts", "metric_lead_facts")


def count_fact_writes(db_path):
    """Triggers in the file that count each row inserted into or deleted from the fact tables."""
    conn = sqlite3.connect(db_path)
    conn.execute("CREATE TABLE fact_writes (tbl TEXT, op TEXT)")
    for table in FACT_TABLES:
        for op in ("INSERT", "DELETE"):
            conn.execute(f"CREATE TRIGGER count_{table}_{op} AFTER {op} ON {table} "
                         f"BEGIN INSERT INTO fact_writes VALUES ('{table}', '{op}'); END")
    conn.commit()
    conn.close()


def fact_writes(db_path):
    rows = query(db_path, "SELECT tbl, op, COUNT(*) FROM fact_writes GROUP BY tbl, op ORDER BY tbl, op")
    return {(t, o): n for t, o, n in rows}


def recompute(db_path, *flags):
    code, out = run_cli("metrics", "recompute", "--db", str(db_path), *flags)
    assert code == 0, out


def facts(db_path):
    return [query(db_path, f"SELECT * FROM {t} ORDER BY 1, 2, 3") for t in FACT_TABLES]


def test_a_full_recompute_writes_only_the_facts_that_differ(client, token, db_path):
    for n in range(1, 6):
        build(client, token, f"1.{n}", at(10 - n, 8), scm_sha=f"sha{n}")
        deploy(client, token, f"1.{n}", "success", at(10 - n, 12), scm_sha=f"sha{n}")
    deploy(client, token, "1.6", "failure", at(3, 12))
    deploy(client, token, "1.5", "success", at(3, 13), description="rollback to 1.5")
    recompute(db_path)
    before = facts(db_path)
    assert before[0] and before[1]
    count_fact_writes(db_path)

    recompute(db_path, "--refold-all")  # everything derived again from the events: all of it comes out equal
    assert facts(db_path) == before
    assert fact_writes(db_path) == {}

    deploy(client, token, "1.0", "success", at(12, 12), scm_sha="sha0")  # a backfill before everything
    recompute(db_path, "--refold-all")
    after = facts(db_path)
    writes = fact_writes(db_path)
    assert len(after[0]) == len(before[0]) + 1
    # the new deployment's rows, and the rows its arrival changed (the next one's lead time and
    # rollback context), but far fewer than all of them
    assert writes[("deployment_facts", "INSERT")] >= 1
    assert sum(writes.values()) < 2 * (len(after[0]) + len(after[1]))
    recompute(db_path, "--refold-all")
    assert facts(db_path) == after


def test_the_write_lock_is_taken_as_soon_as_another_connection_lets_it_go(db_path):
    db = str(db_path)
    holder = sqlite_storage.connect(db)
    holder.execute("CREATE TABLE t (n INTEGER)")
    waiter = sqlite_storage.connect(db)
    order: list[str] = []

    def wait_for_lock() -> None:
        waiter.begin_write()
        order.append("waiter has the lock")
        waiter.execute("INSERT INTO t VALUES (2)")
        waiter.commit()

    holder.begin_write()
    holder.execute("INSERT INTO t VALUES (1)")
    thread = threading.Thread(target=wait_for_lock)
    thread.start()
    time.sleep(0.3)  # the waiter is asking for the lock meanwhile
    order.append("holder commits")
    holder.commit()
    thread.join(10)
    assert order == ["holder commits", "waiter has the lock"]
    assert [r[0] for r in holder.execute("SELECT n FROM t ORDER BY n")] == [1, 2]
    assert waiter.execute("PRAGMA busy_timeout").fetchone()[0] == 5000  # its own setting again

    # held for longer than the waiter waits: SQLITE_BUSY, which the server answers with a 503
    impatient = sqlite_storage.connect(db, timeout=0.2)
    holder.begin_write()
    with pytest.raises(sqlite3.OperationalError) as busy:
        impatient.begin_write()
    assert busy.value.sqlite_errorcode & 0xFF == 5
    holder.rollback()
    for conn in (holder, waiter, impatient):
        conn.close()


@pytest.mark.slow
def test_ingestion_goes_on_while_a_full_recompute_runs_beside_the_server(db_path, token):
    server = LiveServer(db_path).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            for n in range(40):  # some history for the recompute to go through
                deploy(client, token, f"0.{n}", "success", at(40 - n), product=f"p{n % 4}")
        cli = subprocess.Popen([sys.executable, "-m", "deploytrack", "metrics", "recompute", "--refold-all",
                                "--db", str(db_path)], cwd=str(REPO), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)

        def post(n: int) -> int:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                return client.post("/deployment-events/", headers=auth(token), json={
                    "product_name": f"p{n % 4}", "version": f"1.{n}", "environment_name": "production",
                    "status": "success"}).status_code

        with ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(post, range(200)))
        out, _ = cli.communicate(timeout=120)
        assert cli.returncode == 0, out
        assert codes == [200] * 200
        assert query(db_path, "SELECT COUNT(*) FROM events WHERE version LIKE '1.%'")[0][0] == 200
        recompute(db_path)  # and the server's events are derived like any others
        assert query(db_path, "SELECT COUNT(*) FROM deployment_facts")[0][0] == 240
    finally:
        server.stop()
