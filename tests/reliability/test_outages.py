"""Issue 7.2, 7.3, 7.7: database and broker outages, and graceful shutdown under load."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import asyncpg
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from suspensions.local.broker import LocalBroker
from suspensions.local.ports import port_open
from suspensions.local.postgres import LocalPostgres
from tests.integration import builders
from tests.reliability.harness import (
    assert_state_matches_oracle,
    command_stream,
    count,
    customers,
    distinct_commands,
    produce,
    wait_for_count,
    wait_until_decided,
)
from tests.support import WorkerProcess, uid, wait_until
from topics import INVOICE_JOBS, SUSPENSION_COMMANDS
from workers.runtime.config import Settings
from workers.runtime.kafka import create_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _ready(worker: WorkerProcess) -> bool:
    return worker.readyz()


async def _becomes(worker: WorkerProcess, ready: bool, timeout_s: float, what: str) -> None:
    async def check() -> bool:
        return await asyncio.to_thread(_ready, worker) is ready

    await wait_until(check, timeout_s, what)


async def test_database_outage_under_load(own_postgres: tuple[Settings, LocalPostgres], tmp_path: Path) -> None:
    local, postgres = own_postgres
    space = uid("space")
    stream = command_stream(customers(1_000), space, 10_000)
    jobs = [builders.invoice_job(c, space) for c in customers(3_000)]
    # The first part flows before and into the outage; the rest is produced while PostgreSQL is down (after
    # the first part, so each customer's commands keep their order).
    before, during = stream[:6_000], stream[6_000:]
    jobs_before, jobs_during = jobs[:2_000], jobs[2_000:]
    worker = WorkerProcess(local, ("state", "billing"), log_path=tmp_path / "workers.log").start()
    try:
        await worker.wait_ready()
        producing = asyncio.gather(
            produce(local, SUSPENSION_COMMANDS.name, before, pace_every=500, pause_s=0.2),
            produce(local, INVOICE_JOBS.name, jobs_before, pace_every=200, pause_s=0.2),
        )
        await wait_for_count(local.database_url, "SELECT count(*) FROM processed_commands", 1_000, 60,
                             "load under way")
        await asyncio.to_thread(postgres.stop, keep_data=True)
        down_at = time.monotonic()
        on_the_broker_at_down = {topic: set(await _records_by_offset(local, topic))
                                 for topic in (SUSPENSION_COMMANDS.name, INVOICE_JOBS.name)}
        await _becomes(worker, False, 30, "not ready while PostgreSQL is down")
        await producing
        await asyncio.gather(produce(local, SUSPENSION_COMMANDS.name, during, pace_every=500, pause_s=0.2),
                             produce(local, INVOICE_JOBS.name, jobs_during, pace_every=200, pause_s=0.2))

        async def outage_over() -> bool:  # the outage itself lasts 10 s, as specified
            assert worker.process is not None and worker.process.poll() is None, "worker crashed"
            return time.monotonic() - down_at >= 10

        await wait_until(outage_over, 30, "the 10 s of the outage")
        # What the broker received while PostgreSQL was down: load kept flowing through the outage.
        outage_commands = await _produced_since(local, SUSPENSION_COMMANDS.name, on_the_broker_at_down)
        outage_jobs = await _produced_since(local, INVOICE_JOBS.name, on_the_broker_at_down)
        assert {c["command_id"] for c in during} <= {c["command_id"] for c in outage_commands}
        assert {j["job_id"] for j in jobs_during} <= {j["job_id"] for j in outage_jobs}
        await asyncio.to_thread(postgres.restart_after_stop)
        await wait_until_decided(local.database_url, distinct_commands(stream), len(jobs), 180)
        await _becomes(worker, True, 60, "ready again")
        # Every record produced during the outage was applied after it.
        conn = await asyncpg.connect(local.database_url)
        try:
            applied = {row["command_id"] for row in await conn.fetch(
                "SELECT command_id FROM processed_commands WHERE command_id = ANY($1::text[])",
                [c["command_id"] for c in outage_commands])}
            decided = {row["job_id"] for row in await conn.fetch(
                "SELECT job_id FROM invoice_decisions WHERE job_id = ANY($1::text[])",
                [j["job_id"] for j in outage_jobs])}
        finally:
            await conn.close()
        assert applied == {c["command_id"] for c in outage_commands}
        assert decided == {j["job_id"] for j in outage_jobs}
        await assert_state_matches_oracle(local, stream)
        # This process started with no retries counted: the outage caused every one of them.
        retries = await asyncio.to_thread(worker.metric, "suspensions_transient_failures_total",
                                          dependency="postgresql")
        assert retries >= 1
    finally:
        assert worker.stop() == 0


async def _produced_since(settings: Settings, topic: str,
                          before: dict[str, set[tuple[int, int]]]) -> list[dict[str, Any]]:
    """The records of `topic` on the broker now that were not at (partition, offset)s of `before`."""
    return [record for at, record in (await _records_by_offset(settings, topic)).items() if at not in before[topic]]


async def _records_by_offset(settings: Settings, topic: str) -> dict[tuple[int, int], dict[str, Any]]:
    """Every record of a topic, from the beginning to its current end (fetch high watermark), by (partition, offset)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: dict[tuple[int, int], dict[str, Any]] = {}

        async def read_to_the_end() -> bool:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for batch in batches.values():
                records.update(((r.partition, r.offset), orjson.loads(r.value)) for r in batch)
            for tp in partitions:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    return False
            return not batches

        await wait_until(read_to_the_end, 60, f"{topic} read to its end")
        return records
    finally:
        await consumer.stop()


