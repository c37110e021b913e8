"""faust as the triggers worker runs it: configured from the settings, with the per-event costs
the triggers do not use taken out through faust's own extension points (subclassed transport,
consumer, producer, schema and stream; the ``Monitor`` and ``Stream`` settings), never by editing
the package.

- The consumer takes the configured fetch wait. faust's aiokafka driver fixes
  ``fetch_max_wait_ms`` at 1500; Apache Kafka answers a long-polling fetch as soon as
  data arrives, but the local broker holds every fetch for the full wait, which would
  add 1.5 s to every event (``SUSPENSIONS_KAFKA_FETCH_MAX_WAIT_MS``).
- Records fetched together are handed to the streams together. faust's drain loop
  races every record's delivery against the flow being suspended with
  ``Service.wait_first``: four tasks, an ``asyncio.wait`` and three cancellations per
  record, the largest single cost in the profile of a forwarding agent. Here one
  task delivers a fetched batch, raced once against the same events; the
  checks faust makes per record (flow, generation, read offset, gaps, commit) stay.
- While back-pressure pauses a partition, the consumer polls briefly and wakes when
  the pressure drops. faust waits up to a second on the other partitions, or sleeps a
  full second when all are paused, which left a forwarding agent idle half the time.
- Raw topics skip faust's serializer registry: the bytes become the event as they are
  (decoding is the worker's, with the contract models).
- The agent does not wait for the broker before taking the next batch: the commands it
  sent are tracked (``UnacknowledgedSends``) and the consumer commits no offset before
  every earlier send is acknowledged, as faust flushes its own producer before a commit.
  At-least-once holds; a failed send stops the worker before any later offset is committed.
- Every record waits for faust's own producer buffer to ebb; that check reads a setting
  per record. The buffer here reads its queue (the agents send with their own producer).
- Batches are taken as soon as events are there (``QuietStream.take_ready``): faust's
  ``take_events`` waits a timer after every batch, which every event waited out, half of it
  on average; under load the batch is what arrived while the agent was busy, as before.
- The monitor keeps no per-event statistics, and a stream's acknowledgement skips the
  sensors' delegation: the worker counts what it consumes and emits in its own
  Prometheus metrics.

**These are faust's internals, not its extension points.** The subclasses override and read
private names of faust-streaming, mode-streaming and aiokafka (``_commit``, ``_drain_messages``,
``_read_offset``, ``_fetch_max_wait_ms``, ...); the drain loop follows faust-streaming 0.15.3's own
(its read offsets, gaps and commit bookkeeping). So the three packages are pinned exactly in
``pyproject.toml`` (and ``constraints.txt``), every override is marked ``@override`` (mypy flags one
whose base method vanished), and ``tests/unit/test_faust_internals.py`` fails when any name used
here is renamed or changes its signature: if ``_commit`` were renamed, the override would silently
stop running and the "acknowledged before commit" guarantee would vanish with every other test green.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from typing import Any, cast

import aiokafka
import faust
from faust import streams as faust_streams
from faust.sensors import Monitor
from faust.serializers import Schema
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from faust.types import TP, AppT, Message
from mode.utils.aiter import aiter as mode_aiter
from mode.utils.futures import notify
from typing_extensions import override

from workers.runtime.config import Settings
from workers.triggers.unacknowledged import UnacknowledgedSends

YIELD_EVERY = 100
PAUSED_POLL_S = 0.02
TAKE_IDLE_S = 0.1


class QuietMonitor(Monitor):
    """faust's monitor without its per-message and per-event bookkeeping (nothing reads it here)."""

    @override
    def on_message_in(self, tp: TP, offset: int, message: Message) -> None:
        pass

    @override
    def on_stream_event_in(self, tp: TP, offset: int, stream: Any, event: Any) -> None:
        return None

    @override
    def on_stream_event_out(self, tp: TP, offset: int, stream: Any, event: Any, state: Any = None) -> None:
        pass

    @override
    def on_message_out(self, tp: TP, offset: int, message: Message) -> None:
        pass

    @override
    def track_tp_end_offset(self, tp: TP, offset: int) -> None:
        pass


