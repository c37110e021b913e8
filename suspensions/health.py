"""What /healthz and /readyz report for one worker process."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class WorkerHealth:
    name: str
    kafka_ok: bool = False
    database_ok: bool = True
    assigned_partitions: int = 0
    last_loop_at: float = field(default_factory=time.monotonic)

    def beat(self) -> None:
        self.last_loop_at = time.monotonic()

    @property
    def ready(self) -> bool:
        return self.kafka_ok and self.database_ok and self.assigned_partitions > 0

    def reasons_not_ready(self) -> list[str]:
        reasons = []
        if not self.kafka_ok:
            reasons.append("not connected to Kafka")
        if not self.database_ok:
            reasons.append("PostgreSQL unreachable")
        if self.assigned_partitions == 0:
            reasons.append("no partitions assigned")
        return reasons
