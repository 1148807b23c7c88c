-- Projects own sessions and API keys.
CREATE TABLE projects (
    id              TEXT PRIMARY KEY,
    name            TEXT NOT NULL,
    owner_id        TEXT NOT NULL,
    default_timeout INTEGER NOT NULL,
    concurrency     INTEGER NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);

-- Only the SHA-256 of each API key is kept.
CREATE TABLE api_keys (
    key_hash   TEXT PRIMARY KEY,
    project_id TEXT NOT NULL REFERENCES projects(id),
    created_at TEXT NOT NULL
);

CREATE TABLE sessions (
    id               TEXT PRIMARY KEY,
    project_id       TEXT NOT NULL REFERENCES projects(id),
    status           TEXT NOT NULL,
    keep_alive       INTEGER NOT NULL,
    timeout_secs     INTEGER NOT NULL,
    region           TEXT NOT NULL,
    user_metadata    TEXT,
    browser_settings TEXT,
    extension_id     TEXT,
    proxies          TEXT,
    created_at       TEXT NOT NULL,
    updated_at       TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    expires_at       TEXT NOT NULL,
    ended_at         TEXT,
    end_reason       TEXT
);
CREATE INDEX sessions_by_project ON sessions (project_id, created_at);
CREATE INDEX sessions_by_status ON sessions (status);

-- Server-wide values: the default project, the signing secret.
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
