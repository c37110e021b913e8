"""Markers: records sent behind the ones a test checks, on the same topic and key (so the same partition),
whose effect proves the pipeline has passed those records before an absence is asserted."""

from __future__ import annotations

import orjson
from aiokafka import AIOKafkaProducer

from models import CustomerSignup, Reason, decode
from tests.integration import builders
from tests.support import TopicTail, send
from topics import CUSTOMER_SIGNUPS, SUSPENSION_STATE
from workers.triggers.rules import command_id_for


async def suspending_signup(producer: AIOKafkaProducer, tail: TopicTail, customer: str, space: str,
                            plan: str) -> list[tuple[int, bool, list[str]]]:
    """A signup of the customer on ``plan`` (a plan that suspends its joiners, set by the caller): waits for
    the state record it makes, then returns every state record of the customer seen, as (version,
    suspended, reasons)."""
    marker = builders.signup(customer, space, plan=plan)
    await send(producer, CUSTOMER_SIGNUPS.name, customer, marker)
    marker_id = command_id_for(CUSTOMER_SIGNUPS.name, decode(CustomerSignup, orjson.dumps(marker)), Reason.PLAN)
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, last_command_id=marker_id)
    return [(s["version"], s["suspended"], s["reasons"]) for s in tail.matching(SUSPENSION_STATE.name,
                                                                                customer_id=customer)]
