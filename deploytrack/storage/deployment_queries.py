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


# One row per product × environment pair of the page. The version running is that of the newest
# completed deployment that names one: a deployment known only by a message (a Quanta code_deploy
# "version 42.0") does not hide the last known version; it shows as the newer attempt. Only when none
# names a version is the newest completed one shown. Each subquery is an index seek, so the cost
# grows with the pairs shown, never with history.
_PAIR = """
SELECT
  COALESCE(
    (SELECT d.id FROM deployments d WHERE d.product = ? AND d.environment = ? AND d.status = 'completed'
     AND d.version IS NOT NULL ORDER BY d.finished_at DESC, d.id DESC LIMIT 1),
    (SELECT d.id FROM deployments d WHERE d.product = ? AND d.environment = ? AND d.status = 'completed'
     ORDER BY d.finished_at DESC, d.id DESC LIMIT 1)) AS current_id,
  (SELECT d.id FROM deployments d WHERE d.product = ? AND d.environment = ?
   ORDER BY d.first_at DESC, d.id DESC LIMIT 1) AS latest_id
"""

# The environments a product was deployed to, in name order, one index seek each (a skip scan):
# a product with a million deployments in three environments costs three seeks, not a million rows.
_ENVIRONMENTS_OF = """
WITH RECURSIVE envs (name) AS (
  SELECT MIN(environment) FROM deployments WHERE product = ?
  UNION ALL
  SELECT (SELECT MIN(d.environment) FROM deployments d WHERE d.product = ? AND d.environment > envs.name)
  FROM envs WHERE envs.name IS NOT NULL
)
"""
_PRODUCT_ENVIRONMENTS = _ENVIRONMENTS_OF + "SELECT name FROM envs WHERE name IS NOT NULL LIMIT ?"
_PRODUCT_ENVIRONMENT_COUNT = _ENVIRONMENTS_OF + "SELECT COUNT(*) FROM envs WHERE name IS NOT NULL"

# Products that have deployments, in name order after a cursor: a seek per product name.
_DEPLOYED_PRODUCTS = """
SELECT p.name FROM products p
WHERE p.name > ? AND EXISTS (SELECT 1 FROM deployments d WHERE d.product = p.name)
ORDER BY p.name LIMIT ?
"""

ENVIRONMENTS_PER_PRODUCT = 50
PRODUCTS_PER_PAGE = 25  # what runs where, a page at a time: each environment of each product is a seek


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

    @property
    def last_known(self) -> bool:
        """The newest completed deployment here names no version: the one shown is the last known."""
        latest = self.latest
        return bool(latest is not None and self.current is not None and latest["id"] != self.current["id"]
                    and latest["status"] == "completed" and not latest["version"])


@dataclass
class Matrix:
    products: list[str]
    environments: list[str]
    cells: dict[tuple[str, str], Cell]
    next_after: str | None = None  # the cursor of the next page of products
    more_environments: dict[str, bool] | None = None  # products with more environments than shown

    def cell(self, product: str, environment: str) -> Cell | None:
        return self.cells.get((product, environment))

    def environments_of(self, product: str) -> list[str]:
        """The environments `product` has deployments in, production first, then pipeline order reversed."""
        own = [e for e in self.environments if (product, e) in self.cells]
        return sorted(own, key=lambda e: (-_environment_order(e)[0], e))


async def deployed_products(db: Database, after: str | None, limit: int) -> tuple[list[str], str | None]:
    """A page of the products that have deployments, by name, and the cursor of the next page."""
    rows = await db.fetchall(_DEPLOYED_PRODUCTS, (after or "", limit + 1))
    names = [r[0] for r in rows]
    return names[:limit], names[limit - 1] if len(names) > limit else None


async def product_environments(db: Database, product: str, limit: int = ENVIRONMENTS_PER_PRODUCT) -> list[str]:
    """Up to `limit` environments `product` was deployed to, by name."""
    return [r[0] for r in await db.fetchall(_PRODUCT_ENVIRONMENTS, (product, product, limit))]


