"""The benchmark cases. Each returns a Figure; the baselines run on the same broker and database."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import faust
import httpx
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import CommitFailedError
from aiokafka.partitioner import DefaultPartitioner

from bench.probes import time_consumption
from models import Action, CustomerState, Reason, ScheduledEntry, utc_iso
from suspensions import access
from suspensions.local.broker import LocalBroker
from suspensions.local.ports import free_port
from suspensions.local.processes import WorkerProcess, metric_total, service_env
from topics import (
    CRM_OPPORTUNITIES,
    CUSTOMER_PLAN_CHANGES,
    CUSTOMER_SIGNUPS,
    INVOICE_JOBS,
    SETTINGS_CRM_STAGES,
    SETTINGS_PLANS,
    SETTINGS_SIGNUP,
    SUSPENSION_COMMANDS,
    SUSPENSION_STATE,
)
from workers.runtime.config import Settings
from workers.runtime.db import repository
from workers.runtime.kafka import create_topics
from workers.runtime.kafka import producer as kafka_producer
from workers.runtime.publishing import OutgoingRecord, send_all
from workers.triggers.lean_faust import faust_app, raw_topic, take_batches


@dataclass
class Figure:
    case: str
    records: int
    records_per_s: float | None = None
    baseline: str | None = None
    baseline_records_per_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    peak_rss_mb: float | None = None
    seconds: float | None = None
    target: str = ""
    met: bool | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        if self.records_per_s and self.baseline_records_per_s:
            return self.records_per_s / self.baseline_records_per_s
        return None


def now_iso() -> str:
    return utc_iso()


# --- plumbing -------------------------------------------------------------------------------


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


def bench_worker(settings: Settings, *workers: str, **env: str) -> WorkerProcess:
    """A worker process as production runs it, quiet, its log in a temporary file."""
    log = tempfile.NamedTemporaryFile(prefix="bench-worker-", suffix=".log", delete=False)  # noqa: SIM115
    log.close()
    return WorkerProcess(settings, workers, {"SUSPENSIONS_LOG_LEVEL": "WARNING",
                                              "SUSPENSIONS_LAG_SAMPLE_INTERVAL_S": "0", **env}, Path(log.name)).start()


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
        await repository.copy_states(conn, [
            CustomerState(customer, space, suspended, tuple(Reason(r) for r in reasons), now, None, 1, now, "seed")
            for customer, space, suspended, reasons in rows])
    finally:
        await conn.close()


# --- baselines ------------------------------------------------------------------------------


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
                    producer, [OutgoingRecord(target, e.message.key, e.message.value, None) for e in events]))
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


# --- the project's workers ------------------------------------------------------------------


def event_mix(count: int, spaces: int = 20, seed: int = 1
              ) -> tuple[list[tuple[str, bytes, bytes]], list[tuple[str, str, dict[str, Any]]], int]:
    """Signup, plan and CRM events where about a third fire a rule; returns events, settings, commands expected."""
    rng = random.Random(seed)
    settings_records = []
    for s in range(spaces):
        space = f"bspace-{s}"
        settings_records.append((SETTINGS_SIGNUP.name, space, {"space_id": space, "keep_new_members_suspended": s % 3 == 0,
                                                              "updated_at": now_iso()}))
        settings_records.append((SETTINGS_PLANS.name, f"probation-{s}", {
            "space_id": space, "plan_id": f"probation-{s}", "suspend_on_join": True, "updated_at": now_iso()}))
        settings_records.append((SETTINGS_CRM_STAGES.name, f"sales-{s}/bad-debt", {
            "space_id": space, "board_id": f"sales-{s}", "stage_id": "bad-debt", "deactivate_account": True,
            "updated_at": now_iso()}))
    events = []
    expected = 0
    for i in range(count):
        s = rng.randrange(spaces)
        space, customer = f"bspace-{s}", f"bc-{i}"
        base = {"event_id": f"be-{i}", "occurred_at": now_iso(), "space_id": space, "customer_id": customer}
        kind = i % 3
        if kind == 0:
            plan = f"probation-{s}" if rng.random() < 0.2 else "standard"
            events.append((CUSTOMER_SIGNUPS.name, customer, base | {"email": f"{customer}@example.com", "plan_id": plan}))
            expected += max(1, (s % 3 == 0) + (plan != "standard"))  # a signup always gets a decision
        elif kind == 1:
            plan = f"probation-{s}" if rng.random() < 0.3 else "standard"
            events.append((CUSTOMER_PLAN_CHANGES.name, customer, base | {"plan_id": plan, "previous_plan_id": "x"}))
            expected += plan != "standard"
        else:
            stage = "bad-debt" if rng.random() < 0.3 else "won"
            events.append((CRM_OPPORTUNITIES.name, customer, base | {
                "opportunity_id": f"o-{i}", "board_id": f"sales-{s}", "stage_id": stage}))
            expected += stage == "bad-debt"
    encoded = [(topic, key.encode(), orjson.dumps(value)) for topic, key, value in events]
    return encoded, settings_records, expected


async def produce_settings(settings: Settings, records: list[tuple[str, str, dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, orjson.dumps(value), key=key.encode())
    finally:
        await producer.stop()


async def produce_event_mix(settings: Settings, count: int, seed: int = 1) -> int:
    """The settings and events of ``event_mix`` on their topics; returns the commands they will fire."""
    events, settings_records, expected = event_mix(count, seed=seed)
    await produce_settings(settings, settings_records)
    for topic in (CUSTOMER_SIGNUPS.name, CUSTOMER_PLAN_CHANGES.name, CRM_OPPORTUNITIES.name):
        await produce_all(settings, topic, [(k, v) for t, k, v in events if t == topic])
    return expected


async def triggers_case(settings: Settings, count: int, passthrough: float, faust_floor: float) -> Figure:
    expected = await produce_event_mix(settings, count)
    figure = await measure_worker(settings, "triggers", count, "triggers worker", "raw pass-through", passthrough,
                                  f"{expected} commands emitted",
                                  emitted=("suspensions_trigger_commands_emitted_total", expected), target_ratio=0.25)
    if faust_floor and figure.records_per_s:
        figure.notes.append(f"{figure.records_per_s / faust_floor:.2f} of the faust floor")
    return figure


def command_stream(count: int, customers: int, seed: int = 2, prefix: str = "") -> list[tuple[bytes, bytes]]:
    rng = random.Random(seed)
    records = []
    issued = now_iso()
    for i in range(count):
        customer = f"{prefix}sc-{rng.randrange(customers)}"
        action = "suspend" if rng.random() < 0.7 else "lift"
        reason = rng.choice(["signup", "plan", "crm_stage", "manual"]) if action == "suspend" else "manual"
        records.append((customer.encode(), orjson.dumps({
            "command_id": f"{prefix}bcmd-{i}", "issued_at": issued, "space_id": "bench", "customer_id": customer,
            "action": action, "reason": reason, "actor": "system"})))
    return records


async def state_case(settings: Settings, count: int, customers: int, persistence: float) -> list[Figure]:
    """The state worker as deployed (lifecycle events on), and the same work with events off: what the
    events cost, as a ratio of the two (target: at most 10% less throughput)."""
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    await produce_all(settings, SUSPENSION_COMMANDS.name, command_stream(count, customers, prefix="off-"))
    off = await measure_worker(settings, "state", count, "state worker, lifecycle events off", "raw persistence",
                               persistence, f"{customers} customers",
                               env={"SUSPENSIONS_LIFECYCLE_EVENTS": "false"})
    await produce_all(settings, SUSPENSION_COMMANDS.name, command_stream(count, customers))
    on = await measure_worker(settings, "state", count, "state worker", "raw persistence", persistence,
                              f"{customers} customers; lifecycle events on")
    if on.records_per_s and off.records_per_s:
        with_events = on.records_per_s / off.records_per_s
        off.target, off.met = "events on >= 0.9 of off", with_events >= 0.9
        off.notes.append(f"events on / events off = {with_events:.2f}")
    return [on, off]


def invoice_jobs(count: int, customers: int, prefix: str = "") -> list[tuple[bytes, bytes]]:
    rng = random.Random(3)
    jobs = []
    for i in range(count):
        customer = f"jc-{rng.randrange(customers)}"
        jobs.append((customer.encode(), orjson.dumps({
            "job_id": f"{prefix}bjob-{i}", "space_id": "bench", "customer_id": customer, "contract_id": f"k-{customer}",
            "period_start": "2026-12-01", "period_end": "2026-12-31", "amount": "120.00", "currency": "EUR"})))
    return jobs


async def billing_case(settings: Settings, count: int, customers: int, persistence: float) -> Figure:
    suspended = {f"jc-{i}" for i in range(0, customers, 10)}  # 10% of the customers
    await seed_states(settings, [(c, "bench", True, ["manual"]) for c in sorted(suspended)])
    await produce_all(settings, INVOICE_JOBS.name, invoice_jobs(count, customers))
    return await measure_worker(settings, "billing", count, "billing consumer", "raw persistence", persistence,
                                "10% of jobs for suspended customers")


WARM_UP_LIMIT_S = 60.0


@dataclass
class Latencies:
    latencies: list[float]  # seconds, in the order the records arrived
    sent_times: list[float]  # when each measured record was sent
    warm_up_s: float

    def figure(self, case: str, rate: int, seconds: float, floor: Latencies | None) -> Figure:
        ordered = sorted(self.latencies)
        p50, p99 = statistics.median(ordered) * 1000, ordered[int(len(ordered) * 0.99) - 1] * 1000
        figure = Figure(case, len(ordered), p50_ms=p50, p99_ms=p99, seconds=seconds)
        if floor is not None:
            floor_ordered = sorted(floor.latencies)
            floor_p50 = statistics.median(floor_ordered) * 1000
            floor_p99 = floor_ordered[int(len(floor_ordered) * 0.99) - 1] * 1000
            figure.baseline = "raw two-hop relay, same rate"
            figure.target = "p50 <= 1.2x, p99 <= 1.5x of the relay"
            figure.met = p50 <= 1.2 * floor_p50 and p99 <= 1.5 * floor_p99
            figure.notes.append(f"relay p50 {floor_p50:.0f} ms, p99 {floor_p99:.0f} ms: ratios "
                                f"{p50 / floor_p50:.2f} / {p99 / floor_p99:.2f}")
        figure.notes.append(f"steady {rate} records/s for {seconds:.0f} s, after {self.warm_up_s:.1f} s of warm-up "
                            "at the same rate" + ("" if self.warm_up_s < WARM_UP_LIMIT_S else " (never settled)"))
        first = min(self.sent_times, default=0.0)
        thirds: list[list[float]] = [[], [], []]
        for sent_at, latency in zip(self.sent_times, self.latencies, strict=True):
            thirds[min(2, int(3 * (sent_at - first) / seconds))].append(latency)
        figure.notes.append("p99 by third of the run: " + " / ".join(
            f"{sorted(part)[max(0, int(len(part) * 0.99) - 1)] * 1000:.0f} ms" for part in thirds if part))
        return figure


async def offered_latencies(settings: Settings, send_topic: str, receive_topic: str, rate: int, seconds: float,
                            value_of: Callable[[str], bytes], prefix: str, logs: list[Path]) -> Latencies:
    """Records sent at ``rate`` per second (after a warm-up at the same rate), each timed until a record with
    its key arrives on ``receive_topic``."""
    sent: dict[str, float] = {}
    latencies: list[float] = []
    sent_times: list[float] = []
    warm: list[float] = []  # latencies of the warm-up records (keys "-w<i>")
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=0)
    await producer.start()
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers,
                                group_id=None, auto_offset_reset="latest", fetch_max_wait_ms=5)
    await consumer.start()
    partitions = [TopicPartition(receive_topic, p) for p in sorted(consumer.partitions_for_topic(receive_topic) or ())]
    if not partitions:
        raise RuntimeError(f"no partitions known for {receive_topic}")
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for partition in partitions:  # seek_to_end is lazy: fix the start before the first record is sent
        await consumer.position(partition)
    total = int(rate * seconds)

    async def collect() -> None:
        while len(latencies) < total:
            batches = await consumer.getmany(timeout_ms=50)
            arrived = time.perf_counter()
            for batch in batches.values():
                for record in batch:
                    key = record.key.decode()
                    if key in sent:
                        sent_at = sent.pop(key)
                        if "-w" in key:
                            warm.append(arrived - sent_at)
                        else:
                            latencies.append(arrived - sent_at)
                            sent_times.append(sent_at)

    def settled() -> bool:
        """Warm once a whole second of records went through in under 250 ms each: the groups have
        settled (the local broker rebalances once more when a departed member's session expires)."""
        return len(warm) >= rate and max(warm[-rate:]) < 0.25

    async def offer(kind: str, count: int) -> None:
        started = time.perf_counter()
        for i in range(count):
            if kind == "w" and i % 100 == 0 and settled():  # checked every 0.1 s of load
                return
            key = f"{prefix}-{kind}{i}"
            delay = started + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[key] = time.perf_counter()
            await producer.send(send_topic, value_of(key), key=key.encode())

    collector = asyncio.create_task(collect())
    try:
        warm_started = time.perf_counter()
        await offer("w", int(rate * WARM_UP_LIMIT_S))
        warm_up_s = time.perf_counter() - warm_started
        await offer("c", total)
        try:
            await asyncio.wait_for(collector, 60)
        except TimeoutError:
            tails = "\n".join(f"--- {log}\n{log.read_text()[-2000:]}" for log in logs if log.exists())
            missing = sorted((k for k in sent if "-c" in k), key=lambda k: int(k.rsplit("-c", 1)[1]))[:5]
            raise RuntimeError(f"only {len(latencies)} of {total} records arrived within 60 s "
                               f"(missing e.g. {missing})\n{tails}") from None
    finally:
        collector.cancel()
        await consumer.stop()
        await producer.stop()
    return Latencies(latencies, sent_times, warm_up_s)


async def relay_floor(settings: Settings, rate: int, seconds: float) -> Latencies:
    """The same offered load through the raw two-hop relay (bench/relay.py), each hop its own process."""
    run = uuid.uuid4().hex[:6]
    source, middle, target = f"bench.relay.in.{run}", f"bench.relay.mid.{run}", f"bench.relay.out.{run}"
    await fresh_topics(settings, source, middle, target, partitions=settings.topic_partitions)
    hops = [subprocess.Popen([sys.executable, "-m", "bench.relay", str(hop), src, dst], env=service_env(settings),
                             stdout=subprocess.PIPE, text=True)
            for hop, src, dst in ((1, source, middle), (2, middle, target))]
    try:
        for hop in hops:
            assert hop.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(hop.stdout.readline), 60)
            if line.strip() != "ready":
                raise RuntimeError(f"a relay hop did not start: {line!r}")
        return await offered_latencies(settings, source, target, rate, seconds, lambda key: b'{"relay": true}',
                                       f"relay-{run}", [])
    finally:
        for hop in hops:
            hop.terminate()
            hop.wait(30)


