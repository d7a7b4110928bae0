"""`deploytrack rule add|list|show|mode|delete|override|overrides|violations`: runs directly on the database.

The definitions go through the same validator as the admin API (rules/model.py), and every change
is audit-logged with who made it (`--by`, default the login name).
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from deploytrack.cli.dbfile import add_create_flag, open_database
from deploytrack.cli.flags import DB_SETTINGS, add_settings_flags, settings_from
from deploytrack.errors import BadRequest, DeploytrackError
from deploytrack.rules import store as rule_store
from deploytrack.rules.model import DEFAULT_OVERRIDE_MINUTES, MODES, OUTCOMES, TYPES, parse_rule
from deploytrack.rules.schedule import RECURRENCES
from deploytrack.rules.status import rule_json
from deploytrack.settings import Settings, canonical_environment
from deploytrack.storage import database as dbmod
from deploytrack.timeutil import now_us, to_iso

EXIT_BAD_INPUT = 2


def register(subparsers: Any) -> None:
    """Add `rule` and its actions to the top-level parser."""
    rule = subparsers.add_parser("rule", help="deployment rules: no-deploy windows, promotion order, concurrency")
    sub = rule.add_subparsers(dest="rule_command", metavar="ACTION", required=True)

    add = sub.add_parser("add", help="create a rule")
    add.add_argument("name")
    add.add_argument("--type", required=True, choices=TYPES)
    add.add_argument("--mode", choices=MODES, default="enabled", help="default: enabled")
    add.add_argument("--product", action="append", help="repeatable; default: every product")
    add.add_argument("--environment", action="append",
                     help="repeatable; default: every environment (a flow rule's target environments)")
    add.add_argument("--reason", help="shown to whoever is blocked")
    schedule = add.add_argument_group("schedule rules")
    schedule.add_argument("--recurrence", choices=(*RECURRENCES, "one-time"))
    schedule.add_argument("--start",
                          help="once: 2026-12-24T00:00; daily: 17:00; weekly: 'fri 17:00'; monthly: '1 00:00'")
    schedule.add_argument("--end", help="same form as --start")
    schedule.add_argument("--timezone", help="IANA zone, e.g. Europe/Berlin (default UTC)")
    flow = add.add_argument_group("flow rules")
    flow.add_argument("--prerequisite", action="append", help="environment the version must complete in first; "
                                                              "repeatable, in order")
    flow.add_argument("--strict", action="store_true", default=None,
                      help="prerequisites must complete in the order given")
    flow.add_argument("--soak-minutes", type=int, help="minutes since completing in the prerequisites (default 0)")
    concurrency = add.add_argument_group("concurrency rules")
    concurrency.add_argument("--stale-after-minutes", type=int,
                             help="ignore in-progress deployments silent for this long (default 360)")

    sub.add_parser("list", help="list rules with mode, scope and what they check")
    show = sub.add_parser("show", help="print one rule as JSON")
    show.add_argument("name")
    mode = sub.add_parser("mode", help="set a rule's mode")
    mode.add_argument("name")
    mode.add_argument("mode", choices=MODES)
    delete = sub.add_parser("delete", help="delete a rule (its recorded violations stay)")
    delete.add_argument("name")

    override = sub.add_parser("override", help="let the next matching deployment a rule would block through, once")
    override.add_argument("--product", required=True)
    override.add_argument("--environment", help="default: any environment")
    override.add_argument("--version", help="default: any version")
    override.add_argument("--rule", help="rule name; default: every rule")
    override.add_argument("--reason", required=True, help="why (recorded with who granted it)")
    override.add_argument("--expires-in-minutes", type=int, default=DEFAULT_OVERRIDE_MINUTES,
                          help=f"unused overrides lapse (default {DEFAULT_OVERRIDE_MINUTES})")
    sub.add_parser("overrides", help="list overrides and who used them")
    violations = sub.add_parser("violations", help="list deployments the rules blocked or objected to")
    violations.add_argument("--limit", type=int, default=50)
    violations.add_argument("--product")
    violations.add_argument("--outcome", choices=OUTCOMES)
    for p in sub.choices.values():
        p.add_argument("--by", help="who is acting, for the audit log (default: the login name)")
        add_settings_flags(p, DB_SETTINGS)
    add_create_flag(sub.choices["add"])  # rules may be set before the first `serve`
    rule.set_defaults(func=cmd_rule)


def cmd_rule(args: argparse.Namespace) -> int:
    return run(args, settings_from(args))


def run(args: argparse.Namespace, settings: Settings) -> int:
    conn = open_database(settings, getattr(args, "create", None), events=False)
    try:
        return _ACTIONS[args.rule_command](conn, args, settings)
    except BadRequest as error:
        print(f"deploytrack: {error.message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except DeploytrackError as error:
        print(f"deploytrack: {error.message}", file=sys.stderr)
        return 1
    finally:
        conn.close()


def _who(args: argparse.Namespace) -> str:
    if args.by:
        return str(args.by)[:100]
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"


def _write(conn: dbmod.Connection, fn: Callable[..., Any], *params: Any) -> Any:
    """One transaction, like the server's writer gives each task."""
    with dbmod.transaction(conn):
        return fn(conn, *params)