async def cells(db: Database, pairs: list[tuple[str, str]]) -> dict[tuple[str, str], Cell]:
    """The cell of each product × environment pair (pairs without deployments are left out)."""
    found = [(pair, await db.fetchone(_PAIR, pair * 3)) for pair in pairs]
    ids = sorted({i for _, r in found if r is not None for i in (r["current_id"], r["latest_id"]) if i is not None})
    deployments: dict[int, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for row in await db.fetchall(f"SELECT * FROM {DEPLOYMENTS} WHERE id IN ({', '.join('?' * len(chunk))})",
                                     chunk):
            deployments[row["id"]] = shaped(row)
    out = {}
    for pair, r in found:
        if r is not None and r["latest_id"] is not None:
            out[pair] = Cell(deployments.get(r["current_id"]), deployments.get(r["latest_id"]))
    return out


async def matrix(db: Database, product: str | None = None, after: str | None = None, limit: int = 25,
                 environments: list[str] | None = None, products: list[str] | None = None) -> Matrix:
    """What version runs where, for one page of products (or the `products` or `product` given): only
    pairs that have deployments.

    `environments` narrows every product to those (the home page's production environments); else
    each product shows up to ENVIRONMENTS_PER_PRODUCT of its own.
    """
    next_after = None
    if product is not None:
        products = [product]
    elif products is None:
        products, next_after = await deployed_products(db, after, limit)
    pairs: list[tuple[str, str]] = []
    more: dict[str, bool] = {}
    for name in products:
        if environments is not None:
            pairs += [(name, e) for e in environments]
            continue
        envs = await product_environments(db, name, ENVIRONMENTS_PER_PRODUCT + 1)
        more[name] = len(envs) > ENVIRONMENTS_PER_PRODUCT
        pairs += [(name, e) for e in envs[:ENVIRONMENTS_PER_PRODUCT]]
    grid = await cells(db, pairs)
    shown = sorted({e for _, e in grid}, key=_environment_order)
    return Matrix([p for p in products if any((p, e) in grid for e in shown)] if environments is None else products,
                  shown, grid, next_after, more)


def _environment_order(name: str) -> tuple[int, str]:
    """Environments left to right in pipeline order: development, test, staging, then production last."""
    ranks = {"development": 0, "dev": 0, "test": 1, "testing": 1, "qa": 1, "uat": 2, "staging": 3,
             "preprod": 4, "pre-production": 4, "production": 5}
    return ranks.get(name, 4 if "prod" not in name else 5), name


async def environments(db: Database, after: str | None, limit: int) -> list[tuple[str, int]]:
    """(name, first seen) of up to `limit` environments after the name `after`, by name."""
    rows = await db.fetchall("SELECT name, created_at FROM environments WHERE name > ? ORDER BY name LIMIT ?",
                             (after or "", limit))
    return [(r[0], r[1]) for r in rows]


async def product_exists(db: Database, name: str) -> bool:
    return await db.fetchone("SELECT 1 FROM products WHERE name = ?", (name,)) is not None


async def product_known(db: Database, name: str) -> bool:
    """Whether any page may name `name` as a product: it has events, incidents or blocked deployments."""
    if not name:
        return False
    return await db.fetchone("SELECT 1 FROM products WHERE name = ? UNION ALL "
                             "SELECT 1 FROM incidents WHERE product = ? UNION ALL "
                             "SELECT 1 FROM rule_violations WHERE product = ? LIMIT 1", (name, name, name)) is not None


async def environment_count(db: Database, product: str) -> int:
    """How many environments `product` was ever deployed to."""
    row = await db.fetchone(_PRODUCT_ENVIRONMENT_COUNT, (product, product))  # a seek per environment
    return int(row[0]) if row is not None else 0


async def product_builds(db: Database, product: str, since: int, limit: int = 200) -> list[dict[str, Any]]:
    """A product's build events since `since`, newest first."""
    rows = await db.fetchall(
        "SELECT id, version, status, occurred_at, build_url, build_number, scm_sha, scm_repository, scm_branch, actor "
        "FROM events WHERE product = ? AND kind = 'build' AND occurred_at >= ? "
        "ORDER BY occurred_at DESC, seq DESC LIMIT ?", (product, since, limit))
    return [dict(r) for r in rows]


async def deployments_before(db: Database, product: str, environments: list[str], until: int, since: int,
                             limit: int = 50) -> list[dict[str, Any]]:
    """Deployments of `product` in `environments` that started in [since, until], newest first."""
    if not environments:
        return []
    marks = ", ".join("?" * len(environments))
    rows = await db.fetchall(
        f"SELECT * FROM {DEPLOYMENTS} WHERE product = ? AND environment IN ({marks}) "
        "AND first_at >= ? AND first_at <= ? ORDER BY first_at DESC, id DESC LIMIT ?",
        (product, *environments, since, until, limit))
    return [shaped(r) for r in rows]


async def linked_incidents(db: Database, deployment_id: int, limit: int = 100) -> list[dict[str, Any]]:
    """Incidents linked to a deployment, newest first."""
    rows = await db.fetchall("SELECT * FROM incidents WHERE deployment_id = ? ORDER BY opened_at DESC, id DESC "
                             "LIMIT ?", (deployment_id, limit))
    return [dict(r) for r in rows]


async def commit_time(db: Database, sha: str, repository: str | None) -> tuple[int | None, str | None]:
    """When a commit was made, and where that is known from: a recorded commit, else its first build."""
    row = await db.fetchone("SELECT MIN(committed_at) FROM commits WHERE sha = ? AND (repository = ? OR ? = '')",
                            (sha, repository or "", repository or ""))
    if row is not None and row[0] is not None:
        return int(row[0]), "commit"
    row = await db.fetchone("SELECT MIN(occurred_at) FROM events WHERE kind = 'build' AND scm_sha = ?", (sha,))
    if row is not None and row[0] is not None:
        return int(row[0]), "build"
    return None, None


async def product_incidents(db: Database, product: str, since: int, limit: int = 200) -> list[dict[str, Any]]:
    """A product's incidents opened since `since`, newest first."""
    rows = await db.fetchall("SELECT * FROM incidents WHERE product = ? AND opened_at >= ? "
                             "ORDER BY opened_at DESC, id DESC LIMIT ?", (product, since, limit))
    return [dict(r) for r in rows]


async def counted_deployments(db: Database, product: str | None, environments: list[str], statuses: tuple[str, ...],
                              since: int, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """Deployments with one of `statuses` in `environments` that finished since `since`, newest finish first
    (what a DORA number over that window counts), keyset-paged."""
    where = [f"environment IN ({', '.join('?' * len(environments))})", f"status IN ({', '.join('?' * len(statuses))})",
             "finished_at >= ?"]
    params: list[Any] = [*environments, *statuses, since]
    if product is not None:
        where.append("product = ?")
        params.append(product)
    rows, next_cursor = await newest_first(db, DEPLOYMENTS, ("finished_at", "id"), where, params, limit, cursor)
    return [shaped(r) for r in rows], next_cursor


async def lead_facts(db: Database, deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The changes whose lead time this deployment counts (their first deployment here), by change."""
    if deployment["finished_at"] is None:
        return {}
    # (the changes come from metric_lead_facts_time, which holds them: SQLite would rather walk the
    # product/environment's whole key than look rows up through an index that does not cover them)
    rows = await db.fetchall(
        "SELECT change, sha, repository, lead_us, source FROM metric_lead_facts WHERE product = ? AND environment = ? "
        "AND change IN (SELECT change FROM metric_lead_facts WHERE product = ? AND environment = ? "
        "AND finished_at = ?) AND deployment_id = ?",
        (deployment["product"], deployment["environment"], deployment["product"], deployment["environment"],
         deployment["finished_at"], deployment["id"]))
    return {r["change"]: dict(r) for r in rows}


async def troubled_since(db: Database, environments: list[str], since: int, limit: int) -> list[dict[str, Any]]:
    """Deployments in `environments` that failed or were aborted since `since`, then those started
    since then and still in progress; newest first in each."""
    marks = ", ".join("?" * len(environments))
    failed = await db.fetchall(
        f"SELECT * FROM {DEPLOYMENTS} WHERE environment IN ({marks}) AND status IN ('failed', 'aborted') "
        "AND finished_at >= ? ORDER BY finished_at DESC, id DESC LIMIT ?", (*environments, since, limit))
    running = await db.fetchall(
        f"SELECT * FROM {DEPLOYMENTS} WHERE environment IN ({marks}) AND status IN ('pending', 'started') "
        "AND finished_at IS NULL AND first_at >= ? ORDER BY first_at DESC, id DESC LIMIT ?",
        (*environments, since, limit))
    return [shaped(r) for r in [*failed, *running]]
