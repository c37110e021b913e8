-- Scheduled suspensions and lifts. The customer's pending schedules are part of its state (and of the
-- state record); this table is what the state worker fires from, by source partition, and the record
-- of each schedule's end (fired, with its delay, or cancelled).
ALTER TABLE customer_state ADD COLUMN scheduled jsonb NOT NULL DEFAULT '[]';

CREATE TABLE schedules (
    schedule_id        text PRIMARY KEY,
    customer_id        text NOT NULL,
    space_id           text NOT NULL,
    action             text NOT NULL CHECK (action IN ('suspend', 'lift')),
    at                 timestamptz NOT NULL,
    missed_invoices    text,
    actor              text NOT NULL,
    note               text,
    source_partition   integer NOT NULL,   -- the customer's partition of suspension.commands
    status             text NOT NULL CHECK (status IN ('pending', 'fired', 'cancelled')),
    updated_by_command text NOT NULL,
    updated_at         timestamptz NOT NULL,
    fired_at           timestamptz,
    fired_delay_ms     bigint               -- how long after its moment it was applied
);
CREATE INDEX schedules_due ON schedules (source_partition, at) WHERE status = 'pending';
CREATE INDEX schedules_pending_by_space ON schedules (space_id, at) WHERE status = 'pending';

-- History says what a command scheduled, cancelled or fired.
ALTER TABLE command_history ADD COLUMN schedule_id text;
ALTER TABLE command_history ADD COLUMN scheduled_at timestamptz;
ALTER TABLE command_history ADD COLUMN until_at timestamptz;
ALTER TABLE command_history ADD COLUMN fired_delay_ms bigint;
