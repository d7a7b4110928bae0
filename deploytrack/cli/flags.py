"""Settings as command-line flags: one flag per setting, shared by every sub-command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from deploytrack.cli.dbfile import Refusal
from deploytrack.errors import BadRequest
from deploytrack.model import Fields, Limits
from deploytrack.settings import SETTINGS, Settings, load_settings, shown

# The settings every command that opens the database takes.
DB_SETTINGS = ("db", "db_password_file")
# The tables whose keys and values are names the APIs store and match (environments, products).
NAME_TABLES = ("environment_aliases", "hook_products")


def add_settings_flags(parser: argparse.ArgumentParser, names: Sequence[str] | None = None) -> None:
    """One flag per setting (all of them for `serve`, a few for other commands)."""
    parser.add_argument("--config", metavar="FILE", help="TOML config file (or DEPLOYTRACK_CONFIG)")
    for s in SETTINGS:
        if (names is not None and s.name not in names) or isinstance(s.default, dict) or not s.flag:
            continue
        flag = "--" + s.name.replace("_", "-")
        if isinstance(s.default, bool):
            parser.add_argument(flag, dest=s.name, action=argparse.BooleanOptionalAction, default=None, help=s.help)
        else:
            parser.add_argument(flag, dest=s.name, default=None, metavar=s.name.upper(), help=s.help)


def default_names(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """A token's or hook's --product and --environment by the APIs' rules for names (stripped, bounded;
    given but empty is refused): a BadRequest naming the flag."""
    values = {f"--{flag}": getattr(args, flag) for flag in ("product", "environment")}
    f = Fields(values, Limits())
    return (f.name("--product", required=values["--product"] is not None),
            f.name("--environment", required=values["--environment"] is not None))


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings of a command, or a one-line Refusal (exit 2) naming the one it cannot use."""
    flags = {s.name: getattr(args, s.name, None) for s in SETTINGS if hasattr(args, s.name)}
    try:
        settings = load_settings(flags, config_path=getattr(args, "config", None))
    except (ValueError, OSError) as exc:
        raise Refusal(str(exc)) from None
    check_names(settings)
    return settings


def check_names(settings: Settings) -> None:
    """Every key and value of the name tables by the APIs' rule for a name, or a Refusal naming the entry
    (`stg = ""` stored deployments in environment "", a hook_products "" made a delivery a 400)."""
    limits = Limits.from_settings(settings)
    for table in NAME_TABLES:
        for key, value in getattr(settings, table).items():
            for side, text in (("key", key), ("value", value)):
                try:
                    Fields({side: text}, limits).name(side, required=True)
                except BadRequest as exc:
                    raise Refusal(f"setting {table!r}, entry {shown(key)}: {exc.message}") from None
