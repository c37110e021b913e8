"""Helpers of the operator API and console tests: customers the service knows, markers, what was applied.

The API publishes nothing for a customer the service does not know in the token's space, so a test
makes its customers known first, the way the trusted path does: a `register` decision on
`suspension.commands` (what a signup that suspends nothing yields), applied by the session's state
worker; or, on a stack with no state worker, rows written as that worker would write them.

A refused request is proven to have sent nothing with a marker: a command for the same customer
(the same key, so the same partition, applied after anything published before it) sent through an
allowed path; once the marker is applied, a command of the refused request would have been too.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg
import httpx
import orjson
from aiokafka import AIOKafkaProducer

from models import CustomerState
from suspensions.local.seed import copy_states
from tests.support import now_iso, send, wait_until
from topics import SUSPENSION_COMMANDS


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register_command(customer: str, space: str) -> dict[str, object]:
    return {"command_id": str(uuid.uuid4()), "issued_at": now_iso(), "space_id": space, "customer_id": customer,
            "action": "register", "reason": "signup", "actor": "system"}


async def register_customers(producer: AIOKafkaProducer, db: asyncpg.Pool, space: str, customers: list[str],
                             timeout_s: float = 60.0) -> None:
    """Make the customers known in ``space`` through Kafka and wait until the state worker holds them."""
    sent = [await producer.send(SUSPENSION_COMMANDS.name, orjson.dumps(register_command(customer, space)),
                                key=customer.encode()) for customer in customers]
    await asyncio.gather(*sent)  # every one acknowledged

    async def known() -> bool:
        async with db.acquire() as conn:
            count = await conn.fetchval(
                "SELECT count(*) FROM customer_state WHERE space_id = $1 AND customer_id = ANY($2::text[])",
                space, customers)
        return bool(count == len(customers))

    await wait_until(known, timeout_s, f"{len(customers)} customer(s) of {space} registered")


async def seed_customers(database_url: str, space: str, customers: list[str]) -> None:
    """Customers known in ``space`` on a stack where no state worker runs: their rows, as it writes them."""
    now = datetime.now(UTC)
    conn = await asyncpg.connect(database_url)
    try:
        await copy_states(conn, [CustomerState(customer, space, False, (), None, None, 1, now, "seed")
                                            for customer in customers])
    finally:
        await conn.close()


async def history_actors(db: asyncpg.Pool, customer: str) -> list[tuple[str, str]]:
    """(action, actor) of every command applied to the customer, in order."""
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT action, actor FROM command_history WHERE customer_id = $1 ORDER BY id",
                                customer)
    return [(row["action"], row["actor"]) for row in rows]


async def marker_applied(producer: AIOKafkaProducer, db: asyncpg.Pool, customer: str, space: str) -> str:
    """Send a `register` for the customer through Kafka (no-op or first state) and wait until it is applied;
    its command id, for a test to wait until its topic tail has read the marker too."""
    command = register_command(customer, space)
    await send(producer, SUSPENSION_COMMANDS.name, customer, command)

    async def applied() -> bool:
        async with db.acquire() as conn:
            return bool(await conn.fetchval("SELECT 1 FROM processed_commands WHERE command_id = $1",
                                            command["command_id"]))

    await wait_until(applied, 30, f"the marker for {customer} to be applied")
    return str(command["command_id"])


CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def console_session(client: httpx.AsyncClient, token: str) -> None:
    """Sign the client in to the console (its cookie jar keeps the session)."""
    response = await client.post("/signin", data={"token": token, "next": "/"}, follow_redirects=False)
    assert response.status_code == 303, response.text


async def form_token(client: httpx.AsyncClient, page: str) -> str:
    """The session's form token, as the console's own pages carry it."""
    response = await client.get(page)
    assert response.status_code == 200, response.text
    found = CSRF.search(response.text)
    assert found, f"no form token on {page}"
    return found.group(1)


# --- raw HTTP: a request's head and part of its body, to see what is answered before the body is read


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: bytes


async def raw(port: int, head: str, body: bytes = b"") -> Raw:
    """Send a request's head and only ``body`` of it, then read the answer: an answer that comes back
    was given before the body was complete."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        start = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 15)
        lines = start.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines[1:] if line)
        headers = {name.lower(): value for name, value in headers.items()}
        payload = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), 15)
        return Raw(int(lines[0].split(" ")[1]), headers, payload)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


def post_head(path: str, length: int | None, content_type: str, **headers: str) -> str:
    framing = f"Content-Length: {length}\r\n" if length is not None else "Transfer-Encoding: chunked\r\n"
    extra = "".join(f"{name.replace('_', '-')}: {value}\r\n" for name, value in headers.items())
    return f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n{framing}{extra}\r\n"