# The options of each rule type (their argparse names; the flag is `--` + the name with dashes).
_TYPE_OPTIONS = {"schedule": ("recurrence", "start", "end", "timezone"),
                 "flow": ("prerequisite", "strict", "soak_minutes"),
                 "concurrency": ("stale_after_minutes",)}


def definition(args: argparse.Namespace) -> dict[str, Any]:
    """The rule definition the flags describe (validated by parse_rule, like the API's); an option of
    another rule type is refused, naming it, rather than dropped."""
    foreign = ["--" + name.replace("_", "-") for kind in TYPES if kind != args.type
               for name in _TYPE_OPTIONS[kind] if getattr(args, name) is not None]
    if foreign:
        raise BadRequest(f"{', '.join(foreign)} {'does' if len(foreign) == 1 else 'do'} not apply to a "
                         f"{args.type} rule")
    body: dict[str, Any] = {"name": args.name, "type": args.type, "mode": args.mode, "products": args.product,
                            "environments": args.environment, "reason": args.reason}
    if args.type == "schedule":
        body["schedule"] = {"recurrence": args.recurrence, "start": args.start, "end": args.end,
                            "timezone": args.timezone}
    elif args.type == "flow":
        body["flow"] = {"prerequisites": args.prerequisite, "strict": bool(args.strict),
                        "soak_minutes": args.soak_minutes or 0}
    elif args.stale_after_minutes is not None:
        body["concurrency"] = {"stale_after_minutes": args.stale_after_minutes}
    return body


def _add(conn: dbmod.Connection, args: argparse.Namespace, settings: Settings) -> int:
    rule = parse_rule(definition(args), settings.environment_aliases)
    stored = _write(conn, rule_store.insert_rule, rule, now_us(), _who(args), None)
    print(f"Created rule {stored.name!r} (id {stored.id}, {stored.mode}): {stored.describe()}")
    return 0


def _list(conn: dbmod.Connection, args: argparse.Namespace, settings: Settings) -> int:
    now = now_us()
    rows = [("NAME", "TYPE", "MODE", "PRODUCTS", "ENVIRONMENTS", "WINDOW", "CHECKS")]
    for rule in rule_store.list_rules_conn(conn):
        window = rule_json(rule, now).get("window") or {}
        state = (f"active until {window['active_until']}" if window.get("active")
                 else f"next {window['next_start']}" if window.get("next_start") else "-")
        rows.append((rule.name, rule.type, rule.mode, ",".join(rule.products or ["all"]),
                     ",".join(rule.environments or ["all"]), state, rule.describe()))
    _table(rows)
    return 0


def _show(conn: dbmod.Connection, args: argparse.Namespace, settings: Settings) -> int:
    rule = rule_store.rule_from_row(conn.execute(
        f"SELECT {rule_store.RULE_COLUMNS} FROM rules WHERE id = ?",
        (rule_store.rule_id_by_name(conn, args.name),)).fetchone())
    print(json.dumps(rule_json(rule), indent=2, ensure_ascii=False))
    return 0


