"""The overdue rule: invoices' status in, suspensions and releases of reason `overdue` out."""
