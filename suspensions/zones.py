"""A space's time zone, read from `settings.spaces` (UTC where none is set)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from aiokafka.structs import ConsumerRecord

from models import DecodeError, SpaceSetting, decode
from models.moments import zone
from topics import SETTINGS_SPACES
from workers.runtime.compacted import read_compacted
from workers.runtime.config import Settings

UTC_ZONE = ZoneInfo("UTC")


async def space_zones(settings: Settings) -> dict[str, ZoneInfo]:
    """Every space's zone as last set: the compacted topic read to its end (a bad record is skipped
    here; the triggers worker dead-letters it)."""
    zones: dict[str, ZoneInfo] = {}

    async def apply(record: ConsumerRecord) -> None:
        key = record.key.decode("utf-8", errors="replace") if record.key else ""
        if record.value is None:
            zones.pop(key, None)
            return
        try:
            setting = decode(SpaceSetting, record.value)
        except DecodeError:
            return
        if setting.space_id == key:
            zones[key] = zone(setting.time_zone)

    await read_compacted(settings, [SETTINGS_SPACES.name], apply)
    return zones


async def space_zone(settings: Settings, space_id: str) -> ZoneInfo:
    return (await space_zones(settings)).get(space_id, UTC_ZONE)
