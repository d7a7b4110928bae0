"""The four DORA metrics over trailing windows, from the stored facts (metrics/facts.py).

Every path - the live ("latest") numbers, the nightly snapshot, `metrics recompute`, `--since DAY`
and a full refold - reads the same facts through `load_facts` and slides the same windows over
them in `compute`, so they give identical numbers for the same data and day. The metric for day D
uses only what had happened by the end of D (00:00 UTC of D+1): a failure counts once it is known
(the rollback or the incident), so a snapshot taken that night and one recomputed later agree.
Definitions and bands: docs/metrics.md.
"""

from __future__ import annotations

import bisect
from array import array
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter, sub
from typing import Any

import orjson

from deploytrack.metrics import days, gcpause, rules
from deploytrack.metrics.rules import (
    BANDS_SOURCE,
    SOURCES,
    failure_rate_band,
    frequency_band,
    lead_time_band,
    restore_band,
)
from deploytrack.settings import Settings
from deploytrack.storage.database import Connection
from deploytrack.timeutil import DAY, day_start_us, to_iso

WINDOWS = (7, 30, 90)
# The daily series reaches back at most this many days (GET /api/v1/metrics' `days`): older snapshots are
# neither computed nor kept, so an event backfilled years back costs at most this many days of them.
SNAPSHOT_DAYS = 400
SCOPE_KINDS = ("overall", "product", "environment", "product_environment")
__all__ = ["BANDS_SOURCE", "DAY", "WINDOWS", "Facts", "Scope", "compute", "live", "load_facts", "snapshot_rows",
           "write_snapshots", "earliest_day", "to_iso"]


# -- scopes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """overall / product / environment / product_environment; '' where not narrowed."""

    kind: str
    product: str = ""
    environment: str = ""

    @classmethod
    def of(cls, product: str | None, environment: str | None) -> Scope:
        if product and environment:
            return cls("product_environment", product, environment)
        if product:
            return cls("product", product)
        if environment:
            return cls("environment", "", environment)
        return cls("overall")

    def holds(self, product: str, environment: str, production: frozenset[str]) -> bool:
        """Does data of (product, environment) count here? '' environment (an incident without one) is production."""
        if self.product and product != self.product:
            return False
        if self.environment:
            return environment == self.environment or (environment == "" and self.environment in production)
        return environment == "" or environment in production

    def environments(self, production: frozenset[str]) -> list[str]:
        """The environments whose data this scope reads."""
        return [self.environment] if self.environment else sorted(production)

    def as_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "product": self.product or None, "environment": self.environment or None}


# -- facts ------------------------------------------------------------------------------------


@dataclass
class Facts:
    """What the windows are computed from, keyed by (product, environment); days are indexes from `base`."""

    base: int  # day start of index 0
    # per key: list of (finish day, day the failure became known or None, status, count)
    deployments: dict[tuple[str, str], list[tuple[int, int | None, str, int]]] = field(default_factory=dict)
    lead: dict[tuple[str, str], dict[int, list[int]]] = field(default_factory=dict)  # day -> lead times (µs)
    # day -> data points of each source (an index into SOURCES)
    lead_sources: dict[tuple[str, str], dict[int, list[int]]] = field(default_factory=dict)
    restore: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)  # (day, µs)
    incidents: dict[tuple[str, str], list[tuple[int, int | None]]] = field(default_factory=dict)  # opened, resolved

    def keys(self) -> set[tuple[str, str]]:
        return set(self.deployments) | set(self.lead) | set(self.restore) | set(self.incidents)


def _scope_sql(alias: str, product: str | None, envs: Iterable[str] | None, production: frozenset[str],
               incidents: bool = False) -> tuple[str, list[Any]]:
    """` AND ...` narrowing rows of `alias` to a product and environments (an incident with no
    environment counts as production)."""
    sql, params = "", []
    if product:
        sql += f" AND {alias}.product = ?"
        params.append(product)
    if envs is not None:
        names = sorted(envs)
        cond = f"{alias}.environment IN ({', '.join('?' * len(names))})" if names else "1 = 0"
        if incidents and set(names) & production:
            cond = f"({cond} OR {alias}.environment IS NULL)"
        sql += f" AND {cond}"
        params.extend(names)
    return sql, params


