"""Rules, overrides and violations: every SQL statement of the rules aggregate.

Write functions take a sqlite3-style connection and run inside the caller's transaction (the
server's single writer, or a CLI command's own transaction). Reads for pages and the API go
through the `Database` wrapper.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from deploytrack.errors import Conflict, NotFound
from deploytrack.rules.model import Rule, parse_rule
from deploytrack.storage.database import Connection, Database

RULE_COLUMNS = "id, name, type, mode, definition, created_at, updated_at, created_by"
OVERRIDE_COLUMNS = ("id, rule_id, product, environment, version, reason, granted_by, granted_at, expires_at, "
                    "used_at, used_by_event")
VIOLATION_COLUMNS = ("at", "outcome", "rule_id", "rule_name", "rule_type", "code", "http_status", "message",
                     "retry_after", "dialect", "token_id", "product", "environment", "version", "status", "actor",
                     "event_id", "override_id", "violations", "attempt")
OPEN_STATUSES = ("pending", "started")


def rule_from_row(row: Any) -> Rule:
    """A stored rule: its definition is re-read by the one validator (aliases were folded when stored)."""
    rule = parse_rule(orjson.loads(row["definition"]), {}, stored=True)
    return Rule(**{**rule.__dict__, "id": row["id"], "created_at": row["created_at"],
                   "updated_at": row["updated_at"], "created_by": row["created_by"]})


# -- rules ----------------------------------------------------------------------------------


def active_rules(conn: Connection) -> list[Rule]:
    """Rules that are evaluated (enabled or report-only), oldest first."""
    return [rule_from_row(r) for r in conn.execute(
        f"SELECT {RULE_COLUMNS} FROM rules WHERE mode <> 'disabled' ORDER BY id")]


def insert_rule(conn: Connection, rule: Rule, at: int, actor: str | None, token_id: int | None) -> Rule:
    if conn.execute("SELECT 1 FROM rules WHERE name = ?", (rule.name,)).fetchone():
        raise Conflict(f"a rule named {rule.name!r} exists already", "name")
    rule_id = conn.execute(
        "INSERT INTO rules (name, type, mode, definition, created_at, updated_at, created_by) "
        "VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (rule.name, rule.type, rule.mode, orjson.dumps(rule.definition()).decode(), at, at, actor)).fetchone()[0]
    _audit(conn, at, token_id, actor, "rule_create", rule.definition())
    return _rule(conn, int(rule_id))


def update_rule(conn: Connection, rule_id: int, changes: Mapping[str, Any], aliases: Mapping[str, str],
                at: int, actor: str | None, token_id: int | None) -> Rule:
    """Apply `changes` (fields of the definition) to a rule and re-validate the whole of it."""
    current = _rule(conn, rule_id)
    if "type" in changes and changes["type"] != current.type:
        raise Conflict("a rule's type cannot change; delete it and create another", "type")
    updated = parse_rule({**current.definition(), **changes}, aliases)
    if updated.name != current.name and conn.execute(
            "SELECT 1 FROM rules WHERE name = ? AND id <> ?", (updated.name, rule_id)).fetchone():
        raise Conflict(f"a rule named {updated.name!r} exists already", "name")
    conn.execute("UPDATE rules SET name = ?, mode = ?, definition = ?, updated_at = ? WHERE id = ?",
                 (updated.name, updated.mode, orjson.dumps(updated.definition()).decode(), at, rule_id))
    _audit(conn, at, token_id, actor, "rule_update", {"id": rule_id, **dict(changes)})
    return _rule(conn, rule_id)


def delete_rule(conn: Connection, rule_id: int, at: int, actor: str | None, token_id: int | None) -> Rule:
    """Delete a rule and its unused overrides; its recorded violations stay (they name it)."""
    rule = _rule(conn, rule_id)
    conn.execute("DELETE FROM rule_overrides WHERE rule_id = ? AND used_at IS NULL", (rule_id,))
    conn.execute("DELETE FROM rules WHERE id = ?", (rule_id,))
    _audit(conn, at, token_id, actor, "rule_delete", rule.definition())
    return rule


def rule_id_by_name(conn: Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM rules WHERE name = ?", (name,)).fetchone()
    if row is None:
        raise NotFound(f"no rule named {name!r}", "rule")
    return int(row[0])


def list_rules_conn(conn: Connection) -> list[Rule]:
    return [rule_from_row(r) for r in conn.execute(f"SELECT {RULE_COLUMNS} FROM rules ORDER BY name")]


def _rule(conn: Connection, rule_id: int) -> Rule:
    row = conn.execute(f"SELECT {RULE_COLUMNS} FROM rules WHERE id = ?", (rule_id,)).fetchone()
    if row is None:
        raise NotFound("no rule with that id", "rule_id")
    return rule_from_row(row)


async def list_rules(db: Database) -> list[Rule]:
    return [rule_from_row(r) for r in await db.fetchall(f"SELECT {RULE_COLUMNS} FROM rules ORDER BY name")]


async def get_rule(db: Database, rule_id: int) -> Rule | None:
    row = await db.fetchone(f"SELECT {RULE_COLUMNS} FROM rules WHERE id = ?", (rule_id,))
    return rule_from_row(row) if row is not None else None


# -- overrides ------------------------------------------------------------------------------


def grant_override(conn: Connection, rule_id: int | None, product: str, environment: str | None,
                   version: str | None, reason: str, expires_at: int | None, at: int, actor: str | None,
                   token_id: int | None) -> dict[str, Any]:
    """A one-time pass for the next matching deployment a rule would block."""
    if rule_id is not None:
        _rule(conn, rule_id)
    override_id = int(conn.execute(
        "INSERT INTO rule_overrides (rule_id, product, environment, version, reason, granted_by, granted_at, "
        "expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (rule_id, product, environment, version, reason, actor, at, expires_at)).fetchone()[0])
    row = conn.execute(f"SELECT {OVERRIDE_COLUMNS} FROM rule_overrides WHERE id = ?", (override_id,)).fetchone()
    _audit(conn, at, token_id, actor, "rule_override", dict(row))
    return dict(row)


def usable_overrides(conn: Connection, product: str, environment: str, version: str | None,
                     now: int) -> list[dict[str, Any]]:
    """Unused, unexpired overrides matching this deployment; rule-specific ones first."""
    return [dict(r) for r in conn.execute(
        f"SELECT {OVERRIDE_COLUMNS} FROM rule_overrides WHERE product = ? AND used_at IS NULL "
        "AND (expires_at IS NULL OR expires_at > ?) AND (environment IS NULL OR environment = ?) "
        "AND (version IS NULL OR version = ?) ORDER BY CASE WHEN rule_id IS NULL THEN 1 ELSE 0 END, id",
        (product, now, environment, version or ""))]


def use_override(conn: Connection, override_id: int, at: int, event_id: str) -> None:
    conn.execute("UPDATE rule_overrides SET used_at = ?, used_by_event = ? WHERE id = ?", (at, event_id, override_id))


async def list_overrides(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    rows = await db.fetchall(
        "SELECT o.id, o.rule_id, r.name AS rule_name, o.product, o.environment, o.version, o.reason, "
        "o.granted_by, o.granted_at, o.expires_at, o.used_at, o.used_by_event "
        "FROM rule_overrides o LEFT JOIN rules r ON r.id = o.rule_id ORDER BY o.id DESC LIMIT ?", (limit,))
    return [dict(r) for r in rows]


# -- violations -----------------------------------------------------------------------------


def insert_violation(conn: Connection, record: Mapping[str, Any]) -> int:
    row = conn.execute(
        f"INSERT INTO rule_violations ({', '.join(VIOLATION_COLUMNS)}) "
        f"VALUES ({', '.join('?' * len(VIOLATION_COLUMNS))}) RETURNING id", [record[c] for c in VIOLATION_COLUMNS])
    return int(row.fetchone()[0])


async def list_violations(db: Database, limit: int, before: int | None = None, product: str | None = None,
                          outcome: str | None = None) -> list[dict[str, Any]]:
    """Violations newest first; `before` is the id the previous page ended at."""
    where: list[str] = []
    params: list[Any] = []
    for column, value in (("product", product), ("outcome", outcome)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if before is not None:
        where.append("id < ?")
        params.append(before)
    sql = (f"SELECT id, {', '.join(VIOLATION_COLUMNS)} FROM rule_violations "
           f"{'WHERE ' + ' AND '.join(where) if where else ''} ORDER BY id DESC LIMIT ?")
    return [dict(r) for r in await db.fetchall(sql, (*params, limit))]


# -- facts the rules read, inside the writer ------------------------------------------------


def open_deployments(conn: Connection, product: str, environment: str) -> list[dict[str, Any]]:
    """Deployment records of this product and environment still pending or started."""
    return [dict(r) for r in conn.execute(
        "SELECT id, product, environment, version, invoke_id, status, first_at, started_at, last_at "
        "FROM deployments WHERE product = ? AND environment = ? AND status IN ('pending', 'started')",
        (product, environment))]


def open_deployments_of(conn: Connection, pairs: set[tuple[str, str]]) -> dict[tuple[str, str],
                                                                                    list[dict[str, Any]]]:
    """`open_deployments` for many pairs, a few statements in all (every pair gets an entry)."""
    found: dict[tuple[str, str], list[dict[str, Any]]] = {pair: [] for pair in pairs}
    ordered = sorted(pairs)
    for start in range(0, len(ordered), 100):
        chunk = ordered[start:start + 100]
        where = " OR ".join(["(product = ? AND environment = ?)"] * len(chunk))
        for row in conn.execute(
                "SELECT id, product, environment, version, invoke_id, status, first_at, started_at, last_at "
                f"FROM deployments WHERE status IN ('pending', 'started') AND ({where})",
                [v for pair in chunk for v in pair]):
            found[(row["product"], row["environment"])].append(dict(row))
    return found


def first_completions(conn: Connection, product: str, version: str,
                      environments: Iterable[str]) -> dict[str, int]:
    """Per environment, when this version's first completed deployment there finished."""
    envs = list(environments)
    rows = conn.execute(
        f"SELECT environment, MIN(finished_at) FROM deployments WHERE product = ? AND version = ? "
        f"AND status = 'completed' AND environment IN ({', '.join('?' * len(envs))}) GROUP BY environment",
        (product, version, *envs))
    return {r[0]: int(r[1]) for r in rows if r[1] is not None}


def _audit(conn: Connection, at: int, token_id: int | None, actor: str | None, action: str,
           detail: Mapping[str, Any]) -> None:
    conn.execute("INSERT INTO audit_log (at, token_id, actor, action, detail) VALUES (?, ?, ?, ?, ?)",
                 (at, token_id, actor, action, orjson.dumps(dict(detail)).decode()))
