-- Where a session's browser runs, so a restarted browserd can find it again and prove it is
-- the same process (pid plus its start time since boot, which a recycled pid will not share).
ALTER TABLE sessions ADD COLUMN browser_pid INTEGER;
ALTER TABLE sessions ADD COLUMN browser_start_ticks INTEGER;
ALTER TABLE sessions ADD COLUMN browser_dir TEXT;
ALTER TABLE sessions ADD COLUMN browser_cdp_url TEXT;