def _led_by_pair(product: str | None, envs: list[str] | None, production: frozenset[str], since: int,
                 until: int) -> tuple[str, list[Any]]:
    """` AND ...` naming the product/environments that have facts finished in [since, until) (alias f), from
    their day totals, where the scope does not name both: the facts are indexed by product, environment and
    time only (m026), so a read is a seek of each pair's time range, not a walk of every fact (nor of a
    product's whole history)."""
    if product and envs is not None:
        return "", []
    mflt, mparams = _scope_sql("m", product, envs, production)
    return (f" AND (f.product, f.environment) IN (SELECT m.product, m.environment FROM metric_days m "
            f"WHERE m.day >= ? AND m.day < ?{mflt})", [day_start_us(since), until, *mparams])


def load_facts(conn: Connection, settings: Settings, since: int, until: int,
               product: str | None = None, envs: Iterable[str] | None = None) -> Facts:
    """Everything the windows need for [since, until) (`since` a day start), optionally narrowed to a
    product/environments.

    Reads the stored facts, which were derived over all history: a deployment's rollback, the first
    deployment of a change and a failed deployment's recovery do not depend on the range asked for.
    Whole days come from their day totals (metrics/days.py), a last partial day (a live request)
    from the facts themselves; the completed deployments that became failures by `until` from the facts.
    """
    base = day_start_us(since)
    assert since == base, "windows start at a day's start"
    whole = day_start_us(until)  # days before it are whole
    facts = Facts(base=base)
    production = settings.production_set
    envs = list(envs) if envs is not None else None

    def idx(us: int) -> int:
        return (us - base) // DAY

    flt, params = _scope_sql("f", product, envs, production)
    iflt, iparams = _scope_sql("i", product, envs, production, incidents=True)
    partial_flt, partial_params = _led_by_pair(product, envs, production, whole, until)
    led_flt, led_params = _led_by_pair(product, envs, production, since, until)
    # (the rolled-back rows of every product are few: their own index finds them, by time)
    rb_flt, rb_params = (led_flt, led_params) if product else ("", [])
    # The statements are independent: one execute_all (on PostgreSQL one trip to the event loop).
    statements: list[tuple[str, Sequence[Any]]] = [
        (days.rows_sql(flt), (base, DAY, since, whole, *params)),
        ("SELECT f.product, f.environment, (f.finished_at - ?) / ?, f.status, COUNT(*) FROM deployment_facts f "
         f"WHERE f.finished_at >= ? AND f.finished_at < ?{flt}{partial_flt} GROUP BY 1, 2, 3, 4",
         (base, DAY, whole, until, *params, *partial_params)),
        ("SELECT f.product, f.environment, (f.finished_at - ?) / ?, f.lead_us, f.source FROM metric_lead_facts f "
         f"WHERE f.finished_at >= ? AND f.finished_at < ? AND f.source IS NOT NULL{flt}{partial_flt}",
         (base, DAY, whole, until, *params, *partial_params)),
        # completed deployments that became failures: rolled back, or a linked incident opened (by `until`)
        ("SELECT f.id, f.product, f.environment, f.finished_at, f.rolled_back_at FROM deployment_facts f "
         "WHERE f.rolled_back_at IS NOT NULL AND f.rolled_back_at < ? AND f.status = 'completed' "
         f"AND f.finished_at >= ? AND f.finished_at < ?{flt}{rb_flt}", (until, since, until, *params, *rb_params)),
        # (status is read for the linked rows only: a `status` term would read every deployment of the window)
        ("SELECT f.id, f.product, f.environment, f.finished_at, MIN(i.opened_at), f.status FROM deployment_facts f "
         f"JOIN incidents i ON i.deployment_id = f.id WHERE i.opened_at < ? AND f.finished_at >= ? "
         f"AND f.finished_at < ?{flt}{led_flt} GROUP BY f.id, f.product, f.environment, f.finished_at, f.status",
         (until, since, until, *params, *led_params)),
        # Two index ranges: the incidents resolved since the window began, and the open ones (`+` keeps
        # SQLite from walking every incident opened before `until` instead).
        (f"SELECT i.product, COALESCE(i.environment, '') AS env, i.opened_at, i.resolved_at FROM incidents i "
         f"WHERE i.resolved_at >= ? AND +i.opened_at < ?{iflt} UNION ALL "
         f"SELECT i.product, COALESCE(i.environment, '') AS env, i.opened_at, i.resolved_at FROM incidents i "
         f"WHERE i.resolved_at IS NULL AND i.opened_at < ?{iflt}",
         (since, until, *iparams, until, *iparams)),
    ]
    if settings.count_failed_deployments:
        statements.append(
            ("SELECT f.product, f.environment, f.finished_at, f.recovered_at FROM deployment_facts f "
             f"WHERE f.status = 'failed' AND f.recovered_at >= ? AND f.recovered_at < ?{flt}",
             (since, until, *params)))
    day_rows, partial, partial_leads, rolled_back, linked, incidents, *failed = conn.execute_all(statements)
    # per key and finish day: [finished, completed, failed]
    outcomes: dict[tuple[str, str], dict[int, list[int]]] = {}
    for row in day_rows:
        key = (row[0], row[1])
        day, finished, completed, failed_n, sources, lead = days.columns(row)
        outcomes.setdefault(key, {})[day] = [finished, completed, failed_n]
        if lead:
            facts.lead.setdefault(key, {})[day] = lead
            facts.lead_sources.setdefault(key, {})[day] = sources
    for prod, env, day, status, count in partial:
        totals = outcomes.setdefault((prod, env), {}).setdefault(day, [0, 0, 0])
        totals[0] += count
        totals[1] += count if status == "completed" else 0
        totals[2] += count if status == "failed" else 0
    for prod, env, day, lead_us, source in partial_leads:
        facts.lead.setdefault((prod, env), {}).setdefault(day, []).append(lead_us)
        facts.lead_sources.setdefault((prod, env), {}).setdefault(day, [0] * len(SOURCES))[source] += 1
    became_failures: dict[int, tuple[tuple[str, str], int]] = {}  # deployment id -> (key, finished at)
    rolled_back_at: dict[int, int] = {}
    for dep_id, prod, env, finished_at, at in rolled_back:
        became_failures[dep_id], rolled_back_at[dep_id] = ((prod, env), finished_at), at
    opened_at: dict[int, int] = {}
    for dep_id, prod, env, finished_at, at, status in linked:
        if status == "completed":
            became_failures[dep_id], opened_at[dep_id] = ((prod, env), finished_at), at
    failures: Counter[tuple[tuple[str, str], int, int]] = Counter()
    for dep_id, (key, finished_at) in became_failures.items():
        opened = opened_at.get(dep_id)
        at = rules.failure_known_at(rolled_back_at.get(dep_id), [] if opened is None else [opened])
        assert at is not None
        fday = idx(finished_at)
        failures[(key, fday, max(fday, idx(at)))] += 1
    counted: Counter[tuple[tuple[str, str], int]] = Counter()  # failures per key and finish day
    for (key, fday, kday), count in sorted(failures.items()):
        facts.deployments.setdefault(key, []).append((fday, kday, "completed", count))
        counted[(key, fday)] += count
    for key, by_day in outcomes.items():
        listed = facts.deployments.setdefault(key, [])
        for day, (finished, completed, failed_n) in by_day.items():
            listed.extend((day, None, status, count) for status, count in (
                ("completed", completed - counted[(key, day)]), ("failed", failed_n),
                ("aborted", finished - completed - failed_n)) if count > 0)
    for prod, env, opened, resolved in incidents:
        done = resolved if resolved is not None and resolved < until else None
        if opened >= base:
            facts.incidents.setdefault((prod, env), []).append((idx(opened), None if done is None else idx(done)))
        if done is not None:
            facts.restore.setdefault((prod, env), []).append((idx(done), max(0, done - opened)))
    for prod, env, finished, recovered in (failed[0] if failed else []):
        facts.restore.setdefault((prod, env), []).append((idx(recovered), recovered - finished))
    return facts


