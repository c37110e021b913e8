-- Current suspension state per customer: one row, the source of truth.
CREATE TABLE customer_state (
    customer_id     text PRIMARY KEY,
    space_id        text NOT NULL,
    suspended       boolean NOT NULL,
    reasons         text[] NOT NULL DEFAULT '{}',
    suspended_at    timestamptz,
    lifted_at       timestamptz,
    version         bigint NOT NULL CHECK (version >= 1),
    updated_at      timestamptz NOT NULL,
    last_command_id text NOT NULL
);
CREATE INDEX customer_state_by_space ON customer_state (space_id, customer_id);

-- Append-only audit trail: every command that was applied (changed or no-op).
CREATE TABLE command_history (
    id               bigserial PRIMARY KEY,
    command_id       text NOT NULL,
    customer_id      text NOT NULL,
    space_id         text NOT NULL,
    action           text NOT NULL,
    reason           text NOT NULL,
    actor            text NOT NULL,
    note             text,
    cause_topic      text,
    cause_event_id   text,
    missed_invoices  text,
    issued_at        timestamptz NOT NULL,
    applied_at       timestamptz NOT NULL,
    outcome          text NOT NULL CHECK (outcome IN ('changed', 'noop')),
    version_after    bigint NOT NULL,
    source_partition integer NOT NULL,
    source_offset    bigint NOT NULL
);
CREATE INDEX command_history_by_customer ON command_history (customer_id, id);

-- Every command id ever seen, so a redelivered or re-sent command has no further effect.
CREATE TABLE processed_commands (
    command_id   text PRIMARY KEY,
    outcome      text NOT NULL CHECK (outcome IN ('changed', 'noop', 'rejected')),
    processed_at timestamptz NOT NULL
);

-- Transactional outbox: records to publish, written in the same transaction as
-- the state they describe, deleted once the broker acknowledged them.
CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    topic            text NOT NULL,
    key              bytea,
    value            bytea NOT NULL,
    record_id        text NOT NULL
);
CREATE INDEX outbox_by_source ON outbox (source_topic, source_partition, id);
