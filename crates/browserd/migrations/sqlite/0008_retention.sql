-- Usage outlives session rows: the sweep folds each ended session's browser minutes into
-- its project's total once (marking the row billed, in the same transaction), so usage is
-- the total plus the few sessions not billed yet, and deleting billed rows loses nothing.
CREATE TABLE usage_totals (
    project_id      TEXT PRIMARY KEY REFERENCES projects(id),
    browser_minutes INTEGER NOT NULL,
    proxy_bytes     INTEGER NOT NULL,
    sessions        INTEGER NOT NULL
);
ALTER TABLE sessions ADD COLUMN billed INTEGER NOT NULL DEFAULT 0;
CREATE INDEX sessions_unbilled ON sessions (project_id) WHERE billed = 0;
-- The retention sweep finds ended sessions by their end.
CREATE INDEX sessions_by_end ON sessions (ended_at) WHERE ended_at IS NOT NULL;
-- Lists are newest first (creation, then id), of one project and often one status, a page
-- at a time: these indexes give a page without sorting the project's sessions.
CREATE INDEX sessions_page ON sessions (project_id, created_at, id);
CREATE INDEX sessions_page_by_status ON sessions (project_id, status, created_at, id);
