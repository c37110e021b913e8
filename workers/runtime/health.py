"""What /healthz and /readyz report for one worker process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class WorkerHealth:
    name: str
    kafka_ok: bool = False
    database_ok: bool = True
    kafka_cause: str | None = None  # why the broker cannot be used, when known (never a secret)
    database_cause: str | None = None
    assigned_partitions: int = 0
    # True once the group handed this member its share, even an empty one (more members than partitions).
    assignment_received: bool = False
    last_loop_at: float = field(default_factory=time.monotonic)

    def assigned(self, partitions: int) -> None:
        self.assigned_partitions = partitions
        self.assignment_received = True

    def revoked(self) -> None:
        self.assigned_partitions = 0
        self.assignment_received = False

    def beat(self) -> None:
        self.last_loop_at = time.monotonic()

    @property
    def ready(self) -> bool:
        return self.kafka_ok and self.database_ok and self.assignment_received

    def reasons_not_ready(self) -> list[str]:
        reasons = []
        if not self.kafka_ok:
            reasons.append(f"not connected to Kafka: {self.kafka_cause}" if self.kafka_cause
                           else "not connected to Kafka")
        if not self.database_ok:
            reasons.append(f"PostgreSQL unreachable: {self.database_cause}" if self.database_cause
                           else "PostgreSQL unreachable")
        if not self.assignment_received:
            reasons.append("no partition assignment yet (joining or rebalancing)")
        return reasons
