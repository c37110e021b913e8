"""The one configuration object of the service.

Every knob is an environment variable with the ``SUSPENSIONS_`` prefix. The
defaults serve the local broker (Tansu: no idempotent producer, short group
timeouts); ``docker-compose.yml`` sets the production values for Apache Kafka.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.runtime.retry import Backoff


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SUSPENSIONS_", extra="ignore")

    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/suspensions"

    # Producer: idempotence must be off on the local broker (InitProducerId fails there).
    kafka_enable_idempotence: bool = False
    kafka_acks: str = "all"
    # Records go out in explicit batches (one per partition), so waiting to fill one only adds latency.
    kafka_linger_ms: int = 0
    kafka_request_timeout_ms: int = 30_000
    # Group membership: Tansu joins in about half the session timeout.
    kafka_session_timeout_ms: int = 10_000
    kafka_heartbeat_interval_ms: int = 2_000
    kafka_rebalance_timeout_ms: int = 20_000
    kafka_max_poll_interval_ms: int = 300_000
    # How long a fetch may wait for data. Apache Kafka answers as soon as data arrives; the local
    # broker always waits this long, so locally it must be short or every hop costs the full wait.
    kafka_fetch_max_wait_ms: int = Field(default=10, ge=0)
    # The state and billing workers commit offsets at most this often (and always before a
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

    # Consumer groups, one per worker.
    triggers_group: str = "suspensions-triggers"
    state_group: str = "suspensions-state"
    billing_group: str = "suspensions-billing"

    # Retry of transient failures (PostgreSQL or broker unavailable).
    retry_initial_backoff_s: float = 0.2
    retry_max_backoff_s: float = 5.0

    # HTTP endpoint of /metrics, /healthz and /readyz; 0 disables it.
    http_port: int = Field(default=0, ge=0, le=65535)
    # How often each worker process samples its groups' lag for /metrics; 0 disables.
    lag_sample_interval_s: float = Field(default=15.0, ge=0)
    shutdown_grace_s: float = 30.0
    log_format: str = "auto"  # auto | json | console
    log_level: str = "INFO"

    @property
    def database_location(self) -> str:
        """The database URL without its password, for messages and logs."""
        return redact_url(self.database_url)

    @property
    def backoff(self) -> Backoff:
        return Backoff(self.retry_initial_backoff_s, self.retry_max_backoff_s)

    def producer_options(self) -> dict[str, object]:
        return {
            "bootstrap_servers": self.kafka_bootstrap_servers,
            "acks": "all" if self.kafka_acks == "all" else int(self.kafka_acks),
            "enable_idempotence": self.kafka_enable_idempotence,
            "linger_ms": self.kafka_linger_ms,
            "request_timeout_ms": self.kafka_request_timeout_ms,
            "max_batch_size": 256 * 1024,
        }

    def consumer_options(self, group_id: str | None) -> dict[str, object]:
        return {
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


def redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))
