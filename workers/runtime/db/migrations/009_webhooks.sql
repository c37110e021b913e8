-- Webhooks (issue 22): endpoints per space, one delivery per lifecycle event and endpoint, every attempt.
CREATE TABLE webhook_endpoints (
    endpoint_id            text PRIMARY KEY,
    space_id               text NOT NULL,
    url                    text NOT NULL,
    description            text,
    event_types            text[] NOT NULL DEFAULT '{}',   -- empty: every type
    -- Kept as it is: signing needs the secret itself (never logged, shown once at creation or rotation).
    secret                 text NOT NULL,
    previous_secret        text,                           -- still signs beside the new one until:
    previous_secret_until  timestamptz,
    enabled                boolean NOT NULL DEFAULT true,
    disabled_reason        text,
    disabled_at            timestamptz,
    failing_since          timestamptz,                    -- first failed attempt since the last success
    created_at             timestamptz NOT NULL
);
CREATE INDEX webhook_endpoints_by_space ON webhook_endpoints (space_id);

CREATE TABLE webhook_deliveries (
    delivery_id       bigserial PRIMARY KEY,               -- per endpoint and customer, the order of sending
    endpoint_id       text NOT NULL REFERENCES webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    event_id          text NOT NULL,                       -- the webhook-id header, the same on every attempt
    replay            bigint NOT NULL DEFAULT 0,           -- 0: the event as consumed; else the replay's number
    event_type        text NOT NULL,
    customer_id       text NOT NULL,
    source_partition  integer NOT NULL,                    -- -1: any dispatcher may send it (test events)
    occurred_at       timestamptz NOT NULL,
    body              bytea NOT NULL,                      -- sent exactly as stored, on every attempt
    status            text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts          integer NOT NULL DEFAULT 0,
    next_attempt_at   timestamptz NOT NULL,                -- also the lease of an attempt in flight
    last_status       integer,
    last_error        text,
    created_at        timestamptz NOT NULL,
    finished_at       timestamptz,
    UNIQUE (endpoint_id, event_id, replay)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (endpoint_id, customer_id, delivery_id)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_by_endpoint ON webhook_deliveries (endpoint_id, occurred_at);
CREATE INDEX webhook_deliveries_finished ON webhook_deliveries (finished_at) WHERE status <> 'pending';
CREATE SEQUENCE webhook_replays;

CREATE TABLE webhook_attempts (
    attempt_id     bigserial PRIMARY KEY,
    delivery_id    bigint NOT NULL REFERENCES webhook_deliveries (delivery_id) ON DELETE CASCADE,
    attempt        integer NOT NULL,
    attempted_at   timestamptz NOT NULL,
    status_code    integer,
    latency_ms     double precision NOT NULL,
    error          text,
    response       text                                    -- the first 1 KiB of the answer
);
CREATE INDEX webhook_attempts_by_delivery ON webhook_attempts (delivery_id, attempt);
CREATE INDEX webhook_attempts_by_time ON webhook_attempts (attempted_at);