# -- windows ----------------------------------------------------------------------------------


def _prefix(values: list[int]) -> list[int]:
    out = [0]
    for v in values:
        out.append(out[-1] + v)
    return out


_LOW = 4
_HIGH = 5


def _sliding_medians(points: list[tuple[int, int]], first: int, last: int,
                     window: int) -> list[tuple[float | None, int]]:
    """(median, count) of the values whose day index lies in (t - window, t], for t in first..last."""
    by_day: dict[int, list[int]] = {}
    for day, value in points:
        by_day.setdefault(day, []).append(value)
    return _windowed_medians(by_day, first, last, (window,))[window]


def _median(ranked: list[int]) -> float | None:
    n = len(ranked)
    mid = n // 2
    return None if not n else float(ranked[mid]) if n % 2 else (ranked[mid - 1] + ranked[mid]) / 2


def _windowed_medians(by_day: dict[int, list[int]], first: int, last: int,
                      windows: Iterable[int]) -> dict[int, list[tuple[float | None, int]]]:
    """Per window W, (median, count) of the values of days (t - W, t], for t in first..last."""
    windows = list(windows)
    if last - first < 3:  # a few days (the nightly run, a live request): each window's days merged and sorted
        few: dict[int, list[tuple[float | None, int]]] = {}
        for window in windows:
            result = few[window] = []
            for t in range(first, last + 1):
                values = [v for d in range(t - window + 1, t + 1) for v in by_day.get(d, ())] \
                    if len(by_day) > window else [v for d, vs in by_day.items() if t - window < d <= t for v in vs]
                values.sort()
                result.append((_median(values), len(values)))
        return few
    points = [(d, v) for d, vs in by_day.items() for v in vs]
    ranks = _RankCounts(points, max(0, first - max(windows) + 1), last)
    return {window: [ranks.median(t - window, t) for t in range(first, last + 1)] for window in windows}


