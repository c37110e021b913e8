"""A downstream reader of `suspension.state` and `suspension.events`, as a door-access system would write it.

It depends on nothing of the suspensions project: plain aiokafka and the published contract
(docs/contract.md). What it shows:

- the signup gate: a customer with no state record yet is *not decided*, and the door stays shut
  (default deny) until the record arrives;
- apply a state record only when its `version` is higher than the one held (a record can arrive
  twice after a producer's crash), and treat a null value (tombstone) as "forget this customer";
- deduplicate lifecycle events on `event_id` before acting on them (here: print them once).

    python docs/examples/downstream_reader.py --bootstrap 127.0.0.1:9092 --customer c-42 --timeout 30

prints one line per event of that customer, then the door decision, and exits 0 when the customer
may enter, 1 when suspended, 2 when still not decided after the timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import dataclass, field

from aiokafka import AIOKafkaConsumer, TopicPartition

STATE, EVENTS = "suspension.state", "suspension.events"


@dataclass
class Door:
    """What an access system keeps: the latest state per customer and the events it acted on."""

    states: dict[str, dict] = field(default_factory=dict)
    seen_events: set[str] = field(default_factory=set)

    def apply_state(self, customer_id: str, value: bytes | None) -> None:
        if value is None:  # a tombstone: the service forgot the customer
            self.states.pop(customer_id, None)
            return
        record = json.loads(value)
        held = self.states.get(customer_id)
        if held is None or record["version"] > held["version"]:  # older or repeated versions change nothing
            self.states[customer_id] = record

    def apply_event(self, value: bytes) -> dict | None:
        """The event, the first time its event_id is seen; None for a repeat."""
        event = json.loads(value)
        if event["event_id"] in self.seen_events:
            return None
        self.seen_events.add(event["event_id"])
        return event

    def may_enter(self, customer_id: str) -> bool | None:
        """True: decided and not suspended. False: suspended. None: not decided yet (keep the door shut)."""
        state = self.states.get(customer_id)
        return None if state is None else not state["suspended"]


async def follow(bootstrap: str, customer: str, timeout_s: float) -> int:
    door = Door()
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=50)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for topic in (STATE, EVENTS)
                      for p in sorted(consumer.partitions_for_topic(topic) or ())]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s

        async def caught_up() -> bool:  # a decision counts once everything published so far was read
            for tp in partitions:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    return False
            return True

        while time.monotonic() < deadline and not (door.may_enter(customer) is not None and await caught_up()):
            for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                for record in records:
                    customer_id = record.key.decode()
                    if tp.topic == STATE:
                        door.apply_state(customer_id, record.value)
                    elif customer_id == customer and (event := door.apply_event(record.value)) is not None:
                        print(f"event {event['type']} v{event['version']} by {event['actor']} ({event['source']})")
    finally:
        await consumer.stop()
    decision = door.may_enter(customer)
    if decision is None:
        print(f"{customer}: not decided yet: deny")
        return 2
    print(f"{customer}: {'admit' if decision else 'deny (suspended)'}")
    return 0 if decision else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--customer", required=True)
    parser.add_argument("--timeout", type=float, default=30.0)
    args = parser.parse_args()
    sys.exit(asyncio.run(follow(args.bootstrap, args.customer, args.timeout)))


if __name__ == "__main__":
    main()
