"""Consumer lag per group, topic and partition, with a Burrow-style status.

Log-end offsets come from the high watermark of a real fetch, not from
``end_offsets`` (ListOffsets), which the local broker answers wrongly. The same
fetch, started at the committed offset, yields the oldest unprocessed record,
whose timestamp gives the time lag.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import IntEnum

from aiokafka import AIOKafkaConsumer, TopicPartition

from workers.runtime.config import Settings
from workers.runtime.kafka import make_admin, make_consumer, start_client


class Status(IntEnum):
    """Burrow's statuses, ordered from best to worst so a group takes its worst partition's."""

    OK = 0
    WARN = 1
    REWIND = 2
    STALL = 3
    STOP = 4


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group never committed on this partition
    log_end: int
    lag: int
    time_lag_s: float  # age of the oldest record not yet processed (0 when caught up)


@dataclass(frozen=True)
class GroupSample:
    group: str
    taken_at: float
    active_members: int
    partitions: tuple[PartitionLag, ...]

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.partitions)


@dataclass
class GroupReport:
    group: str
    status: Status
    active_members: int
    partitions: list[dict[str, object]] = field(default_factory=list)
    total_lag: int = 0

    def as_dict(self) -> dict[str, object]:
        data = asdict(self)
        data["status"] = self.status.name
        return data


# --- pure evaluation ------------------------------------------------------------------------


def partition_status(history: Sequence[PartitionLag], active_members: int) -> Status:
    """Burrow's rules over the samples of one partition, oldest first."""
    if any(sample.lag == 0 for sample in history):
        return Status.OK
    committed = [sample.committed if sample.committed is not None else -1 for sample in history]
    if any(later < earlier for earlier, later in zip(committed, committed[1:], strict=False)):
        return Status.REWIND
    if len(history) < 2:
        return Status.WARN  # lag now, and no window to judge a trend
    if committed[0] == committed[-1]:
        # Offsets never moved while records wait: nobody is committing (STOP), or it is stuck (STALL).
        return Status.STOP if active_members == 0 else Status.STALL
    lags = [sample.lag for sample in history]
    if all(later >= earlier for earlier, later in zip(lags, lags[1:], strict=False)):
        return Status.WARN  # moving, but the lag never fell
    return Status.OK


def evaluate(samples: Sequence[GroupSample]) -> GroupReport:
    latest = samples[-1]
    by_partition: dict[tuple[str, int], list[PartitionLag]] = {}
    for sample in samples:
        for part in sample.partitions:
            by_partition.setdefault((part.topic, part.partition), []).append(part)
    report = GroupReport(latest.group, Status.OK, latest.active_members, total_lag=latest.total_lag)
    for part in latest.partitions:
        status = partition_status(by_partition[(part.topic, part.partition)], latest.active_members)
        report.status = max(report.status, status)
        report.partitions.append({**asdict(part), "status": status.name})
    return report


# --- measurement ----------------------------------------------------------------------------


class LagProbe:
    """Measures lag with one admin client; each sample fetches with a fresh group-less consumer,
    so no high watermark is left over from an earlier sample."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._admin = make_admin(settings)

    async def __aenter__(self) -> LagProbe:
        await start_client(self._admin, self._settings)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._admin.close()

    def _consumer(self) -> AIOKafkaConsumer:
        return make_consumer(self._settings, None, max_partition_fetch_bytes=64 * 1024)

    async def _partitions(self, topics: Iterable[str]) -> list[TopicPartition]:
        wanted = set(topics)
        metadata = await self._admin.describe_topics(sorted(wanted))
        result: list[TopicPartition] = []
        for topic in metadata:
            if topic.get("error_code", 0) == 0 and topic["topic"] in wanted:
                result.extend(TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"])
        return sorted(result)

    async def topics_of(self, group: str) -> tuple[str, ...]:
        """Topics a group has committed offsets on (for groups that are not the service's own)."""
        partitions = await self._partitions(t for t in await self._admin.list_topics() if not t.startswith("__"))
        offsets = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        return tuple(sorted({tp.topic for tp, meta in offsets.items() if meta.offset >= 0}))

    async def active_members(self, group: str) -> int:
        responses = await self._admin.describe_consumer_groups([group])
        members = 0
        for response in responses:
            for described in response.groups:
                # (error_code, group_id, state, protocol_type, protocol, members, ...)
                if described[1] == group and described[2] not in ("Dead", "Empty"):
                    members += len(described[5])
        return members

    async def sample(self, group: str, topics: Sequence[str], timeout_s: float = 10.0) -> GroupSample:
        partitions = await self._partitions(topics)
        if not partitions:
            return GroupSample(group, time.time(), await self.active_members(group), ())
        offsets = await self._admin.list_consumer_group_offsets(group, partitions=partitions)
        committed = {tp: (meta.offset if meta.offset >= 0 else None) for tp, meta in offsets.items()}
        consumer = self._consumer()
        await consumer.start()
        try:
            beginning = await consumer.beginning_offsets(partitions)
            start: dict[TopicPartition, int] = {}
            for tp in partitions:
                offset = committed.get(tp)
                start[tp] = offset if offset is not None else beginning.get(tp, 0)
            consumer.assign(partitions)
            for tp in partitions:
                consumer.seek(tp, start[tp])
            oldest: dict[TopicPartition, float] = {}
            deadline = time.monotonic() + timeout_s

            def settled(tp: TopicPartition) -> bool:
                highwater = consumer.highwater(tp)
                return highwater is not None and (highwater <= start[tp] or tp in oldest)

            while not all(settled(tp) for tp in partitions):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no fetch response for some partitions of {list(topics)} in {timeout_s}s")
                batches = await consumer.getmany(timeout_ms=100, max_records=1_000)
                for tp, records in batches.items():
                    if records and tp not in oldest:
                        oldest[tp] = records[0].timestamp / 1000
                        consumer.pause(tp)  # the oldest unprocessed record is all we need
            now = time.time()
            lags = []
            for tp in partitions:
                log_end = consumer.highwater(tp) or 0
                lag = max(0, log_end - start[tp])
                time_lag = round(max(0.0, now - oldest[tp]), 3) if lag and tp in oldest else 0.0
                lags.append(PartitionLag(tp.topic, tp.partition, committed.get(tp), log_end, lag, time_lag))
        finally:
            await consumer.stop()
        return GroupSample(group, now, await self.active_members(group), tuple(lags))


async def measure(settings: Settings, groups: dict[str, tuple[str, ...] | None], window_s: float,
                  samples: int) -> list[GroupReport]:
    """Sample every group `samples` times across `window_s` seconds and evaluate each."""
    async with LagProbe(settings) as probe:
        resolved = {group: topics or await probe.topics_of(group) for group, topics in groups.items()}
        history: dict[str, list[GroupSample]] = {group: [] for group in resolved}
        count = max(1, samples if window_s > 0 else 1)
        for index in range(count):
            for group, topics in resolved.items():
                history[group].append(await probe.sample(group, topics))
            if index < count - 1:
                await asyncio.sleep(window_s / (count - 1))
    return [evaluate(history[group]) for group in resolved]
