"""`deploytrack metrics recompute [--since DATE]` and `deploytrack metrics show ...`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import orjson

from deploytrack.cli.dbfile import Refusal, open_database
from deploytrack.cli.flags import DB_SETTINGS, add_settings_flags, settings_from
from deploytrack.errors import BadRequest
from deploytrack.metrics import compute as metrics
from deploytrack.metrics import first_build, refresh, worker
from deploytrack.metrics.report import report as metrics_report
from deploytrack.metrics.report import window_param
from deploytrack.settings import Settings, canonical_environment
from deploytrack.storage import database as dbmod
from deploytrack.storage import file_lock
from deploytrack.storage import postgres as pg
from deploytrack.timeutil import DAY, day_start_us, now_us, parse_timestamp, to_iso


def register(sub: Any) -> None:
    """Add the `metrics` command to the top-level parser."""
    parser = sub.add_parser("metrics", help="recompute and show DORA metrics")
    msub = parser.add_subparsers(dest="metrics_command", metavar="ACTION", required=True)
    recompute = msub.add_parser("recompute", help="rebuild deployments and the daily snapshots now")
    recompute.add_argument("--since", metavar="DATE", help="first day to recompute (default: the first day with data)")
    recompute.add_argument("--refold-all", action="store_true",
                           help="refold every deployment from its events, not only those with new events")
    show = msub.add_parser("show", help="print the metrics for the window ending today")
    show.add_argument("--product")
    show.add_argument("--environment")
    show.add_argument("--window", default="30d", help="7d, 30d or 90d (default 30d)")
    show.add_argument("--json", action="store_true", help="print the same JSON as GET /api/v1/metrics")
    msub.add_parser("worker", help="used by the server: run one metrics round it sends on stdin")
    for p in (recompute, show):
        add_settings_flags(p, [*DB_SETTINGS, "production_environments", "count_failed_deployments"])
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.metrics_command == "worker":
        return worker.main()
    settings = settings_from(args)
    exclusive = first_build.alone(settings.db)  # (asked before our own connection opens the file)
    held = exclusive
    if held is None:  # a shared hold, as a server's: no other command builds in bulk meanwhile
        held = -1 if pg.is_url(settings.db) else file_lock.take(settings.db, exclusive=False)
    if held is None:
        raise Refusal("a metrics first build is writing this file in bulk (another `metrics recompute`); "
                      "run this once it has finished")
    try:
        conn = open_database(settings)
        try:
            bulk = exclusive is not None
            if args.metrics_command == "recompute":
                return _recompute(conn, settings, args.since, args.refold_all, bulk)
            return _show(conn, settings, args, bulk)
        except refresh.Busy as exc:
            raise Refusal(f"{exc}: run this once it has finished") from exc
        finally:
            conn.close()
    finally:
        file_lock.release(held)


def _recompute(conn: Any, settings: Settings, since: str | None, refold_all: bool = False, bulk: bool = False
               ) -> int:
    try:
        first = day_start_us(parse_timestamp(since, "--since")) if since else None
    except BadRequest as exc:
        print(f"deploytrack: {exc.message}", file=sys.stderr)
        return 2
    now = now_us()
    yesterday = day_start_us(now) - DAY
    started = time.perf_counter()
    read, write = dbmod.on_connection(conn)
    # A server may be using the same database: it gets the CPU first, and the lock between our writes.
    # (`bulk`: nothing else had the file open, so a first build may write in bulk: metrics/first_build.py.)
    if not bulk:
        refresh.background_priority()
        write = refresh.paced(write)
    start, end, rows = refresh.snapshot_days(read, write, settings, first, yesterday, now,
                                             full=refold_all, aside=True, bulk=bulk)
    write(_forget_dirty, start, end)
    elapsed = time.perf_counter() - started
    if rows == 0:
        print(f"Deployments rebuilt; no days to snapshot ({elapsed:.2f}s).")
    else:
        days = (end - start) // DAY + 1
        print(f"Recomputed {days} days ({str(to_iso(start))[:10]} .. {str(to_iso(end))[:10]}), "
              f"{rows} snapshots, in {elapsed:.2f}s.")
    return 0


def _forget_dirty(conn: Any, start: int, end: int) -> None:
    conn.execute("DELETE FROM dirty_days WHERE day >= ? AND day <= ?", (start, end))


def _fmt(metric: dict[str, Any], kind: str) -> str:
    if metric["value"] is None:
        return "no data"
    value = metric["value"]
    if kind == "frequency":
        return f"{metric['per_week']:.2f}/week ({metric['deploy_days_per_week']:.2f} deploy days/week)"
    if kind == "ratio":
        return f"{value * 100:.1f}%"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}s"


def _show(conn: Any, settings: Any, args: argparse.Namespace, bulk: bool = False) -> int:
    try:
        window = window_param(args.window)
    except BadRequest:
        print(f"deploytrack: --window must be {', '.join(f'{w}d' for w in metrics.WINDOWS)}", file=sys.stderr)
        return 2
    env = canonical_environment(args.environment, settings.environment_aliases) if args.environment else None
    scope = metrics.Scope.of(args.product, env)
    read, write = dbmod.on_connection(conn)
    refresh.refresh(read, write, settings, aside=True, bulk=bulk)
    report = read(metrics_report, settings, scope, window, 0, now_us())
    if args.json:
        print(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
        return 0
    latest = report["latest"]
    where = " / ".join(x for x in (args.product, env) if x) or "all products, production"
    print(f"DORA metrics for {where}, {window} days to {latest['day'][:10]} (bands: {metrics.BANDS_SOURCE})")
    for label, key, kind in (("Deployment frequency", "deployment_frequency", "frequency"),
                             ("Lead time for changes", "lead_time", "duration"),
                             ("Change failure rate", "change_failure_rate", "ratio"),
                             ("Time to restore", "time_to_restore", "duration")):
        metric = latest[key]
        extra = " (measured from build)" if key == "lead_time" and metric["measured_from_build"] else ""
        band = metric["band"] or "-"
        print(f"  {label:24} {_fmt(metric, kind):44} {band:7} {metric['data_points']} data points{extra}")
    return 0
