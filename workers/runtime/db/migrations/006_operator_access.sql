-- The operator console and API: tokens (only their hash), console sessions, bulk jobs.
CREATE TABLE api_tokens (
    name        text PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,      -- sha256 of the token; the token itself is shown once
    role        text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    spaces      text[] NOT NULL,
    created_at  timestamptz NOT NULL,
    revoked_at  timestamptz
);

CREATE TABLE console_sessions (
    session_hash bytea PRIMARY KEY,         -- sha256 of the cookie's value
    token_name   text NOT NULL REFERENCES api_tokens (name),
    csrf         text NOT NULL,
    created_at   timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);

CREATE TABLE bulk_jobs (
    bulk_id     text PRIMARY KEY,
    space_id    text NOT NULL,
    action      text NOT NULL,
    actor       text NOT NULL,
    status      text NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    lines       integer NOT NULL DEFAULT 0,   -- lines read so far
    published   integer NOT NULL DEFAULT 0,   -- commands published so far
    report      jsonb,                        -- per line, once done
    error       text,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX bulk_jobs_by_space ON bulk_jobs (space_id, created_at);
