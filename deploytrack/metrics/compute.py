"""The four DORA metrics, computed from deployments, commits, builds and incidents.

Set-based SQL turns the stored records into a few small per-(product, environment) facts
(daily deployment counts, change failures with the day they became known, lead-time and
restore-time data points); Python then slides 7/30/90-day windows over those facts. The metric
for day D uses only what had happened by the end of D (00:00 UTC of D+1), so a snapshot taken
that night and one recomputed later agree. Definitions and bands: docs/metrics.md.
"""

from __future__ import annotations

import bisect
import gc
import sqlite3
from array import array
from collections import Counter
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter, sub
from typing import Any, Iterable

import orjson

from deploytrack.metrics import facts as metric_facts
from deploytrack.settings import Settings
from deploytrack.timeutil import day_start_us, to_iso

DAY = 86_400_000_000
HOUR = 3_600_000_000
WINDOWS = (7, 30, 90)
BANDS_SOURCE = "DORA 2023 report, as Apache DevLake encodes it"
SCOPE_KINDS = ("overall", "product", "environment", "product_environment")
SOURCES = ("commit", "event", "build")  # what a lead time is measured from, in order of preference


# -- bands ------------------------------------------------------------------------------------


def frequency_band(deploy_days: int, window_days: int) -> str:
    """Deploy days >= 5 a week elite, >= 1 a week high, >= 1 a month medium, else low."""
    if deploy_days * 7 >= 5 * window_days:
        return "elite"
    if deploy_days * 7 >= window_days:
        return "high"
    if deploy_days * 30 >= window_days:
        return "medium"
    return "low"


def lead_time_band(us: float) -> str:
    return "elite" if us < DAY else "high" if us < 7 * DAY else "medium" if us < 30 * DAY else "low"


def failure_rate_band(rate: float) -> str:
    return "elite" if rate <= 0.05 else "high" if rate <= 0.10 else "medium" if rate <= 0.15 else "low"


def restore_band(us: float) -> str:
    return "elite" if us < HOUR else "high" if us < DAY else "medium" if us < 7 * DAY else "low"


# -- scopes -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scope:
    """overall / product / environment / product_environment; '' where not narrowed."""

    kind: str
    product: str = ""
    environment: str = ""

    @classmethod
    def of(cls, product: str | None, environment: str | None) -> "Scope":
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

    def as_dict(self) -> dict[str, str | None]:
        return {"kind": self.kind, "product": self.product or None, "environment": self.environment or None}


# -- facts ------------------------------------------------------------------------------------


@dataclass
class Facts:
    """What the windows are computed from, keyed by (product, environment)."""

    base: int  # day start of index 0
    # per key: list of (finish day, known day or None, status, count)
    deployments: dict[tuple[str, str], list[tuple[int, int | None, str, int]]] = field(default_factory=dict)
    # (day, µs, source: an index into SOURCES)
    lead: dict[tuple[str, str], list[tuple[int, int, int]]] = field(default_factory=dict)
    restore: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)  # (day, µs)
    incidents: dict[tuple[str, str], list[tuple[int, int | None]]] = field(default_factory=dict)  # opened, resolved

    def keys(self) -> set[tuple[str, str]]:
        return set(self.deployments) | set(self.lead) | set(self.restore) | set(self.incidents)


def _filters(alias: str, product: str | None, envs: Iterable[str] | None) -> tuple[str, dict[str, Any]]:
    sql, params = "", {}
    if product:
        sql += f" AND {alias}.product = :product"
        params["product"] = product
    if envs is not None:
        names = sorted(envs)
        keys = [f"env{i}" for i in range(len(names))]
        sql += f" AND {alias}.environment IN ({', '.join(':' + k for k in keys)})" if names else " AND 1 = 0"
        params.update(zip(keys, names))
    return sql, params


def _day(col: str) -> str:
    return f"({col} - {col} % {DAY})"