class _RankCounts:
    """Points ranked by value, with cumulative per-day counts of ranks in buckets and blocks of buckets.

    The points of days (lo, t] in a bucket are the cumulative count through t minus that through lo,
    so a window's k-th value is found from block counts (accumulated in C), then at most 32 bucket
    counts, then a scan of at most 16 ranked points: no per-point work per day or per window.
    """

    def __init__(self, points: list[tuple[int, int]], start: int, last: int) -> None:
        ranked = sorted(points, key=itemgetter(1))
        self.days, self.values = days, _ = [p[0] for p in ranked], [p[1] for p in ranked]
        self.start = start
        buckets = (len(ranked) >> _LOW) + 1
        by_day = sorted(range(len(days)), key=days.__getitem__)  # ranks, grouped by day (ascending)
        per_day = Counter(days)
        bucket_counts = array("i", bytes(4 * buckets))
        block_counts = [0] * ((buckets >> _HIGH) + 1)
        low, high = _LOW, _LOW + _HIGH
        # index 0 is "through day start - 1": nothing yet
        self.buckets, self.blocks, self.totals = [bucket_counts], [block_counts], [0]
        end = first = sum(count for day, count in per_day.items() if day < start)  # never in a window
        for t in range(start, last + 1):
            begin, end = end, end + per_day.get(t, 0)
            if end > begin:
                bucket_counts, block_counts = bucket_counts[:], block_counts.copy()
                for r in by_day[begin:end]:
                    bucket_counts[r >> low] += 1
                    block_counts[r >> high] += 1
            self.buckets.append(bucket_counts)
            self.blocks.append(block_counts)
            self.totals.append(end - first)

    def median(self, lo: int, t: int) -> tuple[float | None, int]:
        """(median, count) of the values of days lo+1 .. t."""
        i, j = max(0, lo - self.start + 1), t - self.start + 1
        size = self.totals[j] - self.totals[i]
        if not size:
            return None, 0
        running = list(accumulate(map(sub, self.blocks[j], self.blocks[i])))
        upper, lower = self.buckets[j], self.buckets[i]
        days, values = self.days, self.values
        lo = self.start + i - 1

        def kth(k: int) -> int:
            block = bisect.bisect_right(running, k)
            if block:
                k -= running[block - 1]
            first = block << _HIGH
            counts = list(accumulate(map(sub, upper[first:first + (1 << _HIGH)], lower[first:first + (1 << _HIGH)])))
            b = bisect.bisect_right(counts, k)
            if b:
                k -= counts[b - 1]
            for r in range((first + b) << _LOW, (first + b + 1) << _LOW):
                if lo < days[r] <= t:
                    if not k:
                        return values[r]
                    k -= 1
            raise AssertionError("rank counts out of step")

        mid = size // 2
        return (float(kth(mid)) if size % 2 else (kth(mid - 1) + kth(mid)) / 2), size


