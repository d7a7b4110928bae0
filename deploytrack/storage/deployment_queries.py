"""Read-side SQL for the deployment pages: the deployment list, what runs where, a product's timeline."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deploytrack.metrics import rules
from deploytrack.storage.database import Database
from deploytrack.storage.event_queries import newest_first
from deploytrack.timeutil import to_iso

LABELS = rules.LABELS
# Deployment records with what their product/environment's history says of them (metrics/facts.py).
DEPLOYMENTS = ("(SELECT d.*, f.is_rollback, f.rollback_of, f.rolled_back_by, f.rolled_back_at, "
               "COALESCE(f.label, d.label) AS effective_label "
               "FROM deployments d LEFT JOIN deployment_facts f ON f.id = d.id) x")


@dataclass(frozen=True)
class DeploymentFilter:
    product: str | None = None
    environment: str | None = None
    version: str | None = None
    status: str | None = None
    label: str | None = None
    since: int | None = None  # first event at or after (µs)
    until: int | None = None  # first event before (µs)

    def as_query(self) -> dict[str, str | None]:
        return {"product": self.product, "environment": self.environment, "status": self.status, "label": self.label}


def shaped(row: Any) -> dict[str, Any]:
    """A deployment row as a dict with its effective `label`, `duration` (µs) and rollback links."""
    out = dict(row)
    out["duration"] = rules.duration_us(out["first_at"], out["started_at"], out["finished_at"])
    if "effective_label" in out:
        out["label"] = out.pop("effective_label")
    return out


def deployment_json(row: dict[str, Any]) -> dict[str, Any]:
    """The native API's shape of one deployment record (a `shaped` row)."""
    duration = row["duration"]
    return {
        "id": row["id"], "product": row["product"], "environment": row["environment"], "version": row["version"],
        "invoke_id": row["invoke_id"] or None, "status": row["status"], "label": row["label"],
        "first_at": to_iso(row["first_at"]), "started_at": to_iso(row["started_at"]),
        "finished_at": to_iso(row["finished_at"]), "duration_seconds": None if duration is None else duration / 1e6,
        "scm_sha": row["scm_sha"], "actor": row["actor"], "change_id": row["change_id"],
        "event_count": row["event_count"], "rolled_back_by": row.get("rolled_back_by"),
        "rollback_of": row.get("rollback_of"),
    }


async def list_deployments(db: Database, flt: DeploymentFilter, limit: int = 50,
                           cursor: str | None = None) -> tuple[list[dict[str, Any]], str | None]:
    """Deployments newest first (by their first event), keyset-paged; returns rows and the next cursor.
    The deployments page and /api/v1/deployments both read through here."""
    where: list[str] = []
    params: list[Any] = []
    for column in ("product", "environment", "version", "status"):
        value = getattr(flt, column)
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if flt.label is not None:
        where.append("effective_label = ?")
        params.append(flt.label)
    for column, op in (("since", ">="), ("until", "<")):
        value = getattr(flt, column)
        if value is not None:
            where.append(f"first_at {op} ?")
            params.append(value)
    rows, next_cursor = await newest_first(db, DEPLOYMENTS, ("first_at", "id"), where, params, limit, cursor)
    return [shaped(r) for r in rows], next_cursor


async def get_deployment(db: Database, deployment_id: int) -> dict[str, Any] | None:
    row = await db.fetchone(f"SELECT * FROM {DEPLOYMENTS} WHERE id = ?", (deployment_id,))
    return shaped(row) if row else None


async def deployment_events(db: Database, deployment_id: int, limit: int = 200) -> list[dict[str, Any]]:
    """The events folded into one deployment, in the order they happened."""
    rows = await db.fetchall("SELECT * FROM events WHERE deployment_id = ? ORDER BY occurred_at, seq LIMIT ?",
                             (deployment_id, limit))
    return [dict(r) for r in rows]


