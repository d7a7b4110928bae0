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
);
CREATE TABLE schema_migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL);
