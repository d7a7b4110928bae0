"""Every setting is documented where operators look: `deploytrack serve --help` and docs/operators.md."""

from __future__ import annotations

import re

import pytest

from deploytrack.settings import ENV_PREFIX, RANGES, SETTINGS, allowed
from tests.conftest import REPO, run_cli


@pytest.fixture(scope="module")
def serve_help() -> str:
    code, out = run_cli("serve", "--help")
    assert code == 0
    return out


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_setting_is_in_serve_help(setting, serve_help):
    assert f" {setting.name}\n" in serve_help  # the config-file key column of the settings table
    assert setting.help in serve_help
    if isinstance(setting.default, dict):  # a table: config file only, and the help must not promise more
        assert f"{ENV_PREFIX}{setting.name.upper()}" not in serve_help
        assert "--" + setting.name.replace("_", "-") not in serve_help
    else:
        assert f"{ENV_PREFIX}{setting.name.upper()}" in serve_help
        flag = re.compile(re.escape("--" + setting.name.replace("_", "-")) + r"(?![\w-])")
        assert bool(flag.search(serve_help)) == setting.flag  # a secret never gets a flag: `ps` would show it


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_setting_is_in_the_operators_guide(setting):
    readme = (REPO / "docs" / "operators.md").read_text()
    assert f"`{setting.name}`" in readme
    if not isinstance(setting.default, dict):
        assert f"`{ENV_PREFIX}{setting.name.upper()}`" in readme
        flag = re.compile(re.escape("`--" + setting.name.replace("_", "-")) + r"(?![\w-])")
        assert bool(flag.search(readme)) == setting.flag


def test_the_config_file_itself_is_documented(serve_help):
    assert "--config" in serve_help and "DEPLOYTRACK_CONFIG" in serve_help
    assert "DEPLOYTRACK_CONFIG" in (REPO / "docs" / "operators.md").read_text()


@pytest.mark.parametrize("name", RANGES)
def test_a_numbers_allowed_range_is_documented(name, serve_help):
    rows = [line for line in (REPO / "docs" / "operators.md").read_text().splitlines()
            if line.startswith("| ") and f"| `{name}` |" in line]
    assert len(rows) == 1 and rows[0].endswith(f"; allowed: {allowed(name)} |")
    entry = serve_help.split(f" {name}\n", 1)[1].split("\n", 1)[0]  # the help line under its key
    assert entry.endswith(f"; allowed: {allowed(name)})")