async def end_to_end_case(settings: Settings, rate: int, seconds: float, keep_suspended: bool = True,
                          floor: Latencies | None = None) -> Figure:
    """Signup to its decision on `suspension.state`: a suspension in a space that keeps new members
    suspended, the first state record (not suspended) in one that lets them in."""
    space = f"e2e-{uuid.uuid4().hex[:6]}"
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    # One process per worker, as docker-compose deploys them.
    worker = bench_worker(settings, "triggers")
    state_worker = bench_worker(settings, "state")
    try:
        await asyncio.gather(worker.wait_ready(120), state_worker.wait_ready(120))
        # The local broker keeps an earlier case's stopped member listed until a later join evicts it: until
        # then a new member holds only some partitions. Measure once each holds all of its group's.
        await asyncio.gather(holds_all(worker, "triggers", 3 * settings.topic_partitions),
                             holds_all(state_worker, "state", settings.topic_partitions))
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=0)
        await producer.start()
        try:
            # The worker loaded the earlier cases' settings too: wait for one more than it had.
            known = await asyncio.to_thread(metric_total, worker.http_port, "suspensions_settings_records_total")
            await producer.send_and_wait(SETTINGS_SIGNUP.name, orjson.dumps(
                {"space_id": space, "keep_new_members_suspended": keep_suspended, "updated_at": now_iso()}),
                key=space.encode())
        finally:
            await producer.stop()
        while await asyncio.to_thread(metric_total, worker.http_port, "suspensions_settings_records_total") <= known:
            await asyncio.sleep(0.05)

        def signup(customer: str) -> bytes:
            return orjson.dumps({"event_id": customer, "occurred_at": now_iso(), "space_id": space,
                                 "customer_id": customer})

        measured = await offered_latencies(settings, CUSTOMER_SIGNUPS.name, SUSPENSION_STATE.name, rate, seconds,
                                           signup, space, [Path(str(w.log_path)) for w in (worker, state_worker)])
    finally:
        worker.stop()
        state_worker.stop()
    kind = "suspended" if keep_suspended else "admitted"
    figure = measured.figure(f"end to end at {rate}/s (signup to decision: {kind})", rate, seconds, floor)
    figure.notes.insert(0, "triggers and state in one process each")
    return figure


