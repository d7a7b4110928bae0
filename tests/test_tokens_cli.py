"""`deploytrack token create|list|revoke` on the real database file."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import time

import httpx2 as httpx
import pytest

from deploytrack.storage.staging import EVENT_COLUMNS
from tests import hookdata as hd
from tests.conftest import auth, create_token, query, run_cli
from tests.dora import at


@pytest.mark.sqlite_only
def test_create_prints_secret_once_and_stores_only_hash(db_path):
    code, out = run_cli("token", "create", "ci", "--scope", "ingest", "--scope", "read", "--db", str(db_path),
                        "--create")
    assert code == 0
    secret = out.strip().splitlines()[-1]
    assert secret.startswith("dt_") and len(secret) > 40
    conn = sqlite3.connect(db_path)
    row = conn.execute("SELECT name, secret_hash, scopes FROM tokens").fetchone()
    assert row == ("ci", hashlib.sha256(secret.encode()).hexdigest(), "ingest,read")
    dump = "\n".join(conn.iterdump())
    assert secret not in dump


def test_list_shows_metadata_never_secrets(db_path):
    secret = create_token(db_path, "deployer", "ingest", product="shop", environment="production")
    code, out = run_cli("token", "list", "--db", str(db_path))
    assert code == 0
    assert "deployer" in out and "shop" in out and "never" in out and "active" in out
    assert secret not in out


def test_duplicate_name_refused(db_path):
    create_token(db_path, "ci")
    code, _ = run_cli("token", "create", "ci", "--db", str(db_path))
    assert code == 1


def test_revoke_stops_the_token(make_client, db_path):
    secret = create_token(db_path, "old", "ingest", "read")
    client = make_client()
    body = {"product_name": "a", "version": "1", "environment_name": "production", "status": "success"}
    assert client.post("/deployment-events/", json=body, headers=auth(secret)).status_code == 200
    code, out = run_cli("token", "revoke", "old", "--db", str(db_path))
    assert code == 0 and "Revoked" in out
    resp = client.post("/deployment-events/", json=body, headers=auth(secret))
    assert resp.status_code == 401 and resp.json() == {"detail": "Invalid API key"}
    assert run_cli("token", "revoke", "old", "--db", str(db_path))[0] == 1
    _, listing = run_cli("token", "list", "--db", str(db_path))
    assert "revoked" in listing


def test_last_used_is_recorded(make_client, db_path):
    secret = create_token(db_path, "ci", "ingest")
    client = make_client()
    client.post("/api/deployment-events", json={"integrationKey": secret, "summary": "x"})
    # recorded beside the request (web.auth.record_use), not in its transaction
    deadline = time.monotonic() + 10
    while last_used(db_path, "ci") is None and time.monotonic() < deadline:
        time.sleep(0.05)
    _, listing = run_cli("token", "list", "--db", str(db_path))
    assert "never" not in listing


def last_used(db_path, name: str) -> object:
    return query(db_path, "SELECT last_used_at FROM tokens WHERE name = ?", (name,))[0][0]


def test_last_used_is_recorded_for_reads_admin_and_every_kind_of_hook(live_server, db_path):
    """Not only ingestion: a read, an admin request and any accepted hook delivery use their token."""
    reader, admin = create_token(db_path, "reader", "read"), create_token(db_path, "admin", "admin")
    assert httpx.get(live_server.url + "/api/v1/deployments", headers=auth(reader), timeout=10).status_code == 200
    resp = httpx.delete(live_server.url + "/api/v1/products/nothing-here/events", headers=auth(admin), timeout=10)
    assert resp.status_code < 500, resp.text
    am_path, am_secret, _ = hd.create_hook(db_path, "alertmanager")
    firing = hd.dumps(hd.alertmanager_group("firing", at(0, 0, 5), labels={"service": "checkout"}))
    resp = httpx.post(live_server.url + am_path, content=firing, timeout=10,
                      headers={"Authorization": f"Bearer {am_secret}", "Content-Type": "application/json"})
    assert resp.json()["status"] == "accepted"
    gitea_path, gitea_secret, _ = hd.create_hook(db_path, "gitea")
    push = hd.dumps(hd.gitea_push([(hd.SHA, "2017-03-13T13:52:11-04:00", "Webhooks Yay!")]))
    resp = httpx.post(live_server.url + gitea_path, content=push, timeout=10,
                      headers={"X-Gitea-Event": "push", "X-Gitea-Signature": hd.hmac_hex(gitea_secret, push),
                               "Content-Type": "application/json"})
    assert resp.json()["commits"] == 1
    deadline = time.monotonic() + 10  # recorded beside the request, not before its answer
    while query(db_path, "SELECT COUNT(*) FROM tokens WHERE last_used_at IS NULL")[0][0] > 1:  # the fixture's
        assert time.monotonic() < deadline, run_cli("token", "list", "--db", str(db_path))[1]
        time.sleep(0.05)
    _, tokens = run_cli("token", "list", "--db", str(db_path))
    assert [line for line in tokens.splitlines() if line.startswith(("reader", "admin")) and "never" in line] == []
    _, hooks = run_cli("hook", "list", "--db", str(db_path))
    assert "never" not in hooks and len(hooks.splitlines()) == 3
    # Kept to the minute: the next reads neither rewrite the row nor queue a write for it.
    first = last_used(db_path, "reader")
    read = lambda: httpx.get(live_server.url + "/api/v1/deployments", headers=auth(reader), timeout=10)  # noqa: E731
    assert read().status_code == 200  # (derived data brought up to date: the hooks' events)
    writes = write_tasks(live_server)
    for _ in range(5):
        assert read().status_code == 200
    assert write_tasks(live_server) == writes
    assert last_used(db_path, "reader") == first


def write_tasks(server) -> float:
    """The server's count of write requests committed (Prometheus text at /metrics)."""
    lines = httpx.get(server.url + "/metrics", timeout=10).text.splitlines()
    return next(float(line.split()[1]) for line in lines if line.startswith("deploytrack_write_tasks_total "))


