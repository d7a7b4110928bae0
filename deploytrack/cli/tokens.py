"""`deploytrack token create|list|revoke`: runs directly on the database file."""

from __future__ import annotations

import argparse
import sys

from deploytrack.cli.dbfile import open_database
from deploytrack.cli.flags import default_names
from deploytrack.errors import BadRequest, Conflict
from deploytrack.settings import Settings
from deploytrack.storage import database as dbmod
from deploytrack.storage import ingest as store
from deploytrack.timeutil import now_us, to_iso
from deploytrack.web.auth import hash_secret, new_secret


def run(args: argparse.Namespace, settings: Settings) -> int:
    conn = open_database(settings, getattr(args, "create", None), events=False)
    try:
        if args.token_command == "create":
            return _create(conn, args)
        if args.token_command == "list":
            return _list(conn)
        return _revoke(conn, args.name)
    finally:
        conn.close()


def _create(conn: dbmod.Connection, args: argparse.Namespace) -> int:
    name = args.name.strip()
    if not name or len(name) > 100:
        print("deploytrack: a token name is 1 to 100 characters", file=sys.stderr)
        return 2
    try:
        product, environment = default_names(args)
    except BadRequest as exc:
        print(f"deploytrack: {exc.message}", file=sys.stderr)
        return 2
    scopes = sorted(set(args.scope or ["ingest"]))
    secret = new_secret()
    try:
        with dbmod.transaction(conn):
            store.insert_token(conn, name, hash_secret(secret), scopes, product, environment, now_us())
    except Conflict as exc:
        print(f"deploytrack: {exc.message}", file=sys.stderr)
        return 1
    if args.secret_only:
        print(secret)
    else:
        print(f"Created token {name!r} with scopes {', '.join(scopes)}."
              f"{' Default product: ' + product + '.' if product else ''}"
              f"{' Default environment: ' + environment + '.' if environment else ''}")
        print("Its secret is shown only this once; store it now:")
        print(secret)
    return 0


def _list(conn: dbmod.Connection) -> int:
    rows = conn.execute(
        "SELECT name, scopes, product, environment, created_at, last_used_at, revoked_at FROM tokens ORDER BY name"
    ).fetchall()
    header = ("NAME", "SCOPES", "PRODUCT", "ENVIRONMENT", "CREATED", "LAST USED", "STATE")
    table = [header] + [(r["name"], r["scopes"], r["product"] or "-", r["environment"] or "-",
                         to_iso(r["created_at"]) or "-", to_iso(r["last_used_at"]) or "never",
                         "revoked" if r["revoked_at"] else "active") for r in rows]
    widths = [max(len(str(row[i])) for row in table) for i in range(len(header))]
    for row in table:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _revoke(conn: dbmod.Connection, name: str) -> int:
    with dbmod.transaction(conn):
        done = store.revoke_token(conn, name, now_us())
    if not done:
        print(f"deploytrack: no active token named {name!r}", file=sys.stderr)
        return 1
    print(f"Revoked token {name!r}.")
    return 0
