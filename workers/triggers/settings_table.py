"""Every setting, on every triggers instance: a global table fed by a group-less consumer.

Settings topics are keyed by space, plan or stage while events are keyed by
customer, so a partitioned faust table would give each instance only some
settings. Like a Kafka Streams global table, this reads every partition of the
settings topics from the beginning up to the high watermark seen on fetch
(``end_offsets`` is unreliable on the local broker), then opens ``ready`` and
keeps following updates. It never writes to a settings topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from models import CrmStageSetting, DecodeError, PlanSetting, SignupSetting, decode
from suspensions.config import Settings
from suspensions.kafka import make_consumer
from suspensions.metrics import Metrics
from topics import SETTINGS_CRM_STAGES, SETTINGS_PLANS, SETTINGS_SIGNUP, SETTINGS_TOPICS
from workers.triggers.rules import SettingsSnapshot

log = logging.getLogger(__name__)

RejectRecord = Callable[[ConsumerRecord, str], Awaitable[None]]


def apply_setting_record(snapshot: SettingsSnapshot, topic: str, key: bytes | None, value: bytes | None) -> None:
    """Fold one settings record into the snapshot; raises DecodeError for bad input.

    A tombstone (null value) removes the setting, as compaction would.
    """
    if key is None:
        raise DecodeError("settings record has no key")
    key_text = key.decode("utf-8", errors="replace")
    if topic == SETTINGS_SIGNUP.name:
        if value is None:
            snapshot.signup.pop(key_text, None)
            return
        signup = decode(SignupSetting, value)
        _check_key(key_text, signup.space_id, "space_id")
        snapshot.signup[signup.space_id] = signup
    elif topic == SETTINGS_PLANS.name:
        if value is None:
            snapshot.plans.pop(key_text, None)
            return
        plan = decode(PlanSetting, value)
        _check_key(key_text, plan.plan_id, "plan_id")
        snapshot.plans[plan.plan_id] = plan
    elif topic == SETTINGS_CRM_STAGES.name:
        if value is None:
            snapshot.crm_stages.pop(key_text, None)
            return
        stage = decode(CrmStageSetting, value)
        _check_key(key_text, stage.stage_key, "board_id/stage_id")
        snapshot.crm_stages[stage.stage_key] = stage


def _check_key(key: str, expected: str, field_name: str) -> None:
    if key != expected:
        raise DecodeError(f"record key '{key}' does not match its {field_name} '{expected}'")


class SettingsTable:
    def __init__(self, settings: Settings, reject: RejectRecord, metrics: Metrics) -> None:
        self._settings = settings
        self._reject = reject
        self._metrics = metrics
        self.snapshot = SettingsSnapshot()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        consumer = make_consumer(self._settings, None)
        await consumer.start()
        try:
            partitions = await self._all_partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            while True:
                batches = await consumer.getmany(timeout_ms=200, max_records=5_000)
                for records in batches.values():
                    for record in records:
                        await self._apply(record)
                if not self.ready.is_set() and await self._caught_up(consumer, partitions):
                    log.info(
                        "settings loaded",
                        extra={"signup": len(self.snapshot.signup), "plans": len(self.snapshot.plans),
                               "crm_stages": len(self.snapshot.crm_stages)},
                    )
                    self.ready.set()
        finally:
            await consumer.stop()

    async def _apply(self, record: ConsumerRecord) -> None:
        try:
            apply_setting_record(self.snapshot, record.topic, record.key, record.value)
        except DecodeError as error:
            await self._reject(record, str(error))
        self._metrics.settings_records.labels(topic=record.topic).inc()

    @staticmethod
    async def _all_partitions(consumer) -> list[TopicPartition]:  # type: ignore[no-untyped-def]
        partitions = []
        for spec in SETTINGS_TOPICS:
            ids = consumer.partitions_for_topic(spec.name)
            while ids is None:  # metadata not fetched yet, or the topic was just created
                await consumer.topics()
                ids = consumer.partitions_for_topic(spec.name)
                if ids is None:
                    await asyncio.sleep(0.2)
            partitions.extend(TopicPartition(spec.name, p) for p in sorted(ids))
        return partitions

    @staticmethod
    async def _caught_up(consumer, partitions: list[TopicPartition]) -> bool:  # type: ignore[no-untyped-def]
        for tp in partitions:
            highwater = consumer.highwater(tp)
            if highwater is None or await consumer.position(tp) < highwater:
                return False
        return True
