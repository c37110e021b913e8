-- The overdue rule (issue 23). Each space's rule as last read from `settings.overdue` (every overdue
-- worker writes the same rows: last write wins by updated_at), and every invoice the rule has seen on
-- `invoice.status`, by customer. An open invoice whose moment came is fired once by the worker that owns
-- its source partition (fired_at, with the command that suspended for it).
CREATE TABLE overdue_settings (
    space_id           text PRIMARY KEY,
    suspend_after_days integer CHECK (suspend_after_days >= 0),
    lift_when_paid     boolean NOT NULL,
    missed_invoices    text NOT NULL CHECK (missed_invoices IN ('bill', 'waive')),
    updated_at         timestamptz NOT NULL
);

CREATE TABLE customer_invoices (
    customer_id       text NOT NULL,
    invoice_id        text NOT NULL,
    space_id          text NOT NULL,
    status            text NOT NULL CHECK (status IN ('open', 'paid', 'voided')),
    due_at            timestamptz,          -- null for an invoice only ever seen settled
    amount            text,
    currency          text,
    issued_event_id   text,
    source_partition  integer NOT NULL,     -- the customer's partition of invoice.status
    updated_at        timestamptz NOT NULL, -- occurred_at of the last record that changed it
    settled_at        timestamptz,
    fired_at          timestamptz,          -- when the rule suspended for it (its moment)
    fired_command_id  text,
    PRIMARY KEY (customer_id, invoice_id)
);
CREATE INDEX customer_invoices_due ON customer_invoices (source_partition, due_at)
    WHERE status = 'open' AND fired_at IS NULL;
CREATE INDEX customer_invoices_by_space ON customer_invoices (space_id, customer_id);
