"""The raw-client baselines every throughput case is a ratio of, and faust's own floor."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import asyncpg
import faust
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.plumbing import fresh_topics, produce_all
from workers.runtime.config import Settings
from workers.runtime.kafka import producer as kafka_producer
from workers.runtime.publishing import OutgoingRecord, send_all
from workers.triggers.lean_faust import faust_app, raw_topic, take_batches


async def _raw_loop(settings: Settings, source: str, target: str, total: int, pool: asyncpg.Pool | None) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, max_partition_fetch_bytes=4 * 1024 * 1024)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5,
                                max_batch_size=256 * 1024)
    await consumer.start()
    await producer.start()
    try:
        partitions = [TopicPartition(source, p) for p in sorted(consumer.partitions_for_topic(source) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        seen = 0
        started = None
        while seen < total:
            batches = await consumer.getmany(timeout_ms=200, max_records=2_000)
            records = [r for batch in batches.values() for r in batch]
            if not records:
                continue
            started = started or time.perf_counter()
            if pool is not None:
                async with pool.acquire() as conn:
                    await conn.execute(
                        "INSERT INTO bench_raw (key, value) SELECT * FROM unnest($1::text[], $2::bytea[]) "
                        "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        list({r.key.decode(): None for r in records}),
                        [records[-1].value] * len({r.key.decode(): None for r in records}),
                    )
            deliveries = [await producer.send(target, r.value, key=r.key) for r in records]
            await asyncio.gather(*deliveries)
            seen += len(records)
        return time.perf_counter() - (started or time.perf_counter())
    finally:
        await producer.stop()
        await consumer.stop()


async def faust_floor(settings: Settings, records: list[tuple[bytes, bytes]]) -> float:
    """Records/s of a faust agent that only forwards the records, built as the triggers worker is:
    the ceiling for any faust-based worker on this broker and machine (nothing decoded, no rules)."""
    run = uuid.uuid4().hex[:6]
    source, target = f"bench.faust.in.{run}", f"bench.faust.out.{run}"
    await fresh_topics(settings, source, target)
    await produce_all(settings, source, records)
    app = faust_app(settings, f"bench-faust-{run}")
    finished = asyncio.Event()
    progress = {"seen": 0, "started": 0.0, "ended": 0.0}
    async with kafka_producer(settings) as producer:

        @app.agent(raw_topic(app, source))
        async def forward(stream: faust.StreamT[Any]) -> None:
            async for events in take_batches(stream, settings):
                progress["started"] = progress["started"] or time.perf_counter()
                await app.unacknowledged.add(await send_all(
                    producer, [OutgoingRecord(target, e.message.key, e.message.value or b"", None) for e in events]))
                progress["seen"] += len(events)
                if progress["seen"] >= len(records):
                    finished.set()

        app.finalize()
        await app.start()
        try:
            await asyncio.wait_for(finished.wait(), 600)
            await app.unacknowledged.settled()
            progress["ended"] = time.perf_counter()
        finally:
            await app.stop()
    return len(records) / (progress["ended"] - progress["started"])


async def raw_baselines(settings: Settings, records: list[tuple[bytes, bytes]]) -> tuple[float, float]:
    """Records/s of the raw pass-through and of the raw persistence loops over the same records."""
    run = uuid.uuid4().hex[:6]
    source, out_a, out_b = f"bench.raw.in.{run}", f"bench.raw.out1.{run}", f"bench.raw.out2.{run}"
    await fresh_topics(settings, source, out_a, out_b)
    await produce_all(settings, source, records)
    passthrough = len(records) / await _raw_loop(settings, source, out_a, len(records), None)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        await pool.execute("DROP TABLE IF EXISTS bench_raw; CREATE TABLE bench_raw (key text PRIMARY KEY, value bytea)")
        persistence = len(records) / await _raw_loop(settings, source, out_b, len(records), pool)
    finally:
        await pool.close()
    return passthrough, persistence
