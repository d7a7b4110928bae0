"""Ordered, named migrations. Each runs in one transaction together with its record.

The `schema_migrations` table records what ran. Start-up refuses a database that records a
migration this binary does not know (a newer deploytrack wrote it).

A migration is one body when its SQL is the same on both databases, which plain DDL is: TEXT,
BIGINT for anything that may pass 2^31 (epoch microseconds: SQLite reads BIGINT as INTEGER),
no AUTOINCREMENT, no SQLite-only clauses. Where the two differ (an `INTEGER PRIMARY KEY` that
numbers rows itself is an identity column on PostgreSQL), the PostgreSQL body is registered
next to it:

    @migration
    def m001_core(conn): ...            # SQLite's body (or the only one)

    @m001_core.postgres
    def _m001_core_postgres(conn): ...  # PostgreSQL's body
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from deploytrack import __version__
from deploytrack.storage import deployment_ids

Body = Callable[[Any], None]
log = logging.getLogger("deploytrack.db")


class Migration:
    """One numbered step: its name and its body per backend."""

    def __init__(self, fn: Body) -> None:
        self.name = fn.__name__
        self.bodies: dict[str, Body] = {"sqlite": fn, "postgresql": fn}

    def postgres(self, fn: Body) -> Body:
        """Register `fn` as this migration's PostgreSQL body."""
        self.bodies["postgresql"] = fn
        return fn

    def __call__(self, conn: Any) -> None:
        self.bodies[conn.backend](conn)


MIGRATIONS: list[Migration] = []


class DatabaseRefused(RuntimeError):
    """A database deploytrack must not use: start-up stops with this one-line reason."""


class SchemaTooNew(DatabaseRefused):
    pass


class ForeignDatabase(DatabaseRefused):
    pass


def migration(fn: Body) -> Migration:
    step = Migration(fn)
    MIGRATIONS.append(step)
    return step


