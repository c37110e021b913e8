"""What /healthz and /readyz mean, for every HTTP server of the service (the workers' internal port and the
operator API): one home, so both answer the same way from the same ``WorkerHealth`` entries."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from models.version import SERVICE_VERSION


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
    # What the worker's loops are retrying right now, and why (a dependency that failed or did not answer
    # in time), by retry: set at a failure, removed once that retry succeeds. Not ready meanwhile, even
    # while the process's own probes get answers (a row lock held elsewhere stalls only the worker).
    stalls: dict[object, str] = field(default_factory=dict)

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
        return self.kafka_ok and self.database_ok and self.assignment_received and not self.stalls

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
        reasons.extend(sorted(set(self.stalls.values())))
        return reasons


LOOP_STALE_AFTER_S = 30.0
Answer = tuple[int, dict[str, object]]


def liveness(healths: list[WorkerHealth], now: float | None = None) -> Answer:
    """/healthz: alive (200) while every loop turned in the last 30 s; 503 naming the stale ones. Either
    way it says the service's version, so that a rolling upgrade shows which processes run which."""
    moment = time.monotonic() if now is None else now
    stale = [h.name for h in healths if moment - h.last_loop_at > LOOP_STALE_AFTER_S]
    return (503 if stale else 200), {"alive": not stale, "stale_loops": stale, "version": SERVICE_VERSION}


def readiness(healths: list[WorkerHealth]) -> Answer:
    """/readyz: ready (200) when every entry reaches Kafka and PostgreSQL and has its assignment; 503 with
    each entry's reasons otherwise."""
    workers = {h.name: {"ready": h.ready, "partitions": h.assigned_partitions,
                        "not_ready_because": h.reasons_not_ready()} for h in healths}
    ready = all(h.ready for h in healths)
    return (200 if ready else 503), {"ready": ready, "workers": workers}