async def holds_all(worker: WorkerProcess, name: str, partitions: int, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.http_port}/readyz", timeout=2) as response:
                held = json.loads(response.read())["workers"][name]["partitions"]
        except OSError:
            held = 0
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


async def relay_case(settings: Settings, rate: int, seconds: float) -> tuple[Figure, Latencies]:
    floor = await relay_floor(settings, rate, seconds)
    return floor.figure(f"raw two-hop relay at {rate}/s (baseline)", rate, seconds, None), floor


async def bulk_case(settings: Settings, lines: int) -> Figure:
    worker = bench_worker(settings, "state")
    try:
        await worker.wait_ready(120)
        path = Path(tempfile.mkstemp(suffix=".csv")[1])
        space = f"bulk-{uuid.uuid4().hex[:6]}"
        path.write_text("customer_id,space_id,note\n" + "".join(f"{space}-{i},{space},bench\n" for i in range(lines)))
        env = service_env(settings)
        started = time.perf_counter()
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "suspensions", "bulk", "suspend", "--file", str(path), "--json"],
            env=env, capture_output=True, text=True, timeout=300)
        seconds = time.perf_counter() - started
        summary = orjson.loads(result.stdout) if result.returncode == 0 else {}
        figure = Figure("bulk CLI (published and confirmed)", lines, lines / seconds, seconds=seconds,
                        target="10,000 lines < 5 s", met=summary.get("applied") == lines and seconds < 5 * lines / 10_000)
        figure.notes.append(f"applied {summary.get('applied')} of {lines}; includes the CLI's start-up")
        if result.returncode != 0:
            figure.notes.append(f"bulk exited {result.returncode}: {result.stderr[-500:]} {result.stdout[-300:]}")
    finally:
        worker.stop()
    return figure


