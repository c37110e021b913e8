"""The batch loop's part: each lifecycle event becomes one pending delivery per enabled endpoint of its space
that takes its type, written in the batch's transaction, its body made once and stored as it will be sent.
A redelivered batch adds nothing (one delivery per endpoint and event id)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import orjson
from aiokafka.structs import ConsumerRecord

from models import DecodeError, LifecycleEvent, decode
from workers.runtime.db.unit_of_work import BatchStore, UnitOfWork
from workers.runtime.deadletters import check_customer_key, dead_letter
from workers.runtime.metrics import Metrics
from workers.runtime.publishing import OutgoingRecord
from workers.webhooks import store
from workers.webhooks.signing import event_body


class WebhookHandler:
    def __init__(self, worker: str, metrics: Metrics) -> None:
        self.worker = worker
        self.metrics = metrics

    async def handle(self, batch_store: BatchStore, records: Sequence[ConsumerRecord]) -> list[OutgoingRecord]:
        if not isinstance(batch_store, UnitOfWork):
            raise TypeError("the webhooks handler writes through the unit of work's connection")
        conn = batch_store.conn
        decoded: list[tuple[int, LifecycleEvent]] = []
        out: list[OutgoingRecord] = []
        for position, record in enumerate(records):
            try:
                event = decode(LifecycleEvent, record.value)
                check_customer_key(record.key, event.customer_id)
            except DecodeError as error:  # not one of ours: dead-lettered, the others delivered
                out.append(dead_letter(record, str(error), self.worker, self.metrics))
                continue
            decoded.append((position, event))
        if not decoded:
            return out
        endpoints = await store.subscribed(conn, (event.space_id for _, event in decoded))
        if not endpoints:
            return out
        by_space: dict[str, list[tuple[str, set[str]]]] = {}
        for row in endpoints:
            by_space.setdefault(row["space_id"], []).append((row["endpoint_id"], set(row["event_types"])))
        rows: list[store.NewDelivery] = []
        for position, event in decoded:
            matching = [endpoint_id for endpoint_id, types in by_space.get(event.space_id, ())
                        if not types or event.type.value in types]
            if not matching:
                continue
            record = records[position]
            occurred_at = orjson.loads(record.value)["occurred_at"]  # the timestamp exactly as on the topic
            body = event_body(event.type.value, occurred_at, record.value)
            rows.extend(store.NewDelivery(endpoint_id, event.event_id, event.type.value, event.customer_id,
                                          record.partition, event.occurred_at, body) for endpoint_id in matching)
        await store.insert_deliveries(conn, rows, datetime.now(UTC))
        return out
