"""The floor for end-to-end latency on this machine: a raw two-hop aiokafka relay, each hop a process.

Hop 1 passes records on as they come (like the triggers worker, without decoding or rules); hop 2
upserts each batch into PostgreSQL in one statement, then passes it on (like the state worker,
without the rules, the history or the outbox). Same broker, same fetch wait, same offered rate as
the pipeline it is compared with.

    python -m bench.relay HOP SOURCE TARGET   (SUSPENSIONS_* settings from the environment)
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from workers.runtime.config import Settings


async def relay(hop: int, source: str, target: str) -> None:
    settings = Settings()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=0)
    pool = await asyncpg.create_pool(settings.database_url, min_size=1, max_size=2) if hop == 2 else None
    await consumer.start()
    await producer.start()
    try:
        if pool is not None:
            await pool.execute("CREATE TABLE IF NOT EXISTS bench_relay (key text PRIMARY KEY, value bytea)")
        partitions = [TopicPartition(source, p) for p in sorted(consumer.partitions_for_topic(source) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        for partition in partitions:
            await consumer.position(partition)
        print("ready", flush=True)
        while True:
            batches = await consumer.getmany(timeout_ms=100, max_records=2_000)
            records = [record for batch in batches.values() for record in batch]
            if not records:
                continue
            if pool is not None:
                latest = {record.key.decode(): record.value for record in records}
                await pool.execute(
                    "INSERT INTO bench_relay (key, value) SELECT * FROM unnest($1::text[], $2::bytea[]) "
                    "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", list(latest), list(latest.values()))
            deliveries = [await producer.send(target, record.value, key=record.key) for record in records]
            await asyncio.gather(*deliveries)
    finally:
        await producer.stop()
        await consumer.stop()
        if pool is not None:
            await pool.close()


if __name__ == "__main__":
    asyncio.run(relay(int(sys.argv[1]), sys.argv[2], sys.argv[3]))
