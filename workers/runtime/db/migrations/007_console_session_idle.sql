-- Console sessions also end when unused for SUSPENSIONS_API_SESSION_IDLE_S (issue 21): each request
-- marks its session used. Sessions open at the upgrade count as used at it.
ALTER TABLE console_sessions ADD COLUMN last_seen_at timestamptz NOT NULL DEFAULT now();
CREATE INDEX console_sessions_by_expiry ON console_sessions (expires_at);
