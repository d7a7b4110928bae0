"""Write-side SQL: plain functions of a connection (`storage.database.Connection`), run by the single writer.

Each function runs inside the writer's transaction; raising rolls back everything it did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from deploytrack.errors import Conflict, DeploytrackError, Unauthorized
from deploytrack.metrics import rules
from deploytrack.model import Event, new_event_id
from deploytrack.rules.gate import GATED_STATUSES, Judgement, RuleGate, happening_now
from deploytrack.settings import canonical_environment
from deploytrack.storage.database import Connection
from deploytrack.timeutil import day_start_us

EVENT_COLUMNS = (
    "seq", "id", "dialect", "token_id", "kind", "product", "version", "environment", "environment_raw",
    "status", "status_raw", "occurred_at", "received_at", "scm_sha", "scm_branch", "scm_repository",
    "commit_time", "build_url", "build_number", "build_id", "source_system", "invoke_id", "actor",
    "summary", "change_id", "links", "metadata", "client_key", "deployment_id",
)
_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS[1:])}) "
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) - 1))})"
)
# Bound parameters per IN (...) lookup: well under SQLite's and PostgreSQL's limits.
_KEY_CHUNK = 500


@dataclass
class Ingest:
    """One request's worth of events to store atomically."""

    events: list[Event]
    token_id: int | None
    received_at: int
    aliases: Mapping[str, str]
    idempotency_key: str | None = None
    event_ids: list[str] | None = None  # ids to keep (import); new UUIDv7s otherwise
    rules: str | None = None  # "block" or "record": judge deployment rules (live ingestion; never imports)


@dataclass
class IngestResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    replayed: bool = False


def ingest(conn: Connection, batch: Ingest) -> IngestResult:
    """Store a request's events, or return the original ones if it is a re-send."""
    result = ingest_group(conn, [batch])[0]
    if isinstance(result, DeploytrackError):
        raise result
    return result


def ingest_group(conn: Connection, batches: list[Ingest]) -> list[IngestResult | DeploytrackError]:
    """Store many requests' events in one pass, each request all-or-nothing, as if one after another.

    The writer hands every ingestion request waiting in its queue here at once. Lookups are made
    for the whole group and rows are written in multi-row statements: each SQLite call gives up
    and takes back the GIL, and under load every take-back waits for the event loop, so a few
    statements per group instead of a dozen per event is what lets the writer keep up.
    """
    group = _Group(conn, batches)
    results: list[IngestResult | DeploytrackError] = []
    for batch in batches:
        try:
            results.append(group.add(batch))
        except DeploytrackError as error:
            results.append(error)
    group.flush()
    return results


