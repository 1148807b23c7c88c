-- Ended sessions are deleted after the retention period; what they were billed for is
-- folded into this table first, in the same transaction, so usage totals outlive the rows.
CREATE TABLE usage_archive (
    project_id      TEXT PRIMARY KEY REFERENCES projects(id),
    browser_minutes BIGINT NOT NULL,
    proxy_bytes     BIGINT NOT NULL,
    sessions        BIGINT NOT NULL
);
-- The retention sweep finds ended sessions by their end.
CREATE INDEX sessions_by_end ON sessions (ended_at) WHERE ended_at IS NOT NULL;
-- Lists are newest first, of one project and often one status, a page at a time.
CREATE INDEX sessions_by_project_status_created ON sessions (project_id, status, created_at);