# The version running is that of the newest completed deployment that names one: a deployment known
# only by a message (a Quanta code_deploy "version 42.0") does not hide the last known version; it
# shows as the newer attempt. Only when none names a version is the newest completed one shown.
_CURRENT = """
SELECT p.name AS product, e.name AS environment,
  COALESCE(
    (SELECT d.id FROM deployments d WHERE d.product = p.name AND d.environment = e.name AND d.status = 'completed'
     AND d.version IS NOT NULL ORDER BY d.finished_at DESC, d.id DESC LIMIT 1),
    (SELECT d.id FROM deployments d WHERE d.product = p.name AND d.environment = e.name AND d.status = 'completed'
     ORDER BY d.finished_at DESC, d.id DESC LIMIT 1)) AS current_id,
  (SELECT d.id FROM deployments d WHERE d.product = p.name AND d.environment = e.name
   ORDER BY d.first_at DESC, d.id DESC LIMIT 1) AS latest_id
FROM products p CROSS JOIN environments e
"""


@dataclass
class Cell:
    """One product × environment: the version running now, and the latest attempt when it differs."""

    current: dict[str, Any] | None
    latest: dict[str, Any] | None

    @property
    def pending_or_failed(self) -> dict[str, Any] | None:
        """The newest deployment, if it is not the one running (in progress, failed or aborted)."""
        if self.latest is None or (self.current is not None and self.latest["id"] == self.current["id"]):
            return None
        return self.latest


@dataclass
class Matrix:
    products: list[str]
    environments: list[str]
    cells: dict[tuple[str, str], Cell]

    def cell(self, product: str, environment: str) -> Cell | None:
        return self.cells.get((product, environment))


async def matrix(db: Database, product: str | None = None) -> Matrix:
    """What version runs where: per product and environment, the newest completed deployment (that names a version).

    One statement with correlated subqueries: each is an index seek, so the cost grows with the
    number of product × environment pairs, not with the number of deployments.
    """
    sql, params = _CURRENT, []
    if product is not None:
        sql += " WHERE p.name = ?"
        params.append(product)
    pairs = await db.fetchall(sql + " ORDER BY p.name, e.name", params)
    ids = {i for r in pairs for i in (r["current_id"], r["latest_id"]) if i is not None}
    deployments: dict[int, dict[str, Any]] = {}
    id_list = sorted(ids)
    for start in range(0, len(id_list), 500):
        chunk = id_list[start:start + 500]
        for row in await db.fetchall(f"SELECT * FROM {DEPLOYMENTS} WHERE id IN ({', '.join('?' * len(chunk))})",
                                     chunk):
            deployments[row["id"]] = shaped(row)
    cells = {}
    for r in pairs:
        if r["latest_id"] is not None:
            cells[(r["product"], r["environment"])] = Cell(deployments.get(r["current_id"]),
                                                            deployments.get(r["latest_id"]))
    products = sorted({p for p, _ in cells})
    environments = sorted({e for _, e in cells}, key=_environment_order)
    return Matrix(products, environments, cells)


def _environment_order(name: str) -> tuple[int, str]:
    """Environments left to right in pipeline order: development, test, staging, then production last."""
    ranks = {"development": 0, "dev": 0, "test": 1, "testing": 1, "qa": 1, "uat": 2, "staging": 3,
             "preprod": 4, "pre-production": 4, "production": 5}
    return ranks.get(name, 4 if "prod" not in name else 5), name


async def product_exists(db: Database, name: str) -> bool:
    return await db.fetchone("SELECT 1 FROM products WHERE name = ?", (name,)) is not None


async def product_deployments(db: Database, product: str, since: int, limit: int = 500) -> list[dict[str, Any]]:
    """A product's deployments since `since`, newest first."""
    rows = await db.fetchall(
        f"SELECT * FROM {DEPLOYMENTS} WHERE product = ? AND first_at >= ? ORDER BY first_at DESC, id DESC LIMIT ?",
        (product, since, limit))
    return [shaped(r) for r in rows]


async def product_builds(db: Database, product: str, since: int, limit: int = 200) -> list[dict[str, Any]]:
    """A product's build events since `since`, newest first."""
    rows = await db.fetchall(
        "SELECT id, version, status, occurred_at, build_url, build_number, scm_sha, scm_repository, scm_branch, actor "
        "FROM events WHERE product = ? AND kind = 'build' AND occurred_at >= ? "
        "ORDER BY occurred_at DESC, seq DESC LIMIT ?", (product, since, limit))
    return [dict(r) for r in rows]
