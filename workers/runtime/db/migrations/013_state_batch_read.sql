-- Issue 24: the state worker reads a batch in one round trip. `state_batch_read` takes the source
-- partitions' lock, then locks and returns the stored states of the batch's customers, then returns which
-- of its command ids were processed before: the three statements the worker sent one by one (the lock,
-- `lock_states`, `processed_among`), in the same order, in one call. A VOLATILE PL/pgSQL function takes a
-- fresh snapshot for each statement in it, so the ids read after the lock include those committed by the
-- transaction it waited for (one SQL statement could not: its snapshot is taken before it waits).
--
-- Additive only (expand/contract): a new function; the previous release never calls it, and it takes the
-- very locks that release takes (`hashtextextended('<topic>:<partition>', 0)`, in key order), so the two can
-- run side by side during an upgrade. Its columns are customer_state's as of migrations 001 and 005; a
-- migration that changes that table replaces this function.
CREATE FUNCTION state_batch_read(lock_keys text[], customer_ids text[], command_ids text[])
RETURNS TABLE (
    processed_id    text,  -- set on the rows naming a processed command id; the state's columns are null there
    customer_id     text,
    space_id        text,
    suspended       boolean,
    reasons         text[],
    suspended_at    timestamptz,
    lifted_at       timestamptz,
    version         bigint,
    updated_at      timestamptz,
    last_command_id text,
    scheduled       jsonb
)
LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
BEGIN
    -- Two owners of a partition at once (one lost it without knowing yet) take turns here.
    PERFORM pg_advisory_xact_lock(hashtextextended(k.key, 0))
       FROM (SELECT DISTINCT unnest(lock_keys) AS key ORDER BY 1) AS k;
    -- Always in customer id order, so two batches never deadlock.
    RETURN QUERY
        SELECT NULL::text, s.customer_id, s.space_id, s.suspended, s.reasons, s.suspended_at, s.lifted_at,
               s.version, s.updated_at, s.last_command_id, s.scheduled
          FROM customer_state AS s
         WHERE s.customer_id = ANY(customer_ids)
         ORDER BY s.customer_id
           FOR UPDATE;
    RETURN QUERY
        SELECT p.command_id, NULL::text, NULL::text, NULL::boolean, NULL::text[], NULL::timestamptz,
               NULL::timestamptz, NULL::bigint, NULL::timestamptz, NULL::text, NULL::jsonb
          FROM processed_commands AS p
         WHERE p.command_id = ANY(command_ids);
END
$$;
