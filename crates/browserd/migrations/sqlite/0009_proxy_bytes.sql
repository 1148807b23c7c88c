-- Bytes a session sent and received through upstream proxies (`proxyBytes`); added as they
-- flow, folded into usage_totals.proxy_bytes when the session is billed.
ALTER TABLE sessions ADD COLUMN proxy_bytes INTEGER NOT NULL DEFAULT 0;