def test_env_var_sets_db(tmp_path, monkeypatch):
    target = tmp_path / "from-env.db"
    monkeypatch.setenv("DEPLOYTRACK_DB", str(target))
    code, _ = run_cli("token", "create", "x", "--secret-only", "--create")
    assert code == 0 and target.exists()


@pytest.mark.parametrize("command", [("token", "create", "t1", "--scope", "ingest"), ("hook", "create", "github")])
@pytest.mark.parametrize("flags,said", [
    (("--product", "p" * 513), "'--product' is longer than 512 bytes"),
    (("--environment", "   "), "'--environment' must not be empty"),
    (("--product", "bad\x00name"), "'--product' contains a NUL character"),
])
def test_a_default_product_or_environment_follows_the_apis_rules_for_names(db_path, capsys, command, flags, said):
    create_token(db_path, "reader", "read")  # the database exists
    code, _ = run_cli(*command, *flags, "--db", str(db_path))
    assert code == 2 and said in capsys.readouterr().err
    code, _ = run_cli(*command, "--product", "  shop  ", "--db", str(db_path))
    assert code == 0  # a name with spaces around it is stored stripped, as the APIs store it
    assert query(db_path, "SELECT product FROM tokens WHERE product IS NOT NULL") == [("shop",)]


def test_metrics_show_names_its_own_flag(db_path, capsys):
    create_token(db_path, "reader", "read")
    code, _ = run_cli("metrics", "show", "--window", "45d", "--db", str(db_path))
    assert code == 2 and capsys.readouterr().err.strip() == "deploytrack: --window must be 7d, 30d, 90d"


@pytest.mark.sqlite_only
def test_listing_commands_read_a_database_another_process_is_writing(db_path, client, token, caplog):
    assert client.post("/deployment-events/", headers=auth(token), json={
        "product_name": "shop", "version": "1", "environment_name": "prod", "status": "success"}).status_code == 200
    columns = ", ".join(EVENT_COLUMNS)  # the event as a server leaves it staged, not yet projected
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # a server holds the write lock
    holder.execute(f"INSERT INTO event_log ({columns}) SELECT {columns} FROM events")
    holder.execute("DELETE FROM events")
    try:
        for argv in (("token", "list"), ("hook", "list"), ("rule", "list")):
            started = time.monotonic()
            code, out = run_cli(*argv, "--db", str(db_path))
            assert code == 0 and time.monotonic() - started < 2, argv  # not the 5 s busy timeout
        assert "ci" in run_cli("token", "list", "--db", str(db_path))[1]
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
