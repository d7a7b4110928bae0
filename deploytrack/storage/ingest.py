"""Write-side SQL: plain functions of a connection (`storage.database.Connection`), run by the single writer.

Each function runs inside the writer's transaction; raising rolls back everything it did.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import orjson

from deploytrack.errors import Conflict, DeploytrackError, Unauthorized, Unprocessable
from deploytrack.metrics import rules
from deploytrack.model import Event, check_resend, new_event_ids
from deploytrack.rules.gate import GATED_STATUSES, Judgement, RuleGate, happening_now
from deploytrack.settings import canonical_environment
from deploytrack.storage import keylocks, sqlite, versions
from deploytrack.storage.bulk import Statement, insert_statements, padded, select_statements
from deploytrack.storage.database import Connection
from deploytrack.storage.projection import Dep, Key, Projection, fold_event
from deploytrack.storage.staging import EVENT_COLUMNS as EVENT_COLUMNS  # re-exported: transfer, bench
from deploytrack.storage.staging import Staging
from deploytrack.timeutil import day_start_us

_INSERT_EVENT = (
    f"INSERT INTO events ({', '.join(EVENT_COLUMNS[1:])}) "
    f"VALUES ({', '.join('?' * (len(EVENT_COLUMNS) - 1))})"
)
_EVENT_VALUES = itemgetter(*EVENT_COLUMNS[1:])
_STAGED_VALUES = itemgetter(*EVENT_COLUMNS)


@dataclass
class Ingest:
    """One request's worth of events to store atomically."""

    events: list[Event]
    token_id: int | None
    received_at: int
    aliases: Mapping[str, str]
    idempotency_key: str | None = None
    fingerprint: str | None = None  # of the request's body (model.fingerprint), with an idempotency_key
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
    for the whole group and rows are written in multi-row statements (storage.bulk): under load,
    each SQLite call gives up the GIL and waits to take it back from the event loop.
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
    """The state of one ingest group: what the database held before it, plus what the group adds.

    On SQLite the group stages its events (storage.staging): its lookups see the staged ones first,
    and it writes `event_log` instead of `events` and `deployments`.

    It first locks what it decides (storage.keylocks: on PostgreSQL another process's group may be
    running beside it), then makes every lookup in one `execute_all` and every write at the end in
    another: on PostgreSQL each is one trip from the writer thread to the event loop, not one per statement.
    """

    def __init__(self, conn: Connection, batches: list[Ingest]) -> None:
        self.conn = conn
        self.staging: Staging | None = conn.staging if isinstance(conn, sqlite.Connection) else None
        self.next_seq = self.staging.next_seq(conn) if self.staging is not None else 0
        # The products whose deployments the rules may judge (locked once the rules are read, if any).
        self.judged = {e.product for b in batches if b.rules for e in b.events
                       if e.kind == "deployment" and e.environment_raw}
        if self.staging is not None and self.staging.count and self.judged \
                and conn.execute(f"SELECT 1 {_ACTIVE_RULES} LIMIT 1").fetchone() is not None:
            # The rules read open deployments and completions from the tables: they hold everything first.
            self.staging.project(conn)
        self.projection = Projection()
        self._environments: dict[str, str] = {}  # raw name -> canonical, for this group
        events = [e for b in batches for e in b.events]
        idempotency = {(b.token_id, b.idempotency_key) for b in batches
                       if b.token_id is not None and b.idempotency_key}
        client_keys = list(dict.fromkeys(e.client_key for e in events if e.client_key))
        staged_keys = self.staging.client_rows(client_keys) if self.staging is not None else {}
        version_pairs = {(e.product, e.version) for e in events if e.version is not None}
        keys = {_deployment_key(e, self._environment(e, b.aliases))
                for b in batches for e in b.events if e.kind == "deployment" and e.environment_raw}
        keylocks.hold(conn, [("idempotency", *k) for k in idempotency] + [("client", k) for k in client_keys]
                      + [("version", *v) for v in version_pairs] + [("deployment", *k[:3]) for k in keys])
        shas = {(e.product, e.version, e.scm_sha) for e in events if e.version is not None and e.scm_sha}
        found = _run_all(conn, {
            "known": _known_sql({b.token_id for b in batches if b.token_id is not None}, {e.product for e in events},
                                {self._environment(e, b.aliases) or "" for b in batches for e in b.events
                                 if e.environment_raw}, rules=bool(self.judged)),
            "keys": select_statements("SELECT token_id, key, event_ids, fingerprint FROM idempotency_keys",
                                      [("token_id = ? AND key = ?", k) for k in idempotency]),
            "client_keys": [(f"SELECT * FROM events WHERE client_key IN ({', '.join('?' * len(chunk))})", chunk)
                            for chunk in padded([k for k in client_keys if k not in staged_keys], _KEY_CHUNK)],
            # Only the stored SHAs that differ from one an event sends are read (a version's first deployment
            # event wrote its row; reading it back for every later event cost a fetch each).
            "shas": select_statements("SELECT product, version, scm_sha FROM versions",
                                      [("product = ? AND version = ? AND scm_sha IS NOT NULL AND scm_sha <> ?", t)
                                       for t in shas]),
            "deployments": self.projection.lookups(keys),
        })
        self.live_tokens = {int(r[1]) for r in found["known"] if r[0] == "tokens"}
        # Names stored already (only an exclusive write deletes one): the group inserts the others.
        self.known_names = {(r[0], r[1]) for r in found["known"] if r[0] in ("products", "environments")}
        self.any_rules = any(r[0] == "rules" and r[1] != "0" for r in found["known"])  # active rules
        self.idempotency: dict[Any, list[str]] = {(r[0], r[1]): orjson.loads(r[2]) for r in found["keys"]}
        self.fingerprints: dict[Any, str | None] = {(r[0], r[1]): r[3] for r in found["keys"]}
        self.new_keys: list[tuple[int, str, str, int, str | None]] = []
        self.by_client_key: dict[str, dict[str, Any]] = {r["client_key"]: dict(r) for r in found["client_keys"]}
        self.by_client_key.update(staged_keys)
        self.stored_shas: dict[tuple[str, str], str] = {(r[0], r[1]): r[2] for r in found["shas"]}
        self.claimed: dict[tuple[str, str], str] = {}  # SHAs the group's accepted requests gave versions
        self.version_writes: versions.Writes = {}
        self.names: dict[str, dict[str, int]] = {"products": {}, "environments": {}}
        self.deployments = (self.staging.records_for(keys, found["deployments"]) if self.staging is not None
                            else self.projection.records_from(found["deployments"]))
        # The records the rules gate sees beside the stored ones: those read, then each one the group makes.
        self.staged: list[Dep] = list(self.deployments.values())
        self.deployment_pairs = {(k[0], k[1] or "") for k in keys}
        self.rows: list[dict[str, Any]] = []
        self.folded: list[tuple[dict[str, Any], Dep]] = []  # each deployment event's row and its record
        self.dirty_days: set[int] = set()
        self.gate: RuleGate | None = None  # made on first use: most groups judge nothing
        # New event ids for the whole group in one call (one os.urandom): most requests hold one event.
        self.new_ids = new_event_ids(sum(len(b.events) for b in batches if not b.event_ids))
        self.ids_given = 0

    def _environment(self, event: Event, aliases: Mapping[str, str]) -> str | None:
        raw = event.environment_raw
        if not raw:
            return None
        name = self._environments.get(raw)
        if name is None:
            name = self._environments[raw] = canonical_environment(raw, aliases)
        return name

    def add(self, batch: Ingest) -> IngestResult:
        """Stage one request's rows; raise (staging nothing) if it must be refused."""
        if batch.token_id is not None and batch.token_id not in self.live_tokens:
            raise Unauthorized("Invalid API key")
        key = (batch.token_id, batch.idempotency_key) if batch.token_id is not None and batch.idempotency_key else None
        kept: list[dict[str, Any] | None] | None = None  # per event: a stored row that answers it
        if key is not None and key in self.idempotency:
            replayed = self._rows_by_id(self.idempotency[key])
            if {(r["dialect"], r["kind"]) for r in replayed} - {(e.dialect, e.kind) for e in batch.events}:
                # (IETF's Idempotency-Key draft: 422 for a key reused with another request)
                raise Unprocessable("the Idempotency-Key was used before for another kind of request "
                                    f"({replayed[0]['dialect']} {replayed[0]['kind']}); use a new key",
                                    "Idempotency-Key")
            check_resend(self.fingerprints.get(key), batch.fingerprint)
            if len(replayed) == len(self.idempotency[key]):
                return IngestResult(replayed, replayed=True)
            # An admin deleted some of the original's events since: those are stored again, the others
            # answered as they were, and the key answers with the result from now on. (A request of another
            # size under the key is not the original: it gets what is left of it, or is stored if nothing is.)
            if len(self.idempotency[key]) == len(batch.events):
                by_id = {r["id"]: r for r in replayed}
                kept = [by_id.get(i) for i in self.idempotency[key]]
            elif replayed:
                return IngestResult(replayed, replayed=True)
        ids = batch.event_ids or self.new_ids[self.ids_given:self.ids_given + len(batch.events)]
        self.ids_given += 0 if batch.event_ids else len(batch.events)
        claims: dict[tuple[str, Any], str | None] = {}
        plan: list[dict[str, Any] | Event] = []  # a stored row (a re-send) or an event to store
        fresh: dict[str, Event] = {}
        for index, event in enumerate(batch.events):
            if kept is not None and (row := kept[index]) is not None:
                plan.append(row)
                continue
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
        judgement = self._judge(batch, plan) if batch.rules and self.any_rules else None
        rows: list[dict[str, Any]] = []
        stored: dict[int, dict[str, Any]] = {}
        for position, item in enumerate(plan):
            if isinstance(item, Event):
                if id(item) not in stored:
                    stored[id(item)] = self._stage(item, batch, ids[position])
                rows.append(stored[id(item)])
            else:
                rows.append(item)
        if judgement is not None:
            judgement.record({i: rows[i]["id"] for i in range(len(rows))})
        if key is not None:
            ids = [r["id"] for r in rows]
            self.idempotency[key] = ids
            self.fingerprints[key] = batch.fingerprint
            self.new_keys.append((key[0], key[1], orjson.dumps(ids).decode(), batch.received_at, batch.fingerprint))
        return IngestResult(rows, replayed=not stored and bool(batch.events))

    def _judge(self, batch: Ingest, plan: list[dict[str, Any] | Event]) -> Judgement | None:
        """Deployment rules, for the events that open a deployment happening now (raises if refused); only
        called when rules are active."""
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
            keylocks.hold_products(self.conn, self.judged)  # before the gate reads the rules and open deployments
            self.gate = RuleGate(self.conn, self.deployment_pairs)
        assert batch.rules is not None
        return self.gate.judge(opening, batch.rules, batch.token_id, batch.received_at, self.staged,
                               batch=len(plan) > 1)

    def _opens_deployment(self, key: Key, status: str) -> bool:
        """Whether an event of this key and status starts a new deployment record (see `_fold`)."""
        dep = self.deployments.get(key)
        return dep is None or (not key[3] and rules.starts_new_run(dep["record"].status, status))

    def _check_version(self, event: Event, claims: dict[tuple[str, Any], str | None], index: int) -> None:
        """A version is immutable once it has a SHA: a different SHA for it is a conflict."""
        pair = (event.product, event.version or "")
        sha = event.scm_sha
        if sha:
            known = claims.get(pair) or self.claimed.get(pair) \
                or (self.staging.version_sha(pair) if self.staging is not None else None) or self.stored_shas.get(pair)
            if known is not None and known != sha:
                error = Conflict(f"Version {event.version} already exists with different SHA", "scm_sha")
                error.index = index
                raise error
        claims[pair] = claims.get(pair) or sha

    def _stage(self, event: Event, batch: Ingest, event_id: str) -> dict[str, Any]:
        occurred = event.occurred_at if event.occurred_at is not None else batch.received_at
        environment = self._environment(event, batch.aliases)
        if event.version is not None:
            versions.claim(self.version_writes, event.product, event.version, event.scm_sha, occurred)
            if event.scm_sha:
                self.claimed.setdefault((event.product, event.version), event.scm_sha)
        self.names["products"].setdefault(event.product, batch.received_at)
        if environment:
            self.names["environments"].setdefault(environment, batch.received_at)
        row: dict[str, Any] = {
            "id": event_id, "dialect": event.dialect, "token_id": batch.token_id,
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
            self.folded.append((row, self._fold(row, rules.event_label(event.metadata, event.summary))))
        if event.client_key:
            self.by_client_key[event.client_key] = row
        self.rows.append(row)
        day = day_start_us(occurred)
        if day < day_start_us(batch.received_at):  # a late event: that day's snapshot must be recomputed
            self.dirty_days.add(day)
        return row

    def _fold(self, ev: dict[str, Any], label: str | None) -> Dep:
        """Fold a deployment event into its deployment record (the rules' fold step, in arrival order;
        the metrics refresh refolds keys whose events arrived out of order)."""
        key = (ev["product"], ev["environment"], ev["version"], ev["invoke_id"] or "")
        event = fold_event(ev, label)
        dep = self.deployments.get(key)
        if dep is not None and not key[3] and rules.starts_new_run(dep["record"].status, event.status):
            dep = None
        if dep is None:
            dep = self.projection.create(key, event)
            self.deployments[key] = dep
            self.staged.append(dep)
        else:
            rules.fold_into(dep["record"], event)
        self.projection.touch(dep)
        return dep

    def _rows_by_id(self, ids: list[str]) -> list[dict[str, Any]]:
        staged = {r["id"]: r for r in self.rows}
        if self.staging is not None:
            staged.update((i, self.staging.by_id[i]) for i in ids if i in self.staging.by_id)
        missing = [i for i in ids if i not in staged]
        stored = {r["id"]: r for r in _events_by_id(self.conn, missing)} if missing else {}
        return [staged.get(i) or stored[i] for i in ids if i in staged or i in stored]

    def flush(self) -> None:
        """Write everything the accepted requests staged: the new records' ids, then one `write_all`.
        Rows another group may also be inserting (a new product's name) go in a sorted order, the same
        in every group, so two groups never wait for each other in a circle."""
        self.projection.assign_ids(self.conn, self.staging.top_dep_id if self.staging is not None else 0)
        for row, dep in self.folded:
            row["deployment_id"] = dep["id"]
        writes: list[Statement] = []
        if self.staging is None:  # on SQLite the projector writes them (storage.staging)
            writes += versions.statements(self.version_writes)
        for table, names in self.names.items():
            writes += insert_statements(table, ("name", "created_at"),
                                        sorted(n for n in names.items() if (table, n[0]) not in self.known_names),
                                        " ON CONFLICT DO NOTHING")
        if self.staging is not None:
            for seq, row in enumerate(self.rows, start=self.next_seq):
                row["seq"] = seq
            writes += insert_statements("event_log", EVENT_COLUMNS, [_STAGED_VALUES(r) for r in self.rows])
        else:
            writes += insert_statements("events", EVENT_COLUMNS[1:], [_EVENT_VALUES(r) for r in self.rows])
        writes += insert_statements("dirty_days", ("day",), [(d,) for d in sorted(self.dirty_days)],
                                    " ON CONFLICT DO NOTHING")
        writes += insert_statements("idempotency_keys", ("token_id", "key", "event_ids", "created_at", "fingerprint"),
                                    self.new_keys, " ON CONFLICT (token_id, key) DO UPDATE SET event_ids = "
                                    "excluded.event_ids, created_at = excluded.created_at, fingerprint = "
                                    "excluded.fingerprint")
        if self.staging is None:
            writes += self.projection.statements(self.conn.backend)  # PostgreSQL, or a connection of a command: now
        self.conn.write_all(writes)  # on PostgreSQL, in one trip with the COMMIT
        if self.staging is not None:  # the projector writes them (storage.staging)
            self.staging.stage(self.rows, self.projection.touched.values(), self.version_writes)
            self.projection.touched.clear()


_ACTIVE_RULES = "FROM rules WHERE mode <> 'disabled'"  # the rules a deployment is judged by


def _known_sql(token_ids: set[int], products: set[str], environments: set[str], rules: bool) -> list[Statement]:
    """Which of these tokens are live (not revoked; they may come from auth's cache, and a revocation
    committed since must still refuse them); which of these product and environment names are stored;
    with `rules`, how many rules are active (only an exclusive write changes rules or deletes a name).
    Rows (table, id or name or count): one statement when they are few. (A token's last use is
    recorded by web.auth, for every request.)"""
    parts: list[tuple[str, list[Any]]] = []
    if rules:
        parts.append((f"SELECT 'rules', CAST(COUNT(*) AS TEXT) {_ACTIVE_RULES}", []))
    for ids in padded(sorted(token_ids), _KEY_CHUNK):
        parts.append((f"SELECT 'tokens', CAST(id AS TEXT) FROM tokens WHERE id IN "
                      f"({', '.join('?' * len(ids))}) AND revoked_at IS NULL", list(ids)))
    for table, names in (("products", products), ("environments", environments - {""})):
        for chunk in padded(sorted(names), _KEY_CHUNK):
            parts.append((f"SELECT '{table}', name FROM {table} WHERE name IN "
                          f"({', '.join('?' * len(chunk))})", list(chunk)))
    statements: list[Statement] = []
    for sql, params in parts:
        if statements and len(statements[-1][1]) + len(params) <= _KEY_CHUNK:
            statements[-1] = (f"{statements[-1][0]} UNION ALL {sql}", statements[-1][1] + params)
        else:
            statements.append((sql, list(params)))
    return statements


def _run_all(conn: Connection, statements: dict[str, list[Statement]]) -> dict[str, list[Any]]:
    """Every named list of statements in one `execute_all`: the rows of each list, by name."""
    flat = [(name, statement) for name, listed in statements.items() for statement in listed]
    rows: dict[str, list[Any]] = {name: [] for name in statements}
    if flat:
        for (name, _), found in zip(flat, conn.execute_all([s for _, s in flat]), strict=True):
            rows[name] += found
    return rows


def _deployment_key(event: Event, environment: str | None) -> Key:
    return (event.product, environment, event.version, event.invoke_id or "")


# Bound parameters per IN (...) lookup: well under SQLite's and PostgreSQL's limits.
_KEY_CHUNK = 512


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