async def memory_case(settings: Settings, known_customers: int, traffic: int) -> list[Figure]:
    await seed_states(settings, [(f"mem-{i}", "mem", i % 7 == 0, ["manual"] if i % 7 == 0 else [])
                                  for i in range(known_customers)])
    rng = random.Random(4)
    commands, jobs = [], []
    for i in range(traffic):
        customer = f"mem-{rng.randrange(known_customers)}"
        commands.append((customer.encode(), orjson.dumps({
            "command_id": f"mcmd-{i}", "issued_at": now_iso(), "space_id": "mem", "customer_id": customer,
            "action": "suspend", "reason": "plan", "actor": "system"})))
        customer = f"mem-{rng.randrange(known_customers)}"
        jobs.append((customer.encode(), orjson.dumps({
            "job_id": f"mjob-{i}", "space_id": "mem", "customer_id": customer, "contract_id": "k",
            "period_start": "2026-12-01", "period_end": "2026-12-31", "amount": "9.99", "currency": "EUR"})))
    figures = []
    for name, topic, records in (("state", SUSPENSION_COMMANDS.name, commands), ("billing", INVOICE_JOBS.name, jobs)):
        await skip_backlog(settings, getattr(settings, f"{name}_group"), topic)
        worker = bench_worker(settings, name)
        try:
            await worker.wait_ready(120)
            await produce_all(settings, topic, records)
            deadline = time.monotonic() + 300
            while await asyncio.to_thread(metric_total, worker.http_port, "suspensions_records_consumed_total") < traffic:
                if time.monotonic() > deadline:
                    raise TimeoutError("memory case did not finish")
                await asyncio.sleep(0.1)
            rss = worker.peak_rss_bytes() / 1e6
        finally:
            worker.stop()
        figures.append(Figure(f"memory: {name} worker", traffic, peak_rss_mb=rss,
                              target="< 250 MB RSS", met=rss < 250,
                              notes=[f"{known_customers:,} known customers in PostgreSQL"]))
    return figures


