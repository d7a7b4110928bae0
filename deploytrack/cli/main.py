"""The `deploytrack` command: translates flags into settings and calls the right piece.

`serve` (cli/serve.py) is the only place that runs uvicorn.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import Any

from deploytrack import __version__
from deploytrack.cli.dbfile import Refusal, add_create_flag
from deploytrack.cli.flags import DB_SETTINGS, add_settings_flags, settings_from
from deploytrack.metrics.aside import AsideDatabaseError
from deploytrack.settings import settings_help
from deploytrack.storage import failures

Command = Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """No abbreviated long flags (every sub-command's parser is one of these: argparse makes sub-parsers of
    the parent's class): `--db-password x` was taken as `--db-password-file` and the secret echoed."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def parse_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                   namespace: argparse.Namespace | None = None) -> argparse.Namespace:
        """argparse's own, except that an unrecognized option's value is not repeated: it may be a secret."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            options = [extra.split("=", 1)[0] for extra in extras if extra.startswith("-")]
            self.error(f"unrecognized arguments: {' '.join(options or extras)}")
        return parsed


# -- serve ---------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    from deploytrack.cli import serve  # uvicorn and the app: not loaded for `send` and `wrap` in pipelines

    return serve.run(settings_from(args))


# -- tokens --------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    from deploytrack.cli import tokens as tokens_cli

    return tokens_cli.run(args, settings_from(args))


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="deploytrack", description="Record builds and deployments; DORA metrics.")
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
    add_create_flag(create)
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
    from deploytrack.cli import check as check_cli
    from deploytrack.cli import client as client_cli
    from deploytrack.cli import hooks as hooks_cli
    from deploytrack.cli import metrics as metrics_cli
    from deploytrack.cli import migrate_db
    from deploytrack.cli import ops as ops_cli
    from deploytrack.cli import rules as rules_cli
    from deploytrack.cli import version as version_cli

    return [metrics_cli.register, client_cli.register, ops_cli.register, migrate_db.register, rules_cli.register,
            check_cli.register, version_cli.register,
            hooks_cli.register]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Refusal as refusal:
        print(f"deploytrack: {refusal}", file=sys.stderr)
        return 2
    except (*failures.DATABASE_ERRORS, AsideDatabaseError) as exc:
        print(f"deploytrack: database error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
