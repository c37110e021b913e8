"""Kafka at the edge: clients built from the one Settings object, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from topics import ALL_TOPICS, TopicSpec
from workers.runtime.config import Settings
from workers.runtime.retry import retry

log = logging.getLogger(__name__)


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    return AIOKafkaProducer(**{**settings.producer_options(), **overrides})


def make_consumer(settings: Settings, group_id: str | None, *topics: str, **overrides: object) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **{**settings.consumer_options(group_id), **overrides})


def make_admin(settings: Settings, **overrides: object) -> AIOKafkaAdminClient:
    options: dict[str, object] = {"bootstrap_servers": settings.kafka_bootstrap_servers,
                                  "request_timeout_ms": settings.kafka_request_timeout_ms}
    return AIOKafkaAdminClient(**{**options, **overrides})


def _log_unreachable(error: BaseException, delay: float) -> None:
    log.warning("broker unreachable, retrying", extra={"error": repr(error), "backoff_s": delay})


async def start_producer(settings: Settings, stop: asyncio.Event | None = None) -> AIOKafkaProducer:
    """A started producer, waiting for the broker with backoff at start-up."""
    async def start() -> AIOKafkaProducer:
        client = make_producer(settings)
        try:
            await client.start()
        except KafkaError:
            await client.stop()
            raise
        return client

    client, _ = await retry(start, (KafkaError,), settings.backoff, _log_unreachable, stop)
    return client


async def broker_answers(settings: Settings) -> bool:
    """A fresh connection each time: a broker that went away fails fast instead of hanging in retries."""
    admin = make_admin(settings, request_timeout_ms=3_000)
    try:
        await asyncio.wait_for(admin.start(), 3)
        await asyncio.wait_for(admin.list_topics(), 3)
        return True
    except Exception:  # noqa: BLE001 - any failure means not reachable
        return False
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


@asynccontextmanager
async def producer(settings: Settings, **overrides: object) -> AsyncIterator[AIOKafkaProducer]:
    client = make_producer(settings, **overrides)
    await client.start()
    try:
        yield client
    finally:
        await client.stop()


async def create_topics(settings: Settings, specs: Iterable[TopicSpec] = ALL_TOPICS) -> list[str]:
    """Create every topic of the catalogue that does not exist yet; returns the names created.

    Safe to run again. Topics are created explicitly because auto-created topics
    get the broker's defaults (and no compaction).
    """
    admin = make_admin(settings)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions or settings.topic_partitions,
                replication_factor=settings.topic_replication_factor,
                topic_configs=spec.configs(),
            )
            for spec in specs
            if spec.name not in existing
        ]
        created: list[str] = []
        for topic in wanted:
            try:
                await admin.create_topics([topic])
                created.append(topic.name)
            except TopicAlreadyExistsError:
                pass
        await _wait_for_metadata(admin, [topic.name for topic in wanted])
        return created
    finally:
        await admin.close()


async def _wait_for_metadata(admin: AIOKafkaAdminClient, names: list[str], timeout_s: float = 15) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while names:
        try:
            known = set(await admin.list_topics())
        except KafkaError:
            known = set()
        names = [name for name in names if name not in known]
        if not names:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"topics not visible after creation: {names}")
        await asyncio.sleep(0.1)
