"""Issue 7.4: two processes of every worker in the same groups, one added and one removed mid-stream."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration import builders
from tests.reliability.harness import (
    assert_each_published_once,
    assert_state_matches_oracle,
    command_stream,
    customers,
    distinct_commands,
    produce,
    read_topic,
    wait_until_decided,
)
from tests.support import WorkerProcess, publish_setting, uid
from topics import CUSTOMER_SIGNUPS, INVOICE_JOBS, SETTINGS_SIGNUP, SUSPENSION_COMMANDS
from workers.runtime.config import Settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


async def test_rebalances_lose_nothing_and_double_nothing(isolated: Settings, tmp_path: Path) -> None:
    space, signup_space = uid("space"), uid("space")
    stream = command_stream(customers(1_000), space, 12_000)
    signups = [builders.signup(c, signup_space) for c in customers(4_000)]
    jobs = [builders.invoice_job(c, space) for c in customers(4_000)]
    processes = [WorkerProcess(isolated, log_path=tmp_path / f"workers-{i}.log") for i in range(3)]
    try:
        for process in processes[:2]:
            process.start()
        await asyncio.gather(*(process.wait_ready() for process in processes[:2]))
        producer = AIOKafkaProducer(bootstrap_servers=isolated.kafka_bootstrap_servers)
        await producer.start()
        try:
            await publish_setting(producer, processes[:2], SETTINGS_SIGNUP.name, signup_space,
                                  builders.signup_setting(signup_space, True))
        finally:
            await producer.stop()

        # Paced over about a minute, so that both rebalances below happen while records flow.
        producing = asyncio.gather(
            produce(isolated, SUSPENSION_COMMANDS.name, stream, pace_every=100, pause_s=0.5),
            produce(isolated, CUSTOMER_SIGNUPS.name, signups, pace_every=35, pause_s=0.5),
            produce(isolated, INVOICE_JOBS.name, jobs, pace_every=35, pause_s=0.5),
        )
        processes[2].start()  # scale out mid-stream
        await processes[2].wait_ready()  # ready: the groups rebalanced and it holds its assignment
        assert not producing.done(), "the stream ended before the scale-out rebalance"
        assert await asyncio.to_thread(processes[0].stop) == 0  # and back in, mid-stream
        assert not producing.done(), "the stream ended before the scale-in rebalance"
        await producing

        await wait_until_decided(isolated.database_url, distinct_commands(stream) + len(signups), len(jobs))

        conn = await asyncpg.connect(isolated.database_url)
        try:
            assert await conn.fetchval(
                "SELECT count(*) FROM customer_state WHERE space_id = $1 AND version = 1 AND suspended",
                signup_space) == len(signups)
            assert await conn.fetchval("SELECT count(*) FROM invoice_decisions WHERE status = 'accepted'") == len(jobs)
            # Leave only the directly commanded customers for the oracle comparison.
            await conn.execute("DELETE FROM customer_state WHERE space_id = $1", signup_space)
            await conn.execute("DELETE FROM command_history WHERE space_id = $1", signup_space)
        finally:
            await conn.close()
        # No process crashed: every record is published exactly once, even across the rebalances.
        assert_each_published_once([record for _, record in await read_topic(isolated, "invoice.jobs.accepted")],
                                   lambda record: record["job_id"], {j["job_id"] for j in jobs}, 0)
        await assert_state_matches_oracle(isolated, stream, allowed_repeats=0)
        # The process added mid-stream took its share of every worker's partitions and did work.
        for worker in ("triggers", "state", "billing"):
            consumed = await asyncio.to_thread(processes[2].metric, "suspensions_records_consumed_total",
                                               worker=worker)
            assert consumed > 0, f"the added process's {worker} worker consumed nothing"
    finally:
        for process in processes:
            process.stop()