class QuietStream(faust.Stream[Any]):
    """faust's stream, acknowledging an event without telling the (quiet) sensors, and taking
    batches as soon as events are there (``take_ready``)."""

    @override
    async def ack(self, event: faust.EventT[Any]) -> bool:
        return bool(event.ack())

    @faust_streams._tracks_buffer_agen
    async def take_ready(self, max_: int, idle_s: float) -> AsyncGenerator[list[faust.EventT[Any]], None]:
        """faust's ``take_events``, yielding as soon as events are buffered instead of after a timer.

        ``take_events`` waits ``within`` after every batch for the buffer to fill, so each event
        waited for the timer, half of it on average. Here a batch is what arrived by the time the
        agent is free: one event when the stream is quiet, what arrived meanwhile when it is busy
        (a fetched batch reaches the buffer in one go), at most ``max_``. ``idle_s`` only bounds
        how long a quiet stream waits before looking at whether it should stop. Events are
        acknowledged once the agent is done with their batch, as ``take_events`` does.
        """
        events: list[faust.EventT[Any]] = []
        ready = asyncio.Event()  # the buffer holds an event
        consumed = asyncio.Event()  # a full buffer was taken
        consuming: asyncio.Future[None] | None = None  # set while the agent holds a batch

        async def add_to_buffer(value: Any) -> Any:
            nonlocal consuming
            try:
                if consuming is not None:
                    try:
                        await consuming
                    finally:
                        consuming = None
                event = self.current_event
                if event is None:
                    raise RuntimeError("Take buffer found current_event is None")
                events.append(event)
                ready.set()
                if len(events) >= max_:  # strict: never more than max_ in a batch
                    consumed.clear()
                    await self.wait(consumed)  # type: ignore[arg-type]  # mode types it as its own Event
            except Exception as exc:  # a cancellation is no Exception: it propagates
                self.log.exception("Error adding to take buffer: %r", exc)
                await self.crash(exc)
            return value

        acks_enabled = self.enable_acks
        self.enable_acks = False  # acknowledged here, once the batch is done
        self.add_processor(add_to_buffer)
        self._enable_passive(cast(Any, mode_aiter(self.channel)))
        try:
            while not self.should_stop:
                await self.wait_for_stopped(ready, timeout=idle_s)  # type: ignore[arg-type]
                if not events:
                    continue
                # The stream hands events over one loop turn at a time: take every event already
                # delivered (a fetched batch arrives in one go), not just the first.
                taken = 0
                while taken != len(events) < max_:
                    taken = len(events)
                    await asyncio.sleep(0)
                consuming = self.loop.create_future()  # later events wait until this batch is done
                try:
                    yield list(events)
                finally:
                    for event in events:
                        await self.ack(event)
                    events.clear()
                    ready.clear()
                    notify(consuming)
                    consumed.set()
        finally:
            self.enable_acks = acks_enabled
            self._processors.remove(add_to_buffer)


class QueueSizedBuffer(ProducerBuffer):
    """faust's producer buffer, sized by its queue (``producer_threaded`` stays off here)."""

    @property
    @override
    def size(self) -> int:
        return self.pending.qsize()


class RawSchema(Schema[bytes, bytes]):
    """Keys and values as the bytes they arrived as, straight into faust's event."""

    @override
    def compile(self, app: AppT, **_: Any) -> Any:
        event_class: Any = app.conf.Event  # faust types the setting as a type alias, not a class

        async def decode(message: Message, *, propagate: bool = False) -> Any:
            return event_class(app, message.key, message.value, message.headers, message)

        return decode


class LeanApp(faust.App):
    """A faust app whose agents may leave sends unacknowledged until the next commit."""

    unacknowledged: UnacknowledgedSends

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.unacknowledged = UnacknowledgedSends()

    @override
    def _create_directories(self) -> None:
        """None: tables live in memory (``memory://``), and faust would leave an empty
        ``<group>-data`` directory in the working directory of every process it starts in."""


