"""Session-wide real services: one local broker, one PostgreSQL, one worker process.

Tests isolate themselves with unique customer and space ids instead of
restarting services, which keeps the suite fast on the local broker.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from suspensions.local.broker import LocalBroker
from suspensions.local.postgres import LocalPostgres
from suspensions.local.stack import LocalStack
from tests.support import TopicTail, WorkerProcess, create_database
from topics import (
    DEADLETTER,
    INVOICE_JOBS_ACCEPTED,
    INVOICE_JOBS_DROPPED,
    SUSPENSION_COMMANDS,
    SUSPENSION_EVENTS,
    SUSPENSION_STATE,
)
from workers.runtime.config import Settings
from workers.runtime.db.migrate import migrate
from workers.runtime.kafka import create_topics

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
        (SUSPENSION_STATE.name, SUSPENSION_EVENTS.name, SUSPENSION_COMMANDS.name, INVOICE_JOBS_ACCEPTED.name,
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


@pytest_asyncio.fixture
async def isolated(settings: Settings) -> AsyncIterator[Settings]:
    """A broker and a database of the test's own, for tests that start, stop or kill workers.

    The database lives on the session's PostgreSQL server; the broker is a fresh Tansu. Nothing
    of the session workers can see either, so outbox rows never cross between the two stacks.
    """
    url = await create_database(settings, "db")
    broker = LocalBroker().start()
    try:
        local = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers,
                                            "database_url": url})
        await migrate(url)
        await create_topics(local)
        yield local
    finally:
        broker.stop()


@pytest_asyncio.fixture
async def own_postgres(settings: Settings) -> AsyncIterator[tuple[Settings, LocalPostgres]]:
    """A broker and a PostgreSQL server of the test's own, for tests that stop and start the database."""
    postgres = LocalPostgres()
    await asyncio.to_thread(postgres.start)
    broker = LocalBroker().start()
    try:
        local = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers,
                                            "database_url": postgres.url})
        await migrate(local.database_url)
        await create_topics(local)
        yield local, postgres
    finally:
        broker.stop()
        await asyncio.to_thread(postgres.stop)
