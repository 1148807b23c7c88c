-- A draining node (--shutdown drain, browserd drain) takes no new sessions; the cluster
-- places creates elsewhere and `browserd nodes list` shows it.
ALTER TABLE nodes ADD COLUMN draining INTEGER NOT NULL DEFAULT 0;