# One window pass over completed deployments in the order of the deployments_finished index. A
# deployment was rolled back when the next completed one in its product/environment is a rollback:
# marked so, or bringing back a version completed there before (an indexed EXISTS).
_COMPLETED_FACTS = """
SELECT product, environment, {fday} AS fday,
       CASE WHEN known_at IS NULL THEN NULL WHEN known_at < finished_at THEN {fday} ELSE {kday} END AS kday,
       COUNT(*) AS n
FROM (
    SELECT product, environment, finished_at,
           CASE WHEN rolled_back = 1 AND (incident_at IS NULL OR next_at < incident_at) THEN next_at
                ELSE incident_at END AS known_at
    FROM (
        SELECT n.product, n.environment, n.finished_at, n.next_at,
               CASE WHEN n.next_label = 'rollback' THEN 1
                    WHEN n.next_version IS NOT NULL AND n.next_version <> COALESCE(n.version, '') AND EXISTS (
                        SELECT 1 FROM deployments o WHERE o.product = n.product AND o.environment = n.environment
                          AND o.version = n.next_version AND o.status = 'completed' AND o.finished_at < n.next_at)
                    THEN 1 ELSE 0 END AS rolled_back,
               (SELECT MIN(i.opened_at) FROM incidents i
                WHERE i.deployment_id = n.id AND i.opened_at < :until) AS incident_at
        FROM (
            SELECT id, product, environment, version, finished_at,
                   LEAD(version) OVER w AS next_version, LEAD(label) OVER w AS next_label,
                   LEAD(finished_at) OVER w AS next_at
            FROM deployments d WHERE status = 'completed' AND finished_at >= :since AND finished_at < :until {flt}
            WINDOW w AS (PARTITION BY product, environment ORDER BY finished_at, id)
        ) n
    ) y
) k
GROUP BY product, environment, fday, kday
"""

_UNSUCCESSFUL_FACTS = """
SELECT product, environment, status, {fday} AS fday, COUNT(*) AS n FROM deployments d
WHERE status IN ('failed', 'aborted') AND finished_at >= :since AND finished_at < :until {flt}
GROUP BY product, environment, status, fday
"""

_FAILED_RECOVERY = """
SELECT product, environment, recovered_at, recovered_at - finished_at AS us FROM (
    SELECT product, environment, status, finished_at,
           MIN(CASE WHEN status = 'completed' THEN finished_at END) OVER (
               PARTITION BY product, environment ORDER BY finished_at, id
               ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS recovered_at
    FROM deployments d
    WHERE finished_at >= :since AND finished_at < :until AND status IN ('completed', 'failed') {flt}) x
WHERE status = 'failed' AND recovered_at IS NOT NULL AND recovered_at < :until AND recovered_at >= :since
"""

# Each commit counts once per product/environment: at its first completed deployment there (not
# deployed there before the range: indexed lookups by version and by SHA). A deployment's own commit
# is its SHA (else its version's SHA, else the version stands for the change); commits listed in
# event metadata (`commits`) are extra refs from temp.meta_refs.
_LEAD_POINTS = """
WITH dc AS (
    SELECT id, product, environment, version, finished_at, scm_sha FROM deployments d
    WHERE status = 'completed' AND finished_at >= :since AND finished_at < :until {flt}
), refs AS (
    SELECT d.id, d.product, d.environment, d.version, d.finished_at, COALESCE(d.scm_sha, v.scm_sha) AS sha,
           '' AS repo, t.ct
    FROM dc d LEFT JOIN versions v ON v.product = d.product AND v.version = d.version
              LEFT JOIN temp.event_ct t ON t.dep_id = d.id
    UNION ALL
    SELECT d.id, d.product, d.environment, d.version, d.finished_at, m.sha, m.repo, m.ct
    FROM temp.meta_refs m JOIN dc d ON d.id = m.dep_id
), pts AS (
    SELECT r.*, ROW_NUMBER() OVER (PARTITION BY product, environment, COALESCE(sha, '#' || version)
                                   ORDER BY finished_at, id, CASE WHEN ct IS NULL THEN 1 ELSE 0 END, repo) AS nth
    FROM refs r WHERE COALESCE(sha, version) IS NOT NULL
)
SELECT p.product, p.environment, p.finished_at, p.ct,
       (SELECT MIN(c.committed_at) FROM commits c
        WHERE c.sha = p.sha AND (p.repo = '' OR c.repository = p.repo)) AS commit_at,
       COALESCE((SELECT MIN(b.occurred_at) FROM events b WHERE b.kind = 'build' AND b.scm_sha = p.sha),
                (SELECT MIN(b.occurred_at) FROM events b
                 WHERE b.kind = 'build' AND b.product = p.product AND b.version = p.version)) AS build_at
FROM pts p
WHERE p.nth = 1
  AND NOT EXISTS (SELECT 1 FROM deployments o WHERE o.product = p.product AND o.environment = p.environment
                    AND o.version = p.version AND o.status = 'completed' AND o.finished_at < :since)
  AND NOT EXISTS (SELECT 1 FROM deployments o WHERE o.product = p.product AND o.environment = p.environment
                    AND o.scm_sha = p.sha AND o.status = 'completed' AND o.finished_at < :since)
"""