def compute(facts: Facts, settings: Settings, scopes: Iterable[Scope], first: int, last: int,
            windows: Iterable[int] = WINDOWS) -> dict[tuple[Scope, int], list[dict[str, Any]]]:
    """For each scope and window, the metrics of each day index first..last (inclusive)."""
    production = settings.production_set
    windows = tuple(windows)
    n = last + 1
    out: dict[tuple[Scope, int], list[dict[str, Any]]] = {}
    all_keys = sorted(facts.keys())
    done: dict[tuple[tuple[str, str], ...], Scope] = {}  # scopes over the same keys have the same numbers
    for scope in scopes:
        keys = [k for k in all_keys if scope.holds(k[0], k[1], production)]
        same = done.setdefault(tuple(keys), scope)
        if same is not scope:
            for window in windows:
                out[(scope, window)] = out[(same, window)]
            continue
        completed, attempts, failed = [0] * n, [0] * n, [0] * n
        failures_now = [0] * n
        delayed: list[tuple[int, int, int]] = []
        for key in keys:
            for fday, kday, status, count in facts.deployments.get(key, ()):
                if fday >= n:
                    continue
                attempts[fday] += count
                if status == "completed":
                    completed[fday] += count
                    if kday is not None:
                        if kday <= fday:
                            failures_now[fday] += count
                        else:
                            delayed.append((fday, kday, count))
                elif status == "failed":
                    failed[fday] += count
        lead: dict[int, list[int]] = {}
        per_source = [[0] * n for _ in SOURCES]
        for key in keys:
            for d, values in facts.lead.get(key, {}).items():
                lead.setdefault(d, []).extend(values)
            for d, counts in facts.lead_sources.get(key, {}).items():
                if d < n:
                    for source, count in enumerate(counts):
                        per_source[source][d] += count
        psrc = dict(zip(SOURCES, map(_prefix, per_source), strict=True))
        restore: dict[int, list[int]] = {}
        for key in keys:
            for d, us in facts.restore.get(key, ()):
                restore.setdefault(d, []).append(us)
        incidents = [p for key in keys for p in facts.incidents.get(key, ())]
        pc, pa, pf, pn = _prefix(completed), _prefix(attempts), _prefix(failed), _prefix(failures_now)
        pdays = _prefix([1 if c else 0 for c in completed])
        lead_all = _windowed_medians(lead, first, last, windows)
        restore_all = _windowed_medians(restore, first, last, windows)
        for window in windows:
            pending = [0] * (n + 1)
            for fday, kday, count in delayed:  # a failure counts once it is known and while its deploy is in the window
                if kday < min(n, fday + window):
                    pending[kday] += count
                    pending[min(n, fday + window)] -= count
            unresolved = [0] * (n + 1)
            for opened, resolved in incidents:
                end = min(n, opened + window, resolved if resolved is not None else n)
                if opened < end:
                    unresolved[opened] += 1
                    unresolved[end] -= 1
            days = range(first, last + 1)
            starts = [max(0, t - window + 1) for t in days]

            def sums(p: list[int], days: range = days, starts: list[int] = starts) -> list[int]:
                """The window's total of each day: prefix sums p over days lo..t."""
                return [p[t + 1] - p[lo] for t, lo in zip(days, starts, strict=True)]

            late = list(accumulate(pending[:last + 1]))[first:]  # failures known after their day, so far
            open_now = list(accumulate(unresolved[:last + 1]))[first:]
            source_sums = zip(*(sums(psrc[name]) for name in SOURCES), strict=True)
            sources = [dict(zip(SOURCES, counts, strict=True)) for counts in source_sums]
            out[(scope, window)] = [
                _metrics(window, c, a, f, known + later, dd, lead_m, src, restore_m, unresolved_n, settings)
                for c, a, f, known, later, dd, lead_m, src, restore_m, unresolved_n in zip(
                    sums(pc), sums(pa), sums(pf), sums(pn), late, sums(pdays), lead_all[window], sources,
                    restore_all[window], open_now, strict=True)]
    return out


