"""The day totals a window sums (`metric_days`) always equal the facts they sum: written with the facts
in pieces that split days, after late events, and filled by migration m024 from facts stored before it."""

from __future__ import annotations

import contextlib

from deploytrack.metrics import refresh
from deploytrack.metrics.days import decode
from deploytrack.storage import database as dbmod
from deploytrack.timeutil import DAY
from tests.conftest import execute, query, run_cli
from tests.dora import at, build, deploy


def from_facts(db):
    """Each product/environment/day's totals worked out from the facts tables."""
    out: dict[tuple, list] = {}
    for product, env, status, finished in query(db, "SELECT product, environment, status, finished_at "
                                                    "FROM deployment_facts"):
        row = out.setdefault((product, env, finished - finished % DAY), [0, 0, 0, 0, 0, 0, []])
        row[0] += 1
        row[1] += status == "completed"
        row[2] += status == "failed"
    for product, env, finished, lead_us, source in query(
            db, "SELECT product, environment, finished_at, lead_us, source FROM metric_lead_facts "
                "WHERE source IS NOT NULL"):
        row = out.setdefault((product, env, finished - finished % DAY), [0, 0, 0, 0, 0, 0, []])
        row[3 + source] += 1
        row[6].append(lead_us)
    return {key: (*row[:6], sorted(row[6])) for key, row in out.items()}


def stored(db):
    return {(p, e, d): (f, c, fl, lc, le, lb, sorted(decode(lead))) for p, e, d, f, c, fl, lc, le, lb, lead in query(
        db, "SELECT product, environment, day, finished, completed, failed, lead_commit, lead_event, lead_build, lead "
            "FROM metric_days")}


def recompute(db):
    code, out = run_cli("metrics", "recompute", "--db", str(db))
    assert code == 0, out


def test_day_totals_equal_the_facts_however_they_were_written(client, token, db_path, monkeypatch):
    monkeypatch.setattr(refresh, "_ROWS_PER_WRITE", 3)  # facts written a few deployments at a time: pieces split days
    for days_ago in range(6, 0, -1):
        build(client, token, f"{days_ago}.0", at(days_ago, 6))
        for hour, (env, status) in enumerate((("staging", "success"), ("production", "success"),
                                              ("production", "failed"), ("production", "success"),
                                              ("staging", "success")), start=8):
            extra = {"commit_timestamp": at(days_ago, 7)} if hour % 2 else {"scm_sha": f"s{days_ago}{hour}"}
            deploy(client, token, f"{days_ago}.{hour}", status, at(days_ago, hour), env=env, **extra)
    deploy(client, token, "6.0", "success", at(2, 20), summary="rollback to 6.0")
    recompute(db_path)
    first = stored(db_path)
    assert first == from_facts(db_path)
    assert len(first) == 12 and {row[0] for row in first.values()} == {2, 3, 4}
    assert sum(row[2] for row in first.values()) == 6 and sum(row[3] + row[4] + row[5] for row in first.values()) > 12

    # late events land in the middle of the history: the days they touch are summed again
    deploy(client, token, "late", "failed", at(4, 23, 30))
    deploy(client, token, "late2", "success", at(3, 0, 0), commit_timestamp=at(3, 0, 0))
    recompute(db_path)
    assert stored(db_path) == from_facts(db_path) != first

    # a database whose facts were stored before migration m024 gets the same totals from the migration
    execute(db_path, "DROP TABLE metric_days")
    execute(db_path, "DROP INDEX deployment_facts_rolled_back")
    execute(db_path, "DELETE FROM schema_migrations WHERE name = 'm024_metric_days'")
    with contextlib.closing(dbmod.open_migrated(db_path)):
        pass
    assert stored(db_path) == from_facts(db_path)
