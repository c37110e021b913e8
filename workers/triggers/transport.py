"""A faust transport whose consumer takes the configured fetch wait.

faust's aiokafka driver fixes ``fetch_max_wait_ms`` at 1500. Apache Kafka
answers a long-polling fetch as soon as data arrives, so that costs nothing
there; the local broker holds every fetch for the full wait, which would add
1.5 s to every event. The wait is a setting (``SUSPENSIONS_KAFKA_FETCH_MAX_WAIT_MS``).
"""

from __future__ import annotations

from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as faust_aiokafka


def app_class(fetch_max_wait_ms: int) -> type[faust.App]:
    class _Thread(faust_aiokafka.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
            consumer = super()._create_worker_consumer(transport)
            consumer._fetch_max_wait_ms = fetch_max_wait_ms  # read when the consumer starts
            return consumer

    class _Consumer(faust_aiokafka.Consumer):
        def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
            return _Thread(self, loop=self.loop, beacon=self.beacon)

    class _Transport(faust_aiokafka.Transport):
        Consumer = _Consumer

    class TriggersApp(faust.App):
        def _new_transport(self) -> Any:
            return _Transport(self.conf.broker_consumer, self)

    return TriggersApp
