-- Navigation policies (Node SDK 2.24's /v1/navigation-policies): a project's named rules on
-- where its sessions' pages may go. `rules` is the policy's JSON (description, enabled,
-- defaultDecision, unknownDomainBehavior, categories, domainOverrides); a session keeps a
-- copy of it as it was at the session's creation.
CREATE TABLE navigation_policies (
    id          TEXT PRIMARY KEY,
    project_id  TEXT NOT NULL REFERENCES projects(id),
    name        TEXT NOT NULL,
    rules       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
CREATE INDEX navigation_policies_project ON navigation_policies (project_id, name);
