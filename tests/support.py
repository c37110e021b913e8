"""Test helpers that cross the real broker and PostgreSQL: no mocks, no sleeps as synchronisation."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from models import utc_iso
from suspensions.local.processes import WorkerProcess as LocalWorkerProcess
from suspensions.local.processes import service_env
from workers.runtime.config import Settings

Record = dict[str, Any]


def consumer_records(values: list[dict[str, Any]], topic: str) -> list[ConsumerRecord]:
    """Consecutive records of partition 0 as a consumer reads them, keyed by customer as upstream keys them."""
    records = []
    for offset, item in enumerate(values):
        key, value = str(item["customer_id"]).encode(), orjson.dumps(item)
        records.append(ConsumerRecord(topic, 0, offset, 0, 0, key, value, None, len(key), len(value), ()))
    return records


def uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def create_database(settings: Settings, prefix: str) -> str:
    """A new, empty database on the session's PostgreSQL server; returns its URL."""
    name = uid(prefix).replace("-", "_")
    admin = await asyncpg.connect(settings.database_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return settings.database_url.rsplit("/", 1)[0] + f"/{name}"


def now_iso() -> str:
    return utc_iso()


async def wait_until(check: Callable[[], Awaitable[Any]], timeout_s: float = 30.0, what: str = "condition") -> Any:
    """Poll an async check until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


@dataclass
class TopicTail:
    """Reads topics from the beginning in the background and keeps every record seen."""

    settings: Settings
    topics: tuple[str, ...]
    records: list[tuple[str, bytes | None, Record | None, bytes | None, int]] = field(default_factory=list)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> TopicTail:
        self._consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.settings.kafka_bootstrap_servers,
            group_id=None, auto_offset_reset="earliest", enable_auto_commit=False,
            fetch_max_wait_ms=self.settings.kafka_fetch_max_wait_ms,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def _run(self) -> None:
        assert self._consumer is not None
        async for record in self._consumer:
            try:
                value = orjson.loads(record.value) if record.value is not None else None
            except orjson.JSONDecodeError:
                value = None
            self.records.append((record.topic, record.key, value, record.value, record.partition))

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._consumer:
            try:
                await self._consumer.stop()
            except asyncio.CancelledError:
                # aiokafka's fetcher close re-raises the cancellation of its own fetch in retry; that
                # one must not abort the session's teardown (its workers and brokers stayed running).
                # A cancellation of this task itself still propagates.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    def matching(self, topic: str, **fields: Any) -> list[Record]:
        return [
            value for t, _, value, _, _ in self.records
            if t == topic and value is not None and all(value.get(k) == v for k, v in fields.items())
        ]

    async def wait_for(self, topic: str, count: int = 1, timeout_s: float = 30.0, **fields: Any) -> list[Record]:
        async def check() -> list[Record] | None:
            found = self.matching(topic, **fields)
            return found if len(found) >= count else None

        return await wait_until(check, timeout_s, f"{count} record(s) on {topic} matching {fields}")


async def send(producer: AIOKafkaProducer, topic: str, key: str | bytes | None, value: Record | bytes) -> None:
    payload = value if isinstance(value, bytes) else orjson.dumps(value)
    encoded_key = key.encode() if isinstance(key, str) else key
    await producer.send_and_wait(topic, payload, key=encoded_key)


async def wait_for_http(url: str, timeout_s: float = 60.0) -> None:
    """Until ``url`` answers 200 (a process's HTTP server is up)."""
    async def up() -> bool:
        async with httpx.AsyncClient() as client:
            try:
                return (await client.get(url)).status_code == 200
            except httpx.TransportError:
                return False

    await wait_until(up, timeout_s, f"{url} to answer")


# The local broker admits a new group member after about half the session timeout, and keeps a killed one
# listed until its session expires: the tests' processes, started, killed and restarted in the same groups,
# join sooner with a shorter one (heartbeats still every second, well inside it).
TEST_PROCESS_ENV = {"SUSPENSIONS_LOG_FORMAT": "json", "SUSPENSIONS_BATCH_TIMEOUT_MS": "20",
                    "SUSPENSIONS_KAFKA_SESSION_TIMEOUT_MS": "6000", "SUSPENSIONS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
                    "SUSPENSIONS_KAFKA_REBALANCE_TIMEOUT_MS": "12000"}


def test_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of the processes a test starts: JSON logs, short batches, short group timeouts."""
    return service_env(settings, **{**TEST_PROCESS_ENV, **extra})


@dataclass
class WorkerProcess(LocalWorkerProcess):
    """A worker process started with the tests' environment."""

    def __post_init__(self) -> None:
        self.extra_env = {**TEST_PROCESS_ENV, **self.extra_env}


def run_cli(settings: Settings, *args: str, timeout_s: float = 120.0, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_cli_env(settings, {}, *args, timeout_s=timeout_s, stdin=stdin)


def run_cli_env(settings: Settings, extra_env: dict[str, str], *args: str, timeout_s: float = 120.0,
                stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`suspensions ARGS` as a process, with these settings and more environment variables."""
    return subprocess.run(
        [sys.executable, "-m", "suspensions", *args], env=test_env(settings, **extra_env), capture_output=True,
        text=True, timeout=timeout_s, input=stdin,
    )


def settings_records_applied(worker: WorkerProcess) -> float:
    """How many settings records the worker's triggers have folded so far (from /metrics)."""
    return worker.metric("suspensions_settings_records_total")


async def publish_setting(producer: AIOKafkaProducer, workers: WorkerProcess | list[WorkerProcess], topic: str,
                          key: str, value: Record) -> None:
    """Publish a setting and wait until every running triggers worker has folded it.

    Settings apply as last known when an event is processed, so a test that publishes an event
    right after a setting waits for the setting first instead of racing it.
    """
    targets = workers if isinstance(workers, list) else [workers]
    before = [await asyncio.to_thread(settings_records_applied, worker) for worker in targets]
    await send(producer, topic, key, value)

    async def folded() -> bool:
        now = [await asyncio.to_thread(settings_records_applied, worker) for worker in targets]
        return all(after >= earlier + 1 for earlier, after in zip(before, now, strict=True))

    await wait_until(folded, 30, f"the triggers worker to fold the {topic} record {key}")