def _commit_refs(conn: sqlite3.Connection, since: int) -> None:
    """temp.event_ct (commit times sent on deployment events) and temp.meta_refs (metadata `commits`).

    Metadata is parsed only for deployment events since `since` whose metadata mentions commits.
    """
    for table in ("meta_refs", "event_ct"):
        conn.execute(f"DROP TABLE IF EXISTS temp.{table}")
    conn.execute("CREATE TEMP TABLE meta_refs (dep_id INTEGER, sha TEXT, repo TEXT, ct INTEGER)")
    rows = conn.execute("SELECT deployment_id, metadata FROM events WHERE kind = 'deployment' AND occurred_at >= ? "
                        "AND deployment_id IS NOT NULL AND metadata LIKE '%\"commits\"%'", (since,))
    refs = []
    for dep_id, meta in rows:
        refs.extend((dep_id, *ref) for ref in commit_refs(orjson.loads(meta)))
    conn.executemany("INSERT INTO meta_refs VALUES (?, ?, ?, ?)", refs)
    conn.execute("CREATE INDEX temp.meta_refs_dep ON meta_refs (dep_id)")
    conn.execute("""
        CREATE TEMP TABLE event_ct AS
        SELECT deployment_id AS dep_id, MIN(commit_time) AS ct FROM events
        WHERE commit_time IS NOT NULL AND kind = 'deployment' AND deployment_id IS NOT NULL GROUP BY deployment_id""")
    conn.execute("CREATE UNIQUE INDEX temp.event_ct_dep ON event_ct (dep_id)")


def commit_refs(metadata: Any) -> list[tuple[str, str, int | None]]:
    """(sha, repository, commit time or None) for each well-formed item of metadata['commits']."""
    from deploytrack.errors import BadRequest
    from deploytrack.timeutil import parse_timestamp

    items = metadata.get("commits") if isinstance(metadata, dict) else None
    out = []
    for item in items if isinstance(items, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("sha"), str) or not item["sha"].strip():
            continue
        repo = item.get("repository") if isinstance(item.get("repository"), str) else ""
        when = item.get("committed_at", item.get("timestamp"))
        try:
            at = parse_timestamp(when, "committed_at") if when is not None else None
        except BadRequest:
            at = None
        out.append((item["sha"].strip()[:128], repo.strip()[:512], at))
    return out


def load_facts(conn: sqlite3.Connection, settings: Settings, since: int, until: int,
               product: str | None = None, envs: Iterable[str] | None = None, stored: bool = False) -> Facts:
    """Everything the windows need for days in [since, until); optionally narrowed to a product/environments.

    `stored`: the stored facts (metric_facts) are up to date; they are read instead of derived from the
    deployments and events when the range starts before all deployments and nothing is narrowed.
    """
    base = day_start_us(since)
    facts = Facts(base=base)
    flt, params = _filters("d", product, envs)
    params.update(since=since, until=until)
    idx = lambda us: (us - base) // DAY  # noqa: E731 - a day index
    if stored and product is None and envs is None:
        first = conn.execute("SELECT MIN(first_at) FROM deployments").fetchone()[0]
        stored = first is None or since <= first
    else:
        stored = False
    if stored:
        facts.deployments.update(metric_facts.completed(conn, base, until))
    else:
        for prod, env, fday, kday, count in conn.execute(
                _COMPLETED_FACTS.format(flt=flt, fday=_day("finished_at"), kday=_day("known_at")), params):
            facts.deployments.setdefault((prod, env), []).append(
                (idx(fday), None if kday is None else idx(kday), "completed", count))
    for prod, env, status, fday, count in conn.execute(_UNSUCCESSFUL_FACTS.format(flt=flt, fday=_day("finished_at")),
                                                       params):
        facts.deployments.setdefault((prod, env), []).append((idx(fday), None, status, count))
    if stored:
        facts.lead.update(metric_facts.lead_points(conn, base, until, list(facts.deployments)))
    else:
        _lead_points(conn, facts, since, flt, params)
    iflt, iparams = _incident_filters(product, envs, settings.production_set)
    iparams.update(since=since, until=until)
    for prod, env, opened, resolved in conn.execute(
            "SELECT product, COALESCE(environment, '') AS env, opened_at, resolved_at FROM incidents i "
            f"WHERE opened_at < :until AND (resolved_at IS NULL OR resolved_at >= :since) {iflt}", iparams):
        done = resolved if resolved is not None and resolved < until else None
        if opened >= base:
            facts.incidents.setdefault((prod, env), []).append((idx(opened), None if done is None else idx(done)))
        if done is not None:
            facts.restore.setdefault((prod, env), []).append((idx(done), max(0, done - opened)))
    if settings.count_failed_deployments:
        for prod, env, recovered, us in conn.execute(_FAILED_RECOVERY.format(flt=flt), params):
            facts.restore.setdefault((prod, env), []).append((idx(recovered), us))
    return facts