def _metrics(window: int, completed: int, attempts: int, failed: int, failures: int, deploy_days: int,
             lead: tuple[float | None, int], sources: dict[str, int],
             restore: tuple[float | None, int], unresolved: int, settings: Settings) -> dict[str, Any]:
    weeks = window / 7
    freq: dict[str, Any]
    if attempts:
        freq = {"value": round(completed / window, 6), "unit": "deployments per day",
                "band": frequency_band(deploy_days, window), "data_points": attempts, "deployments": completed,
                "per_week": round(completed / weeks, 6), "deploy_days": deploy_days,
                "deploy_days_per_week": round(deploy_days / weeks, 6)}
    else:
        freq = {"value": None, "unit": "deployments per day", "band": None, "data_points": attempts,
                "deployments": completed, "per_week": None, "deploy_days": deploy_days, "deploy_days_per_week": None}
    lead_value, lead_n = lead
    lead_out: dict[str, Any] = {
        "value": None if lead_value is None else lead_value / 1e6, "unit": "seconds",
        "band": None if lead_value is None else lead_time_band(lead_value), "data_points": lead_n,
        "measured_from_build": sources["build"] > 0, "sources": sources}
    total = completed + (failed if settings.count_failed_deployments else 0)
    bad = failures + (failed if settings.count_failed_deployments else 0)
    rate = bad / total if total else None
    cfr = {"value": None if rate is None else round(rate, 6), "unit": "ratio",
           "band": None if rate is None else failure_rate_band(rate), "data_points": total, "failures": bad}
    restore_value, restore_n = restore
    ttr = {"value": None if restore_value is None else restore_value / 1e6, "unit": "seconds",
           "band": None if restore_value is None else restore_band(restore_value), "data_points": restore_n,
           "unresolved_incidents": unresolved}
    return {"window_days": window, "deployment_frequency": freq, "lead_time": lead_out,
            "change_failure_rate": cfr, "time_to_restore": ttr}


# -- snapshots --------------------------------------------------------------------------------


def history_keys(conn: Connection) -> dict[tuple[str, str], int]:
    """Every (product, environment) that has had finished deployments or incidents, with its first day."""
    rows = conn.execute("SELECT product, environment, MIN(day) FROM metric_days GROUP BY product, environment "
                        "UNION ALL SELECT product, COALESCE(environment, ''), MIN(opened_at) FROM incidents "
                        "GROUP BY product, COALESCE(environment, '')")
    first: dict[tuple[str, str], int] = {}
    for product, environment, at in rows:
        key, day = (product, environment), day_start_us(at)
        first[key] = min(first.get(key, day), day)
    return first


def all_scopes(keys: Iterable[tuple[str, str]]) -> list[Scope]:
    """overall, and every product, environment and product/environment pair among `keys`."""
    keys = sorted(keys)
    products = sorted({p for p, _ in keys})
    envs = sorted({e for _, e in keys if e})
    pairs = sorted({(p, e) for p, e in keys if e})
    return [Scope("overall"), *(Scope("product", p) for p in products),
            *(Scope("environment", "", e) for e in envs),
            *(Scope("product_environment", p, e) for p, e in pairs)]


def scope_starts(first: dict[tuple[str, str], int], production: frozenset[str]) -> dict[Scope, int]:
    """Each scope's first day with data: the first day of the (product, environment) keys it holds. A scope
    has a snapshot every day from then on, and none before (a product first seen today has no history)."""
    starts: dict[Scope, int] = {}
    for (product, environment), day in first.items():
        envs = [environment] if environment else sorted(production)  # (an incident without one: production)
        for scope in (Scope("overall"), Scope("product", product), *(Scope("environment", "", e) for e in envs),
                      *(Scope("product_environment", product, e) for e in envs)):
            if scope.holds(product, environment, production):
                starts[scope] = min(starts.get(scope, day), day)
    return starts