async def schedules_case(settings: Settings, count: int, state_rate: float | None) -> Figure:
    """``count`` schedules due in the same minute, fired by a state worker: how long after the moment the
    last one was applied, and the firing rate as a ratio of the state worker's own throughput."""
    space = f"sched-{uuid.uuid4().hex[:6]}"
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=20 + count / 20_000)
    partitioner = DefaultPartitioner()
    partitions = list(range(settings.topic_partitions))
    states, rows = [], []
    for i in range(count):
        customer, schedule_id = f"{space}-{i}", f"{space}-s{i}"
        entry = ScheduledEntry(schedule_id, Action.SUSPEND, due, None, "admin:bench", None)
        states.append(CustomerState(customer, space, False, (), None, None, 1, datetime.now(UTC), "seed", (entry,)))
        partition = partitioner(customer.encode(), partitions, partitions)
        rows.append((schedule_id, customer, space, "suspend", due, None, "admin:bench", None, partition, "pending",
                     "seed", datetime.now(UTC)))
    conn = await asyncpg.connect(settings.database_url)
    try:
        await repository.copy_states(conn, states)
        await conn.copy_records_to_table("schedules", records=rows, columns=[
            "schedule_id", "customer_id", "space_id", "action", "at", "missed_invoices", "actor", "note",
            "source_partition", "status", "updated_by_command", "updated_at"])
    finally:
        await conn.close()
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    worker = bench_worker(settings, "state")
    try:
        await worker.wait_ready(120)
        conn = await asyncpg.connect(settings.database_url)
        try:
            deadline = time.monotonic() + 600
            while await conn.fetchval("SELECT count(*) FROM schedules WHERE space_id = $1 AND status = 'fired'",
                                      space) < count:
                if time.monotonic() > deadline:
                    raise TimeoutError("not every schedule fired within 600 s")
                await asyncio.sleep(0.2)
            first, last, fires = await conn.fetchrow(
                "SELECT min(applied_at), max(applied_at), count(*) FROM command_history "
                "WHERE space_id = $1 AND fired_delay_ms IS NOT NULL", space)
            once = await conn.fetchval("SELECT count(DISTINCT customer_id) FROM command_history "
                                       "WHERE space_id = $1 AND fired_delay_ms IS NOT NULL", space)
        finally:
            await conn.close()
    finally:
        worker.stop()
    seconds = max((last - first).total_seconds(), 0.001)
    late_s = (last - due).total_seconds()
    figure = Figure(f"schedules: {count:,} due in the same minute", count, count / seconds, "state worker",
                    state_rate, seconds=late_s, target="each fires once",
                    met=fires == count == once)
    figure.notes.append(f"the last applied {late_s:.1f} s after the moment; {fires} fires for {once} customers")
    return figure