class _Group:
    """The state of one ingest group: what the database held before it, plus what the group adds."""

    def __init__(self, conn: Connection, batches: list[Ingest]) -> None:
        self.conn = conn
        self.live_tokens = _live_tokens(conn, {b.token_id for b in batches if b.token_id is not None})
        self.used_tokens: dict[int, int] = {}
        self.idempotency = _idempotency_keys(conn, {(b.token_id, b.idempotency_key) for b in batches
                                                    if b.token_id is not None and b.idempotency_key})
        self.new_keys: list[tuple[int, str, str, int]] = []
        events = [e for b in batches for e in b.events]
        self.by_client_key = {k: dict(r) for k, r in
                              _events_by_client_key(conn, [e.client_key for e in events if e.client_key]).items()}
        self.versions = _versions(conn, {(e.product, e.version) for e in events if e.version is not None})
        self.version_writes: dict[tuple[str, str], tuple[str, str | None, int]] = {}
        self.names: dict[str, dict[str, int]] = {"products": {}, "environments": {}}
        keys = {_deployment_key(e, self._environment(e, b.aliases))
                for b in batches for e in b.events if e.kind == "deployment" and e.environment_raw}
        self.deployments = _open_deployments(conn, keys)
        self.deployment_pairs = {(k[0], k[1] or "") for k in keys}
        self.rows: list[dict[str, Any]] = []
        self.dirty_days: set[int] = set()
        self.gate: RuleGate | None = None  # read on first use: most groups judge nothing

    @staticmethod
    def _environment(event: Event, aliases: Mapping[str, str]) -> str | None:
        return canonical_environment(event.environment_raw, aliases) if event.environment_raw else None

    def add(self, batch: Ingest) -> IngestResult:
        """Stage one request's rows; raise (staging nothing) if it must be refused."""
        if batch.token_id is not None:
            if batch.token_id not in self.live_tokens:
                raise Unauthorized("Invalid API key")
            self.used_tokens[batch.token_id] = batch.received_at
        key = (batch.token_id, batch.idempotency_key) if batch.token_id is not None and batch.idempotency_key else None
        if key is not None and key in self.idempotency:
            return IngestResult(self._rows_by_id(self.idempotency[key]), replayed=True)
        claims: dict[tuple[str, Any], str | None] = {}
        plan: list[dict[str, Any] | Event] = []  # a stored row (a re-send) or an event to store
        fresh: dict[str, Event] = {}
        for index, event in enumerate(batch.events):
            if event.client_key and event.client_key in fresh:
                plan.append(fresh[event.client_key])
                continue
            if event.client_key and event.client_key in self.by_client_key:
                plan.append(self.by_client_key[event.client_key])
                continue
            if event.version is not None:
                self._check_version(event, claims, index)
            if event.client_key:
                fresh[event.client_key] = event
            plan.append(event)
        judgement = self._judge(batch, plan) if batch.rules else None
        rows: list[dict[str, Any]] = []
        stored: dict[int, dict[str, Any]] = {}
        for position, item in enumerate(plan):
            if isinstance(item, Event):
                if id(item) not in stored:
                    event_id = batch.event_ids[position] if batch.event_ids else None
                    stored[id(item)] = self._stage(item, batch, event_id)
                rows.append(stored[id(item)])
            else:
                rows.append(item)
        if judgement is not None:
            judgement.record({i: rows[i]["id"] for i in range(len(rows))})
        if key is not None:
            ids = [r["id"] for r in rows]
            self.idempotency[key] = ids
            self.new_keys.append((key[0], key[1], orjson.dumps(ids).decode(), batch.received_at))
        return IngestResult(rows, replayed=not stored and bool(batch.events))

    def _judge(self, batch: Ingest, plan: list[dict[str, Any] | Event]) -> Judgement | None:
        """Deployment rules, for the events that open a deployment happening now (raises if refused)."""
        opening: list[tuple[int, Event, str]] = []
        keys: set[tuple[str, str | None, str | None, str]] = set()
        for index, item in enumerate(plan):
            if not (isinstance(item, Event) and item.kind == "deployment" and item.status in GATED_STATUSES
                    and item.environment_raw and happening_now(item, batch.received_at)):
                continue
            environment = self._environment(item, batch.aliases) or ""
            key = _deployment_key(item, environment)
            if key not in keys and self._opens_deployment(key, item.status):
                opening.append((index, item, environment))
            keys.add(key)
        if not opening:
            return None
        if self.gate is None:
            self.gate = RuleGate(self.conn, self.deployment_pairs)
        assert batch.rules is not None
        return self.gate.judge(opening, batch.rules, batch.token_id, batch.received_at, self.deployments.values(),
                               batch=len(plan) > 1)

    def _opens_deployment(self, key: tuple[str, str | None, str | None, str], status: str) -> bool:
        """Whether an event of this key and status starts a new deployment record (see `_fold`)."""
        dep = self.deployments.get(key)
        return dep is None or (not key[3] and rules.starts_new_run(dep["record"].status, status))

    def _check_version(self, event: Event, claims: dict[tuple[str, Any], str | None], index: int) -> None:
        """A version is immutable once it has a SHA: a different SHA for it is a conflict."""
        pair = (event.product, event.version or "")
        known = claims[pair] if pair in claims else self.versions.get(pair)
        if event.scm_sha and known is not None and known != event.scm_sha:
            error = Conflict(f"Version {event.version} already exists with different SHA", "scm_sha")
            error.index = index
            raise error
        claims[pair] = known or event.scm_sha

    def _stage(self, event: Event, batch: Ingest, event_id: str | None) -> dict[str, Any]:
        occurred = event.occurred_at if event.occurred_at is not None else batch.received_at
        environment = self._environment(event, batch.aliases)
        if event.version is not None:
            self._claim_version(event.product, event.version, event.scm_sha, occurred)
        self.names["products"].setdefault(event.product, batch.received_at)
        if environment:
            self.names["environments"].setdefault(environment, batch.received_at)
        row: dict[str, Any] = {
            "id": event_id or new_event_id(), "dialect": event.dialect, "token_id": batch.token_id,
            "kind": event.kind, "product": event.product, "version": event.version, "environment": environment,
            "environment_raw": event.environment_raw, "status": event.status, "status_raw": event.status_raw,
            "occurred_at": occurred, "received_at": batch.received_at, "scm_sha": event.scm_sha,
            "scm_branch": event.scm_branch, "scm_repository": event.scm_repository,
            "commit_time": event.commit_time, "build_url": event.build_url, "build_number": event.build_number,
            "build_id": event.build_id, "source_system": event.source_system, "invoke_id": event.invoke_id,
            "actor": event.actor, "summary": event.summary, "change_id": event.change_id,
            "links": orjson.dumps(event.links).decode() if event.links else None,
            "metadata": orjson.dumps(event.metadata).decode() if event.metadata else None,
            "client_key": event.client_key, "deployment_id": None,
        }
        if event.kind == "deployment" and environment:
            # The label reads the metadata object the event already holds, not the JSON text just made of it.
            row["deployment"] = self._fold(row, rules.event_label(event.metadata, event.summary))
        if event.client_key:
            self.by_client_key[event.client_key] = row
        self.rows.append(row)
        day = day_start_us(occurred)
        if day < day_start_us(batch.received_at):  # a late event: that day's snapshot must be recomputed
            self.dirty_days.add(day)
        return row

    def _claim_version(self, product: str, version: str, sha: str | None, at: int) -> None:
        pair = (product, version)
        if pair not in self.versions:
            self.versions[pair] = sha
            self.version_writes[pair] = ("insert", sha, at)
        elif sha and self.versions[pair] is None:
            self.versions[pair] = sha
            previous = self.version_writes.get(pair)
            self.version_writes[pair] = ("insert" if previous and previous[0] == "insert" else "update", sha, at)

    def _fold(self, ev: dict[str, Any], label: str | None) -> dict[str, Any]:
        """Fold a deployment event into its deployment record (the rules' fold step, in arrival order;
        the metrics refresh refolds keys whose events arrived out of order)."""
        key = (ev["product"], ev["environment"], ev["version"], ev["invoke_id"] or "")
        event = rules.FoldEvent(seq=0, occurred_at=ev["occurred_at"], status=ev["status"], invoke_id=key[3],
                                scm_sha=ev["scm_sha"], actor=ev["actor"], change_id=ev["change_id"], label=label)
        dep = self.deployments.get(key)
        if dep is not None and not key[3] and rules.starts_new_run(dep["record"].status, event.status):
            dep = None
        if dep is None:
            dep = {"id": None, "product": key[0], "environment": key[1], "version": key[2], "invoke_id": key[3],
                   "record": rules.new_record(event), "stored": None}
            self.deployments[key] = dep
        else:
            rules.fold_into(dep["record"], event)
        return dep

    def _rows_by_id(self, ids: list[str]) -> list[dict[str, Any]]:
        staged = {r["id"]: r for r in self.rows}
        missing = [i for i in ids if i not in staged]
        stored = {r["id"]: r for r in _events_by_id(self.conn, missing)} if missing else {}
        return [staged.get(i) or stored[i] for i in ids if i in staged or i in stored]

    def flush(self) -> None:
        """Write everything the accepted requests staged."""
        conn = self.conn
        for token_id, at in self.used_tokens.items():
            last = self.live_tokens[token_id]
            if last is None or at - last >= _LAST_USED_STEP:
                conn.execute("UPDATE tokens SET last_used_at = ? WHERE id = ?", (at, token_id))
        inserts = [(p, v, sha, at) for (p, v), (how, sha, at) in self.version_writes.items() if how == "insert"]
        _insert_rows(conn, "versions", ("product", "version", "scm_sha", "created_at"), inserts)
        for (product, version), (how, sha, _) in self.version_writes.items():
            if how == "update":
                conn.execute("UPDATE versions SET scm_sha = ? WHERE product = ? AND version = ?",
                             (sha, product, version))
        for table, names in self.names.items():
            _insert_rows(conn, table, ("name", "created_at"), list(names.items()), " ON CONFLICT DO NOTHING")
        touched = {id(r["deployment"]): r["deployment"] for r in self.rows if "deployment" in r}
        _write_deployments(conn, list(touched.values()))
        for row in self.rows:
            dep = row.pop("deployment", None)
            if dep is not None:
                row["deployment_id"] = dep["id"]
        _insert_rows(conn, "events", EVENT_COLUMNS[1:], [[r[c] for c in EVENT_COLUMNS[1:]] for r in self.rows])
        _insert_rows(conn, "dirty_days", ("day",), [(d,) for d in sorted(self.dirty_days)], " ON CONFLICT DO NOTHING")
        _insert_rows(conn, "idempotency_keys", ("token_id", "key", "event_ids", "created_at"), self.new_keys)