def run_script(conn: Any, script: str) -> None:
    """Run `;`-separated DDL statements one by one."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


M001_SQLITE = """
    CREATE TABLE tokens (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        secret_hash TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        product TEXT,
        environment TEXT,
        created_at INTEGER NOT NULL,
        last_used_at INTEGER,
        revoked_at INTEGER
    );
    CREATE TABLE products (
        name TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE environments (
        name TEXT PRIMARY KEY,
        created_at INTEGER NOT NULL
    );
    CREATE TABLE versions (
        product TEXT NOT NULL,
        version TEXT NOT NULL,
        scm_sha TEXT,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (product, version)
    );
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        dialect TEXT NOT NULL,
        token_id INTEGER,
        kind TEXT NOT NULL,
        product TEXT NOT NULL,
        version TEXT,
        environment TEXT,
        environment_raw TEXT,
        status TEXT NOT NULL,
        status_raw TEXT,
        occurred_at INTEGER NOT NULL,
        received_at INTEGER NOT NULL,
        scm_sha TEXT,
        scm_branch TEXT,
        scm_repository TEXT,
        commit_time INTEGER,
        build_url TEXT,
        build_number TEXT,
        build_id TEXT,
        source_system TEXT,
        invoke_id TEXT,
        actor TEXT,
        summary TEXT,
        change_id TEXT,
        links TEXT,
        metadata TEXT,
        client_key TEXT,
        deployment_id INTEGER
    );
    CREATE INDEX events_occurred ON events (occurred_at, seq);
    CREATE INDEX events_product ON events (product, occurred_at, seq);
    CREATE INDEX events_environment ON events (environment, occurred_at, seq);
    CREATE INDEX events_kind ON events (kind, occurred_at, seq);
    CREATE UNIQUE INDEX events_client_key ON events (client_key);
    CREATE INDEX events_sha ON events (scm_sha);
    CREATE INDEX events_deployment ON events (deployment_id);
    CREATE TABLE idempotency_keys (
        token_id INTEGER NOT NULL,
        key TEXT NOT NULL,
        event_ids TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        PRIMARY KEY (token_id, key)
    );
    CREATE TABLE deployments (
        id INTEGER PRIMARY KEY,
        product TEXT NOT NULL,
        environment TEXT NOT NULL,
        version TEXT,
        invoke_id TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        first_at INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        started_at INTEGER,
        finished_at INTEGER,
        scm_sha TEXT,
        actor TEXT,
        change_id TEXT,
        label TEXT,
        event_count INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX deployments_key ON deployments (product, environment, version, invoke_id, id);
    CREATE INDEX deployments_env_time ON deployments (environment, status, finished_at, product);
    CREATE INDEX deployments_change ON deployments (change_id);
    CREATE TABLE commits (
        repository TEXT NOT NULL DEFAULT '',
        sha TEXT NOT NULL,
        authored_at INTEGER,
        committed_at INTEGER NOT NULL,
        message TEXT,
        author TEXT,
        PRIMARY KEY (repository, sha)
    );
    CREATE INDEX commits_sha ON commits (sha);
    CREATE TABLE incidents (
        id INTEGER PRIMARY KEY,
        product TEXT NOT NULL,
        environment TEXT,
        title TEXT NOT NULL,
        severity TEXT,
        status TEXT NOT NULL,
        opened_at INTEGER NOT NULL,
        resolved_at INTEGER,
        change_id TEXT,
        deployment_id INTEGER,
        link_rule TEXT,
        metadata TEXT,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL
    );
    CREATE INDEX incidents_opened ON incidents (opened_at);
    CREATE TABLE metric_snapshots (
        day INTEGER NOT NULL,
        scope TEXT NOT NULL,
        product TEXT NOT NULL DEFAULT '',
        environment TEXT NOT NULL DEFAULT '',
        window_days INTEGER NOT NULL,
        data TEXT NOT NULL,
        computed_at INTEGER NOT NULL,
        PRIMARY KEY (day, scope, product, environment, window_days)
    );
    CREATE TABLE dirty_days (
        day INTEGER PRIMARY KEY
    );
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY,
        last_day INTEGER,
        owner TEXT,
        lease_until INTEGER
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE audit_log (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        token_id INTEGER,
        actor TEXT,
        action TEXT NOT NULL,
        detail TEXT
    )
"""
M001_POSTGRES = """
    CREATE TABLE tokens (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        secret_hash TEXT NOT NULL UNIQUE,
        scopes TEXT NOT NULL,
        product TEXT,
        environment TEXT,
        created_at BIGINT NOT NULL,
        last_used_at BIGINT,
        revoked_at BIGINT
    );
    CREATE TABLE products (
        name TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE environments (
        name TEXT PRIMARY KEY,
        created_at BIGINT NOT NULL
    );
    CREATE TABLE versions (
        product TEXT NOT NULL,
        version TEXT NOT NULL,
        scm_sha TEXT,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (product, version)
    );
    CREATE TABLE events (
        seq BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        dialect TEXT NOT NULL,
        token_id BIGINT,
        kind TEXT NOT NULL,
        product TEXT NOT NULL,
        version TEXT,
        environment TEXT,
        environment_raw TEXT,
        status TEXT NOT NULL,
        status_raw TEXT,
        occurred_at BIGINT NOT NULL,
        received_at BIGINT NOT NULL,
        scm_sha TEXT,
        scm_branch TEXT,
        scm_repository TEXT,
        commit_time BIGINT,
        build_url TEXT,
        build_number TEXT,
        build_id TEXT,
        source_system TEXT,
        invoke_id TEXT,
        actor TEXT,
        summary TEXT,
        change_id TEXT,
        links TEXT,
        metadata TEXT,
        client_key TEXT,
        deployment_id BIGINT
    );
    CREATE INDEX events_occurred ON events (occurred_at, seq);
    CREATE INDEX events_product ON events (product, occurred_at, seq);
    CREATE INDEX events_environment ON events (environment, occurred_at, seq);
    CREATE INDEX events_kind ON events (kind, occurred_at, seq);
    CREATE UNIQUE INDEX events_client_key ON events (client_key);
    CREATE INDEX events_sha ON events (scm_sha);
    CREATE INDEX events_deployment ON events (deployment_id);
    CREATE TABLE idempotency_keys (
        token_id BIGINT NOT NULL,
        key TEXT NOT NULL,
        event_ids TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (token_id, key)
    );
    CREATE TABLE deployments (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        product TEXT NOT NULL,
        environment TEXT NOT NULL,
        version TEXT,
        invoke_id TEXT NOT NULL DEFAULT '',
        status TEXT NOT NULL,
        first_at BIGINT NOT NULL,
        last_at BIGINT NOT NULL,
        started_at BIGINT,
        finished_at BIGINT,
        scm_sha TEXT,
        actor TEXT,
        change_id TEXT,
        label TEXT,
        event_count BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX deployments_key ON deployments (product, environment, version, invoke_id, id);
    CREATE INDEX deployments_env_time ON deployments (environment, status, finished_at, product);
    CREATE INDEX deployments_change ON deployments (change_id);
    CREATE TABLE commits (
        repository TEXT NOT NULL DEFAULT '',
        sha TEXT NOT NULL,
        authored_at BIGINT,
        committed_at BIGINT NOT NULL,
        message TEXT,
        author TEXT,
        PRIMARY KEY (repository, sha)
    );
    CREATE INDEX commits_sha ON commits (sha);
    CREATE TABLE incidents (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        product TEXT NOT NULL,
        environment TEXT,
        title TEXT NOT NULL,
        severity TEXT,
        status TEXT NOT NULL,
        opened_at BIGINT NOT NULL,
        resolved_at BIGINT,
        change_id TEXT,
        deployment_id BIGINT,
        link_rule TEXT,
        metadata TEXT,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL
    );
    CREATE INDEX incidents_opened ON incidents (opened_at);
    CREATE TABLE metric_snapshots (
        day BIGINT NOT NULL,
        scope TEXT NOT NULL,
        product TEXT NOT NULL DEFAULT '',
        environment TEXT NOT NULL DEFAULT '',
        window_days BIGINT NOT NULL,
        data TEXT NOT NULL,
        computed_at BIGINT NOT NULL,
        PRIMARY KEY (day, scope, product, environment, window_days)
    );
    CREATE TABLE dirty_days (
        day BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY
    );
    CREATE TABLE jobs (
        name TEXT PRIMARY KEY,
        last_day BIGINT,
        owner TEXT,
        lease_until BIGINT
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    CREATE TABLE audit_log (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at BIGINT NOT NULL,
        token_id BIGINT,
        actor TEXT,
        action TEXT NOT NULL,
        detail TEXT
    )
"""


@migration
def m001_core(conn: Any) -> None:
    # Times are integer epoch microseconds, UTC. `seq` orders events by arrival.
    run_script(conn, M001_SQLITE)


@m001_core.postgres
def _m001_core_postgres(conn: Any) -> None:
    run_script(conn, M001_POSTGRES)


M002_SQLITE = """
    CREATE INDEX events_deploy_fold ON events (kind, product, environment, version, invoke_id, occurred_at, seq,
                                               status, scm_sha, actor, change_id);
    CREATE INDEX events_commit_time ON events (commit_time, kind, deployment_id, scm_sha);
    CREATE INDEX events_build_sha ON events (kind, scm_sha, occurred_at);
    CREATE INDEX events_build_version ON events (kind, product, version, occurred_at);
    CREATE INDEX deployments_finished ON deployments (product, environment, finished_at, id, status, version, label);
    CREATE INDEX deployments_version ON deployments (product, environment, version, status, finished_at);
    CREATE INDEX incidents_deployment ON incidents (deployment_id, opened_at);
    CREATE INDEX incidents_resolved ON incidents (resolved_at, product, environment);
    CREATE INDEX metric_snapshots_scope ON metric_snapshots (scope, product, environment, window_days, day);
    CREATE TABLE job_runs (
        id INTEGER PRIMARY KEY,
        job TEXT NOT NULL,
        owner TEXT NOT NULL,
        first_day INTEGER NOT NULL,
        last_day INTEGER NOT NULL,
        started_at INTEGER NOT NULL,
        finished_at INTEGER NOT NULL
    )
"""
M002_POSTGRES = """
    CREATE INDEX events_deploy_fold ON events (kind, product, environment, version, invoke_id, occurred_at, seq,
                                               status, scm_sha, actor, change_id);
    CREATE INDEX events_commit_time ON events (commit_time, kind, deployment_id, scm_sha);
    CREATE INDEX events_build_sha ON events (kind, scm_sha, occurred_at);
    CREATE INDEX events_build_version ON events (kind, product, version, occurred_at);
    CREATE INDEX deployments_finished ON deployments (product, environment, finished_at, id, status, version, label);
    CREATE INDEX deployments_version ON deployments (product, environment, version, status, finished_at);
    CREATE INDEX incidents_deployment ON incidents (deployment_id, opened_at);
    CREATE INDEX incidents_resolved ON incidents (resolved_at, product, environment);
    CREATE INDEX metric_snapshots_scope ON metric_snapshots (scope, product, environment, window_days, day);
    CREATE TABLE job_runs (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        job TEXT NOT NULL,
        owner TEXT NOT NULL,
        first_day BIGINT NOT NULL,
        last_day BIGINT NOT NULL,
        started_at BIGINT NOT NULL,
        finished_at BIGINT NOT NULL
    )
"""


@migration
def m002_metrics(conn: Any) -> None:
    # Covering indexes for the set-based rebuild of deployments and the DORA queries.
    run_script(conn, M002_SQLITE)


@m002_metrics.postgres
def _m002_metrics_postgres(conn: Any) -> None:
    run_script(conn, M002_POSTGRES)


@migration
def m003_bench_indexes(conn: Any) -> None:
    # The event list filtered by a rare status (failed, pending...) walked the whole time index
    # without it. Partial: 'completed' is most events, is found fast by that walk, and kept out of
    # this index it does not tempt the planner away from the product/environment indexes.
    conn.execute("CREATE INDEX events_status ON events (status, occurred_at, seq) WHERE status <> 'completed'")
    # Folding an event into its open deployment: events without version or invoke id (most DevGrid
    # traffic) share one key, and finding the open one walked every finished deployment of the key,
    # so each insert got slower as history grew. Only open deployments are in this index.
    conn.execute("CREATE INDEX deployments_open ON deployments (product, environment, version, invoke_id, id) "
                 "WHERE status IN ('pending', 'started')")


@migration
def m004_metrics_history(conn: Any) -> None:
    # Was this commit deployed to this product/environment before the computed range? (lead time)
    conn.execute("CREATE INDEX deployments_sha ON deployments (product, environment, scm_sha, status, finished_at)")


@migration
def m005_ui_indexes(conn: Any) -> None:
    # Keyset paging of the deployments page (newest first, optionally by product or environment),
    # and "what runs where" (the newest deployment of each product and environment; the newest
    # completed one is found through m002's deployments_finished).
    for statement in (
        "CREATE INDEX deployments_first ON deployments (first_at, id)",
        "CREATE INDEX deployments_product_first ON deployments (product, first_at, id)",
        "CREATE INDEX deployments_environment_first ON deployments (environment, first_at, id)",
        "CREATE INDEX deployments_pair_first ON deployments (product, environment, first_at, id)",
        "CREATE INDEX deployments_label_first ON deployments (label, first_at, id)",
    ):
        conn.execute(statement)



@migration
def m006_drop_events_sha(conn: Any) -> None:
    # No query looks events up by SHA alone (the lead-time lookup uses events_build_sha), and
    # every index costs each insert a few microseconds.
    conn.execute("DROP INDEX IF EXISTS events_sha")

M007_SQLITE = """
    CREATE TABLE metric_deploy_facts (
        id INTEGER PRIMARY KEY,
        product TEXT NOT NULL,
        environment TEXT NOT NULL,
        version TEXT,
        finished_at INTEGER NOT NULL,
        finished_day INTEGER NOT NULL,
        rolled_back_at INTEGER
    );
    CREATE INDEX metric_deploy_facts_time ON metric_deploy_facts (product, environment, finished_at);
    CREATE INDEX metric_deploy_facts_day ON metric_deploy_facts (product, environment, finished_day);
    CREATE INDEX metric_deploy_facts_version ON metric_deploy_facts (product, version);
    CREATE INDEX metric_deploy_facts_rolled_back ON metric_deploy_facts (rolled_back_at)
        WHERE rolled_back_at IS NOT NULL;
    CREATE TABLE metric_lead_facts (
        product TEXT NOT NULL,
        environment TEXT NOT NULL,
        change TEXT NOT NULL,
        deployment_id INTEGER NOT NULL,
        finished_at INTEGER NOT NULL,
        version TEXT,
        sha TEXT,
        repository TEXT NOT NULL,
        event_commit_at INTEGER,
        commit_at INTEGER,
        build_at INTEGER,
        lead_us INTEGER,
        source INTEGER,
        PRIMARY KEY (product, environment, change)
    ) WITHOUT ROWID;
    CREATE INDEX metric_lead_facts_time ON metric_lead_facts (product, environment, finished_at, lead_us, source);
    CREATE INDEX metric_lead_facts_sha ON metric_lead_facts (sha);
    CREATE INDEX metric_lead_facts_version ON metric_lead_facts (product, version);
    CREATE TABLE metric_facts_stale (
        kind TEXT NOT NULL,
        product TEXT,
        environment TEXT,
        version TEXT,
        sha TEXT
    )
"""
M007_POSTGRES = """
    CREATE TABLE metric_deploy_facts (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        product TEXT NOT NULL,
        environment TEXT NOT NULL,
        version TEXT,
        finished_at BIGINT NOT NULL,
        finished_day BIGINT NOT NULL,
        rolled_back_at BIGINT
    );
    CREATE INDEX metric_deploy_facts_time ON metric_deploy_facts (product, environment, finished_at);
    CREATE INDEX metric_deploy_facts_day ON metric_deploy_facts (product, environment, finished_day);
    CREATE INDEX metric_deploy_facts_version ON metric_deploy_facts (product, version);
    CREATE INDEX metric_deploy_facts_rolled_back ON metric_deploy_facts (rolled_back_at)
        WHERE rolled_back_at IS NOT NULL;
    CREATE TABLE metric_lead_facts (
        product TEXT NOT NULL,
        environment TEXT NOT NULL,
        change TEXT NOT NULL,
        deployment_id BIGINT NOT NULL,
        finished_at BIGINT NOT NULL,
        version TEXT,
        sha TEXT,
        repository TEXT NOT NULL,
        event_commit_at BIGINT,
        commit_at BIGINT,
        build_at BIGINT,
        lead_us BIGINT,
        source BIGINT,
        PRIMARY KEY (product, environment, change)
    );
    CREATE INDEX metric_lead_facts_time ON metric_lead_facts (product, environment, finished_at, lead_us, source);
    CREATE INDEX metric_lead_facts_sha ON metric_lead_facts (sha);
    CREATE INDEX metric_lead_facts_version ON metric_lead_facts (product, version);
    CREATE TABLE metric_facts_stale (
        kind TEXT NOT NULL,
        product TEXT,
        environment TEXT,
        version TEXT,
        sha TEXT
    )
"""


@migration
def m007_metrics_facts(conn: Any) -> None:
    # Per-deployment facts a full metrics recompute reads instead of re-deriving them from every
    # event (deploytrack/metrics/facts.py); refreshed where deployments, commits or builds changed.
    run_script(conn, M007_SQLITE)


@m007_metrics_facts.postgres
def _m007_metrics_facts_postgres(conn: Any) -> None:
    run_script(conn, M007_POSTGRES)


@migration
def m008_partial_build_indexes(conn: Any) -> None:
    # The first-build lookups (lead time) read build events only, yet every deployment event paid
    # for an entry in both indexes, at a random place in each (by SHA, by product): two pages more
    # to write at every commit. Partial, they hold the builds alone.
    for statement in (
        "DROP INDEX IF EXISTS events_build_sha",
        "DROP INDEX IF EXISTS events_build_version",
        "CREATE INDEX events_build_sha ON events (scm_sha, occurred_at) WHERE kind = 'build'",
        "CREATE INDEX events_build_version ON events (product, version, occurred_at) WHERE kind = 'build'",
    ):
        conn.execute(statement)


@migration
def m009_leaner_deployment_indexes(conn: Any) -> None:
    # Every deployment insert or status change rewrites an entry in each of these indexes, on the
    # writer's critical path, and most are keyed by product, so each entry is one more page to write
    # at commit. The fold's lookup (product, environment, version, invoke id) now uses the rollback
    # check's index, which gains the invoke id and record id; labels and change ids, which are
    # almost always NULL, are indexed only where present.
    for statement in (
        "DROP INDEX IF EXISTS deployments_key",
        "DROP INDEX IF EXISTS deployments_version",
        "CREATE INDEX deployments_version ON deployments "
        "(product, environment, version, status, finished_at, invoke_id, id)",
        "DROP INDEX IF EXISTS deployments_label_first",
        "CREATE INDEX deployments_label_first ON deployments (label, first_at, id) WHERE label IS NOT NULL",
        "DROP INDEX IF EXISTS deployments_change",
        "CREATE INDEX deployments_change ON deployments (change_id) WHERE change_id IS NOT NULL",
    ):
        conn.execute(statement)


M010_SQLITE = """
    DROP TABLE IF EXISTS metric_deploy_facts;
    DROP TABLE IF EXISTS metric_facts_stale;
    DELETE FROM metric_lead_facts;
    DELETE FROM kv WHERE key IN ('deployments_folded_seq', 'metric_facts_seq');
    CREATE TABLE deployment_facts (
        id INTEGER PRIMARY KEY,
        product TEXT NOT NULL,
        environment TEXT NOT NULL,
        status TEXT NOT NULL,
        finished_at INTEGER NOT NULL,
        is_rollback INTEGER NOT NULL,
        label TEXT,
        rollback_of INTEGER,
        rolled_back_by INTEGER,
        rolled_back_at INTEGER,
        recovered_at INTEGER
    );
    CREATE INDEX deployment_facts_time ON deployment_facts (product, environment, finished_at);
    CREATE INDEX deployment_facts_finished ON deployment_facts (finished_at);
    CREATE INDEX deployment_facts_recovered ON deployment_facts (recovered_at) WHERE recovered_at IS NOT NULL;
    CREATE INDEX metric_lead_facts_finished ON metric_lead_facts (finished_at);
    CREATE TABLE derived_stale (
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        product TEXT,
        environment TEXT,
        version TEXT,
        sha TEXT
    );
    ALTER TABLE incidents ADD COLUMN requested_deployment_id INTEGER;
    ALTER TABLE incidents ADD COLUMN product_given INTEGER NOT NULL DEFAULT 1;
    UPDATE incidents SET requested_deployment_id = deployment_id WHERE link_rule = 'deployment_id';
    UPDATE incidents SET link_rule = 'last_deployment' WHERE link_rule = 'last_production_deployment'
"""
M010_POSTGRES = """
    DROP TABLE IF EXISTS metric_deploy_facts;
    DROP TABLE IF EXISTS metric_facts_stale;
    DELETE FROM metric_lead_facts;
    DELETE FROM kv WHERE key IN ('deployments_folded_seq', 'metric_facts_seq');
    CREATE TABLE deployment_facts (
        id BIGINT PRIMARY KEY,
        product TEXT NOT NULL,
        environment TEXT NOT NULL,
        status TEXT NOT NULL,
        finished_at BIGINT NOT NULL,
        is_rollback BIGINT NOT NULL,
        label TEXT,
        rollback_of BIGINT,
        rolled_back_by BIGINT,
        rolled_back_at BIGINT,
        recovered_at BIGINT
    );
    CREATE INDEX deployment_facts_time ON deployment_facts (product, environment, finished_at);
    CREATE INDEX deployment_facts_finished ON deployment_facts (finished_at);
    CREATE INDEX deployment_facts_recovered ON deployment_facts (recovered_at) WHERE recovered_at IS NOT NULL;
    CREATE INDEX metric_lead_facts_finished ON metric_lead_facts (finished_at);
    CREATE TABLE derived_stale (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        kind TEXT NOT NULL,
        product TEXT,
        environment TEXT,
        version TEXT,
        sha TEXT
    );
    ALTER TABLE incidents ADD COLUMN requested_deployment_id BIGINT;
    ALTER TABLE incidents ADD COLUMN product_given BIGINT NOT NULL DEFAULT 1;
    UPDATE incidents SET requested_deployment_id = deployment_id WHERE link_rule = 'deployment_id';
    UPDATE incidents SET link_rule = 'last_deployment' WHERE link_rule = 'last_production_deployment'
"""


@migration
def m010_one_computation(conn: Any) -> None:
    # The metrics core derives its facts with the rules in Python (deploytrack/metrics/facts.py):
    # every finished deployment with its rollback and recovery, a stale-mark table with ids (a
    # refresh deletes exactly the marks it handled), incidents that keep the deployment id a client
    # named apart from the link, and may take their product from the link.
    run_script(conn, M010_SQLITE)


@m010_one_computation.postgres
def _m010_one_computation_postgres(conn: Any) -> None:
    run_script(conn, M010_POSTGRES)


M014 = """
    CREATE TABLE sessions (
        id_hash TEXT PRIMARY KEY,
        token_id INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        expires_at INTEGER NOT NULL
    );
    CREATE INDEX sessions_expiry ON sessions (expires_at)
"""


@migration
def m014_sessions(conn: Any) -> None:
    # UI sessions as records, so signing out (or revoking the token) ends a session on the server:
    # a copied cookie stops working. Only a hash of the session id is stored.
    run_script(conn, M014)


@m014_sessions.postgres
def _m014_sessions_postgres(conn: Any) -> None:
    run_script(conn, M014.replace("INTEGER", "BIGINT"))


M016 = """
    CREATE TABLE hooks (
        token_id INTEGER PRIMARY KEY,
        source TEXT NOT NULL,
        secret TEXT NOT NULL,
        created_at INTEGER NOT NULL
    );
    CREATE INDEX hooks_source ON hooks (source)
"""


@migration
def m016_hooks(conn: Any) -> None:
    # An inbound webhook is a token (scope 'hook': it cannot call the APIs) plus its source and its
    # secret in plain text: HMAC signatures (GitHub, Gitea, PagerDuty) are checked with the secret itself.
    run_script(conn, M016)


@m016_hooks.postgres
def _m016_hooks_postgres(conn: Any) -> None:
    run_script(conn, M016.replace("INTEGER", "BIGINT"))  # token_id names a token: no numbering of its own


M017_SQLITE = """
    CREATE TABLE notify_outbox (
        id INTEGER PRIMARY KEY,
        dedupe_key TEXT NOT NULL,
        url TEXT NOT NULL,
        kind TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL,
        sent_at INTEGER,
        gave_up_at INTEGER,
        last_error TEXT
    );
    CREATE UNIQUE INDEX notify_outbox_key ON notify_outbox (dedupe_key, url);
    CREATE INDEX notify_outbox_due ON notify_outbox (next_at) WHERE sent_at IS NULL AND gave_up_at IS NULL
"""
M017_POSTGRES = M017_SQLITE.replace("id INTEGER PRIMARY KEY", "id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")\
    .replace("INTEGER", "BIGINT")


@migration
def m017_notify_outbox(conn: Any) -> None:
    # Notifications waiting to be sent (and those sent or given up, for the record). One row per
    # notification and receiver URL; dedupe_key makes noticing the same thing twice harmless.
    run_script(conn, M017_SQLITE)


@m017_notify_outbox.postgres
def _m017_notify_outbox_postgres(conn: Any) -> None:
    run_script(conn, M017_POSTGRES)


M018_SQLITE = """
    CREATE TABLE rules (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        mode TEXT NOT NULL,
        definition TEXT NOT NULL,
        created_at INTEGER NOT NULL,
        updated_at INTEGER NOT NULL,
        created_by TEXT
    );
    CREATE TABLE rule_overrides (
        id INTEGER PRIMARY KEY,
        rule_id INTEGER,
        product TEXT NOT NULL,
        environment TEXT,
        version TEXT,
        reason TEXT NOT NULL,
        granted_by TEXT,
        granted_at INTEGER NOT NULL,
        expires_at INTEGER,
        used_at INTEGER,
        used_by_event TEXT
    );
    CREATE INDEX rule_overrides_open ON rule_overrides (product, used_at)
"""
M018_POSTGRES = """
    CREATE TABLE rules (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        type TEXT NOT NULL,
        mode TEXT NOT NULL,
        definition TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        updated_at BIGINT NOT NULL,
        created_by TEXT
    );
    CREATE TABLE rule_overrides (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        rule_id BIGINT,
        product TEXT NOT NULL,
        environment TEXT,
        version TEXT,
        reason TEXT NOT NULL,
        granted_by TEXT,
        granted_at BIGINT NOT NULL,
        expires_at BIGINT,
        used_at BIGINT,
        used_by_event TEXT
    );
    CREATE INDEX rule_overrides_open ON rule_overrides (product, used_at)
"""


@migration
def m018_deployment_rules(conn: Any) -> None:
    # Deployment rules (deploytrack/rules/) and one-time overrides an admin grants. `definition`
    # is the rule's JSON (rules/model.py reads it); products/environments NULL means all.
    run_script(conn, M018_SQLITE)


@m018_deployment_rules.postgres
def _m018_deployment_rules_postgres(conn: Any) -> None:
    run_script(conn, M018_POSTGRES)


M019_SQLITE = """
    CREATE TABLE rule_violations (
        id INTEGER PRIMARY KEY,
        at INTEGER NOT NULL,
        outcome TEXT NOT NULL,
        rule_id INTEGER,
        rule_name TEXT NOT NULL,
        rule_type TEXT NOT NULL,
        code TEXT NOT NULL,
        http_status INTEGER NOT NULL,
        message TEXT NOT NULL,
        retry_after INTEGER,
        dialect TEXT NOT NULL,
        token_id INTEGER,
        product TEXT NOT NULL,
        environment TEXT NOT NULL,
        version TEXT,
        status TEXT NOT NULL,
        actor TEXT,
        event_id TEXT,
        override_id INTEGER,
        violations TEXT NOT NULL,
        attempt TEXT NOT NULL
    );
    CREATE INDEX rule_violations_at ON rule_violations (at, id);
    CREATE INDEX rule_violations_product ON rule_violations (product, environment, at);
    CREATE INDEX deployments_in_progress ON deployments (product, environment, status)
        WHERE status IN ('pending', 'started')
"""
M019_POSTGRES = """
    CREATE TABLE rule_violations (
        id BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        at BIGINT NOT NULL,
        outcome TEXT NOT NULL,
        rule_id BIGINT,
        rule_name TEXT NOT NULL,
        rule_type TEXT NOT NULL,
        code TEXT NOT NULL,
        http_status BIGINT NOT NULL,
        message TEXT NOT NULL,
        retry_after BIGINT,
        dialect TEXT NOT NULL,
        token_id BIGINT,
        product TEXT NOT NULL,
        environment TEXT NOT NULL,
        version TEXT,
        status TEXT NOT NULL,
        actor TEXT,
        event_id TEXT,
        override_id BIGINT,
        violations TEXT NOT NULL,
        attempt TEXT NOT NULL
    );
    CREATE INDEX rule_violations_at ON rule_violations (at, id);
    CREATE INDEX rule_violations_product ON rule_violations (product, environment, at);
    CREATE INDEX deployments_in_progress ON deployments (product, environment, status)
        WHERE status IN ('pending', 'started')
"""


@migration
def m019_rule_violations(conn: Any) -> None:
    # Every deployment a rule objected to: blocked attempts (never in `events`, so never a
    # deployment or a metric), and violations let through (report-only, an API that cannot act on
    # a refusal, an override). `attempt` is the event as sent, for the audit.
    # deployments_in_progress: a concurrency rule asks for the open deployments of a product and
    # environment; without statistics SQLite otherwise walks every deployment of the pair through
    # deployments_pair_first, a cost that grows with history. Partial: only open deployments.
    run_script(conn, M019_SQLITE)


@m019_rule_violations.postgres
def _m019_rule_violations_postgres(conn: Any) -> None:
    run_script(conn, M019_POSTGRES)


# Taking deleted (or edited) events out of the search index, and pulling its watermark back to the
# newest event left when the newest go: SQLite numbers the next event as they were.
_SEARCH_DELETE = """
CREATE TRIGGER events_search_delete AFTER DELETE ON events BEGIN
    INSERT INTO events_search (events_search, rowid, summary)
        SELECT 'delete', old.seq, old.summary FROM kv
        WHERE key = 'search_indexed_seq' AND old.seq <= CAST(value AS INTEGER) AND old.summary IS NOT NULL;
    UPDATE kv SET value = (SELECT CAST(COALESCE(MAX(seq), 0) AS TEXT) FROM events)
        WHERE key = 'search_indexed_seq' AND CAST(value AS INTEGER) > (SELECT COALESCE(MAX(seq), 0) FROM events);
END"""
_SEARCH_UPDATE = """
CREATE TRIGGER events_search_update AFTER UPDATE OF summary ON events BEGIN
    INSERT INTO events_search (events_search, rowid, summary)
        SELECT 'delete', old.seq, old.summary FROM kv
        WHERE key = 'search_indexed_seq' AND old.seq <= CAST(value AS INTEGER) AND old.summary IS NOT NULL;
    INSERT INTO events_search (rowid, summary)
        SELECT new.seq, new.summary FROM kv
        WHERE key = 'search_indexed_seq' AND new.seq <= CAST(value AS INTEGER) AND new.summary IS NOT NULL;
END"""


@migration
def m020_event_search(conn: Any) -> None:
    # Event search without walking every event (storage/event_search.py): an FTS5 trigram index over
    # the summaries, its content in `events` (built here in ~5 s a million events). New events reach
    # it in batches (event_search.SearchIndexer, past the kv watermark), not by a trigger per row.
    try:
        conn.execute("CREATE VIRTUAL TABLE events_search USING fts5(summary, content='events', "
                     "content_rowid='seq', tokenize='trigram', columnsize=0)")
    except sqlite3.OperationalError as exc:  # an SQLite without FTS5's trigram tokenizer (before 3.34)
        log.warning("no event search index (%s): each search examines at most search_window events", exc)
        return
    conn.execute(_SEARCH_DELETE)
    conn.execute(_SEARCH_UPDATE)
    conn.execute("INSERT INTO events_search (rowid, summary) SELECT seq, summary FROM events "
                 "WHERE summary IS NOT NULL")
    conn.execute("INSERT INTO kv (key, value) "
                 "SELECT 'search_indexed_seq', CAST(COALESCE(MAX(seq), 0) AS TEXT) FROM events")


@m020_event_search.postgres
def _m020_event_search_postgres(conn: Any) -> None:
    # pg_trgm's GIN index serves `summary ILIKE '%term%'` and PostgreSQL keeps it (built here in ~5 s a
    # million events). pg_trgm is a trusted extension (PostgreSQL 13+: the database's owner may create
    # it); where it cannot be created, search scans. Its operator class is named with the schema it is
    # in: another schema of this database may hold it, off this one's search path.
    conn.savepoint()
    try:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except asyncpg.PostgresError as exc:
        conn.rollback_to()
        log.warning("no event search index (pg_trgm: %s): each search examines at most search_window events", exc)
        return
    conn.release()
    schema = conn.execute("SELECT extnamespace::regnamespace::text FROM pg_extension "
                          "WHERE extname = 'pg_trgm'").fetchone()[0]
    conn.execute(f"CREATE INDEX events_summary_trgm ON events USING gin (summary {schema}.gin_trgm_ops)")


@migration
def m021_ingest_indexes(conn: Any) -> None:
    # Indexes every ingested event or deployment record paid for and no query uses (issue 20, measured
    # in bench/RESULTS.md): deployments_sha (1.7 us and 0.3 WAL pages per deployment record; lead
    # time reads stored facts now), deployments_label_first (the label filter reads the effective
    # label of deployment_facts), events_commit_time (commit times are read by deployment id), and
    # deployments_open, whose lookup (an event's open record) deployments_version answers as well.
    for name in ("deployments_sha", "deployments_label_first", "deployments_open", "events_commit_time"):
        conn.execute(f"DROP INDEX IF EXISTS {name}")


@migration
def m022_narrow_fold_index(conn: Any) -> None:
    # The refold (metrics/fold.py) finds a key's events by (kind, product, environment, version) from a
    # time on, and reads whole rows (metadata, summary): the other six columns of the old index covered
    # nothing and cost every ingested event 0.35-0.42 WAL pages (issue 20, bench/RESULTS.md).
    conn.execute("DROP INDEX IF EXISTS events_deploy_fold")
    conn.execute("CREATE INDEX events_deploy_fold ON events (kind, product, environment, version, occurred_at)")


@migration
def m023_deployment_id_sequence(conn: Any) -> None:
    # SQLite gives a new deployment record the id after the highest ever given (one writer at a time).
    pass


@m023_deployment_id_sequence.postgres
def _m023_deployment_id_sequence_postgres(conn: Any) -> None:
    # Two server processes ingest at once on PostgreSQL: new deployment ids come from the identity
    # sequence of deployments.id (storage/deployment_ids.py), until now left behind by ids given as
    # the highest + 1: set it above them and the floor of deleted ones.
    deployment_ids.sync(conn)


_M024_TABLE = """
    CREATE TABLE metric_days (
        product TEXT NOT NULL,
        environment TEXT NOT NULL,
        day BIGINT NOT NULL,
        finished BIGINT NOT NULL,
        completed BIGINT NOT NULL,
        failed BIGINT NOT NULL,
        lead_commit BIGINT NOT NULL,
        lead_event BIGINT NOT NULL,
        lead_build BIGINT NOT NULL,
        lead TEXT NOT NULL,
        PRIMARY KEY (product, environment, day)
    );
    CREATE INDEX metric_days_day ON metric_days (day)
"""
# One row per product/environment and day from the facts as they stand (metrics/days.py keeps it).
_M024_FILL = """
    INSERT INTO metric_days (product, environment, day, finished, completed, failed, lead_commit, lead_event,
                             lead_build, lead)
    SELECT product, environment, day, SUM(n), SUM(c), SUM(f), SUM(lc), SUM(le), SUM(lb), COALESCE({concat}, '')
    FROM (SELECT product, environment, finished_at - finished_at % 86400000000 AS day, 1 AS n,
                 CASE WHEN status = 'completed' THEN 1 ELSE 0 END AS c, CASE WHEN status = 'failed' THEN 1 ELSE 0 END
                 AS f, 0 AS lc, 0 AS le, 0 AS lb, NULL AS v FROM deployment_facts
          UNION ALL
          SELECT product, environment, finished_at - finished_at % 86400000000, 0, 0, 0,
                 CASE WHEN source = 0 THEN 1 ELSE 0 END, CASE WHEN source = 1 THEN 1 ELSE 0 END,
                 CASE WHEN source = 2 THEN 1 ELSE 0 END, lead_us FROM metric_lead_facts WHERE source IS NOT NULL) x
    GROUP BY product, environment, day
"""


_M024_INDEXES = ("CREATE INDEX deployment_facts_rolled_back ON deployment_facts "
                 "(finished_at, product, environment, rolled_back_at, status) WHERE rolled_back_at IS NOT NULL")


@migration
def m024_metric_days(conn: Any) -> None:
    # A window's numbers are sums and a merge of its days (issue 20 item 7): the nightly run read every
    # fact of the last 90 days (280,000 lead times at 3M events); now one row per product/environment
    # and day. Completed deployments that became failures are read from the facts through this index.
    run_script(conn, _M024_TABLE)
    conn.execute(_M024_FILL.format(concat="group_concat(v)"))
    conn.execute(_M024_INDEXES)


@m024_metric_days.postgres
def _m024_metric_days_postgres(conn: Any) -> None:
    run_script(conn, _M024_TABLE)
    conn.execute(_M024_FILL.format(concat="string_agg(v::text, ',')"))
    conn.execute(_M024_INDEXES)


_M025_COLUMNS = """
        id TEXT NOT NULL, dialect TEXT NOT NULL, token_id BIGINT, kind TEXT NOT NULL, product TEXT NOT NULL,
        version TEXT, environment TEXT, environment_raw TEXT, status TEXT NOT NULL, status_raw TEXT,
        occurred_at BIGINT NOT NULL, received_at BIGINT NOT NULL, scm_sha TEXT, scm_branch TEXT, scm_repository TEXT,
        commit_time BIGINT, build_url TEXT, build_number TEXT, build_id TEXT, source_system TEXT, invoke_id TEXT,
        actor TEXT, summary TEXT, change_id TEXT, links TEXT, metadata TEXT, client_key TEXT, deployment_id BIGINT
"""


@migration
def m025_event_log(conn: Any) -> None:
    # SQLite's ingestion stores accepted events here, with the seq each will have in `events` and no
    # secondary index (one page per many events), and a projector in the writer moves them into
    # `events` and folds their deployment records in batches (storage/staging.py, issue 20). Staged rows
    # are projected only after migrating (storage.database.open_migrated): a later migration that changes
    # the columns of `events` changes those of `event_log` the same way.
    conn.execute(f"CREATE TABLE event_log (seq INTEGER PRIMARY KEY, {_M025_COLUMNS})")


@m025_event_log.postgres
def _m025_event_log_postgres(conn: Any) -> None:
    # Empty on PostgreSQL, whose ingestion writes `events` directly (two processes share the database):
    # the same tables on both, for `migrate-db` and the integrity check.
    conn.execute(f"CREATE TABLE event_log (seq BIGINT PRIMARY KEY, {_M025_COLUMNS})")


@migration
def m026_index_audit(conn: Any) -> None:
    # Every index is paid by each ingested event, each row of a first build, each derived write; these
    # are the ones no read needs in their form (issue 20; the audit and its figures in bench/RESULTS.md).
    # - The facts are written product/environment by product/environment, so an index led by time took
    #   each write all over its range: deployment_facts_finished and metric_lead_facts_finished (reads of
    #   every product seek each product/environment's range instead: compute.load_facts). The index by
    #   SHA stays: without it the facts a new SHA changes cost a seek per product/environment and SHA.
    # - metric_lead_facts_version holds what its lookup reads: SQLite walked the product's whole key
    #   rather than look rows up through an index that does not cover them.
    # - Deployment events are most events: events_kind holds the others (a list filtered by kind
    #   'deployment' finds them walking the time index), and the fold's index holds deployment events
    #   only, without the kind, which tempted SQLite into walking every deployment event for a range
    #   of new ones (fold.dirty_keys).
    for statement in (
        "DROP INDEX IF EXISTS deployment_facts_finished",
        "DROP INDEX IF EXISTS metric_lead_facts_finished",
        "DROP INDEX IF EXISTS metric_lead_facts_version",
        "CREATE INDEX metric_lead_facts_version ON metric_lead_facts (product, version, environment, finished_at)",
        "DROP INDEX IF EXISTS events_kind",
        "CREATE INDEX events_kind ON events (kind, occurred_at, seq) WHERE kind <> 'deployment'",
        "DROP INDEX IF EXISTS events_deploy_fold",
        "CREATE INDEX events_deploy_fold ON events (product, environment, version, occurred_at) "
        "WHERE kind = 'deployment'",
    ):
        conn.execute(statement)


@migration
def m029_idempotency_fingerprint(conn: Any) -> None:
    # A key sent again with another body is refused (model.check_resend): each key keeps its request's
    # fingerprint. Keys stored before have none, and are answered as before.
    conn.execute("ALTER TABLE idempotency_keys ADD COLUMN fingerprint TEXT")


@migration
def m030_incidents_product(conn: Any) -> None:
    # Every product page asks whether the name has incidents (deployment_queries.product_known): without
    # an index led by the product that walked every incident. One statement on SQLite and PostgreSQL.
    conn.execute("CREATE INDEX incidents_product ON incidents (product)")


def refuse_newer(conn: Any) -> None:
    """Raise SchemaTooNew if a newer deploytrack has migrated this database (it may not be read or written)."""
    _refuse_newer(set(applied(conn)))


def _refuse_newer(done: set[str]) -> None:
    unknown = sorted(done - {step.name for step in MIGRATIONS})
    if unknown:
        names = ("migration " if len(unknown) == 1 else "migrations ") + ", ".join(unknown)
        raise SchemaTooNew(f"the database was upgraded by a newer deploytrack (it has {names}, which deploytrack "
                           f"{__version__} does not know); run that newer version, or restore a backup taken "
                           "before the upgrade")


def applied(conn: Any) -> list[str]:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    return [r[0] for r in conn.execute("SELECT name FROM schema_migrations ORDER BY name").fetchall()]


@dataclass(frozen=True)
class SchemaVersion:
    applied: int
    pending: int
    latest: str

    def describe(self) -> str:
        behind = f", {self.pending} pending (the server applies them at start)" if self.pending else ""
        return f"schema {self.latest} ({self.applied} of {len(MIGRATIONS)} migrations{behind})"


def version(conn: Any) -> SchemaVersion:
    """Where the schema stands, read-only; refuses a foreign or newer database like `migrate`."""
    tables = _tables(conn)
    _refuse_foreign(tables)
    done = {r[0] for r in conn.execute("SELECT name FROM schema_migrations").fetchall()} if tables else set()
    _refuse_newer(done)
    known = [step.name for step in MIGRATIONS]
    applied = [name for name in known if name in done]
    return SchemaVersion(len(applied), len(known) - len(applied), applied[-1] if applied else "empty")


def _refuse_foreign(tables: set[str]) -> None:
    if tables and "schema_migrations" not in tables:
        raise ForeignDatabase(f"it holds tables ({', '.join(sorted(tables)[:3])}) but no deploytrack schema "
                              "history: another application's database; deploytrack leaves it untouched")


def _tables(conn: Any) -> set[str]:
    """The names of the database's own tables (SQLite's internal ones left out)."""
    if conn.backend == "sqlite":
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite%'")
    else:
        rows = conn.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    return {r[0] for r in rows.fetchall()}


def pending(conn: Any) -> list[str]:
    done = set(applied(conn))
    return [step.name for step in MIGRATIONS if step.name not in done]


def migrate(conn: Any) -> list[str]:
    """Apply pending migrations, each in its own transaction; return the names applied.

    Each step re-reads what ran under the write lock (SQLite's, or PostgreSQL's advisory lock), so
    several processes starting at once on one database apply each migration once.
    """
    if version(conn).pending == 0:  # read alone: a command beside a busy writer takes no write lock for nothing
        return []
    ran = []
    for step in MIGRATIONS:
        conn.begin_write()
        try:
            done = set(applied(conn))
            _refuse_newer(done)
            if step.name not in done:
                step(conn)
                conn.execute("INSERT INTO schema_migrations (name, applied_at) VALUES (?, ?)",
                             (step.name, datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S")))
                ran.append(step.name)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
    return ran