def app_class(fetch_max_wait_ms: int) -> type[LeanApp]:
    class _Thread(faust_aiokafka.AIOKafkaConsumerThread):
        @override
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read when the consumer starts
            return consumer

    class _Consumer(faust_aiokafka.Consumer):
        @override
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return _Thread(self, loop=self.loop, beacon=self.beacon)

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._buffer_dropped = asyncio.Event()

        @override
        def on_buffer_drop(self, tp: TP) -> None:
            super().on_buffer_drop(tp)
            self._buffer_dropped.set()

        @override
        async def _commit(self, offsets: Any) -> bool:
            await cast(LeanApp, self.app).unacknowledged.settled()
            return bool(await super()._commit(offsets))

        @override
        async def _drain_messages(self, fetcher: Any) -> None:
            """faust's drain loop, one delivery task per fetched batch instead of per record."""
            consumer_stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
            try:
                while not (consumer_stopped() or fetcher_stopped()):
                    if self._buffered_partitions and not self._get_active_partitions():
                        # Every partition is paused by back-pressure: faust would sleep 1 s; wake on the drop.
                        self._buffer_dropped.clear()
                        await self.wait_first(self._buffer_dropped.wait(), timeout=1.0)
                    self.diag.set_flag(faust_consumer.CONSUMER_FETCHING)
                    # While back-pressure pauses a partition, a long wait on the others would hold its
                    # records back after the pressure drops: poll briefly instead.
                    timeout = PAUSED_POLL_S if self._buffered_partitions else 1.0
                    batch = [pair async for pair in self.getmany(timeout=timeout)]
                    await asyncio.sleep(0)
                    if batch and not self.should_stop:
                        await self.wait_first(self._deliver(batch), self.suspend_flow.wait())
                    self.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)
            except self.consumer_stopped_errors:
                if self.transport.app.should_stop:
                    return
                raise
            except asyncio.CancelledError:
                if self.transport.app.should_stop:
                    return
                raise
            finally:
                self.diag.unset_flag(faust_consumer.CONSUMER_FETCHING)

        async def _deliver(self, batch: list[tuple[TP, Message]]) -> None:
            callback, read_offset = self.callback, self._read_offset
            acks_enabled_for, commit_every = self.app.topics.acks_enabled_for, self._commit_every
            generation_id = self.app.consumer_generation_id
            for index, (tp, message) in enumerate(batch):
                if not self.flow_active or self.app.consumer_generation_id != generation_id:
                    return
                if index and not index % YIELD_EVERY:
                    await asyncio.sleep(0)
                offset, r_offset = message.offset, read_offset[tp]
                if r_offset is not None and offset < r_offset:
                    continue  # already delivered (faust drops it the same way)
                if r_offset and offset - r_offset > 1 and acks_enabled_for(message.topic):
                    await self._add_gap(tp, r_offset + 1, offset)
                if commit_every is not None and self._n_acked >= commit_every:
                    self._n_acked = 0
                    await self.commit()
                await callback(message)
                read_offset[tp] = offset

    class _Producer(faust_aiokafka.Producer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.buffer = QueueSizedBuffer(loop=self.loop, beacon=self.beacon)
            self.buffer.app = self.app

    class _Transport(faust_aiokafka.Transport):
        Consumer = _Consumer
        Producer = _Producer

    class TriggersApp(LeanApp):
        @override
        def _new_transport(self) -> Any:
            return _Transport(self.conf.broker_consumer, self)

    return TriggersApp


def faust_credentials(settings: Settings) -> faust.auth.Credentials | None:
    """The Kafka security settings as faust's own credential objects (its consumer takes no others)."""
    if settings.kafka_security_protocol == "PLAINTEXT":
        return None
    context = settings.kafka_ssl_context() if settings.kafka_uses_tls else None
    if settings.kafka_security_protocol.startswith("SASL_"):
        assert settings.kafka_sasl_password is not None  # checked when the settings were read
        return faust.SASLCredentials(username=settings.kafka_sasl_username,
                                     password=settings.kafka_sasl_password.get_secret_value(),
                                     ssl_context=context, mechanism=settings.kafka_sasl_mechanism)
    return faust.SSLCredentials(context)


def faust_app(settings: Settings, group_id: str) -> LeanApp:
    """A faust app configured from the settings (the triggers worker's, and the benchmark's floor): the
    group's options are the ones every other consumer of the service takes (``Settings.consumer_options``),
    in faust's names and units."""
    options = settings.consumer_options(group_id)

    def seconds(milliseconds: object) -> float:
        assert isinstance(milliseconds, int)
        return milliseconds / 1000

    return app_class(settings.kafka_fetch_max_wait_ms)(
        group_id,
        broker=[f"kafka://{server}" for server in settings.kafka_bootstrap_servers.split(",")],
        broker_credentials=faust_credentials(settings),
        store="memory://",
        web_enabled=False,
        topic_disable_leader=True,
        topic_allow_declare=False,
        broker_session_timeout=seconds(options["session_timeout_ms"]),
        broker_heartbeat_interval=seconds(options["heartbeat_interval_ms"]),
        broker_rebalance_timeout=seconds(options["rebalance_timeout_ms"]),
        broker_max_poll_interval=seconds(options["max_poll_interval_ms"]),
        broker_commit_interval=settings.kafka_commit_interval_ms / 1000,
        # Every request bounded as the other workers' are (faust's producer default waits 20 minutes).
        broker_request_timeout=seconds(options["request_timeout_ms"]),
        producer_request_timeout=settings.kafka_request_timeout_ms / 1000,
        broker_max_poll_records=settings.batch_max_records,
        stream_buffer_maxsize=4 * settings.batch_max_records,
        consumer_auto_offset_reset=options["auto_offset_reset"],
        stream_wait_empty=True,
        Monitor=QuietMonitor,
        Stream=QuietStream,
    )


def raw_topic(app: faust.App, *names: str) -> faust.TopicT:
    """Values read as bytes: decoding is ours, so bad input reaches the dead letter topic."""
    return app.topic(*names, schema=RawSchema(key_type=bytes, value_type=bytes, key_serializer="raw",
                                              value_serializer="raw"))


def take_batches(stream: faust.StreamT[Any], settings: Settings) -> AsyncIterator[Sequence[faust.EventT[Any]]]:
    """Events in batches of up to ``batch_max_records``, as soon as there are any (``take_ready``)."""
    if not isinstance(stream, QuietStream):  # the app's Stream setting makes every stream one
        raise TypeError(f"expected the app's QuietStream, got {type(stream).__name__}")
    return stream.take_ready(settings.batch_max_records, idle_s=TAKE_IDLE_S)