async def _paced_requests(client: httpx.AsyncClient, make: Callable[[int], Awaitable[httpx.Response]], rate: int,
                          count: int) -> list[float]:
    """``count`` requests at ``rate`` per second (each its own task, so a slow one does not slow the pace);
    returns the latency of each, in seconds."""
    latencies: list[float] = []

    async def one(i: int) -> None:
        started = time.perf_counter()
        response = await make(i)
        if response.status_code >= 400:
            raise RuntimeError(f"{response.status_code}: {response.text[:300]}")
        latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    tasks = []
    for i in range(count):
        delay = started + i / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies


def _percentiles(latencies: list[float]) -> tuple[float, float]:
    ordered = sorted(latencies)
    return statistics.median(ordered) * 1000, ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1000


async def api_case(settings: Settings, rate: int, seconds: float, space_size: int) -> list[Figure]:
    """The operator API: POST suspend (no wait) at a sustained rate against a bare endpoint of the same
    framework that does one Kafka send; and a page of 100 customers from a space of ``space_size``."""
    space = f"api-{uuid.uuid4().hex[:6]}"
    conn = await asyncpg.connect(settings.database_url)
    try:
        token = await access.create_token(conn, f"bench-{space}", access.Role.OPERATOR, [space])
        now = datetime.now(UTC)
        await repository.copy_states(conn, [CustomerState(f"{space}-{i:07d}", space, i % 5 == 0, (Reason.MANUAL,)
                                                          if i % 5 == 0 else (), now, None, 1, now, "seed")
                                            for i in range(space_size)])
    finally:
        await conn.close()
    await fresh_topics(settings, "bench.bare.api")
    api = bench_worker(settings, "api")
    port = free_port()
    bare = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.bare_api:app", "--port", str(port),
                             "--log-level", "warning"], env=service_env(settings))
    count = int(rate * seconds)
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=50)) as client:
            for url in (f"http://127.0.0.1:{api.api_port}/healthz", f"http://127.0.0.1:{port}/docs"):
                deadline = time.monotonic() + 60
                while True:
                    try:
                        if (await client.get(url)).status_code < 500:
                            break
                    except httpx.TransportError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{url} did not answer")
                    await asyncio.sleep(0.1)
            base = f"http://127.0.0.1:{api.api_port}/api/v1/spaces/{space}"
            # Warm both (connections, first imports), then measure each at the same offered rate.
            await _paced_requests(client, lambda i: client.post(f"{base}/customers/warm-{i}/suspend", headers=headers,
                                                                json={}), rate, min(count, rate))
            await _paced_requests(client, lambda i: client.post(f"http://127.0.0.1:{port}/send/warm-{i}"), rate,
                                  min(count, rate))
            ours = await _paced_requests(client, lambda i: client.post(f"{base}/customers/new-{i}/suspend",
                                                                       headers=headers, json={"note": "bench"}),
                                         rate, count)
            theirs = await _paced_requests(client, lambda i: client.post(f"http://127.0.0.1:{port}/send/k-{i}"),
                                           rate, count)
            cursors = [f"{space}-{random.Random(i).randrange(space_size):07d}" for i in range(200)]
            pages = await _paced_requests(client, lambda i: client.get(f"{base}/customers", headers=headers,
                                                                       params={"limit": 100, "cursor": cursors[i]}),
                                          50, len(cursors))
    finally:
        api.stop()
        bare.terminate()
        bare.wait(30)
    p50, p99 = _percentiles(ours)
    bare_p50, bare_p99 = _percentiles(theirs)
    post = Figure("api: POST suspend (no wait)", count, p50_ms=p50, p99_ms=p99, baseline="bare endpoint, one send",
                  target="p50 and p99 within 2x of the bare endpoint's",
                  met=p50 <= 2 * bare_p50 and p99 <= 2 * bare_p99, seconds=seconds)
    post.notes.append(f"{rate} requests/s; bare endpoint p50 {bare_p50:.1f} ms, p99 {bare_p99:.1f} ms "
                      f"(ratios {p50 / bare_p50:.2f} / {p99 / bare_p99:.2f})")
    page_p50, page_p99 = _percentiles(pages)
    page = Figure(f"api: a page of 100 from a space of {space_size:,}", len(pages), p50_ms=page_p50,
                  p99_ms=page_p99, target="p99 < 50 ms", met=page_p99 < 50)
    return [post, page]


