-- Sessions a project may create per minute (0: no limit).
ALTER TABLE projects ADD COLUMN creations_per_minute INTEGER NOT NULL DEFAULT 0;
