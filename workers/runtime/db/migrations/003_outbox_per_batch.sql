-- The outbox holds one row per applied batch and source partition, its records
-- packed in order (see workers/runtime/outbox.py: pack_records): one insert
-- and one delete per batch instead of per record.
ALTER TABLE outbox RENAME TO outbox_per_record;
ALTER INDEX outbox_by_source RENAME TO outbox_per_record_by_source;

CREATE TABLE outbox (
    id               bigserial PRIMARY KEY,
    source_topic     text NOT NULL,
    source_partition integer NOT NULL,
    records          bytea NOT NULL  -- per record: u16 topic, i32 key (-1: null), i32 value, u16 record id
);
CREATE INDEX outbox_by_source ON outbox (source_topic, source_partition, id);

-- Rows not yet published when this migration runs are carried over, one record per row, in order.
INSERT INTO outbox (source_topic, source_partition, records)
SELECT source_topic, source_partition,
       substring(int4send(octet_length(convert_to(topic, 'UTF8'))) FROM 3) || convert_to(topic, 'UTF8')
       || CASE WHEN key IS NULL THEN int4send(-1) ELSE int4send(octet_length(key)) || key END
       || int4send(octet_length(value)) || value
       || substring(int4send(octet_length(convert_to(record_id, 'UTF8'))) FROM 3) || convert_to(record_id, 'UTF8')
FROM outbox_per_record
ORDER BY id;

DROP TABLE outbox_per_record;