def _mode(conn: dbmod.Connection, args: argparse.Namespace, settings: Settings) -> int:
    rule_id = rule_store.rule_id_by_name(conn, args.name)
    rule = _write(conn, rule_store.update_rule, rule_id, {"mode": args.mode}, settings.environment_aliases,
                  now_us(), _who(args), None)
    print(f"Rule {rule.name!r} is now {rule.mode}.")
    return 0


def _delete(conn: dbmod.Connection, args: argparse.Namespace, settings: Settings) -> int:
    rule_id = rule_store.rule_id_by_name(conn, args.name)
    rule = _write(conn, rule_store.delete_rule, rule_id, now_us(), _who(args), None)
    print(f"Deleted rule {rule.name!r}.")
    return 0


def _override(conn: dbmod.Connection, args: argparse.Namespace, settings: Settings) -> int:
    if not 1 <= args.expires_in_minutes <= 525_600:
        raise BadRequest("--expires-in-minutes must be from 1 to 525600")
    if not args.reason.strip():
        raise BadRequest("--reason must say why")
    rule_id = rule_store.rule_id_by_name(conn, args.rule) if args.rule else None
    environment = canonical_environment(args.environment, settings.environment_aliases) if args.environment else None
    now = now_us()
    row = _write(conn, rule_store.grant_override, rule_id, args.product.strip(), environment, args.version,
                 args.reason.strip(), now + args.expires_in_minutes * 60_000_000, now, _who(args), None)
    print(f"Override {row['id']} granted: the next deployment of {row['product']}"
          f"{' to ' + environment if environment else ''}{' version ' + args.version if args.version else ''} that "
          f"{'rule ' + repr(args.rule) if args.rule else 'a rule'} would block goes through "
          f"(expires {to_iso(row['expires_at'])}).")
    return 0


def _overrides(conn: dbmod.Connection, args: argparse.Namespace, settings: Settings) -> int:
    rows = [("ID", "PRODUCT", "ENVIRONMENT", "VERSION", "RULE", "GRANTED BY", "REASON", "STATE")]
    for o in conn.execute(
            "SELECT o.*, r.name AS rule_name FROM rule_overrides o LEFT JOIN rules r ON r.id = o.rule_id "
            "ORDER BY o.id DESC LIMIT 200"):
        state = (f"used {to_iso(o['used_at'])} by event {o['used_by_event']}" if o["used_at"]
                 else "expired" if o["expires_at"] and o["expires_at"] <= now_us()
                 else f"until {to_iso(o['expires_at'])}")
        rows.append((str(o["id"]), o["product"], o["environment"] or "any", o["version"] or "any",
                     o["rule_name"] or "any", o["granted_by"] or "-", o["reason"], state))
    _table(rows)
    return 0


def _violations(conn: dbmod.Connection, args: argparse.Namespace, settings: Settings) -> int:
    if not 1 <= args.limit <= 1000:
        raise BadRequest("--limit must be from 1 to 1000")
    where, params = [], []
    for column, value in (("product", args.product), ("outcome", args.outcome)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    rows = [("AT", "OUTCOME", "RULE", "PRODUCT", "ENVIRONMENT", "VERSION", "STATUS", "API", "MESSAGE")]
    for v in conn.execute(f"SELECT * FROM rule_violations {'WHERE ' + ' AND '.join(where) if where else ''} "
                          "ORDER BY id DESC LIMIT ?", (*params, args.limit)):
        rows.append((to_iso(v["at"]) or "", v["outcome"], v["rule_name"], v["product"], v["environment"],
                     v["version"] or "-", v["status"], v["dialect"], v["message"]))
    _table(rows)
    return 0


def _table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


_ACTIONS: dict[str, Callable[[dbmod.Connection, argparse.Namespace, Settings], int]] = {
    "add": _add, "list": _list, "show": _show, "mode": _mode, "delete": _delete, "override": _override,
    "overrides": _overrides, "violations": _violations,
}
