-- CA certificates a project uploaded for its sessions to trust (proxySettings.caCertificates),
-- as PEM text: a few KiB each, read at a session's launch.
CREATE TABLE certificates (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    pem         TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX certificates_project ON certificates (project_id, created_at);
