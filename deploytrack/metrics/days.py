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

_COLUMNS = ("product", "environment", "day", "finished", "completed", "failed", "lead_commit", "lead_event",
            "lead_build", "lead")
assert _COLUMNS[6:9] == tuple(f"lead_{s}" for s in SOURCES)


class _Day:
    """The totals of one day while they are added up."""

    __slots__ = ("finished", "completed", "failed", "sources", "lead")

    def __init__(self) -> None:
        self.finished = self.completed = self.failed = 0
        self.sources = [0] * len(SOURCES)
        self.lead: list[int] = []

    def outcome(self, status: str) -> None:
        self.finished += 1
        self.completed += status == "completed"
        self.failed += status == "failed"

    def lead_time(self, us: int, source: int) -> None:
        self.sources[source] += 1
        self.lead.append(us)


def encode(values: list[int]) -> str:
    return ",".join(map(str, sorted(values)))


def decode(text: str) -> list[int]:
    return list(map(int, text.split(","))) if text else []


def _range(p: PartitionFacts) -> tuple[int, int | None, set[int]]:
    """The days a piece of facts rewrites, [first, end), and its edge days: days it shares with the facts
    before its start or after its end, which are read back whole once the piece is written."""
    edges = set()
    first = EVER
    if p.start > EVER:
        first = day_start_us(p.start)
        if first != p.start:
            edges.add(first)
    end = None
    if p.end is not None:
        end = day_start_us(p.end)
        if end != p.end:
            edges.add(end)
            end += DAY
    return first, end, edges


def apply(conn: Connection, planned: Iterable[PartitionFacts]) -> None:
    """Rewrite the day rows of the facts just written for `planned` (inside the same write transaction)."""
    for p in planned:
        product, environment = p.partition
        first, end, edges = _range(p)
        days: dict[int, _Day] = {}
        for row in p.outcomes:  # id, product, environment, status, finished_at, ...
            day = day_start_us(row[4])
            if day not in edges:
                days.setdefault(day, _Day()).outcome(row[3])
        for row in p.lead:  # ..., finished_at (4), ..., lead_us (11), source (12)
            day = day_start_us(row[4])
            if row[12] is not None and day not in edges:
                days.setdefault(day, _Day()).lead_time(row[11], row[12])
        for day in edges:
            total = days[day] = _Day()
            for (status,) in conn.execute("SELECT status FROM deployment_facts WHERE product = ? AND environment = ? "
                                          "AND finished_at >= ? AND finished_at < ?",
                                          (product, environment, day, day + DAY)):
                total.outcome(status)
            for us, source in conn.execute("SELECT lead_us, source FROM metric_lead_facts WHERE product = ? "
                                           "AND environment = ? AND finished_at >= ? AND finished_at < ? "
                                           "AND source IS NOT NULL", (product, environment, day, day + DAY)):
                total.lead_time(us, source)
        bound = "" if end is None else " AND day < ?"
        conn.execute(f"DELETE FROM metric_days WHERE product = ? AND environment = ? AND day >= ?{bound}",
                     (product, environment, first) if end is None else (product, environment, first, end))
        conn.executemany(f"INSERT INTO metric_days ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})",
                         [(product, environment, day, t.finished, t.completed, t.failed, *t.sources, encode(t.lead))
                          for day, t in sorted(days.items()) if t.finished or t.lead])


def rows_sql(flt: str) -> str:
    """The day rows of [since, until) (`flt` narrows alias f), each day as an index from `base`; parameters
    (base, DAY, since, until, *flt's)."""
    return (f"SELECT f.product, f.environment, (f.day - ?) / ?, {', '.join('f.' + c for c in _COLUMNS[3:])} "
            f"FROM metric_days f WHERE f.day >= ? AND f.day < ?{flt}")


def columns(row: Sequence[Any]) -> tuple[int, int, int, int, list[int], list[int]]:
    """(day index, finished, completed, failed, count per source, lead times) of a row of `rows_sql`."""
    return row[2], row[3], row[4], row[5], [row[6], row[7], row[8]], decode(row[9])
