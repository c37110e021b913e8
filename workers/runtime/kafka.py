"""Kafka at the edge: clients built from the one Settings object, and topic creation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from models.version import SERVICE_VERSION
from topics import ALL_TOPICS, TopicSpec
from workers.runtime.broker_check import BrokerCheck, BrokerUnavailable, check_broker
from workers.runtime.config import Settings
from workers.runtime.retry import retry

log = logging.getLogger(__name__)

# What the broker's logs and request metrics name the service's clients by: which release, during a rolling upgrade.
CLIENT_ID = f"suspensions-{SERVICE_VERSION}"


def make_producer(settings: Settings, **overrides: object) -> AIOKafkaProducer:
    return AIOKafkaProducer(**{"client_id": CLIENT_ID, **settings.producer_options(), **overrides})


def make_consumer(settings: Settings, group_id: str | None, *topics: str, **overrides: object) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **{"client_id": CLIENT_ID, **settings.consumer_options(group_id), **overrides})


def make_admin(settings: Settings, **overrides: object) -> AIOKafkaAdminClient:
    options: dict[str, object] = {"client_id": CLIENT_ID, **settings.kafka_security_options(),
                                  "bootstrap_servers": settings.kafka_bootstrap_servers,
                                  "request_timeout_ms": settings.kafka_request_timeout_ms}
    return AIOKafkaAdminClient(**{**options, **overrides})


async def start_client(client: AIOKafkaProducer | AIOKafkaConsumer | AIOKafkaAdminClient,
                       settings: Settings) -> None:
    """Start a client; when it cannot, raise BrokerUnavailable with the cause in one line.

    The broker check runs beside the start: a client can wait the whole request timeout on a listener
    that never answers its protocol, where the check knows the cause within seconds."""
    starting = asyncio.ensure_future(client.start())
    checking = asyncio.ensure_future(check_broker(settings))
    try:
        await asyncio.wait({starting, checking}, return_when=asyncio.FIRST_COMPLETED)
        if checking.done() and not checking.result().ok and not starting.done():
            starting.cancel()
            raise BrokerUnavailable(checking.result())
        try:
            await starting
        except KafkaError as error:
            check = await checking
            if check.ok:  # the broker answers the check: the client's own error is the cause
                check = BrokerCheck(check.address, f"{type(error).__name__}: {error}")
            raise BrokerUnavailable(check) from None
    except BaseException:
        for task in (starting, checking):
            task.cancel()
        await asyncio.gather(starting, checking, return_exceptions=True)
        with contextlib.suppress(Exception):
            await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise
    checking.cancel()
    await asyncio.gather(checking, return_exceptions=True)


async def start_producer(settings: Settings, stop: asyncio.Event | None = None,
                         on_unavailable: Callable[[BrokerCheck], None] | None = None) -> AIOKafkaProducer:
    """A started producer, waiting for the broker with backoff at start-up; each failed attempt is
    logged once with its cause (and passed to ``on_unavailable``, e.g. for readiness)."""
    async def start() -> AIOKafkaProducer:
        client = make_producer(settings)
        await start_client(client, settings)
        return client

    def unavailable(error: BaseException, delay: float) -> None:
        check = error.check if isinstance(error, BrokerUnavailable) else BrokerCheck("?", repr(error))
        log.warning("broker unavailable, retrying", extra={"cause": str(check), "backoff_s": delay})
        if on_unavailable is not None:
            on_unavailable(check)

    client, _ = await retry(start, (KafkaError, BrokerUnavailable), settings.backoff, unavailable, stop)
    return client


@asynccontextmanager
async def producer(settings: Settings, **overrides: object) -> AsyncIterator[AIOKafkaProducer]:
    client = make_producer(settings, **overrides)
    await start_client(client, settings)
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
    await start_client(admin, settings)
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


async def topic_config(settings: Settings, topic: str, name: str) -> str | None:
    """One configuration value of a topic as the broker reports it (DescribeConfigs); None when it does not."""
    admin = make_admin(settings)
    try:
        await start_client(admin, settings)
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    except (KafkaError, ValueError, TypeError, OSError):
        return None
    finally:
        await admin.close()
    for response in responses:
        for resource in response.resources:
            # (error_code, error_message, resource_type, resource_name, config_entries)
            for entry in resource[4]:
                if entry[0] == name and entry[1] is not None:
                    return str(entry[1])
    return None


async def caught_up(consumer: AIOKafkaConsumer, partitions: Iterable[TopicPartition]) -> bool:
    """Whether the consumer read these partitions to the high watermark of its last fetch (the local broker
    answers ``end_offsets`` wrongly, so the fetch's high watermark is the end)."""
    for tp in partitions:
        highwater = consumer.highwater(tp)
        if highwater is None or await consumer.position(tp) < highwater:
            return False
    return True


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
