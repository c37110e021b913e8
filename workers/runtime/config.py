"""The one configuration object of the service.

Every knob is an environment variable with the ``SUSPENSIONS_`` prefix. The
defaults serve the local broker (Tansu: no idempotent producer, short group
timeouts); ``docker-compose.yml`` sets the production values for Apache Kafka.

Secrets are ``SecretStr`` (shown as ``**********``) and can each come from a file
named by ``SUSPENSIONS_<NAME>_FILE`` instead (the container-secrets convention).
Every Kafka client takes its security options from ``kafka_security_options``
and every PostgreSQL connection its arguments from ``database_connect_args``.
"""

from __future__ import annotations

import os
import re
import ssl
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BeforeValidator, Field, SecretStr, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from workers.runtime.retry import Backoff

ENV_PREFIX = "SUSPENSIONS_"
# Settings that may be read from a file named by SUSPENSIONS_<NAME>_FILE.
FILE_SETTINGS = ("database_url", "database_password", "kafka_sasl_username", "kafka_sasl_password")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _seconds_or_iso(value: object) -> object:
    """A duration from the environment: seconds (``"2"``, ``"0.5"``) or ISO 8601 (``"P8D"``, ``"PT2S"``)."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
        return timedelta(seconds=float(value))
    return value


# Windows and durations: seconds or ISO 8601 in the environment.
Duration = Annotated[timedelta, BeforeValidator(_seconds_or_iso)]


class SettingsError(ValueError):
    """A setting that cannot work; the message names it and never shows a secret."""


class SecretFiles(PydanticBaseSettingsSource):
    """``SUSPENSIONS_<NAME>_FILE``: the value of a setting read from a file (trailing newline dropped).
    A setting given directly in the environment wins over its file."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = f"{ENV_PREFIX}{field_name.upper()}_FILE"
        path = os.environ.get(variable)
        if field_name not in FILE_SETTINGS or not path:
            return None, field_name, False
        try:
            return Path(path).read_text().rstrip("\r\n"), field_name, False
        except OSError as error:
            raise SettingsError(f"{variable}: cannot read {path}: {error.strerror}") from None

    def __call__(self) -> dict[str, Any]:
        values = {}
        for field_name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, field_name)
            if value is not None:
                values[key] = value
        return values


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, SecretFiles(settings_cls), dotenv_settings, file_secret_settings

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        """The settings' text (repr and str, as tracebacks and test reports show it) without the
        password a database URL may carry."""
        for name, value in super().__repr_args__():
            yield name, redact_url(value) if name == "database_url" else value

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    # libpq-style URL; TLS by its query parameters (sslmode, sslrootcert, sslcert, sslkey).
    database_url: str = "postgresql://postgres@127.0.0.1:5432/suspensions"
    # The password apart from the URL, so the URL can be logged (it is redacted anyway).
    database_password: SecretStr | None = None

    # Kafka security: the same for every client (workers, faust, CLI, lag, topic creation, doctor).
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_ca_file: Path | None = None  # None: the system's trusted CAs
    kafka_ssl_cert_file: Path | None = None  # client certificate, for mutual TLS
    kafka_ssl_key_file: Path | None = None
    kafka_ssl_check_hostname: bool = True

    # Producer: idempotence must be off on the local broker (InitProducerId fails there).
    kafka_enable_idempotence: bool = False
    kafka_acks: str = "all"
    # Records go out in explicit batches (one per partition), so waiting to fill one only adds latency.
    kafka_linger_ms: int = 0
    kafka_request_timeout_ms: int = 30_000
    # The largest record (key, value and headers) a worker publishes; a batch that would publish a larger
    # one dead-letters its source record instead. Below the producer's and Apache Kafka's 1 MiB defaults.
    # At least what the largest dead letter weighs (a 256 KiB value, twice that once escaped, and its key).
    kafka_max_record_bytes: int = Field(default=1_000_000, ge=640 * 1024)
    # Group membership: Tansu joins in about half the session timeout.
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 2_000
    kafka_rebalance_timeout_ms: int = 20_000
    kafka_max_poll_interval_ms: int = 300_000
    # How long a fetch may wait for data. Apache Kafka answers as soon as data arrives; the local
    # broker always waits this long, so locally it must be short or every hop costs the full wait.
    kafka_fetch_max_wait_ms: int = Field(default=10, ge=0)
    # Every worker commits offsets at most this often (the state and billing workers always before a
    # revocation or shutdown); a crash redelivers at most this much work, deduplicated by id.
    kafka_commit_interval_ms: int = Field(default=100, ge=0)

    # Topic creation.
    topic_partitions: int = Field(default=4, ge=1)
    topic_replication_factor: int = Field(default=1, ge=1)

    # Batching of the aiokafka workers.
    batch_max_records: int = Field(default=2_000, ge=1)
    batch_timeout_ms: int = Field(default=50, ge=0)
    # Batches of different partitions applied at the same time by one worker (each in its own
    # transaction), so one batch's Python work overlaps another's wait for PostgreSQL.
    batch_max_in_flight: int = Field(default=2, ge=1)

    # Lifecycle events on suspension.events, one per change (off only to measure what they cost).
    lifecycle_events: bool = True
    # How often each state worker looks for due schedules of the partitions it holds.
    schedule_poll_interval_ms: int = Field(default=100, ge=10)

    # Consumer groups, one per worker.
    triggers_group: str = "suspensions-triggers"
    state_group: str = "suspensions-state"
    billing_group: str = "suspensions-billing"
    overdue_group: str = "suspensions-overdue"  # invoice.status and the overdue rule (issue 23)
    directory_group: str = "suspensions-directory"  # names and emails, dead letters per space (the console's)

    # Webhooks (the `webhooks` worker, docs/webhooks.md). Durations: seconds or ISO 8601 (P3D).
    webhooks_group: str = "suspensions-webhooks"
    # Lifts the destination rules (https only, public addresses only): local development, tests, the demo.
    webhooks_allow_private: bool = False
    webhooks_timeout_s: float = Field(default=10.0, gt=0)  # one attempt, connecting and answering
    webhooks_retry_for: Duration = timedelta(days=3)  # a delivery is given up this long after its event
    webhooks_disable_after: Duration = timedelta(days=5)  # an endpoint failing this long is disabled
    webhooks_initial_backoff_s: float = Field(default=5.0, gt=0)  # doubled per attempt, with jitter
    webhooks_max_backoff_s: float = Field(default=3600.0, gt=0)
    webhooks_max_in_flight: int = Field(default=64, ge=1)  # attempts at once per worker instance
    webhooks_max_in_flight_per_endpoint: int = Field(default=8, ge=1)  # so one slow endpoint holds few
    webhooks_poll_interval_ms: int = Field(default=50, ge=5)  # how often due deliveries are looked for
    webhooks_retention: Duration = timedelta(days=14)  # attempts, and finished deliveries, kept this long
    webhooks_secret_overlap: Duration = timedelta(hours=24)  # a rotated secret keeps signing this long

    # Retention (workers/runtime/retention.py, docs/operations.md "Retention"). Windows: seconds or ISO 8601.
    # A command id is remembered while a copy of the command can still arrive: the commands topic's retention
    # (7 days by default in Kafka) plus the longest a producer retries; checked against the topic at start.
    dedup_retention: Duration = timedelta(days=8)
    # An invoice job id, for at least as long as a billing run may send the same job again (a billing cycle and
    # the invoice.jobs topic's retention); dropped jobs stay until a lift settles them, whatever their age.
    # Kept a year and more: the console's overview reads dropped, billed back and waived jobs up to 365 days back.
    invoice_dedup_retention: Duration = timedelta(days=400)
    history_retention: Duration | None = None  # None: the audit log is kept forever
    history_partitions_ahead: int = Field(default=2, ge=1)  # months of history partitions made in advance
    schedules_retention: Duration = timedelta(days=90)  # fired and cancelled schedules
    bulk_jobs_retention: Duration = timedelta(days=30)  # finished bulk jobs and their reports
    sessions_retention: Duration = timedelta(days=1)  # console sessions after they expire
    settled_invoices_retention: Duration = timedelta(days=400)  # paid and voided invoices (the overdue rule's)
    dead_letters_retention: Duration = timedelta(days=30)  # each space's dead letters, as the console shows them
    retention_interval_s: float = Field(default=60.0, gt=0)  # how often each owner prunes
    retention_batch: int = Field(default=5_000, ge=1)  # rows per delete (one short transaction each)

    # Timeouts for a PostgreSQL that hangs instead of failing (docs/operations.md "Hung dependencies").
    # Server side, in every session of the workers, API and CLI (migrations excepted): the longest a
    # statement may run, and may wait for a lock (a row or a partition's lock held by someone else); a
    # transaction left idle this long (its client stopped) is ended and its locks released.
    database_statement_timeout_s: float = Field(default=30.0, gt=0)
    database_lock_timeout_s: float = Field(default=10.0, gt=0)
    database_idle_in_transaction_timeout_s: float = Field(default=60.0, gt=0)
    # Client side (asyncpg): connecting, and waiting for any answer, which covers a server that cannot
    # enforce its own timeout (stopped, or a network that drops packets). Above the statement timeout.
    database_connect_timeout_s: float = Field(default=10.0, gt=0)
    database_command_timeout_s: float = Field(default=35.0, gt=0)
    # The API's own bound on PostgreSQL and the broker per request: past it the request answers 503 with
    # Retry-After instead of hanging (its sessions' statement timeout is this too).
    api_dependency_timeout_s: float = Field(default=10.0, gt=0)

    # Retry of transient failures (PostgreSQL or broker unavailable).
    retry_initial_backoff_s: float = 0.2
    retry_max_backoff_s: float = 5.0

    # The operator API and console (`suspensions run api`).
    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=0, le=65535)
    # The API process's own PostgreSQL pool: a request that gets no connection within the timeout
    # answers 503 with Retry-After instead of queueing without bound behind the others.
    api_pool_size: int = Field(default=10, ge=1)
    api_pool_timeout_s: float = Field(default=5.0, gt=0)
    # Bulk jobs one token may run at once (across every API process); beyond, 429 with Retry-After.
    api_max_bulk_jobs_per_token: int = Field(default=2, ge=1)
    # A running bulk job's process marks it alive this often; a job unmarked for three intervals
    # (its process died) reads as failed, interrupted.
    api_bulk_heartbeat_s: float = Field(default=5.0, gt=0)
    # The HTTP edge (suspensions/api/edge.py). A bulk CSV (API or console upload) larger than this, or
    # of more lines, answers 413 before it is read further; every other body is refused above 1 MiB.
    api_max_bulk_bytes: int = Field(default=20 * 1024 * 1024, ge=1)
    api_max_bulk_lines: int = Field(default=100_000, ge=1)
    # Failed authentications (bearer token, console sign-in, session cookie) one client address may
    # make in a minute; then its authentications answer 429 until the oldest failure is a minute old.
    api_auth_failures_per_minute: int = Field(default=20, ge=1)
    # A console session unused this long ends, besides its absolute lifetime (12 h).
    api_session_idle_s: float = Field(default=1800.0, gt=0)

    # HTTP endpoint of /metrics, /healthz and /readyz; 0 disables it.
    http_port: int = Field(default=0, ge=0, le=65535)
    # How often each worker process samples its groups' lag for /metrics; 0 disables.
    lag_sample_interval_s: float = Field(default=15.0, ge=0)
    shutdown_grace_s: float = 30.0
    log_format: str = "auto"  # auto | json | console
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _security_is_complete(self) -> Settings:
        if self.kafka_security_protocol.startswith("SASL_") and not (
                self.kafka_sasl_username and self.kafka_sasl_password):
            raise SettingsError(f"SUSPENSIONS_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} needs "
                                "SUSPENSIONS_KAFKA_SASL_USERNAME and SUSPENSIONS_KAFKA_SASL_PASSWORD (or their _FILE)")
        if (self.kafka_ssl_cert_file is None) != (self.kafka_ssl_key_file is None):
            raise SettingsError("SUSPENSIONS_KAFKA_SSL_CERT_FILE and SUSPENSIONS_KAFKA_SSL_KEY_FILE go together "
                                "(a client certificate and its key)")
        return self

    @property
    def kafka_uses_tls(self) -> bool:
        return self.kafka_security_protocol in ("SSL", "SASL_SSL")

    def kafka_ssl_context(self) -> ssl.SSLContext:
        """Verifies the broker against the CA file (or the system's CAs), presents the client certificate
        when one is configured; raises SettingsError naming a file that cannot be used."""
        try:
            context = ssl.create_default_context(
                cafile=str(self.kafka_ssl_ca_file) if self.kafka_ssl_ca_file else None)
            if self.kafka_ssl_cert_file and self.kafka_ssl_key_file:
                context.load_cert_chain(str(self.kafka_ssl_cert_file), str(self.kafka_ssl_key_file))
        except (OSError, ssl.SSLError) as error:
            raise SettingsError(f"Kafka TLS files cannot be used: {error}") from None
        context.check_hostname = self.kafka_ssl_check_hostname
        return context

    def kafka_security_options(self) -> dict[str, object]:
        """Keyword arguments of every aiokafka client (producer, consumer, admin)."""
        options: dict[str, object] = {"security_protocol": self.kafka_security_protocol}
        if self.kafka_uses_tls:
            options["ssl_context"] = self.kafka_ssl_context()
        if self.kafka_security_protocol.startswith("SASL_"):
            assert self.kafka_sasl_password is not None  # checked when the settings were read
            options.update(sasl_mechanism=self.kafka_sasl_mechanism, sasl_plain_username=self.kafka_sasl_username,
                           sasl_plain_password=self.kafka_sasl_password.get_secret_value())
        return options

    def database_login_args(self) -> dict[str, Any]:
        """Where and as whom to connect: the URL, and the password when set apart (``migrate`` takes these:
        a migration is bounded by nothing but itself)."""
        args: dict[str, Any] = {"dsn": self.database_url}
        if self.database_password is not None:
            args["password"] = self.database_password.get_secret_value()
        return args

    def database_connect_args(self, *, statement_timeout_s: float | None = None) -> dict[str, Any]:
        """``asyncpg.connect`` / ``create_pool`` arguments: the login and every timeout (a shorter
        ``statement_timeout_s`` than the workers', for the API's sessions)."""
        if statement_timeout_s is None:
            statement_s = self.database_statement_timeout_s
            answer_s = max(self.database_command_timeout_s, statement_s + 1)
        else:
            statement_s, answer_s = statement_timeout_s, statement_timeout_s + 1
        return {
            **self.database_login_args(),
            "timeout": self.database_connect_timeout_s,
            "command_timeout": answer_s,
            "server_settings": {
                "statement_timeout": _ms(statement_s),
                "lock_timeout": _ms(min(self.database_lock_timeout_s, statement_s)),
                "idle_in_transaction_session_timeout": _ms(self.database_idle_in_transaction_timeout_s),
            },
        }

    @property
    def database_location(self) -> str:
        """The database URL without its password, for messages and logs."""
        return redact_url(self.database_url)

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.retry_initial_backoff_s, self.retry_max_backoff_s)

    def producer_options(self) -> dict[str, object]:
        return {
            **self.kafka_security_options(),
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "acks": "all" if self.kafka_acks == "all" else int(self.kafka_acks),
            "enable_idempotence": self.kafka_enable_idempotence,
            "linger_ms": self.kafka_linger_ms,
            "request_timeout_ms": self.kafka_request_timeout_ms,
            "max_batch_size": 256 * 1024,
        }

    def consumer_options(self, group_id: str | None) -> dict[str, object]:
        return {
            **self.kafka_security_options(),
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "group_id": group_id,
            "enable_auto_commit": False,
            "auto_offset_reset": "earliest",
            "session_timeout_ms": self.kafka_session_timeout_ms,
            "heartbeat_interval_ms": self.kafka_heartbeat_interval_ms,
            "rebalance_timeout_ms": self.kafka_rebalance_timeout_ms,
            "max_poll_interval_ms": self.kafka_max_poll_interval_ms,
            "fetch_max_wait_ms": self.kafka_fetch_max_wait_ms,
            "request_timeout_ms": self.kafka_request_timeout_ms,
            "max_partition_fetch_bytes": 4 * 1024 * 1024,
            "fetch_max_bytes": 16 * 1024 * 1024,
        }


def _ms(seconds: float) -> str:
    """A PostgreSQL duration setting, in milliseconds (at least 1: 0 would turn the timeout off)."""
    return str(max(1, round(seconds * 1000)))


def redact_url(url: str) -> str:
    """The URL without its passwords: the one before ``@`` and any ``password`` or ``sslpassword`` option."""
    parts = urlsplit(url)
    netloc = parts.netloc if parts.password is None else parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    query = re.sub(r"(?i)(^|&)((?:ssl)?password)=[^&]*", r"\1\2=***", parts.query)
    return urlunsplit(parts._replace(netloc=netloc, query=query))