_DEPLOYMENT_FIELDS = ("status", "first_at", "last_at", "started_at", "finished_at", "scm_sha", "actor", "change_id",
                      "label", "event_count")


def _write_deployments(conn: Connection, deps: list[dict[str, Any]]) -> None:
    """Insert the new deployment records (ids given here, so one statement serves them all) and
    update the changed ones."""
    new = [d for d in deps if d["id"] is None]
    if new:
        top = conn.execute("SELECT COALESCE(MAX(id), 0) FROM deployments").fetchone()[0]
        for offset, dep in enumerate(new, start=1):
            dep["id"] = top + offset
        keys = ("id", "product", "environment", "version", "invoke_id")
        _insert_rows(conn, "deployments", (*keys, *_DEPLOYMENT_FIELDS),
                     [[*(d[c] for c in keys), *_record_values(d["record"])] for d in new])
    # Only the columns that change are SET (SQLite rewrites an index for every column named, changed
    # or not); the records changing the same columns share one UPDATE ... FROM (VALUES ...).
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for dep in deps:
        if dep["stored"] is not None:
            values = dict(zip(_DEPLOYMENT_FIELDS, _record_values(dep["record"]), strict=True))
            changed = tuple(c for c in _DEPLOYMENT_FIELDS if values[c] != dep["stored"][c])
            if changed:
                by_columns.setdefault(changed, []).append({"id": dep["id"], **values})
    for columns, changed_deps in by_columns.items():
        _update_rows(conn, columns, changed_deps)