def figure_named(figures: list[Figure], case: str) -> Figure | None:
    """A case measured earlier in the run, which a later case compares itself with."""
    return next((f for f in figures if f.case == case), None)


async def scale_out_case(settings: Settings, worker_name: str, count: int, one_process: Figure | None,
                         produce_backlog: Callable[[], Awaitable[None]]) -> Figure:
    """One worker with two processes in its group on this 2-core machine, over the same kind of backlog
    as its one-process case, as a ratio of that case's throughput."""
    await produce_backlog()
    workers = [bench_worker(settings, worker_name), bench_worker(settings, worker_name)]
    case = f"{one_process.case if one_process else worker_name}, two processes in the group"
    try:
        await asyncio.gather(*(worker.wait_ready(120) for worker in workers))
        seconds = await time_consumption([worker.http_port for worker in workers], count, timeout_s=300)
        figure = Figure(case, count, count / seconds, "one process",
                        one_process.records_per_s if one_process else None, seconds=seconds,
                        peak_rss_mb=max(w.peak_rss_bytes() for w in workers) / 1e6)
    except TimeoutError as error:  # a result, not a crash of the suite
        figure = Figure(case, count, 0, notes=[str(error)])
    finally:
        for worker in workers:
            worker.stop()
    figure.notes.append("2 cores for the broker, PostgreSQL and both processes")
    return figure


