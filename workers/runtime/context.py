"""What every worker is built from: its identity and the process's shared clients."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Protocol

import asyncpg
from aiokafka import AIOKafkaProducer

from workers.runtime.config import Settings
from workers.runtime.health import WorkerHealth
from workers.runtime.metrics import Metrics


@dataclass(frozen=True)
class WorkerContext:
    name: str  # as the registry declares it; labels its metrics, logs and dead letters
    group: str  # its consumer group
    settings: Settings
    metrics: Metrics
    health: WorkerHealth
    producer: AIOKafkaProducer  # started, shared by the process's workers
    pool: asyncpg.Pool | None  # None for a worker that needs no PostgreSQL

    @property
    def database(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError(f"the {self.name} worker is declared without PostgreSQL")
        return self.pool


class RunnableWorker(Protocol):
    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set, then finish what is held and leave the group."""
