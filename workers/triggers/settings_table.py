"""Every setting, on every triggers instance: a global table fed by a group-less consumer.

Settings topics are keyed by space, plan or stage while events are keyed by
customer, so a partitioned faust table would give each instance only some
settings. Like a Kafka Streams global table, this reads every partition of the
settings topics to their end (``workers/runtime/compacted.py``), then opens ``ready``
and keeps following updates. It never writes to a settings topic.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.structs import ConsumerRecord

from models import ContractModel, CrmStageSetting, DecodeError, PlanSetting, SignupSetting, SpaceSetting, decode
from topics import SETTINGS_CRM_STAGES, SETTINGS_PLANS, SETTINGS_SIGNUP, SETTINGS_SPACES, SETTINGS_TOPICS
from workers.runtime.compacted import read_compacted
from workers.runtime.config import Settings
from workers.runtime.metrics import Metrics
from workers.triggers.rules import SettingsSnapshot

log = logging.getLogger(__name__)

RejectRecord = Callable[[ConsumerRecord, str], Awaitable[None]]


# topic -> (snapshot table, model, the field the key must equal, that field's name)
SETTINGS_KINDS: dict[str, tuple[str, type[ContractModel], Callable[[Any], str], str]] = {
    SETTINGS_SIGNUP.name: ("signup", SignupSetting, lambda setting: setting.space_id, "space_id"),
    SETTINGS_PLANS.name: ("plans", PlanSetting, lambda setting: setting.plan_id, "plan_id"),
    SETTINGS_CRM_STAGES.name: ("crm_stages", CrmStageSetting, lambda setting: setting.stage_key,
                               "board_id/stage_id"),
    SETTINGS_SPACES.name: ("spaces", SpaceSetting, lambda setting: setting.space_id, "space_id"),
}


def apply_setting_record(snapshot: SettingsSnapshot, topic: str, key: bytes | None, value: bytes | None) -> None:
    """Fold one settings record into the snapshot; raises DecodeError for bad input.

    A tombstone (null value) removes the setting, as compaction would.
    """
    if key is None:
        raise DecodeError("settings record has no key")
    table_name, model, key_of, key_field = SETTINGS_KINDS[topic]
    table: dict[str, Any] = getattr(snapshot, table_name)
    key_text = key.decode("utf-8", errors="replace")
    if value is None:
        table.pop(key_text, None)
        return
    setting = decode(model, value)
    if key_of(setting) != key_text:
        raise DecodeError(f"record key '{key_text}' does not match its {key_field} '{key_of(setting)}'")
    table[key_text] = setting


SETTINGS_FETCH_MAX_WAIT_MS = 100


class SettingsTable:
    def __init__(self, settings: Settings, reject: RejectRecord, metrics: Metrics) -> None:
        self._settings = settings
        self._reject = reject
        self._metrics = metrics
        self.snapshot = SettingsSnapshot()
        self.ready = asyncio.Event()

    async def run(self) -> None:
        # Settings change rarely: polling them every 10 ms (the local fetch wait) cost the broker as
        # much as the event stream itself; within 100 ms is soon enough for a changed setting.
        await read_compacted(self._settings, [spec.name for spec in SETTINGS_TOPICS], self._apply,
                             on_caught_up=self._loaded, follow=True,
                             fetch_max_wait_ms=max(self._settings.kafka_fetch_max_wait_ms, SETTINGS_FETCH_MAX_WAIT_MS))

    def _loaded(self) -> None:
        log.info("settings loaded", extra={"signup": len(self.snapshot.signup), "plans": len(self.snapshot.plans),
                                           "crm_stages": len(self.snapshot.crm_stages)})
        self.ready.set()

    async def _apply(self, record: ConsumerRecord) -> None:
        try:
            apply_setting_record(self.snapshot, record.topic, record.key, record.value)
        except DecodeError as error:
            await self._reject(record, str(error))
        self._metrics.settings_records.labels(topic=record.topic).inc()
