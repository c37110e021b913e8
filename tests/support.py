"""Test helpers that cross the real broker and PostgreSQL: no mocks, no sleeps as synchronisation."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from suspensions.config import Settings
from suspensions.local.ports import free_port

Record = dict[str, Any]


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
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


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


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SUSPENSIONS_")}
    env.update({
        "SUSPENSIONS_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "SUSPENSIONS_DATABASE_URL": settings.database_url,
        "SUSPENSIONS_LOG_FORMAT": "json",
        "SUSPENSIONS_BATCH_TIMEOUT_MS": "20",
    })
    env.update(extra)
    return env


@dataclass
class WorkerProcess:
    """`suspensions run ...` as a real process, as production runs it."""

    settings: Settings
    workers: tuple[str, ...] = ()
    extra_env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    http_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        env = service_env(self.settings, SUSPENSIONS_HTTP_PORT=str(self.http_port), **self.extra_env)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "suspensions", "run", *self.workers], env=env, stdout=log, stderr=log,
        )
        return self

    def readyz(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/readyz", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    async def wait_ready(self, timeout_s: float = 90.0) -> None:
        async def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                raise AssertionError(f"worker process exited with {self.process.returncode} (log: {self.log_path})")
            return await asyncio.to_thread(self.readyz)

        await wait_until(ready, timeout_s, f"workers {self.workers or 'all'} ready")

    def stop(self, timeout_s: float = 40.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def run_cli(settings: Settings, *args: str, timeout_s: float = 120.0, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "suspensions", *args], env=service_env(settings), capture_output=True,
        text=True, timeout=timeout_s, input=stdin,
    )


def settings_records_applied(worker: WorkerProcess) -> float:
    """How many settings records the worker's triggers have folded so far (from /metrics)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.http_port}/metrics", timeout=2) as response:
        body = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in body.splitlines()
               if line.startswith("suspensions_settings_records_total{"))


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
