"""What every case needs: records produced, topics made, worker processes started and timed, a broker of the case's own."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError

from bench.figures import Figure
from bench.probes import time_consumption
from models import CustomerState, Reason
from suspensions.local.broker import LocalBroker
from suspensions.local.processes import WorkerProcess, metric_total
from suspensions.local.seed import copy_states
from workers.runtime.config import Settings
from workers.runtime.kafka import create_topics


async def produce_all(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=20,
                                max_batch_size=512 * 1024, acks=1)
    await producer.start()
    try:
        pending = []
        for key, value in records:
            pending.append(await producer.send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def fresh_topics(settings: Settings, *names: str, partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        await admin.create_topics([NewTopic(n, partitions, 1) for n in names if n not in existing])
    finally:
        await admin.close()


# The local broker lets a new member join a group only after about half the session timeout, and a stopped
# member stays listed until then: the bench's workers, started one after another in the same groups, join
# sooner with a shorter one. Throughput is timed from the first record consumed, so no figure depends on it.
BENCH_GROUP_TIMEOUTS = {"SUSPENSIONS_KAFKA_SESSION_TIMEOUT_MS": "6000", "SUSPENSIONS_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
                        "SUSPENSIONS_KAFKA_REBALANCE_TIMEOUT_MS": "12000"}


def bench_worker(settings: Settings, *workers: str, **env: str) -> WorkerProcess:
    """A worker process as production runs it, quiet, its log in a temporary file. With ``BENCH_WORKER_TREE``
    set (a checkout of another commit), every worker the bench starts runs that tree's code, while the load
    and the measuring stay this tree's: a whole case, old against new (``bench/against_tree.py`` alternates one
    worker's throughput)."""
    log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log", delete=False)  # noqa: SIM115
    log.close()
    tree = os.environ.get("BENCH_WORKER_TREE")
    other_tree = {"PYTHONPATH": tree, "PYTHONSAFEPATH": "1"} if tree else {}
    return WorkerProcess(settings, workers, {"SUSPENSIONS_LOG_LEVEL": "WARNING", "SUSPENSIONS_LAG_SAMPLE_INTERVAL_S": "0",
                                              **BENCH_GROUP_TIMEOUTS, **other_tree, **env}, Path(log.name)).start()


async def skip_backlog(settings: Settings, group: str, topic: str) -> bool:
    """Commit the group's offsets at the topic's end: what an earlier case left (the triggers case's
    commands, say) is not this case's work. (The local broker's end offset can miss the last batch's
    tail: a few records at most.) The local broker refuses the commit while it still lists a stopped
    member of the group: then nothing is skipped, and False says so."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=group,
                                enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_end(*partitions)
        await consumer.commit({tp: await consumer.position(tp) for tp in partitions})
        return True
    except CommitFailedError:
        return False
    finally:
        await consumer.stop()


async def measure_worker(settings: Settings, worker_name: str, count: int, case: str, baseline: str,
                         baseline_rate: float, note: str, emitted: tuple[str, int] | None = None,
                         env: dict[str, str] | None = None, target_ratio: float = 0.5) -> Figure:
    """Start the worker on the backlog already produced; time it from first record to last."""
    worker = bench_worker(settings, worker_name, **(env or {}))
    try:
        await worker.wait_ready(120)
        seconds = await time_consumption(worker.http_port, count)
        if emitted is not None:  # outputs counted separately (the triggers' commands)
            name, expected = emitted
            while await asyncio.to_thread(metric_total, worker.http_port, name) < expected:
                await asyncio.sleep(0.02)
        figure = Figure(case, count, count / seconds, baseline, baseline_rate, peak_rss_mb=worker.peak_rss_bytes() / 1e6,
                        seconds=seconds, target=f"ratio >= {target_ratio}", notes=[note])
    finally:
        worker.stop()
    figure.met = (figure.ratio or 0) >= target_ratio
    return figure


async def seed_states(settings: Settings, rows: list[tuple[str, str, bool, list[str]]]) -> None:
    """Known customers straight into customer_state: (customer_id, space_id, suspended, reasons)."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(settings.database_url)
    try:
        await copy_states(conn, [
            CustomerState(customer, space, suspended, tuple(Reason(r) for r in reasons), now, None, 1, now, "seed")
            for customer, space, suspended, reasons in rows])
    finally:
        await conn.close()


async def holds_all(worker: WorkerProcess, name: str, partitions: int, timeout_s: float = 120.0,
                    processes: int = 1) -> None:
    """Wait until the worker's processes (``--processes``: the others serve on the HTTP port plus their
    number) hold all of its group's partitions between them."""
    deadline = time.monotonic() + timeout_s
    while True:
        held = 0
        for number in range(processes):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{worker.http_port + number}/readyz",
                                            timeout=2) as response:
                    held += json.loads(response.read())["workers"][name]["partitions"]
            except urllib.error.HTTPError as error:  # not ready yet (a process with no partition): same body
                held += json.loads(error.read())["workers"][name]["partitions"]
            except OSError:
                pass
        if held >= partitions:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the {name} worker holds {held} of {partitions} partitions after {timeout_s} s")
        await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def empty_broker(settings: Settings, own: bool) -> AsyncIterator[Settings]:
    """Settings pointing at a broker of the case's own, its topics empty, when the bench runs its own broker.
    The local broker's fetch slows as a partition grows (a relay over topics holding 300,000 records took
    twice as long as over empty ones), and the service's topics, unlike the relay's, keep every earlier
    case's records: each latency case, its baseline too, starts on empty topics. A configured broker is
    used as it is."""
    if not own:
        yield settings
        return
    broker = LocalBroker().start()
    try:
        case_settings = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
        await create_topics(case_settings)
        yield case_settings
    finally:
        broker.stop()
