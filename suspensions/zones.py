"""A space's time zone, read from `settings.spaces` (UTC where none is set)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from aiokafka import TopicPartition

from models import DecodeError, SpaceSetting, decode
from models.moments import zone
from topics import SETTINGS_SPACES
from workers.runtime.config import Settings
from workers.runtime.kafka import caught_up, make_consumer, start_client

UTC_ZONE = ZoneInfo("UTC")


async def space_zones(settings: Settings) -> dict[str, ZoneInfo]:
    """Every space's zone as last set: the compacted topic read to its end (a bad record is skipped
    here; the triggers worker dead-letters it)."""
    consumer = make_consumer(settings, None)
    await start_client(consumer, settings)
    zones: dict[str, ZoneInfo] = {}
    try:
        partitions = [TopicPartition(SETTINGS_SPACES.name, p)
                      for p in sorted(consumer.partitions_for_topic(SETTINGS_SPACES.name) or [0])]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        while True:
            for records in (await consumer.getmany(timeout_ms=200, max_records=5_000)).values():
                for record in records:
                    key = record.key.decode("utf-8", errors="replace") if record.key else ""
                    if record.value is None:
                        zones.pop(key, None)
                        continue
                    try:
                        setting = decode(SpaceSetting, record.value)
                    except DecodeError:
                        continue
                    if setting.space_id == key:
                        zones[key] = zone(setting.time_zone)
            if await caught_up(consumer, partitions):
                return zones
    finally:
        await consumer.stop()


async def space_zone(settings: Settings, space_id: str) -> ZoneInfo:
    return (await space_zones(settings)).get(space_id, UTC_ZONE)
