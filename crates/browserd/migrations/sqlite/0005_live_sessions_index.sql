-- A create counts its project's PENDING and RUNNING sessions inside its transaction; with
-- months of ended sessions kept, that count must not scan them all.
CREATE INDEX sessions_by_project_status ON sessions (project_id, status);
