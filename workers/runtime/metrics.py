"""Prometheus metrics of one worker process, on a registry of its own (no global state)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.records_consumed = Counter(
            "suspensions_records_consumed_total", "Records read from Kafka.", ["worker", "topic"], registry=r
        )
        self.commands_emitted = Counter(
            "suspensions_trigger_commands_emitted_total", "Suspension commands emitted by the triggers worker.",
            ["reason"], registry=r,
        )
        self.commands_applied = Counter(
            "suspensions_commands_applied_total", "Commands that changed a customer's state.",
            ["action", "reason"], registry=r,
        )
        self.commands_noop = Counter(
            "suspensions_commands_noop_total", "Commands applied without a change (recorded in history).",
            ["action", "reason"], registry=r,
        )
        self.commands_duplicate = Counter(
            "suspensions_commands_duplicate_total", "Commands whose id was already processed.", registry=r
        )
        self.dead_letters = Counter(
            "suspensions_dead_letters_total", "Records sent to the dead letter topic.", ["topic"], registry=r
        )
        self.poison_records = Counter(
            "suspensions_poison_records_total",
            "Records the contract accepted but that could not be applied or published (refused by PostgreSQL, "
            "too large to publish, ...): dead-lettered, the rest of their batch applied.",
            ["worker", "cause"], registry=r,
        )
        self.invoice_jobs = Counter(
            "suspensions_invoice_jobs_total", "Invoice job decisions.", ["decision"], registry=r
        )
        self.batch_seconds = Histogram(
            "suspensions_batch_processing_seconds", "Time to process one consumed batch.", ["worker"],
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.end_to_end_seconds = Histogram(
            "suspensions_end_to_end_latency_seconds",
            "From the command's issue time to its state record being published.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.consumer_lag = Gauge(
            "suspensions_consumer_lag_records", "Log-end offset minus committed offset.",
            ["group", "topic", "partition"], registry=r,
        )
        self.settings_records = Counter(
            "suspensions_settings_records_total", "Settings records folded into the triggers' settings table.",
            ["topic"], registry=r,
        )
        self.outbox_recovered = Counter(
            "suspensions_outbox_recovered_records_total",
            "Records an earlier owner of a partition left in the outbox, published on taking it over.",
            ["worker"], registry=r,
        )
        self.schedules_fired = Counter(
            "suspensions_schedules_fired_total", "Commands published for due schedules (a re-publish counts).",
            registry=r,
        )
        self.invoice_statuses = Counter(
            "suspensions_invoice_statuses_total", "invoice.status records applied, by what they did.",
            ["status"], registry=r,
        )
        self.overdue_commands = Counter(
            "suspensions_overdue_commands_total",
            "Commands the overdue rule issued: suspend (a moment came) or release (the last overdue invoice "
            "settled).", ["action"], registry=r,
        )
        self.retention_rows_removed = Counter(
            "suspensions_retention_rows_removed_total", "Rows removed by retention (workers/runtime/retention.py).",
            ["table"], registry=r,
        )
        self.retention_partitions_dropped = Counter(
            "suspensions_retention_partitions_dropped_total", "Monthly partitions dropped by retention.",
            ["table"], registry=r,
        )
        self.retention_pass_seconds = Histogram(
            "suspensions_retention_pass_seconds", "Time of one pass of a worker's retention rules.",
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.retention_oldest_seconds = Gauge(
            "suspensions_retention_oldest_row_age_seconds",
            "Age of the oldest row a retention rule could remove, at its last pass (0: none).", ["table"], registry=r,
        )
        self.overdue_fire_delay_seconds = Histogram(
            "suspensions_overdue_fire_delay_seconds", "How long after an invoice's overdue moment it was fired.",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.http_requests = Histogram(
            "suspensions_http_request_duration_seconds", "Operator API and console requests.",
            ["route", "method", "status"], buckets=BATCH_BUCKETS, registry=r,
        )
        self.auth_failures = Counter(
            "suspensions_auth_failures_total", "Requests refused for a missing, unknown or revoked token or session.",
            ["reason"], registry=r,
        )
        self.retries = Counter(
            "suspensions_transient_failures_total", "Batches retried after a transient failure.",
            ["worker", "dependency"], registry=r,
        )

        # Webhooks. The oldest pending delivery's age is labelled by endpoint id: endpoints are few (registered
        # by hand, per space), and it is what operators alert on per destination.
        self.webhook_attempts = Counter(
            "suspensions_webhook_attempts_total", "Webhook attempts by outcome: delivered, http_error, gone, "
            "timeout, connection_error, refused (a destination the rules forbid).", ["outcome"], registry=r,
        )
        self.webhook_deliveries = Counter(
            "suspensions_webhook_deliveries_total", "Webhook deliveries finished: delivered, or gave_up.",
            ["outcome"], registry=r,
        )
        self.webhook_attempt_seconds = Histogram(
            "suspensions_webhook_attempt_duration_seconds", "Time of one webhook attempt, until the answer "
            "or the failure.", buckets=LATENCY_BUCKETS, registry=r,
        )
        self.webhook_oldest_pending = Gauge(
            "suspensions_webhook_oldest_pending_seconds", "Age of the oldest pending delivery of each enabled "
            "endpoint (of the partitions this process holds).", ["endpoint"], registry=r,
        )

    def settings_records_folded(self) -> float:
        """Total settings records folded by this process's triggers worker."""
        from topics import SETTINGS_TOPICS

        return sum(
            self.registry.get_sample_value("suspensions_settings_records_total", {"topic": spec.name}) or 0.0
            for spec in SETTINGS_TOPICS
        )