async def test_broker_outage_reconnects_without_manual_action(isolated: Settings, tmp_path: Path) -> None:
    host, port = isolated.kafka_bootstrap_servers.split(":")
    worker = WorkerProcess(isolated, ("state", "billing"), log_path=tmp_path / "workers.log").start()
    replacement = None
    try:
        await worker.wait_ready()
        # The local broker keeps topics in memory: stop it, start a new one on the same port, recreate topics.
        subprocess.run(["pkill", "-f", f"listener-url tcp://{host}:{port}"], check=True)
        await wait_until(lambda: asyncio.to_thread(lambda: not port_open(host, int(port))), 30, "the broker gone")
        await _becomes(worker, False, 60, "not ready while the broker is down")
        replacement = LocalBroker(port=int(port)).start()
        await create_topics(isolated)
        await _becomes(worker, True, 120, "ready again after the broker came back")
        customer, space = uid("cust"), uid("space")
        await produce(isolated, SUSPENSION_COMMANDS.name, [builders.command(customer, space)])
        await wait_until(lambda: count(isolated.database_url,
                                       "SELECT count(*) FROM customer_state WHERE customer_id = $1", customer),
                         60, "a command applied after reconnecting")
        assert worker.process is not None and worker.process.poll() is None
    finally:
        worker.stop()
        if replacement:
            replacement.stop()


async def test_sigterm_during_load_finishes_the_batch_and_exits_in_grace(isolated: Settings,
                                                                           tmp_path: Path) -> None:
    stream = command_stream(customers(1_000), uid("space"), 20_000)
    distinct = len({c["command_id"] for c in stream})
    grace = 10.0
    env = {"SUSPENSIONS_SHUTDOWN_GRACE_S": str(grace)}
    worker = WorkerProcess(isolated, ("state",), env, tmp_path / "state-1.log").start()
    second = None
    try:
        await worker.wait_ready()
        producing = asyncio.create_task(produce(isolated, SUSPENSION_COMMANDS.name, stream))
        await wait_for_count(isolated.database_url, "SELECT count(*) FROM processed_commands", 3_000, 60, "load")
        assert worker.process is not None
        started = time.monotonic()
        worker.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(worker.process.wait, grace + 10)
        elapsed = time.monotonic() - started
        # docs/architecture.md: the batch held is finished and committed, the worker leaves its group, and all
        # of it within SUSPENSIONS_SHUTDOWN_GRACE_S (docs/guarantees.md: "exit within grace").
        assert code == 0 and elapsed < grace, elapsed
        log = (tmp_path / "state-1.log").read_text()
        assert '"worker stopped"' in log or "worker stopped" in log
        await producing
        applied_before_restart = await count(isolated.database_url, "SELECT count(*) FROM processed_commands")
        committed = await _committed_offsets(isolated)

        # Nothing is redone beyond the last uncommitted batch: the restart re-reads at most one batch.
        second = WorkerProcess(isolated, ("state",), env, tmp_path / "state-2.log").start()
        await wait_for_count(isolated.database_url, "SELECT count(*) FROM processed_commands", distinct, 180,
                             "the rest applied after the restart")
        # Every batch applied before the stop was committed (records >= distinct commands among them).
        assert sum(committed.values()) >= applied_before_restart
        await assert_state_matches_oracle(isolated, stream)
        conn = await asyncpg.connect(isolated.database_url)
        try:
            assert await conn.fetchval("SELECT count(*) FROM command_history") == distinct
        finally:
            await conn.close()
    finally:
        worker.stop()
        if second:
            second.stop()


async def _committed_offsets(settings: Settings) -> dict[int, int]:
    from aiokafka import TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        partitions = [TopicPartition(SUSPENSION_COMMANDS.name, p) for p in range(settings.topic_partitions)]
        offsets = await admin.list_consumer_group_offsets(settings.state_group, partitions=partitions)
        return {tp.partition: max(meta.offset, 0) for tp, meta in offsets.items()}
    finally:
        await admin.close()
