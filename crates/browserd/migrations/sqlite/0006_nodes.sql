-- The node that runs each session (`--node-name`): a restarted node reconciles only its own
-- rows. Older rows have none and stay the data dir's single node's.
ALTER TABLE sessions ADD COLUMN node TEXT;

-- The embedded database has one node; the table is here so `browserd nodes list` shows it
-- the same way as a shared database does.
CREATE TABLE nodes (
    name             TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    public_url       TEXT,
    epoch            INTEGER NOT NULL,
    state            TEXT NOT NULL,
    started_at       TEXT NOT NULL,
    heartbeat_at     TEXT NOT NULL,
    lease_expires_at TEXT NOT NULL,
    live_sessions    INTEGER NOT NULL,
    max_sessions     INTEGER NOT NULL
);
