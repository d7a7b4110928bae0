"""The `deploytrack` command: translates flags into settings and calls the right piece.

This is the only caller of `uvicorn.run`.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any, Callable, Sequence

from deploytrack import __version__
from deploytrack.settings import SETTINGS, Settings, load_settings, settings_help
from deploytrack.storage import failures
from deploytrack.storage import postgres as pg

Command = Callable[[argparse.Namespace], int]
# The settings every command that opens the database takes.
DB_SETTINGS = ("db", "db_password_file")


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


def settings_from(args: argparse.Namespace) -> Settings:
    flags = {s.name: getattr(args, s.name, None) for s in SETTINGS if hasattr(args, s.name)}
    try:
        return load_settings(flags, config_path=getattr(args, "config", None))
    except (ValueError, OSError) as exc:
        raise SystemExit(f"deploytrack: {exc}") from None


# -- serve ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from deploytrack.app import create_app

    settings = settings_from(args)
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)-9s %(name)s: %(message)s")
    app = create_app(settings)
    # uvicorn drains requests and runs the lifespan shutdown on SIGTERM/SIGINT, then re-raises the
    # signal; ending there with status 0 tells systemd and scripts the stop was clean.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _exit_cleanly)
    print(f"deploytrack {__version__} serving http://{settings.host}:{settings.port}/ (database {pg.redact(settings.db)})",
          file=sys.stderr, flush=True)
    # httptools parses HTTP when installed (a dependency); the event loop stays asyncio's: uvloop
    # holds the GIL through its socket calls, and the database writer thread then waits longer for
    # it after each SQLite call (writer busy 630 -> 400 us per request with asyncio, bench/RESULTS.md).
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level, loop="asyncio",
                access_log=settings.log_level == "debug", timeout_graceful_shutdown=10, server_header=False)
    return 0


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


# -- tokens --------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    from deploytrack.cli import tokens as tokens_cli

    return tokens_cli.run(args, settings_from(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deploytrack", description="Record builds and deployments; DORA metrics.")
    parser.add_argument("--version", action="version", version=f"deploytrack {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the server", epilog=settings_help(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    add_settings_flags(serve)
    serve.set_defaults(func=cmd_serve)

    token = sub.add_parser("token", help="create, list and revoke API tokens")
    tsub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = tsub.add_parser("create", help="create a token and print its secret once")
    create.add_argument("name")
    create.add_argument("--scope", action="append", choices=["ingest", "read", "admin"],
                        help="repeatable; default: ingest")
    create.add_argument("--product", help="default product for events that carry none (Quanta, ilert)")
    create.add_argument("--environment", help="default environment for events that carry none")
    create.add_argument("--secret-only", action="store_true", help="print only the secret (for scripts)")
    tsub.add_parser("list", help="list tokens (never their secrets)")
    revoke = tsub.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")
    for p in (create, tsub.choices["list"], revoke):
        add_settings_flags(p, DB_SETTINGS)
    token.set_defaults(func=cmd_token)

    for register in _extra_commands():
        register(sub)
    return parser


def _extra_commands() -> list[Callable[[Any], None]]:
    """Sub-commands that live in their own modules, each with `register(subparsers)`."""
    from deploytrack.cli import client as client_cli
    from deploytrack.cli import metrics as metrics_cli
    from deploytrack.cli import migrate_db
    from deploytrack.cli import ops as ops_cli
    from deploytrack.cli import rules as rules_cli

    return [metrics_cli.register, client_cli.register, ops_cli.register, migrate_db.register, rules_cli.register]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except failures.DATABASE_ERRORS as exc:
        print(f"deploytrack: database error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
