"""`deploytrack rule ...` on the database, and `send`/`wrap` against a live server when a rule blocks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx2 as httpx

from tests.conftest import REPO, auth, query, run_cli

FAST = ["--retries", "1", "--backoff", "0.01", "--timeout", "5"]


def cli(db: Any, *argv: str) -> tuple[int, str]:
    create = ["--create"] if argv[0] == "add" else []  # a rule may be the database's first content
    return run_cli("rule", *argv, "--db", str(db), "--by", "alice", *create)


def client_run(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PYTHONPATH": str(REPO), "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-m", "deploytrack", *argv], env={**base, **env}, capture_output=True,
                          text=True, timeout=60, cwd=str(REPO))


def test_rule_commands_create_list_change_and_audit(db_path) -> None:
    code, out = cli(db_path, "add", "friday", "--type", "schedule", "--recurrence", "weekly", "--start", "fri 15:00",
                    "--end", "mon 08:00", "--timezone", "Europe/Berlin", "--environment", "prod",
                    "--reason", "No Friday deploys")
    assert code == 0 and "friday" in out
    code, out = cli(db_path, "add", "promote", "--type", "flow", "--prerequisite", "stg", "--environment",
                    "production", "--soak-minutes", "30", "--mode", "report-only")
    assert code == 0
    assert cli(db_path, "add", "friday", "--type", "concurrency")[0] == 1  # the name is taken
    assert cli(db_path, "add", "bad", "--type", "schedule", "--recurrence", "weekly", "--start", "fry 15:00",
               "--end", "mon 08:00")[0] == 2
    code, out = cli(db_path, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["NAME", "TYPE", "MODE"]
    assert any(line.split()[:5] == ["friday", "schedule", "enabled", "all", "production"] for line in lines)
    assert any(line.split()[:5] == ["promote", "flow", "report-only", "all", "production"] for line in lines)
    code, out = cli(db_path, "show", "promote")
    shown = json.loads(out)
    assert shown["flow"] == {"prerequisites": ["staging"], "strict": False, "soak_minutes": 30}
    assert cli(db_path, "mode", "promote", "enabled")[0] == 0
    assert json.loads(cli(db_path, "show", "promote")[1])["mode"] == "enabled"
    code, out = cli(db_path, "override", "--product", "api", "--environment", "prod", "--rule", "friday",
                    "--reason", "hotfix INC-7")
    assert code == 0 and "Override 1" in out
    assert cli(db_path, "override", "--product", "api", "--rule", "nope", "--reason", "x")[0] == 1
    assert cli(db_path, "delete", "promote")[0] == 0
    assert cli(db_path, "show", "promote")[0] == 1
    audit = query(db_path, "SELECT action, actor FROM audit_log ORDER BY id")
    assert [tuple(a) for a in audit] == [("rule_create", "alice"), ("rule_create", "alice"),
                                         ("rule_update", "alice"), ("rule_override", "alice"),
                                         ("rule_delete", "alice")]
    override = query(db_path, "SELECT product, environment, reason, granted_by FROM rule_overrides")
    assert [tuple(o) for o in override] == [("api", "production", "hotfix INC-7", "alice")]


def test_wrap_and_send_exit_5_when_blocked_without_running_the_command(live_server, token, db_path,
                                                                        tmp_path: Path) -> None:
    env = {"DEPLOYTRACK_URL": live_server.url, "DEPLOYTRACK_TOKEN": token}
    marker = tmp_path / "ran"
    command = ["--", sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    wrap = ["wrap", "--product", "api", "--environment", "production", *FAST]
    assert client_run(*wrap, "--version", "1", *command, env=env).returncode == 0 and marker.exists()
    marker.unlink()
    assert cli(db_path, "add", "freeze", "--type", "schedule", "--recurrence", "daily", "--start", "00:00",
               "--end", "23:59", "--environment", "production", "--reason", "Holiday freeze")[0] == 0
    assert cli(db_path, "add", "freeze-rest", "--type", "schedule", "--recurrence", "daily", "--start", "23:59",
               "--end", "00:00", "--environment", "production", "--reason", "Holiday freeze")[0] == 0
    blocked = client_run(*wrap, "--version", "2", *command, env=env)
    assert blocked.returncode == 5 and not marker.exists()
    assert "freeze" in blocked.stderr and "Holiday freeze" in blocked.stderr and "retry after" in blocked.stderr
    assert "not running the command" in blocked.stderr
    strict = client_run(*wrap, "--version", "2", "--strict", *command, env=env)
    assert strict.returncode == 5 and not marker.exists()
    sent = client_run("send", "deployment", "--product", "api", "--environment", "production", "--version", "2",
                      "--status", "started", *FAST, env=env)
    assert sent.returncode == 5 and "NO_DEPLOY_WINDOW" in sent.stderr
    # staging is not frozen; an override lets one production deployment through
    assert client_run("wrap", "--product", "api", "--environment", "staging", "--version", "2", *FAST, *command,
                      env=env).returncode == 0 and marker.exists()
    marker.unlink()
    assert cli(db_path, "override", "--product", "api", "--reason", "security fix")[0] == 0
    assert client_run(*wrap, "--version", "2", *command, env=env).returncode == 0 and marker.exists()
    marker.unlink()
    assert client_run(*wrap, "--version", "3", *command, env=env).returncode == 5 and not marker.exists()
    deployments = httpx.get(f"{live_server.url}/api/v1/deployments", params={"environment": "production"},
                            headers=auth(token)).json()["deployments"]
    assert sorted(d["version"] for d in deployments) == ["1", "2"]
    assert all(d["status"] == "completed" for d in deployments)
    code, out = cli(db_path, "violations")
    assert code == 0 and [line.split()[1] for line in out.splitlines()[1:]] == \
        ["blocked", "overridden", "blocked", "blocked", "blocked"]


def test_import_is_never_judged_even_at_the_current_time(db_path, tmp_path: Path) -> None:
    assert cli(db_path, "add", "all-day", "--type", "schedule", "--recurrence", "once", "--start", "2020-01-01T00:00",
               "--end", "2099-01-01T00:00")[0] == 0
    assert cli(db_path, "add", "one", "--type", "concurrency")[0] == 0
    lines = tmp_path / "import.jsonl"
    lines.write_text("".join(
        json.dumps({"kind": "deployment", "product": "shop", "version": v, "environment": "production",
                    "status": "started"}) + "\n" for v in ("1", "2")))
    code, out = run_cli("import", str(lines), "--db", str(db_path))
    assert code == 0 and out.startswith("Imported 2 events")
    assert query(db_path, "SELECT COUNT(*) FROM deployments WHERE status = 'started'")[0][0] == 2
    assert query(db_path, "SELECT COUNT(*) FROM rule_violations")[0][0] == 0


def test_options_of_another_rule_type_are_refused_by_name(db_path, capsys) -> None:
    """`--soak-minutes` on a concurrency rule was accepted and dropped: the rule did not say what was asked."""
    cases = ((("x5", "--type", "concurrency", "--soak-minutes", "5"), "--soak-minutes"),
             (("x6", "--type", "concurrency", "--strict", "--timezone", "UTC"), "--timezone, --strict"),
             (("x7", "--type", "schedule", "--recurrence", "daily", "--start", "17:00", "--end", "18:00",
               "--prerequisite", "staging", "--stale-after-minutes", "9"), "--prerequisite, --stale-after-minutes"),
             (("x8", "--type", "flow", "--prerequisite", "staging", "--environment", "production",
               "--recurrence", "daily"), "--recurrence"))
    for argv, named in cases:
        capsys.readouterr()
        assert cli(db_path, "add", *argv)[0] == 2, argv
        said = capsys.readouterr().err
        assert named in said and f"a {argv[2]} rule" in said, said
    assert query(db_path, "SELECT COUNT(*) FROM rules")[0][0] == 0
    # Each type's own options, and a zero given explicitly, still go through.
    assert cli(db_path, "add", "f", "--type", "flow", "--prerequisite", "staging", "--environment", "production",
               "--strict", "--soak-minutes", "0")[0] == 0
    assert cli(db_path, "add", "c", "--type", "concurrency", "--stale-after-minutes", "30")[0] == 0
    assert cli(db_path, "add", "s", "--type", "schedule", "--recurrence", "daily", "--start", "17:00",
               "--end", "18:00", "--timezone", "Europe/Berlin")[0] == 0
    assert json.loads(cli(db_path, "show", "f")[1])["flow"] == {"prerequisites": ["staging"], "strict": True,
                                                                "soak_minutes": 0}
    assert json.loads(cli(db_path, "show", "s")[1])["schedule"]["timezone"] == "Europe/Berlin"