def _record_values(record: rules.Folded) -> list[Any]:
    return [getattr(record, c) for c in _DEPLOYMENT_FIELDS]


_INTEGER_FIELDS = frozenset({"first_at", "last_at", "started_at", "finished_at", "event_count"})


def _update_rows(conn: Connection, columns: tuple[str, ...], deps: list[dict[str, Any]]) -> None:
    """Set `columns` of these deployment records in one statement per chunk. VALUES columns are
    column1, column2... in SQLite and PostgreSQL alike; the casts give PostgreSQL their types."""
    one = "(" + ", ".join(["CAST(? AS BIGINT)"] + [
        "CAST(? AS BIGINT)" if c in _INTEGER_FIELDS else "?" for c in columns]) + ")"
    sets = ", ".join(f"{c} = v.column{i}" for i, c in enumerate(columns, start=2))
    for start in range(0, len(deps), _ROWS_CHUNK):
        chunk = deps[start:start + _ROWS_CHUNK]
        values = [x for d in chunk for x in (d["id"], *(d[c] for c in columns))]
        conn.execute(f"UPDATE deployments SET {sets} FROM (VALUES {', '.join([one] * len(chunk))}) AS v "
                     "WHERE deployments.id = v.column1", values)


# Rows per multi-row statement and terms per OR lookup: under SQLite's and PostgreSQL's limits on
# bound parameters (32,766) and SQLite's on expression depth (1,000).
_ROWS_CHUNK = 400
_OR_CHUNK = 100


def _insert_rows(conn: Connection, table: str, columns: tuple[str, ...], rows: list[Any],
                 suffix: str = "") -> None:
    """INSERT many rows with a few multi-row statements."""
    one = f"({', '.join('?' * len(columns))})"
    for start in range(0, len(rows), _ROWS_CHUNK):
        chunk = rows[start:start + _ROWS_CHUNK]
        conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join([one] * len(chunk))}{suffix}",
                     [value for row in chunk for value in row])


def _where_any(terms: list[tuple[str, tuple[Any, ...]]]) -> Iterable[tuple[str, list[Any]]]:
    """`(a = ? AND b = ?) OR (...)` in chunks: SQLite looks each term up in an index (multi-index OR)."""
    for start in range(0, len(terms), _OR_CHUNK):
        chunk = terms[start:start + _OR_CHUNK]
        yield " OR ".join(f"({sql})" for sql, _ in chunk), [v for _, params in chunk for v in params]


def _live_tokens(conn: Connection, ids: set[int]) -> dict[int, int | None]:
    """The tokens among `ids` not revoked, with their last use. Tokens may come from auth's cache:
    a revocation committed since must still refuse them."""
    if not ids:
        return {}
    rows = conn.execute(f"SELECT id, last_used_at FROM tokens WHERE id IN ({', '.join('?' * len(ids))}) "
                        "AND revoked_at IS NULL", list(ids))
    return {int(r[0]): r[1] for r in rows}


def _idempotency_keys(conn: Connection, keys: set[tuple[int | None, str | None]]) -> dict[Any, list[str]]:
    found: dict[Any, list[str]] = {}
    for where, params in _where_any([("token_id = ? AND key = ?", key) for key in keys]):
        for row in conn.execute(f"SELECT token_id, key, event_ids FROM idempotency_keys WHERE {where}", params):
            found[(row[0], row[1])] = orjson.loads(row[2])
    return found


