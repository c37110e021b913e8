"""The triggers worker: customer events in, suspension commands out.

Agents stay thin: decode, call a pure rule from ``rules.py``, emit. Values are
read raw and decoded with the contract models, so bad input reaches the dead
letter topic with a clear error instead of being skipped by faust. Commands
are awaited until the broker acknowledges them before the events are acked
(at-least-once); their ids derive from the events, so replays are harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import faust
from aiokafka.structs import ConsumerRecord

from models import CrmOpportunityEvent, CustomerSignup, DecodeError, PlanChange, SuspensionCommand, decode
from models.events import CustomerEvent
from topics import CRM_OPPORTUNITIES, CUSTOMER_PLAN_CHANGES, CUSTOMER_SIGNUPS
from workers.runtime.context import WorkerContext
from workers.runtime.deadletters import check_customer_key, dead_letter, poison_letter
from workers.runtime.poison import is_poison
from workers.runtime.publishing import OutgoingRecord, command_record, publish_all, report_published, send_all
from workers.triggers.lean_faust import LeanApp, faust_app, raw_topic, take_batches
from workers.triggers.rules import (
    SettingsSnapshot,
    commands_for_opportunity,
    commands_for_plan_change,
    commands_for_signup,
)
from workers.triggers.settings_table import SettingsTable

log = logging.getLogger(__name__)
HEARTBEAT_S = 1.0

Event = TypeVar("Event", bound=CustomerEvent)
RecordRule = Callable[[bytes | None, bytes | None, SettingsSnapshot], list[SuspensionCommand]]


def _record_rule(model: type[Event], rule: Callable[[Event, SettingsSnapshot], list[SuspensionCommand]]) -> RecordRule:
    """Decode one record of the event's topic, check its key, and apply the rule."""
    def apply(key: bytes | None, value: bytes | None, settings: SettingsSnapshot) -> list[SuspensionCommand]:
        event = decode(model, value)
        check_customer_key(key, event.customer_id)
        return rule(event, settings)

    return apply


EVENT_RULES: dict[str, RecordRule] = {
    CUSTOMER_SIGNUPS.name: _record_rule(CustomerSignup, commands_for_signup),
    CUSTOMER_PLAN_CHANGES.name: _record_rule(PlanChange, commands_for_plan_change),
    CRM_OPPORTUNITIES.name: _record_rule(CrmOpportunityEvent, commands_for_opportunity),
}


def commands_for_record(
    topic: str, key: bytes | None, value: bytes | None, settings: SettingsSnapshot
) -> list[SuspensionCommand]:
    """Decode one event and apply its rule; raises DecodeError for bad input."""
    return EVENT_RULES[topic](key, value, settings)


def build_app(context: WorkerContext) -> LeanApp:
    """The faust app: consumes the event topics; emits with the process's (started) aiokafka producer.

    faust's own producer buffers sends behind a flush loop, which capped a live stream near
    a few hundred events per second on this machine; a plain producer, awaited per batch, does not.
    """
    settings, metrics, producer, name = context.settings, context.metrics, context.producer, context.name
    app = faust_app(settings, context.group)
    events_topic = raw_topic(app, *EVENT_RULES)

    async def reject_setting(record: ConsumerRecord, error: str) -> None:
        await publish_all(producer, [dead_letter(record, error, name, metrics)])

    settings_table = SettingsTable(settings, reject_setting, metrics)

    async def follow_settings() -> None:
        await settings_table.run()

    app.task(follow_settings)

    @app.agent(events_topic)
    async def triggers(stream: faust.StreamT[Any]) -> None:
        await settings_table.ready.wait()
        async for events in take_batches(stream, settings):
            await handle_events(events)

    async def handle_events(events: Sequence[faust.EventT[Any]]) -> None:
        outgoing: list[OutgoingRecord] = []
        emitted: Counter[str] = Counter()
        for topic, count in Counter(event.message.topic for event in events).items():
            metrics.records_consumed.labels(worker=name, topic=topic).inc(count)
        for event in events:
            message = event.message
            try:
                commands = commands_for_record(message.topic, message.key, message.value, settings_table.snapshot)
            except DecodeError as error:
                outgoing.append(dead_letter(message, str(error), name, metrics))
                continue
            except Exception as error:
                if not is_poison(error):
                    raise
                # Accepted by the contract, yet its rule could not run on it: the same poison as in the
                # batch workers, dead-lettered alone.
                outgoing.append(poison_letter(message, error, name, metrics))
                continue
            for command in commands:
                emitted[command.reason.value] += 1
                outgoing.append(command_record(command, message.partition))
        def count_emitted() -> None:
            for reason, count in emitted.items():
                metrics.commands_emitted.labels(reason=reason).inc(count)
            report_published(outgoing)

        # Acknowledged by the broker before any offset at or past these events is committed.
        await app.unacknowledged.add(await send_all(producer, outgoing), on_acknowledged=count_emitted)

    return app


class TriggersWorker:
    """The faust app as a worker of the runner: started, kept alive in ``health``, stopped."""

    def __init__(self, context: WorkerContext) -> None:
        self._context = context

    async def run(self, stop: asyncio.Event) -> None:
        health, name = self._context.health, self._context.name
        app = build_app(self._context)

        async def _assigned(sender: Any, *args: Any, **kwargs: Any) -> None:  # faust sends (app, assigned)
            assigned = args[0]
            health.assigned(len(assigned))
            log.info("partitions assigned", extra={"worker": name, "partitions": len(assigned)})

        async def _revoked(sender: Any, *args: Any, **kwargs: Any) -> None:  # faust sends (app, revoked)
            health.revoked()
            log.info("partitions revoked", extra={"worker": name, "partitions": len(args[0])})

        # mode types a receiver as a union of callables, which mypy does not match an async def against.
        app.on_partitions_assigned.connect(_assigned)  # type: ignore[arg-type]
        app.on_partitions_revoked.connect(_revoked)  # type: ignore[arg-type]

        app.finalize()
        await app.start()
        log.info("worker started", extra={"worker": name, "group": self._context.group})
        try:
            while not stop.is_set():
                health.beat()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), HEARTBEAT_S)
        finally:
            await app.stop()
            log.info("worker stopped", extra={"worker": name})