async def scale_out_cases(settings: Settings, count: int, customers: int, billing_customers: int,
                          figures: list[Figure]) -> list[Figure]:
    """The triggers, state and billing workers each with two processes, against their one-process figures."""
    async def events() -> None:
        await produce_event_mix(settings, count, seed=5)

    async def commands() -> None:
        await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
        await produce_all(settings, SUSPENSION_COMMANDS.name, command_stream(count, customers, prefix="two-"))

    async def jobs() -> None:
        await produce_all(settings, INVOICE_JOBS.name, invoice_jobs(count, billing_customers, prefix="two-"))

    return [await scale_out_case(settings, "triggers", count, figure_named(figures, "triggers worker"), events),
            await scale_out_case(settings, "billing", count, figure_named(figures, "billing consumer"), jobs),
            await scale_out_case(settings, "state", count, figure_named(figures, "state worker"), commands)]


async def backlog_case(settings: Settings, count: int, customers: int, persistence: float) -> Figure:
    """A backlog of ``count`` commands drained by one state worker: the time, and its rate as a ratio of the
    raw persistence relay's."""
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    await produce_all(settings, SUSPENSION_COMMANDS.name, command_stream(count, customers, prefix="backlog-"))
    figure = await measure_worker(settings, "state", count, f"state worker draining a {count:,}-command backlog",
                                  "raw persistence", persistence, f"{customers:,} customers")
    figure.target, figure.met = "", None
    return figure