def _versions(conn: Connection, pairs: set[tuple[str, str | None]]) -> dict[tuple[str, str], str | None]:
    found: dict[tuple[str, str], str | None] = {}
    for where, params in _where_any([("product = ? AND version = ?", pair) for pair in pairs]):
        for row in conn.execute(f"SELECT product, version, scm_sha FROM versions WHERE {where}", params):
            found[(row[0], row[1])] = row[2]
    return found


def _deployment_key(event: Event, environment: str | None) -> tuple[str, str | None, str | None, str]:
    return (event.product, environment, event.version, event.invoke_id or "")


def _open_deployments(conn: Connection, keys: set[tuple[str, str | None, str | None, str]]
                      ) -> dict[tuple[str, str | None, str | None, str], dict[str, Any]]:
    """Per deployment key, the record an event of that key folds into: the latest one with that
    invoke id, or without an invoke id the latest still open."""
    terms = [("product = ? AND environment = ? AND version IS NOT DISTINCT FROM ? AND invoke_id = ?"
              + ("" if key[3] else " AND status IN ('pending', 'started')"), key) for key in keys]
    found: dict[tuple[str, str | None, str | None, str], dict[str, Any]] = {}
    for where, params in _where_any(terms):
        for row in conn.execute(f"SELECT * FROM deployments WHERE {where}", params):
            key = (row["product"], row["environment"], row["version"], row["invoke_id"])
            if key not in found or row["id"] > found[key]["id"]:
                stored = {c: row[c] for c in _DEPLOYMENT_FIELDS}
                record = rules.Folded(invoke_id=row["invoke_id"], **stored)
                found[key] = {"id": row["id"], "product": row["product"], "environment": row["environment"],
                              "version": row["version"], "invoke_id": row["invoke_id"], "record": record,
                              "stored": stored}
    return found


# last_used_at is kept to the minute: rewriting the tokens row on every request would add a page
# to every commit for a figure `token list` shows as a date.
_LAST_USED_STEP = 60_000_000


def _events_by_client_key(conn: Connection, keys: list[str]) -> dict[str, Any]:
    """The stored events among these client keys: one query per chunk, not one per event."""
    found: dict[str, Any] = {}
    unique = list(dict.fromkeys(keys))
    for start in range(0, len(unique), _KEY_CHUNK):
        chunk = unique[start:start + _KEY_CHUNK]
        for row in conn.execute(f"SELECT * FROM events WHERE client_key IN ({', '.join('?' * len(chunk))})", chunk):
            found[row["client_key"]] = row
    return found


def _events_by_id(conn: Connection, ids: list[str]) -> list[dict[str, Any]]:
    rows = {r["id"]: dict(r) for r in conn.execute(
        f"SELECT * FROM events WHERE id IN ({', '.join('?' * len(ids))})", ids)} if ids else {}
    return [rows[i] for i in ids if i in rows]


def import_event(conn: Connection, event: Event, event_id: str, received_at: int,
                 aliases: Mapping[str, str]) -> dict[str, Any] | None:
    """Store one event exported earlier (or written for a backfill) under its own id and arrival time.

    Derived rows (products, environments, versions, deployments, dirty days) are updated exactly
    as for ingestion. Returns None, storing nothing, when the id or client key is already stored.
    """
    if conn.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None:
        return None
    if event.client_key and conn.execute(
            "SELECT 1 FROM events WHERE client_key = ?", (event.client_key,)).fetchone() is not None:
        return None
    result = ingest(conn, Ingest(events=[event], token_id=None, received_at=received_at, aliases=aliases,
                                 event_ids=[event_id]))
    return result.rows[0]


# -- tokens -----------------------------------------------------------------------------


def insert_token(conn: Connection, name: str, secret_hash: str, scopes: list[str],
                 product: str | None, environment: str | None, created_at: int) -> int:
    if conn.execute("SELECT 1 FROM tokens WHERE name = ?", (name,)).fetchone():
        raise Conflict(f"a token named {name!r} exists already", "name")
    row = conn.execute(
        "INSERT INTO tokens (name, secret_hash, scopes, product, environment, created_at) VALUES (?, ?, ?, ?, ?, ?) "
        "RETURNING id", (name, secret_hash, ",".join(scopes), product, environment, created_at)).fetchone()
    return int(row[0])


def revoke_token(conn: Connection, name: str, at: int) -> bool:
    cursor = conn.execute("UPDATE tokens SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL", (at, name))
    return cursor.rowcount > 0
