-- The shared store of a browserd cluster: the same aggregates as the embedded SQLite
-- database, with real timestamps (leases are measured by the database's clock) and the
-- nodes' lease table.

CREATE TABLE projects (
    id                   TEXT PRIMARY KEY,
    name                 TEXT NOT NULL,
    owner_id             TEXT NOT NULL,
    default_timeout      BIGINT NOT NULL,
    concurrency          BIGINT NOT NULL,
    creations_per_minute BIGINT NOT NULL DEFAULT 0,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);

-- Only the SHA-256 of each API key is kept.
CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    created_at TIMESTAMPTZ NOT NULL
);

CREATE TABLE nodes (
    name             TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    public_url       TEXT,
    -- Raised by each registration and by the sweeper that declares the node lost.
    epoch            BIGINT NOT NULL,
    state            TEXT NOT NULL,
    started_at       TIMESTAMPTZ NOT NULL,
    heartbeat_at     TIMESTAMPTZ NOT NULL,
    lease_expires_at TIMESTAMPTZ NOT NULL,
    live_sessions    BIGINT NOT NULL,
    max_sessions     BIGINT NOT NULL
);

CREATE TABLE sessions (
    id                  TEXT PRIMARY KEY,
    project_id          TEXT NOT NULL REFERENCES projects(id),
    status              TEXT NOT NULL,
    keep_alive          BOOLEAN NOT NULL,
    timeout_secs        BIGINT NOT NULL,
    region              TEXT NOT NULL,
    user_metadata       TEXT,
    browser_settings    TEXT,
    extension_id        TEXT,
    proxies             TEXT,
    created_at          TIMESTAMPTZ NOT NULL,
    updated_at          TIMESTAMPTZ NOT NULL,
    started_at          TIMESTAMPTZ NOT NULL,
    expires_at          TIMESTAMPTZ NOT NULL,
    ended_at            TIMESTAMPTZ,
    end_reason          TEXT,
    browser_pid         BIGINT,
    browser_start_ticks BIGINT,
    browser_dir         TEXT,
    browser_cdp_url     TEXT,
    node                TEXT
);
CREATE INDEX sessions_by_project ON sessions (project_id, created_at);
-- A create counts its project's live sessions; the sweeper finds a lost node's live ones.
CREATE INDEX sessions_by_project_status ON sessions (project_id, status);
CREATE INDEX sessions_live_by_node ON sessions (node) WHERE status IN ('PENDING', 'RUNNING');

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Saved browser profiles: rows here; the sealed profiles are files (see docs/cluster.md).
CREATE TABLE contexts (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    name        TEXT,
    name_key    TEXT,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
CREATE UNIQUE INDEX contexts_project_name ON contexts (project_id, name_key) WHERE name_key IS NOT NULL;

CREATE TABLE extensions (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    file_name   TEXT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL
);
