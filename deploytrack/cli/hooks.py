"""`deploytrack hook create|list|revoke`: inbound webhooks, made on the command line like tokens."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from deploytrack.cli.dbfile import open_database
from deploytrack.cli.flags import DB_SETTINGS, add_settings_flags, default_names, settings_from
from deploytrack.errors import BadRequest, Conflict
from deploytrack.hooks import registry
from deploytrack.hooks.endpoint import SOURCES, path
from deploytrack.settings import Settings
from deploytrack.storage import database as dbmod
from deploytrack.timeutil import now_us, to_iso

MAX_SECRET = 256


def register(sub: Any) -> None:
    """Add the `hook` command to the top-level parser."""
    parser = sub.add_parser("hook", help="create, list and revoke inbound webhooks (GitHub, GitLab, PagerDuty...)")
    hsub = parser.add_subparsers(dest="hook_command", metavar="ACTION", required=True)
    create = hsub.add_parser("create", help="create a webhook and print its URL and secret")
    create.add_argument("source", choices=sorted(SOURCES))
    create.add_argument("--product", help="product of everything this hook records (default: from the payload's "
                                          "repository or service name, through the hook_products setting)")
    create.add_argument("--environment", help="environment where the payload names none (incidents)")
    create.add_argument("--secret", help="use this secret (one the source generated itself, as PagerDuty does)")
    hsub.add_parser("list", help="list hooks (never their secrets)")
    revoke = hsub.add_parser("revoke", help="revoke a hook by id")
    revoke.add_argument("hook_id", type=int)
    for p in (create, hsub.choices["list"], revoke):
        add_settings_flags(p, [*DB_SETTINGS, "public_url", "host", "port"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    conn = open_database(settings, create=True, events=False)  # a hook may be made before the first `serve`
    try:
        if args.hook_command == "create":
            return _create(conn, settings, args)
        if args.hook_command == "list":
            return _list(conn, settings)
        return _revoke(conn, args.hook_id)
    finally:
        conn.close()


def _create(conn: Any, settings: Settings, args: argparse.Namespace) -> int:
    secret = args.secret.strip() if args.secret is not None else registry.new_secret()
    if not 8 <= len(secret) <= MAX_SECRET:
        print(f"deploytrack: a hook secret is 8 to {MAX_SECRET} characters", file=sys.stderr)
        return 2
    try:
        product, environment = default_names(args)
    except BadRequest as exc:
        print(f"deploytrack: {exc.message}", file=sys.stderr)
        return 2
    try:
        with dbmod.transaction(conn):
            hook_id = registry.create(conn, args.source, secret, product, environment, now_us())
    except Conflict as exc:
        print(f"deploytrack: {exc.message}", file=sys.stderr)
        return 1
    print(f"Created {args.source} hook {hook_id}"
          f"{' for product ' + product if product else ''}"
          f"{' (environment ' + environment + ')' if environment else ''}.")
    print(f"URL:    {settings.base_url}{path(args.source, hook_id)}")
    print(f"Secret: {secret}")
    print("The secret is shown only this once. Setup: docs/hooks/" + SOURCES[args.source].NAME + ".md")
    return 0


def _list(conn: Any, settings: Settings) -> int:
    header = ("ID", "SOURCE", "PRODUCT", "ENVIRONMENT", "URL", "CREATED", "LAST USED", "STATE")
    table = [header] + [(str(r["token_id"]), r["source"], r["product"] or "-", r["environment"] or "-",
                         settings.base_url + path(r["source"], r["token_id"]), to_iso(r["created_at"]) or "-",
                         to_iso(r["last_used_at"]) or "never", "revoked" if r["revoked_at"] else "active")
                        for r in registry.listing(conn)]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _revoke(conn: Any, hook_id: int) -> int:
    with dbmod.transaction(conn):
        done = registry.revoke(conn, hook_id, now_us())
    if not done:
        print(f"deploytrack: no active hook {hook_id}", file=sys.stderr)
        return 1
    print(f"Revoked hook {hook_id}.")
    return 0
