-- Sealed contexts and extension zips, readable by every node (the profile is sealed with
-- the nodes' shared --context-key before it gets here).
CREATE TABLE blobs (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    data       BYTEA NOT NULL,
    updated_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (kind, id)
);
