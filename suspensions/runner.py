"""Runs the named workers in one process until stopped, then shuts them down cleanly.

Start-up and shutdown are explicit: SIGINT/SIGTERM set the stop event, every
worker finishes the batch it holds, commits, and leaves its group; whatever is
still running after the grace period is cancelled (its batch is redelivered).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from suspensions.config import Settings
from suspensions.health import WorkerHealth
from suspensions.http import start_http
from suspensions.kafka import make_producer
from suspensions.metrics import Metrics
from workers.batch_worker import TRANSIENT_DB_ERRORS, BatchWorker
from workers.billing.handler import BillingHandler
from workers.state.handler import StateHandler

log = logging.getLogger(__name__)

T = TypeVar("T")

WORKER_NAMES = ("triggers", "state", "billing")
DEPENDENCY_CHECK_INTERVAL_S = 2.0


async def _until_reachable(connect: Callable[[], Awaitable[T]], errors: tuple[type[BaseException], ...],
                           what: str, settings: Settings, stop: asyncio.Event | None) -> T:
    """Wait for a dependency at start-up with backoff instead of exiting (a restart loop helps no one)."""
    backoff = settings.retry_initial_backoff_s
    while True:
        try:
            return await connect()
        except errors as error:
            if stop is not None and stop.is_set():
                raise
            log.warning(f"{what} unreachable, retrying", extra={"error": repr(error), "backoff_s": backoff})
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, settings.retry_max_backoff_s)


async def _keep_session(connection: asyncpg.Connection) -> None:
    """The workers change no session state (no SET, LISTEN or advisory locks), so a connection goes
    back to the pool as it is: asyncpg's default reset costs a round trip per batch. An open
    transaction is still rolled back by the pool."""


async def connect_pool(settings: Settings, stop: asyncio.Event | None = None) -> asyncpg.Pool:
    return await _until_reachable(
        lambda: asyncpg.create_pool(settings.database_url, min_size=1, max_size=2 * settings.batch_max_in_flight + 2,
                                    timeout=10, reset=_keep_session),
        TRANSIENT_DB_ERRORS, "PostgreSQL", settings, stop)


async def start_producer(settings: Settings, stop: asyncio.Event) -> AIOKafkaProducer:
    async def start() -> AIOKafkaProducer:
        producer = make_producer(settings)
        try:
            await producer.start()
        except KafkaError:
            await producer.stop()
            raise
        return producer

    return await _until_reachable(start, (KafkaError,), "broker", settings, stop)


async def _kafka_reachable(settings: Settings) -> bool:
    """A fresh connection each time: a broker that went away fails fast instead of hanging in retries."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers, request_timeout_ms=3_000)
    try:
        await asyncio.wait_for(admin.start(), 3)
        await asyncio.wait_for(admin.list_topics(), 3)
        return True
    except Exception:  # noqa: BLE001 - any failure means not reachable
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


async def _database_reachable(pool: asyncpg.Pool) -> bool:
    try:
        async with pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1", timeout=2)
        return True
    except Exception:  # noqa: BLE001 - any failure means not reachable
        return False


async def _watch_dependencies(
    settings: Settings, pool: asyncpg.Pool | None, healths: list[WorkerHealth], stop: asyncio.Event
) -> None:
    """Keep readiness true to what the process can reach right now."""
    while not stop.is_set():
        kafka_ok = await _kafka_reachable(settings)
        database_ok = await _database_reachable(pool) if pool is not None else True
        for health in healths:
            health.kafka_ok = kafka_ok
            if health.name != "triggers":
                health.database_ok = database_ok
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), DEPENDENCY_CHECK_INTERVAL_S)


async def _sample_lag(settings: Settings, names: Sequence[str], metrics: Metrics, stop: asyncio.Event) -> None:
    """Export the lag of this process's groups as a gauge; a failed sample is logged, never fatal."""
    from suspensions.lag import LagProbe, service_groups

    groups = service_groups(settings)
    wanted = {getattr(settings, f"{name}_group"): groups[getattr(settings, f"{name}_group")] for name in names}
    while not stop.is_set():
        try:
            async with LagProbe(settings) as probe:
                for group, topics in wanted.items():
                    sample = await probe.sample(group, topics)
                    for part in sample.partitions:
                        metrics.consumer_lag.labels(group=group, topic=part.topic,
                                                    partition=str(part.partition)).set(part.lag)
        except Exception as error:  # noqa: BLE001 - monitoring must not stop the workers
            log.warning("lag sample failed", extra={"error": repr(error)})
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.lag_sample_interval_s)


async def run_workers(
    settings: Settings, names: Sequence[str], stop: asyncio.Event, metrics: Metrics | None = None
) -> None:
    unknown = sorted(set(names) - set(WORKER_NAMES))
    if unknown:
        raise ValueError(f"unknown worker(s) {unknown}; choose from {list(WORKER_NAMES)}")
    metrics = metrics or Metrics()
    healths: list[WorkerHealth] = []
    tasks: list[asyncio.Task[None]] = []

    http_runner = None
    pool = None
    producer = None
    faust_app = None
    try:
        producer = await start_producer(settings, stop)
        if "state" in names or "billing" in names:
            pool = await connect_pool(settings, stop)
            for name, group, handler in (
                ("state", settings.state_group, StateHandler(metrics)),
                ("billing", settings.billing_group, BillingHandler(metrics)),
            ):
                if name not in names:
                    continue
                health = WorkerHealth(name)
                healths.append(health)
                worker = BatchWorker(settings, group, handler, pool, producer, metrics, health)
                tasks.append(asyncio.create_task(worker.run(stop), name=f"worker-{name}"))

        if "triggers" in names:
            from workers.triggers.app import build_app

            health = WorkerHealth("triggers")
            healths.append(health)
            faust_app = build_app(settings, metrics, producer)

            @faust_app.on_partitions_assigned.connect
            async def _assigned(app, assigned, **kwargs) -> None:  # type: ignore[no-untyped-def]
                health.assigned(len(assigned))
                log.info("partitions assigned", extra={"worker": "triggers", "partitions": len(assigned)})

            @faust_app.on_partitions_revoked.connect
            async def _revoked(app, revoked, **kwargs) -> None:  # type: ignore[no-untyped-def]
                health.revoked()
                log.info("partitions revoked", extra={"worker": "triggers", "partitions": len(revoked)})

            async def _beat() -> None:
                while not stop.is_set():
                    health.beat()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), 1.0)

            faust_app.finalize()
            await faust_app.start()
            log.info("worker started", extra={"worker": "triggers", "group": settings.triggers_group})
            tasks.append(asyncio.create_task(_beat(), name="triggers-beat"))

        tasks.append(asyncio.create_task(_watch_dependencies(settings, pool, healths, stop), name="health"))
        if settings.lag_sample_interval_s > 0:
            tasks.append(asyncio.create_task(_sample_lag(settings, names, metrics, stop), name="lag"))

        if settings.http_port:
            http_runner = await start_http(metrics, healths, settings.http_port)
            log.info("http endpoints serving", extra={"port": settings.http_port})

        log.info("workers running", extra={"workers": list(names)})
        stop_waiter = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([stop_waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            if task is not stop_waiter and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
    finally:
        stop.set()
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=settings.shutdown_grace_s)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if faust_app is not None:
            await faust_app.stop()
            log.info("worker stopped", extra={"worker": "triggers"})
        if producer is not None:
            await producer.stop()
        if pool is not None:
            await pool.close()
        if http_runner is not None:
            await http_runner.cleanup()


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