def snapshot_rows(conn: Connection, settings: Settings, first_day: int, last_day: int,
                  computed_at: int) -> list[tuple[Any, ...]]:
    """metric_snapshots rows for every scope, window and day first_day..last_day (day starts); read-only."""
    since = first_day - (max(WINDOWS) - 1) * DAY
    with gcpause.paused():
        facts = load_facts(conn, settings, since, last_day + DAY)
        first, last = (first_day - since) // DAY, (last_day - since) // DAY
        rows = []
        texts: dict[int, list[str]] = {}  # scopes over the same data share one series, so one JSON text each
        first_days = history_keys(conn)
        starts = scope_starts(first_days, settings.production_set)
        scopes = all_scopes(first_days.keys() | facts.keys())
        for (scope, window), series in compute(facts, settings, scopes, first, last).items():
            dumped = texts.get(id(series))
            if dumped is None:
                dumped = texts[id(series)] = [orjson.dumps(data).decode() for data in series]
            skip = max(0, (starts.get(scope, last_day + DAY) - first_day) // DAY)  # no data yet: none
            for offset in range(skip, len(dumped)):
                rows.append((first_day + offset * DAY, scope.kind, scope.product, scope.environment, window,
                             dumped[offset], computed_at))
    return rows


def write_snapshots(conn: Connection, rows: list[tuple[Any, ...]], first_day: int, last_day: int) -> int:
    """Replace the snapshots of days first_day..last_day with `rows` (inside the writer's transaction).

    A stored row whose numbers come out the same is left as it is (with the computed_at of the run
    that first computed them); the others are written, and a scope's stored days that `rows` does not
    hold (it is no longer computed, or starts later) are deleted.
    """
    starts: dict[tuple[Any, ...], int] = {}
    for row in rows:
        key = row[1:4]
        starts[key] = min(starts.get(key, row[0]), row[0])
    gone = [(first_day, starts.get(tuple(r), last_day + 1), *r) for r in conn.execute(
        "SELECT DISTINCT scope, product, environment FROM metric_snapshots WHERE day >= ? AND day <= ?",
        (first_day, last_day)).fetchall() if starts.get(tuple(r), last_day + 1) > first_day]
    conn.executemany("DELETE FROM metric_snapshots WHERE day >= ? AND day < ? AND scope = ? AND product = ? "
                     "AND environment = ?", gone)
    conn.executemany("INSERT INTO metric_snapshots (day, scope, product, environment, window_days, data, computed_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, scope, product, environment, window_days) "
                     "DO UPDATE SET data = excluded.data, computed_at = excluded.computed_at "
                     "WHERE metric_snapshots.data <> excluded.data", rows)
    return len(rows)


def drop_snapshots(conn: Connection, before: int, limit: int) -> int:
    """Delete up to `limit` of the snapshots of days before `before` (older than SNAPSHOT_DAYS), oldest
    first; how many."""
    return conn.execute(
        "DELETE FROM metric_snapshots WHERE (day, scope, product, environment, window_days) IN (SELECT day, scope, "
        "product, environment, window_days FROM metric_snapshots WHERE day < ? ORDER BY day LIMIT ?)",
        (before, limit)).rowcount


def live(conn: Connection, settings: Settings, scope: Scope, window: int, now: int) -> dict[str, Any]:
    """The metrics of `scope` for the `window` UTC days ending today, counting everything stored until `now`."""
    today = day_start_us(now)
    since = today - (window - 1) * DAY
    facts = load_facts(conn, settings, since, now + 1, scope.product or None,
                       scope.environments(settings.production_set))
    series = compute(facts, settings, [scope], (today - since) // DAY, (today - since) // DAY, [window])
    return {"day": to_iso(today), **series[(scope, window)][0]}


def earliest_day(conn: Connection) -> int | None:
    """The first day with anything the metrics rest on."""
    row = conn.execute("SELECT MIN(t) FROM (SELECT MIN(first_at) AS t FROM deployments "
                       "UNION ALL SELECT MIN(opened_at) FROM incidents) x").fetchone()
    return None if row[0] is None else day_start_us(row[0])
