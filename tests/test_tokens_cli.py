"""`deploytrack token create|list|revoke` on the real database file."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from tests.conftest import auth, create_token, query, run_cli


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
    _, listing = run_cli("token", "list", "--db", str(db_path))
    assert "never" not in listing


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
    assert code == 2 and capsys.readouterr().err.strip() == "deploytrack: --window must be 7d, 30d or 90d"


@pytest.mark.sqlite_only
def test_listing_commands_read_a_database_another_process_is_writing(db_path, capsys):
    create_token(db_path, "reader", "read", product="shop")
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process holds the write lock (a long write, a backup)
    try:
        for argv in (("token", "list"), ("hook", "list"), ("rule", "list")):
            code, out = run_cli(*argv, "--db", str(db_path))
            assert code == 0, (argv, capsys.readouterr().err)
        assert "reader" in run_cli("token", "list", "--db", str(db_path))[1]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