def _lead_points(conn: sqlite3.Connection, facts: Facts, since: int, flt: str, params: dict[str, Any]) -> None:
    """facts.lead derived from the deployments, events and commits of the range."""
    _commit_refs(conn, since)
    for prod, env, finished, event_ct, commit_at, build_at in conn.execute(_LEAD_POINTS.format(flt=flt), params):
        if commit_at is not None:
            start, source = commit_at, 0
        elif event_ct is not None:
            start, source = event_ct, 1
        elif build_at is not None:
            start, source = build_at, 2
        else:
            continue
        facts.lead.setdefault((prod, env), []).append(((finished - facts.base) // DAY, max(0, finished - start),
                                                       source))
    conn.execute("DROP TABLE temp.meta_refs")
    conn.execute("DROP TABLE temp.event_ct")


def _incident_filters(product: str | None, envs: Iterable[str] | None,
                      production: frozenset[str]) -> tuple[str, dict[str, Any]]:
    flt, params = _filters("i", product, None)
    if envs is not None:
        names = sorted(envs)
        keys = [f"env{i}" for i in range(len(names))]
        cond = f"i.environment IN ({', '.join(':' + k for k in keys)})" if names else "1 = 0"
        if set(names) & production:
            cond = f"({cond} OR i.environment IS NULL)"
        flt += f" AND {cond}"
        params.update(zip(keys, names))
    return flt, params


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
    return _windowed_medians(points, first, last, (window,))[window]


def _windowed_medians(points: list[tuple[int, int]], first: int, last: int,
                      windows: Iterable[int]) -> dict[int, list[tuple[float | None, int]]]:
    """Per window W, (median, count) of the values whose day index lies in (t - W, t], for t in first..last."""
    windows = list(windows)
    if last - first < 3:  # a few days (the nightly run, a live request): sorting each window is cheaper
        few: dict[int, list[tuple[float | None, int]]] = {}
        for window in windows:
            result = few[window] = []
            for t in range(first, last + 1):
                values = sorted(v for d, v in points if t - window < d <= t)
                n = len(values)
                mid = n // 2
                result.append((None if not n else float(values[mid]) if n % 2
                               else (values[mid - 1] + values[mid]) / 2, n))
        return few
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
        lead = [(d, us) for key in keys for d, us, _ in facts.lead.get(key, ())]
        per_source = [[0] * n for _ in SOURCES]
        for key in keys:
            for d, _, source in facts.lead.get(key, ()):
                if d < n:
                    per_source[source][d] += 1
        psrc = dict(zip(SOURCES, map(_prefix, per_source)))
        restore = [p for key in keys for p in facts.restore.get(key, ())]
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

            def sums(p: list[int]) -> list[int]:
                """The window's total of each day: prefix sums p over days lo..t."""
                return [p[t + 1] - p[lo] for t, lo in zip(days, starts)]

            late = list(accumulate(pending[:last + 1]))[first:]  # failures known after their day, so far
            open_now = list(accumulate(unresolved[:last + 1]))[first:]
            sources = [dict(zip(SOURCES, counts)) for counts in zip(*(sums(psrc[name]) for name in SOURCES))]
            out[(scope, window)] = [
                _metrics(window, c, a, f, known + later, dd, lead_m, src, restore_m, unresolved_n, settings)
                for c, a, f, known, later, dd, lead_m, src, restore_m, unresolved_n in zip(
                    sums(pc), sums(pa), sums(pf), sums(pn), late, sums(pdays), lead_all[window], sources,
                    restore_all[window], open_now)]
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


def all_scopes(facts: Facts, settings: Settings) -> list[Scope]:
    """overall, every product, every environment, every product/environment pair that has data."""
    keys = sorted(k for k in facts.keys())
    products = sorted({p for p, _ in keys})
    envs = sorted({e for _, e in keys if e})
    pairs = sorted({(p, e) for p, e in keys if e})
    return [Scope("overall"), *(Scope("product", p) for p in products),
            *(Scope("environment", "", e) for e in envs),
            *(Scope("product_environment", p, e) for p, e in pairs)]


