"""A setting the server cannot use is refused at start: one line naming it, exit code 2, before anything
listens or any database is made; a flag is never guessed from its first letters."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, free_port

pytestmark = [pytest.mark.sqlite_only]
ENV = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}


def deploytrack(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "deploytrack", *argv], capture_output=True, text=True,
                          timeout=20, env={**ENV, **(env or {})})


def serve(tmp_path: Path, *argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return deploytrack("serve", "--db", str(tmp_path / "d.db"), "--port", str(free_port()), "--no-scheduler",
                       *argv, env=env)


def refusal(done: subprocess.CompletedProcess[str], tmp_path: Path) -> str:
    """The one line a refused start prints (exit 2, no traceback, no database made)."""
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "d.db").exists()
    return lines[0]


def test_an_abbreviated_flag_is_unrecognized_and_its_value_not_echoed(tmp_path):
    for argv in (["token", "list", "--db", str(tmp_path / "d.db"), "--db-password", "hunter2"],
                 ["token", "list", "--db", str(tmp_path / "d.db"), "--db-password=hunter2"],
                 ["serve", "--db", str(tmp_path / "d.db"), "--po", "8900"]):
        done = deploytrack(*argv)
        assert done.returncode == 2 and "unrecognized arguments: --" in done.stderr, done.stderr
        assert "hunter2" not in done.stderr + done.stdout and "8900" not in done.stderr
        assert not (tmp_path / "d.db").exists()


@pytest.mark.parametrize("how", ["flag", "environment", "config"])
def test_an_unknown_log_level_is_refused_with_the_allowed_ones(tmp_path, how):
    config = tmp_path / "deploytrack.toml"
    config.write_text('log_level = "loud"\n')
    argv, env = {"flag": (["--log-level", "loud"], None),
                 "environment": ([], {"DEPLOYTRACK_LOG_LEVEL": "loud"}),
                 "config": (["--config", str(config)], None)}[how]
    assert refusal(serve(tmp_path, *argv, env=env), tmp_path) == (
        "deploytrack: setting 'log_level': must be one of critical, error, warning, info, debug, trace, got 'loud'")


@pytest.mark.parametrize("line, message", [
    ("port = true", "setting 'port': expected a whole number, got true"),
    ("port = 8892.5", "setting 'port': expected a whole number, got 8892.5"),
    ("max_body_bytes = 1e9", "setting 'max_body_bytes': expected a whole number, got 1000000000.0"),
    ("db = 5", "setting 'db': expected a string, got a number"),  # (a secret's value is never shown)
    ("public_read = 1", "setting 'public_read': expected true or false, got 1"),
    ("notify_timeout = true", "setting 'notify_timeout': expected a number, got true"),
    ("notify_timeout = inf", "setting 'notify_timeout': expected a number, got inf"),
    ("environment_aliases = 3", "setting 'environment_aliases': expected a table, got 3"),
    ("[environment_aliases]\nprod = 5", "setting 'environment_aliases', entry 'prod': expected a string, got 5"),
], ids=lambda v: v.split(":")[0].split("\n")[-1])
def test_a_config_value_of_the_wrong_type_is_refused_not_converted(tmp_path, line, message):
    config = tmp_path / "deploytrack.toml"
    config.write_text(line + "\n")
    assert refusal(serve(tmp_path, "--config", str(config)), tmp_path) == f"deploytrack: {message}"
    assert not (tmp_path / "5").exists()


@pytest.mark.parametrize("name, text, expected", [
    ("port", "8892.5", "a whole number"), ("port", "0x1f", "a whole number"), ("max_headers", "1e3", "a whole number"),
    ("rate_limit", "nan", "a number"), ("notify_timeout", "NaN", "a number"), ("notify_interval", "1e999", "a number"),
    ("notify_retry_seconds", "infinity", "a number"), ("public_read", "maybe", "true or false"),
])
def test_text_from_flags_and_the_environment_is_parsed_strictly(tmp_path, name, text, expected):
    line = f"deploytrack: setting '{name}': expected {expected}, got '{text}'"
    assert refusal(serve(tmp_path, env={"DEPLOYTRACK_" + name.upper(): text}), tmp_path) == line
    if name != "public_read":  # (a switch: --public-read / --no-public-read, no value)
        assert refusal(serve(tmp_path, "--" + name.replace("_", "-"), text), tmp_path) == line


OUT_OF_RANGE = [
    ("--max-batch-events", "0", "setting 'max_batch_events': must be at least 1, got 0"),
    ("--max-field-chars", "0", "setting 'max_field_chars': must be at least 64, got 0"),
    ("--max-metadata-keys", "-1", "setting 'max_metadata_keys': must be at least 1, got -1"),
    ("--max-headers", "1", "setting 'max_headers': must be at least 16, got 1"),
    ("--port", "0", "setting 'port': must be 1 to 65535, got 0"),
    ("--notify-interval", "0", "setting 'notify_interval': must be 0.1 to 3600, got 0.0"),
    ("--notify-timeout", "1e6", "setting 'notify_timeout': must be 0.1 to 3600, got 1000000.0"),
    ("--header-timeout", "9" * 400, "setting 'header_timeout': must be 1 to 86400, got " + "9" * 400),
    ("--rate-limit", "-0.5", "setting 'rate_limit': must be at least 0, got -0.5"),
]


@pytest.mark.parametrize("flag, value, message", OUT_OF_RANGE, ids=[flag for flag, _, _ in OUT_OF_RANGE])
def test_a_number_out_of_its_range_is_refused_with_the_range(tmp_path, flag, value, message):
    assert refusal(serve(tmp_path, flag, value), tmp_path) == f"deploytrack: {message}"


LONG = "x" * 3000
NAME_TABLE_ENTRIES = [
    ('[environment_aliases]\nstg = ""', "'environment_aliases', entry 'stg': Field 'value' must not be empty"),
    ('[environment_aliases]\nstg = "a\\nb"', "'environment_aliases', entry 'stg': Field 'value' contains a control"),
    ('[environment_aliases]\nstg = ".."', "'environment_aliases', entry 'stg': Field 'value' must not be '..'"),
    (f'[environment_aliases]\nstg = "{LONG}"', "'environment_aliases', entry 'stg': Field 'value' is longer than 512"),
    ('[environment_aliases]\n"" = "production"', "'environment_aliases', entry '': Field 'key' must not be empty"),
    ('[hook_products]\napi = ""', "'hook_products', entry 'api': Field 'value' must not be empty"),
    ('[hook_products]\n"a\\tb" = "shop"', "'hook_products', entry 'a\\tb': Field 'key' contains a control"),
    (f'[hook_products]\n{LONG} = "shop"', f"'hook_products', entry {LONG[:60]!r}...: Field 'key' is longer than 512"),
]


@pytest.mark.parametrize("table, message", NAME_TABLE_ENTRIES, ids=range(len(NAME_TABLE_ENTRIES)))
def test_a_name_table_entry_the_apis_would_refuse_is_refused_at_start(tmp_path, table, message):
    config = tmp_path / "deploytrack.toml"
    config.write_text(table + "\n")
    assert refusal(serve(tmp_path, "--config", str(config)), tmp_path).startswith(f"deploytrack: setting {message}")


@pytest.mark.parametrize("how", ["flag", "environment", "config"])
def test_a_log_level_is_taken_in_any_case_and_trace_starts(tmp_path, how):
    """uvicorn takes "INFO" as "info": so does the check (an upper-case level refused every start after the
    check came in); and "trace", which the check allows, starts instead of ending in a traceback."""
    for level in ("INFO", "Warning", "trace"):
        config = tmp_path / "deploytrack.toml"
        config.write_text(f'log_level = "{level}"\n')
        argv, env = {"flag": (["--log-level", level], None),
                     "environment": ([], {"DEPLOYTRACK_LOG_LEVEL": level}),
                     "config": (["--config", str(config)], None)}[how]
        with subprocess.Popen([sys.executable, "-m", "deploytrack", "serve", "--db", str(tmp_path / "d.db"),
                               "--port", str(free_port()), "--no-scheduler", *argv],
                              stderr=subprocess.PIPE, text=True, env={**ENV, **(env or {})}) as proc:
            try:
                line = proc.stderr.readline()  # the first line: serving, or the refusal
                assert "serving http://" in line, line
            finally:
                proc.terminate()
                proc.wait(10)


@pytest.mark.parametrize("line, message", [
    ('db_password = 738291', "setting 'db_password': expected a string, got a number"),
    ('db = ["postgresql://u:hunter2@h/db"]', "setting 'db': expected a string, got an array"),
    ('notify_urls = "ftp://hooks.example/T0/secret"', "setting 'notify_urls': an entry is not an http(s) URL "
                                                       "(it starts 'ftp')"),
    ("notify_timeout = " + "9" * 400, "setting 'notify_timeout': expected a number, got " + "9" * 60 + "..."),
], ids=["password", "db-array", "notify-url", "huge-number"])
def test_a_refused_secret_is_never_echoed(tmp_path, line, message):
    config = tmp_path / "deploytrack.toml"
    config.write_text(line + "\n")
    said = refusal(serve(tmp_path, "--config", str(config)), tmp_path)
    assert said == f"deploytrack: {message}" and "738291" not in said and "hunter2" not in said
    assert "secret" not in said


def test_config_dates_numbers_with_underscores_and_a_broken_file(tmp_path):
    config = tmp_path / "deploytrack.toml"
    config.write_text("earliest_timestamp = 2020-01-01T00:00:00Z\nmax_body_bytes = 10_000_000\n")
    done = deploytrack("token", "list", "--config", str(config), "--db", str(tmp_path / "x.db"))
    assert done.returncode == 2 and "no database at" in done.stderr, done.stderr  # the settings were taken
    huge = deploytrack("token", "list", "--db", str(tmp_path / "x.db"), env={"DEPLOYTRACK_PORT": "9" * 5000})
    assert huge.returncode == 2 and "setting 'port': expected a whole number" in huge.stderr, huge.stderr[-300:]
    config.write_text("port = [\n")
    broken = deploytrack("token", "list", "--config", str(config), "--db", str(tmp_path / "x.db"))
    assert broken.returncode == 2 and str(config) in broken.stderr and "Traceback" not in broken.stderr
