"""The triggers worker: customer events in, suspension commands out.

Agents stay thin: decode, call a pure rule from ``rules.py``, emit. Values are
read raw and decoded with the contract models, so bad input reaches the dead
letter topic with a clear error instead of being skipped by faust. Commands
are awaited until the broker acknowledges them before the events are acked
(at-least-once); their ids derive from the events, so replays are harmless.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator, Sequence

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from models import (
    CrmOpportunityEvent,
    CustomerSignup,
    DeadLetter,
    DecodeError,
    PlanChange,
    SuspensionCommand,
    decode,
    encode,
)
from models.events import CustomerEvent
from suspensions.config import Settings
from suspensions.metrics import Metrics
from suspensions.publish import Outgoing, publish_all
from topics import CRM_OPPORTUNITIES, CUSTOMER_PLAN_CHANGES, CUSTOMER_SIGNUPS, DEADLETTER, SUSPENSION_COMMANDS
from workers.deadletters import check_customer_key
from workers.triggers.rules import (
    SettingsSnapshot,
    commands_for_opportunity,
    commands_for_plan_change,
    commands_for_signup,
)
from workers.triggers.settings_table import SettingsTable
from workers.triggers.transport import app_class

log = logging.getLogger(__name__)
WORKER = "triggers"
TAKE_WITHIN_S = 0.005

EVENT_RULES = {
    CUSTOMER_SIGNUPS.name: (CustomerSignup, commands_for_signup),
    CUSTOMER_PLAN_CHANGES.name: (PlanChange, commands_for_plan_change),
    CRM_OPPORTUNITIES.name: (CrmOpportunityEvent, commands_for_opportunity),
}


def commands_for_record(
    topic: str, key: bytes | None, value: bytes | None, settings: SettingsSnapshot
) -> list[SuspensionCommand]:
    """Decode one event and apply its rule; raises DecodeError for bad input."""
    model, rule = EVENT_RULES[topic]
    event: CustomerEvent = decode(model, value)
    key_error = check_customer_key(key, event.customer_id)
    if key_error:
        raise DecodeError(key_error)
    return rule(event, settings)  # type: ignore[arg-type]


def faust_app(settings: Settings, group_id: str) -> faust.App:
    """A faust app configured from the settings (the triggers worker's, and the benchmark's floor)."""
    return app_class(settings.kafka_fetch_max_wait_ms)(
        group_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        broker_heartbeat_interval=settings.kafka_heartbeat_interval_ms / 1000,
        broker_rebalance_timeout=settings.kafka_rebalance_timeout_ms / 1000,
        broker_max_poll_interval=settings.kafka_max_poll_interval_ms / 1000,
        broker_commit_interval=1.0,
        broker_max_poll_records=settings.batch_max_records,
        stream_buffer_maxsize=4 * settings.batch_max_records,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=True,
    )


def raw_topic(app: faust.App, *names: str) -> faust.TopicT:
    """Values read as bytes: decoding is ours, so bad input reaches the dead letter topic."""
    return app.topic(*names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def take_batches(stream: faust.StreamT, settings: Settings) -> AsyncIterator[Sequence[faust.EventT]]:
    """Events in batches: up to ``batch_max_records``, or what arrived within 5 ms."""
    return stream.take_events(settings.batch_max_records, within=TAKE_WITHIN_S)


def build_app(settings: Settings, metrics: Metrics, producer: AIOKafkaProducer) -> faust.App:
    """The faust app: consumes the event topics; emits with the given (started) aiokafka producer.

    faust's own producer buffers sends behind a flush loop, which capped a live stream near
    a few hundred events per second on this machine; a plain producer, awaited per batch, does not.
    """
    app = faust_app(settings, settings.triggers_group)
    events_topic = raw_topic(app, CUSTOMER_SIGNUPS.name, CUSTOMER_PLAN_CHANGES.name, CRM_OPPORTUNITIES.name)

    def dead_letter(topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None,
                    error: str) -> Outgoing:
        letter = DeadLetter.for_record(topic=topic, partition=partition, offset=offset, key=key,
                                       value=value, error=error, worker=WORKER)
        log.warning("dead letter", extra={"worker": WORKER, "topic": topic, "partition": partition,
                                          "offset": offset, "error": error})
        metrics.dead_letters.labels(topic=topic).inc()
        return Outgoing(DEADLETTER.name, key, encode(letter))

    async def reject_setting(record: ConsumerRecord, error: str) -> None:
        await publish_all(producer, [dead_letter(record.topic, record.partition, record.offset, record.key,
                                                 record.value, error)])

    settings_table = SettingsTable(settings, reject_setting, metrics)
    app.settings_table = settings_table  # type: ignore[attr-defined]

    @app.task
    async def follow_settings() -> None:
        await settings_table.run()

    @app.agent(events_topic)
    async def triggers(stream: faust.StreamT) -> None:
        await settings_table.ready.wait()
        async for events in take_batches(stream, settings):
            await handle_events(events)

    async def handle_events(events: Sequence[faust.EventT]) -> None:
        outgoing: list[Outgoing] = []
        emitted: Counter[str] = Counter()
        for topic, count in Counter(event.message.topic for event in events).items():
            metrics.records_consumed.labels(worker=WORKER, topic=topic).inc(count)
        for event in events:
            message = event.message
            try:
                commands = commands_for_record(message.topic, message.key, message.value,
                                               settings_table.snapshot)
            except DecodeError as error:
                outgoing.append(dead_letter(message.topic, message.partition, message.offset,
                                            message.key, message.value, str(error)))
                continue
            for command in commands:
                emitted[command.reason.value] += 1
                outgoing.append(Outgoing(SUSPENSION_COMMANDS.name, command.customer_id.encode(), encode(command),
                                         (("command_id", command.command_id.encode()),)))
        # Acknowledged by the broker before the events are acked and their offsets committed.
        await publish_all(producer, outgoing)
        for reason, count in emitted.items():
            metrics.commands_emitted.labels(reason=reason).inc(count)

    return app
