-- Opaque blobs by kind and id (sealed contexts, extension zips) for stores shared by
-- several nodes; the embedded database's node keeps these as files and leaves this empty.
CREATE TABLE blobs (
    kind       TEXT NOT NULL,
    id         TEXT NOT NULL,
    data       BLOB NOT NULL,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
