-- One decision per invoice job id. Dropped jobs are settled on lift: rebilled or waived.
CREATE TABLE invoice_decisions (
    job_id             text PRIMARY KEY,
    customer_id        text NOT NULL,
    space_id           text NOT NULL,
    contract_id        text NOT NULL,
    amount             numeric NOT NULL,
    currency           text NOT NULL,
    status             text NOT NULL CHECK (status IN ('accepted', 'dropped', 'rebilled', 'waived')),
    suspension_version bigint,
    job                text NOT NULL,
    decided_at         timestamptz NOT NULL,
    settled_at         timestamptz,
    settled_by_command text
);
CREATE INDEX invoice_decisions_open_drops ON invoice_decisions (customer_id) WHERE status = 'dropped';
CREATE INDEX invoice_decisions_by_space ON invoice_decisions (space_id, status);
