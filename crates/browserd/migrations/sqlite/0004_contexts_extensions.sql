-- Saved browser profiles (Browserbase contexts). The profile itself is an encrypted file in
-- the data dir's contexts/ folder; this row says who owns it and when it was last saved.
CREATE TABLE contexts (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    name        TEXT,
    -- lower(trim(name)): names are unique per project, compared case-insensitively.
    name_key    TEXT,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX contexts_project_name ON contexts (project_id, name_key) WHERE name_key IS NOT NULL;

-- Uploaded browser extensions; the unpacked files live in the data dir's extensions/ folder.
CREATE TABLE extensions (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    file_name   TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
