"""Day totals of the stored facts (`metric_days`): what a window sums and merges.

One row per product/environment and UTC day: finished, completed and failed deployments, and the
lead times of the changes first deployed that day (how many from each source, and the values). A
window of 90 days is then 90 rows a product/environment, however many deployments they hold, and
a nightly run reads the days of its windows instead of every fact in them.

The rows are a function of `deployment_facts` and `metric_lead_facts` alone, rewritten in the same
transaction as the facts of the finish-time range they cover (`apply`). Which deployments became
failures (a rollback, a linked incident) and when is not summed here: it changes with incident
links, and it is read from the facts (few rows: compute.load_facts).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from deploytrack.metrics.facts import EVER, PartitionFacts
from deploytrack.metrics.rules import SOURCES
from deploytrack.storage.database import Connection
from deploytrack.timeutil import DAY, day_start_us

_SOURCE_COLUMNS = tuple(f"lead_{source}" for source in SOURCES)  # lead_commit, lead_event, lead_build
_COLUMNS = ("product", "environment", "day", "finished", "completed", "failed", *_SOURCE_COLUMNS, "lead")
_CONCAT = {"sqlite": "group_concat(v)", "postgresql": "string_agg(v::text, ',')"}
# The day totals of one product/environment's facts finished in [?, ?).
_TOTALS = """
    INSERT INTO metric_days ({columns})
    SELECT product, environment, day, SUM(n), SUM(c), SUM(f), {sums}, COALESCE({concat}, '')
    FROM (SELECT product, environment, finished_at - finished_at % {day} AS day, 1 AS n,
                 CASE WHEN status = 'completed' THEN 1 ELSE 0 END AS c, CASE WHEN status = 'failed' THEN 1 ELSE 0 END
                 AS f, {zeros}, NULL AS v FROM deployment_facts
          WHERE product = ? AND environment = ? AND finished_at >= ? AND finished_at < ?
          UNION ALL
          SELECT product, environment, finished_at - finished_at % {day}, 0, 0, 0, {counts}, lead_us
          FROM metric_lead_facts
          WHERE product = ? AND environment = ? AND finished_at >= ? AND finished_at < ? AND source IS NOT NULL) x
    GROUP BY product, environment, day
"""
_NEVER = 1 << 62  # after any data: "to the end"


def decode(text: str) -> list[int]:
    return list(map(int, text.split(","))) if text else []


def _days(p: PartitionFacts) -> tuple[int, int]:
    """The whole days a piece of facts touches, [first, end): the days it shares with the facts before its
    start or after its end are summed again whole."""
    first = EVER if p.start <= EVER else day_start_us(p.start)
    if p.end is None:
        return first, _NEVER
    end = day_start_us(p.end)
    return first, end if end == p.end else end + DAY


def apply(conn: Connection, planned: Iterable[PartitionFacts]) -> None:
    """Rewrite the day rows of the facts just written for `planned` (inside the same write transaction), in SQL."""
    totals = _TOTALS.format(
        columns=", ".join(_COLUMNS), concat=_CONCAT[conn.backend], day=DAY,
        sums=", ".join(f"SUM({c})" for c in _SOURCE_COLUMNS), zeros=", ".join(f"0 AS {c}" for c in _SOURCE_COLUMNS),
        counts=", ".join(f"CASE WHEN source = {i} THEN 1 ELSE 0 END" for i in range(len(SOURCES))))
    for p in planned:
        first, end = _days(p)
        conn.execute("DELETE FROM metric_days WHERE product = ? AND environment = ? AND day >= ? AND day < ?",
                     (*p.partition, first, end))
        conn.execute(totals, (*p.partition, first, end, *p.partition, first, end))


def rows_sql(flt: str) -> str:
    """The day rows of [since, until) (`flt` narrows alias f), each day as an index from `base`; parameters
    (base, DAY, since, until, *flt's)."""
    return (f"SELECT f.product, f.environment, (f.day - ?) / ?, {', '.join('f.' + c for c in _COLUMNS[3:])} "
            f"FROM metric_days f WHERE f.day >= ? AND f.day < ?{flt}")


def columns(row: Sequence[Any]) -> tuple[int, int, int, int, list[int], list[int]]:
    """(day index, finished, completed, failed, count per source, lead times) of a row of `rows_sql`."""
    return row[2], row[3], row[4], row[5], list(row[6:9]), decode(row[9])
