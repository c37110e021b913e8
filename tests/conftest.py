"""Session-wide real services: one local broker, one PostgreSQL, one worker process.

Tests isolate themselves with unique customer and space ids instead of
restarting services, which keeps the suite fast on the local broker.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from suspensions.config import Settings
from suspensions.local.stack import LocalStack
from tests.support import TopicTail, WorkerProcess
from topics import (
    DEADLETTER,
    INVOICE_JOBS_ACCEPTED,
    INVOICE_JOBS_DROPPED,
    SUSPENSION_COMMANDS,
    SUSPENSION_STATE,
)

LOG_DIR = Path(os.environ.get("SUSPENSIONS_TEST_LOG_DIR", "/tmp/suspensions-test-logs"))


@pytest_asyncio.fixture(scope="session")
async def stack() -> AsyncIterator[LocalStack]:
    local = LocalStack(base=Settings())
    await local.start()
    yield local
    local.stop()


@pytest.fixture(scope="session")
def settings(stack: LocalStack) -> Settings:
    assert stack.settings is not None
    return stack.settings


@pytest_asyncio.fixture(scope="session")
async def workers(settings: Settings) -> AsyncIterator[WorkerProcess]:
    LOG_DIR.mkdir(parents=True, exist_ok=True)
    process = WorkerProcess(settings, log_path=LOG_DIR / "workers.log").start()
    try:
        await process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest_asyncio.fixture(scope="session")
async def tail(settings: Settings) -> AsyncIterator[TopicTail]:
    reader = await TopicTail(
        settings,
        (SUSPENSION_STATE.name, SUSPENSION_COMMANDS.name, INVOICE_JOBS_ACCEPTED.name,
         INVOICE_JOBS_DROPPED.name, DEADLETTER.name),
    ).start()
    yield reader
    await reader.stop()


@pytest_asyncio.fixture(scope="session")
async def producer(settings: Settings) -> AsyncIterator[AIOKafkaProducer]:
    client = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, acks="all")
    await client.start()
    yield client
    await client.stop()


@pytest_asyncio.fixture(scope="session")
async def db(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=4)
    yield pool
    await pool.close()
