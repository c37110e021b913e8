-- Who each customer is (issue 26): the name and email of the latest signup or `customer.profile` record, kept
-- by the directory worker, last write wins by the record's own moment (`occurred_at`, `updated_at`). Keyed
-- by space and customer: a record naming another space than the customer's is never shown with it.
-- `forget` (a data-protection request) erases both and keeps the moment: a record older than it (a replay)
-- never brings them back.
CREATE TABLE customer_profiles (
    space_id      text NOT NULL,
    customer_id   text NOT NULL,
    display_name  text,
    email         text,
    updated_at    timestamptz NOT NULL,       -- the moment of the record that wrote it (or of the erasure)
    source        text NOT NULL,              -- topic:partition:offset of that record, or 'forget'
    forgotten_at  timestamptz,
    forgotten_by  text,
    PRIMARY KEY (space_id, customer_id)
);
-- Prefix search, case-insensitive, within a space (LIKE 'maria%' on lower(...)).
-- The customer id last: a prefix's matches come out of each index in their order (ties by id), so a page of
-- a prefix that matches thousands reads only that page.
CREATE INDEX customer_profiles_by_name ON customer_profiles (space_id, lower(display_name) text_pattern_ops, customer_id);
CREATE INDEX customer_profiles_by_email ON customer_profiles (space_id, lower(email) text_pattern_ops, customer_id);
CREATE INDEX customer_state_by_lower_id ON customer_state (space_id, lower(customer_id) text_pattern_ops, customer_id);

-- Every erasure of personal data: who asked it and when (history keeps the customer's id only).
CREATE TABLE profile_erasures (
    id          bigserial PRIMARY KEY,
    space_id    text NOT NULL,
    customer_id text NOT NULL,
    actor       text NOT NULL,
    erased_at   timestamptz NOT NULL
);
CREATE INDEX profile_erasures_by_customer ON profile_erasures (space_id, customer_id, id);

-- The dead letters of each space (the space named by the rejected record, when it names one), for the
-- console's overview; one row per rejected record (`record_id`: topic:partition:offset).
CREATE TABLE dead_letters (
    record_id    text PRIMARY KEY,
    space_id     text,
    source_topic text NOT NULL,
    worker       text NOT NULL,
    error        text NOT NULL,
    failed_at    timestamptz NOT NULL
);
CREATE INDEX dead_letters_by_space ON dead_letters (space_id, failed_at);

-- The overview's figures read history by space and time.
-- (012, which partitions command_history, makes the same one: whichever runs first, the other keeps it.)
CREATE INDEX IF NOT EXISTS command_history_by_space ON command_history (space_id, applied_at);
CREATE INDEX invoice_decisions_by_space_time ON invoice_decisions (space_id, decided_at);
-- The list in name order, walked rather than sorted (a short prefix, or none, matches most of a space).
CREATE INDEX customer_profiles_name_order ON customer_profiles (space_id, lower(display_name), customer_id)
    WHERE display_name IS NOT NULL;
