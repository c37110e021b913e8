-- Retention by design (issue 28). `command_history` becomes a table partitioned by month of `applied_at`,
-- so that removing a month is one statement (the workers create partitions ahead and drop the ones past
-- SUSPENSIONS_HISTORY_RETENTION, when set; rows outside every month land in the default partition). The
-- rows are copied once, in this migration's transaction. Readers are unchanged: the table keeps its name,
-- its columns and its `id` order.
ALTER TABLE command_history RENAME TO command_history_before_partitions;
DO $$
DECLARE index_name text;
BEGIN
    FOR index_name IN SELECT indexrelid::regclass::text FROM pg_index
                      WHERE indrelid = 'command_history_before_partitions'::regclass LOOP
        EXECUTE format('ALTER INDEX %I RENAME TO %I', index_name, index_name || '_before_partitions');
    END LOOP;
END $$;

CREATE TABLE command_history (
    LIKE command_history_before_partitions INCLUDING DEFAULTS INCLUDING CONSTRAINTS,
    PRIMARY KEY (id, applied_at)
) PARTITION BY RANGE (applied_at);
ALTER SEQUENCE command_history_id_seq OWNED BY command_history.id;
CREATE INDEX command_history_by_customer ON command_history (customer_id, id);
CREATE INDEX command_history_by_space ON command_history (space_id, applied_at);
CREATE TABLE command_history_default PARTITION OF command_history DEFAULT;

DO $$
DECLARE
    month date;
    last date := (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months')::date;
BEGIN
    SELECT coalesce(date_trunc('month', min(applied_at) AT TIME ZONE 'UTC'),
                    date_trunc('month', now() AT TIME ZONE 'UTC'))::date
      INTO month FROM command_history_before_partitions;
    WHILE month <= last LOOP
        EXECUTE format('CREATE TABLE %I PARTITION OF command_history FOR VALUES FROM (%L) TO (%L)',
                       'command_history_p' || to_char(month, 'YYYYMM'),
                       (month::timestamp AT TIME ZONE 'UTC'),
                       ((month + interval '1 month')::timestamp AT TIME ZONE 'UTC'));
        month := (month + interval '1 month')::date;
    END LOOP;
END $$;

INSERT INTO command_history SELECT * FROM command_history_before_partitions;
DROP TABLE command_history_before_partitions;

-- `processed_commands` is partitioned too, by ranges of `processed_at` a fraction of the dedup window long
-- (named processed_commands_p<start>_<end>, Unix seconds; the workers create them ahead and drop each one
-- once all of it is past SUSPENSIONS_DEDUP_RETENTION). An id is unique by construction (one source
-- partition applies a command, under its lock, after looking for its id), so the index on it is plain.
ALTER TABLE processed_commands RENAME TO processed_commands_before_partitions;
ALTER INDEX processed_commands_pkey RENAME TO processed_commands_before_partitions_pkey;
CREATE TABLE processed_commands (
    LIKE processed_commands_before_partitions INCLUDING DEFAULTS INCLUDING CONSTRAINTS
) PARTITION BY RANGE (processed_at);
CREATE INDEX processed_commands_by_id ON processed_commands (command_id);
CREATE TABLE processed_commands_default PARTITION OF processed_commands DEFAULT;
DO $$
DECLARE until bigint := ceil(extract(epoch FROM now()));
BEGIN
    EXECUTE format('CREATE TABLE %I PARTITION OF processed_commands FOR VALUES FROM (MINVALUE) TO (%L)',
                   'processed_commands_p0_' || until, to_timestamp(until));
END $$;
INSERT INTO processed_commands SELECT * FROM processed_commands_before_partitions;
DROP TABLE processed_commands_before_partitions;

-- The other tables are pruned in small batches, oldest first, by their age column.
CREATE INDEX invoice_decisions_settled_by_time ON invoice_decisions ((coalesce(settled_at, decided_at)))
    WHERE status <> 'dropped';
CREATE INDEX dead_letters_by_time ON dead_letters (failed_at);
CREATE INDEX schedules_ended_by_time ON schedules (updated_at) WHERE status <> 'pending';
CREATE INDEX bulk_jobs_finished_by_time ON bulk_jobs (updated_at) WHERE status <> 'running';
CREATE INDEX customer_invoices_settled_by_time ON customer_invoices (settled_at) WHERE status <> 'open';
-- Tables pruned all the time are vacuumed sooner than PostgreSQL's default (a fifth of the table changed),
-- so the space of removed rows is reused and their size levels off.
ALTER TABLE invoice_decisions SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 5000);
ALTER TABLE schedules SET (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_threshold = 5000);

-- History says whether the customer was suspended after each command: a `release` may lift (issue 23).
ALTER TABLE command_history ADD COLUMN suspended_after boolean;
