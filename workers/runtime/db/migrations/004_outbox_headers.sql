-- Outbox rows say how their records are packed: 1, topic, key, value and record id (rows written
-- before this migration); 2, the same followed by the record's other headers (CloudEvents attributes).
-- See workers/runtime/outbox.py: pack_records.
ALTER TABLE outbox ADD COLUMN format smallint NOT NULL DEFAULT 1;
