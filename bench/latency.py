"""Latency at an offered rate: signup to decision through the pipeline, against the raw two-hop relay."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.figures import Figure, percentiles
from bench.plumbing import bench_worker, fresh_topics, holds_all, skip_backlog
from models import utc_iso
from suspensions.local.processes import metric_total, service_env
from topics import CUSTOMER_SIGNUPS, SETTINGS_SIGNUP, SUSPENSION_COMMANDS, SUSPENSION_STATE
from workers.runtime.config import Settings

WARM_UP_LIMIT_S = 60.0


@dataclass
class Latencies:
    latencies: list[float]  # seconds, in the order the records arrived
    sent_times: list[float]  # when each measured record was sent
    warm_up_s: float

    def figure(self, case: str, rate: int, seconds: float, floor: Latencies | None) -> Figure:
        p50, p99 = percentiles(self.latencies)
        figure = Figure(case, len(self.latencies), p50_ms=p50, p99_ms=p99, seconds=seconds)
        if floor is not None:
            floor_p50, floor_p99 = percentiles(floor.latencies)
            figure.baseline = "raw two-hop relay, same rate"
            figure.target = "p50 <= 1.5x, p99 <= 2x of the relay"  # issue 24's
            figure.met = p50 <= 1.5 * floor_p50 and p99 <= 2 * floor_p99
            figure.notes.append(f"relay p50 {floor_p50:.0f} ms, p99 {floor_p99:.0f} ms: ratios "
                                f"{p50 / floor_p50:.2f} / {p99 / floor_p99:.2f}")
        figure.notes.append(f"steady {rate} records/s for {seconds:.0f} s, after {self.warm_up_s:.1f} s of warm-up "
                            "at the same rate" + ("" if self.warm_up_s < WARM_UP_LIMIT_S else " (never settled)"))
        first = min(self.sent_times, default=0.0)
        thirds: list[list[float]] = [[], [], []]
        for sent_at, latency in zip(self.sent_times, self.latencies, strict=True):
            thirds[min(2, int(3 * (sent_at - first) / seconds))].append(latency)
        figure.notes.append("p99 by third of the run: " + " / ".join(
            f"{percentiles(part)[1]:.0f} ms" for part in thirds if part))
        if thirds[2]:
            figure.p99_last_third_ms = percentiles(thirds[2])[1]
            if floor is not None and floor.latencies:
                floor_last = floor.last_third()
                if floor_last:
                    figure.notes.append(f"relay p99 of the last third {percentiles(floor_last)[1]:.0f} ms")
        return figure

    def last_third(self) -> list[float]:
        """Latencies of the records sent in the last third of the run."""
        if not self.sent_times:
            return []
        first, last = min(self.sent_times), max(self.sent_times)
        cut = first + 2 * (last - first) / 3
        return [latency for sent_at, latency in zip(self.sent_times, self.latencies, strict=True) if sent_at >= cut]


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


async def relay_case(settings: Settings, rate: int, seconds: float) -> tuple[Figure, Latencies]:
    floor = await relay_floor(settings, rate, seconds)
    return floor.figure(f"raw two-hop relay at {rate}/s (baseline)", rate, seconds, None), floor


def end_to_end_name(rate: int, kind: str, state_processes: int = 1) -> str:
    processes = "" if state_processes == 1 else f", state in {state_processes} processes"
    return f"end to end at {rate}/s (signup to decision: {kind}{processes})"


async def end_to_end_case(settings: Settings, rate: int, seconds: float, keep_suspended: bool = True,
                          floor: Latencies | None = None, state_processes: int = 1) -> Figure:
    """Signup to its decision on `suspension.state`: a suspension in a space that keeps new members
    suspended, the first state record (not suspended) in one that lets them in. ``state_processes``: the
    state worker's ``--processes``."""
    space = f"e2e-{uuid.uuid4().hex[:6]}"
    await skip_backlog(settings, settings.state_group, SUSPENSION_COMMANDS.name)
    # One process per worker, as docker-compose deploys them.
    worker = bench_worker(settings, "triggers")
    state_worker = bench_worker(settings, "state", *(("--processes", str(state_processes))
                                                      if state_processes > 1 else ()))
    try:
        await asyncio.gather(worker.wait_ready(120), state_worker.wait_ready(120))
        # The local broker keeps an earlier case's stopped member listed until a later join evicts it: until
        # then a new member holds only some partitions. Measure once each holds all of its group's.
        await asyncio.gather(holds_all(worker, "triggers", 3 * settings.topic_partitions),
                             holds_all(state_worker, "state", settings.topic_partitions,
                                       processes=state_processes))
        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=0)
        await producer.start()
        try:
            # The worker loaded the earlier cases' settings too: wait for one more than it had.
            known = await asyncio.to_thread(metric_total, worker.http_port, "suspensions_settings_records_total")
            await producer.send_and_wait(SETTINGS_SIGNUP.name, orjson.dumps(
                {"space_id": space, "keep_new_members_suspended": keep_suspended, "updated_at": utc_iso()}),
                key=space.encode())
        finally:
            await producer.stop()
        while await asyncio.to_thread(metric_total, worker.http_port, "suspensions_settings_records_total") <= known:
            await asyncio.sleep(0.05)

        def signup(customer: str) -> bytes:
            return orjson.dumps({"event_id": customer, "occurred_at": utc_iso(), "space_id": space,
                                 "customer_id": customer})

        measured = await offered_latencies(settings, CUSTOMER_SIGNUPS.name, SUSPENSION_STATE.name, rate, seconds,
                                           signup, space, [Path(str(w.log_path)) for w in (worker, state_worker)])
    finally:
        worker.stop()
        state_worker.stop()
    kind = "suspended" if keep_suspended else "admitted"
    figure = measured.figure(end_to_end_name(rate, kind, state_processes), rate, seconds, floor)
    figure.notes.insert(0, "triggers and state in one process each" if state_processes == 1
                        else f"triggers in one process, state in {state_processes} (--processes)")
    return figure