def snapshot_rows(conn: sqlite3.Connection, settings: Settings, first_day: int, last_day: int,
                  computed_at: int, stored: bool = False) -> list[tuple[Any, ...]]:
    """metric_snapshots rows for every scope, window and day first_day..last_day (day starts)."""
    since = first_day - (max(WINDOWS) - 1) * DAY
    # Millions of small tuples and no reference cycles: a cyclic GC pass would only walk them.
    collecting = gc.isenabled()
    gc.disable()
    try:
        facts = load_facts(conn, settings, since, last_day + DAY, stored=stored)
        first, last = (first_day - since) // DAY, (last_day - since) // DAY
        rows = []
        texts: dict[int, list[str]] = {}  # scopes over the same data share one series, so one JSON text each
        for (scope, window), series in compute(facts, settings, all_scopes(facts, settings), first, last).items():
            dumped = texts.get(id(series))
            if dumped is None:
                dumped = texts[id(series)] = [orjson.dumps(data).decode() for data in series]
            for offset, text in enumerate(dumped):
                rows.append((first_day + offset * DAY, scope.kind, scope.product, scope.environment, window, text,
                             computed_at))
    finally:
        if collecting:
            gc.enable()
    return rows


def replace_snapshots(conn: sqlite3.Connection, settings: Settings, first_day: int, last_day: int,
                      computed_at: int, stored: bool = False) -> int:
    """Compute first, then replace the days' snapshots (the caller's transaction makes it atomic).

    A stored row whose numbers come out the same is left as it is (with the computed_at of the run
    that first computed them); the others are written, and rows no longer computed are deleted.
    Returns the number of snapshots computed.
    """
    rows = snapshot_rows(conn, settings, first_day, last_day, computed_at, stored)
    scopes = {row[1:4] for row in rows}
    gone = [(first_day, last_day, *scope) for scope in metric_facts.tuples(
        conn, "SELECT DISTINCT scope, product, environment FROM metric_snapshots WHERE day >= ? AND day <= ?",
        (first_day, last_day)) if scope not in scopes]
    conn.executemany("DELETE FROM metric_snapshots WHERE day >= ? AND day <= ? AND scope = ? AND product = ? "
                     "AND environment = ?", gone)
    conn.executemany("INSERT INTO metric_snapshots (day, scope, product, environment, window_days, data, computed_at) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (day, scope, product, environment, window_days) "
                     "DO UPDATE SET data = excluded.data, computed_at = excluded.computed_at "
                     "WHERE metric_snapshots.data <> excluded.data", rows)
    return len(rows)


def live(conn: sqlite3.Connection, settings: Settings, scope: Scope, window: int, now: int) -> dict[str, Any]:
    """The metrics of `scope` for the `window` UTC days ending today, counting everything stored until `now`."""
    today = day_start_us(now)
    since = today - (window - 1) * DAY
    envs = [scope.environment] if scope.environment else sorted(settings.production_set)
    facts = load_facts(conn, settings, since, now + 1, scope.product or None, envs)
    series = compute(facts, settings, [scope], (today - since) // DAY, (today - since) // DAY, [window])
    return {"day": to_iso(today), **series[(scope, window)][0]}


def earliest_day(conn: sqlite3.Connection) -> int | None:
    """The first day with anything the metrics rest on."""
    row = conn.execute("SELECT MIN(t) FROM (SELECT MIN(first_at) AS t FROM deployments "
                       "UNION ALL SELECT MIN(opened_at) FROM incidents) x").fetchone()
    return None if row[0] is None else day_start_us(row[0])


def recompute(conn: sqlite3.Connection, settings: Settings, first_day: int | None, last_day: int,
              computed_at: int, refold_all: bool = False) -> tuple[int, int, int]:
    """Refold deployments, relink incidents, refresh the stored facts, replace snapshots of first_day..last_day.

    Runs inside the caller's transaction. Only the deployment keys that received events since the
    last fold are refolded (the first fold, or `refold_all`, refolds everything): refolding an
    unchanged key gives the same record. Likewise the stored facts (metric_facts) are redone only
    where something changed, and all of them on the first fold or with `refold_all`.
    Returns (first_day, last_day, snapshot rows); no days when there is no data yet.
    """
    from deploytrack.metrics import fold as deployments
    from deploytrack.metrics import incidents

    first_fold = conn.execute("SELECT 1 FROM kv WHERE key = ?", (deployments.WATERMARK,)).fetchone() is None
    deployments.rebuild(conn, full=refold_all)
    incidents.relink(conn, settings)
    metric_facts.refresh(conn, full=refold_all or first_fold)
    start = earliest_day(conn) if first_day is None else first_day
    if start is None or start > last_day:
        return last_day + DAY, last_day, 0
    return start, last_day, replace_snapshots(conn, settings, start, last_day, computed_at, stored=True)
