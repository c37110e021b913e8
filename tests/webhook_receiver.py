"""A real HTTP receiver for the webhook tests and benchmarks: an aiohttp server on loopback that records
every request (path, headers, body, when) and answers what a test scripted per path (status, delay,
headers), then 200."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer

from suspensions.local.broker import LocalBroker
from tests.support import WorkerProcess, create_database, wait_until
from topics import SUSPENSION_EVENTS
from workers.runtime.config import Settings
from workers.runtime.db.migrate import migrate
from workers.runtime.kafka import create_topics
from workers.webhooks import store


@dataclass(frozen=True)
class Answer:
    status: int = 200
    delay_s: float = 0.0  # longer than the worker's timeout: a timeout
    headers: dict[str, str] = field(default_factory=dict)
    body: str = "ok"


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.time() when the request arrived


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self._scripts: dict[tuple[str, str | None], deque[Answer]] = {}
        self._always: dict[str, Answer] = {}
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("POST", "/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]  # the port the OS chose
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path.lstrip('/')}"

    def script(self, path: str, *answers: Answer, customer: str | None = None) -> None:
        """The next requests to ``path`` (about ``customer`` only, when given) get these answers, in order;
        then 200."""
        self._scripts.setdefault((path.lstrip("/"), customer), deque()).extend(answers)

    def always(self, path: str, answer: Answer) -> None:
        self._always[path.lstrip("/")] = answer

    async def _handle(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        body = await request.read()
        self.received.append(Received(path, {name.lower(): value for name, value in request.headers.items()},
                                      body, time.time()))
        try:
            customer = orjson.loads(body)["data"].get("customer_id")
        except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
            customer = None
        queue = self._scripts.get((path, customer)) or self._scripts.get((path, None))
        answer = queue.popleft() if queue else self._always.get(path, Answer())
        if answer.delay_s:
            await asyncio.sleep(answer.delay_s)
        return web.Response(status=answer.status, text=answer.body, headers=answer.headers)

    def at(self, path: str) -> list[Received]:
        return [item for item in self.received if item.path == path.lstrip("/")]

    async def wait_for(self, path: str, count: int, timeout_s: float = 30.0) -> list[Received]:
        async def enough() -> list[Received] | None:
            found = self.at(path)
            return found if len(found) >= count else None

        return await wait_until(enough, timeout_s, f"{count} request(s) to /{path}")


# --- a stack of the webhook tests' own: a broker and a database nothing else uses, a webhooks worker ----

FAST_WEBHOOKS_ENV = {
    "SUSPENSIONS_WEBHOOKS_ALLOW_PRIVATE": "true",
    "SUSPENSIONS_WEBHOOKS_INITIAL_BACKOFF_S": "0.2",
    "SUSPENSIONS_WEBHOOKS_MAX_BACKOFF_S": "2",
    "SUSPENSIONS_WEBHOOKS_TIMEOUT_S": "1",
    "SUSPENSIONS_WEBHOOKS_POLL_INTERVAL_MS": "20",
}


WORKERS = ("webhooks", "api")


def lifecycle_event(space: str, customer: str, version: int, event_type: str = "suspended") -> dict[str, object]:
    """A lifecycle event as the state worker publishes it (``LifecycleEvent``)."""
    from models.lifecycle import event_id_for
    from tests.support import now_iso

    suspended = event_type in ("suspended", "reason_added")
    return {"event_id": event_id_for(customer, version), "type": event_type, "occurred_at": now_iso(),
            "space_id": space, "customer_id": customer, "version": version,
            "reasons_before": [] if event_type != "lifted" else ["manual"],
            "reasons_after": ["manual"] if suspended else [], "actor": "admin:ops", "source": "operator_cli",
            "command_id": f"cmd-{customer}-{version}", "cause": None, "note": None, "missed_invoices": None,
            "invoices_billed": None, "invoices_waived": None, "schedules": None, "fired_delay_ms": None}


@dataclass
class Hooks:
    settings: Settings
    worker: WorkerProcess
    db: asyncpg.Pool
    producer: AIOKafkaProducer
    receiver: Receiver

    def start_worker(self) -> WorkerProcess:
        self.worker = WorkerProcess(self.settings, workers=WORKERS, extra_env=FAST_WEBHOOKS_ENV,
                                    log_path=self.worker.log_path).start()
        return self.worker

    async def add(self, space: str, path: str, *events: str) -> tuple[str, str]:
        async with self.db.acquire() as conn:
            row, secret = await store.add_endpoint(conn, space, self.receiver.url(path), events, None, True,
                                                   datetime.now(UTC))
        return row["endpoint_id"], secret

    async def publish(self, *events: dict[str, object]) -> list[bytes]:
        values = [orjson.dumps(event) for event in events]
        sent = [await self.producer.send(SUSPENSION_EVENTS.name, value, key=str(event["customer_id"]).encode())
                for event, value in zip(events, values, strict=True)]
        await asyncio.gather(*sent)
        return values

    async def deliveries(self, endpoint_id: str) -> list[asyncpg.Record]:
        return list(await self.db.fetch(
            "SELECT * FROM webhook_deliveries WHERE endpoint_id = $1 ORDER BY delivery_id", endpoint_id))

    async def attempts(self, endpoint_id: str, event_id: str) -> list[asyncpg.Record]:
        return list(await self.db.fetch(
            "SELECT a.* FROM webhook_attempts a JOIN webhook_deliveries d USING (delivery_id)"
            " WHERE d.endpoint_id = $1 AND d.event_id = $2 ORDER BY a.attempt", endpoint_id, event_id))

    async def delivered(self, endpoint_id: str, count: int, timeout_s: float = 30.0) -> list[asyncpg.Record]:
        async def done() -> list[asyncpg.Record] | None:
            rows = await self.deliveries(endpoint_id)
            finished = [row for row in rows if row["status"] == "delivered"]
            return rows if len(finished) >= count else None

        return await wait_until(done, timeout_s, f"{count} deliveries to {endpoint_id}")


@asynccontextmanager
async def open_hooks(settings: Settings, log: Path) -> AsyncIterator[Hooks]:
    """A broker and a database of their own, a receiver, and `suspensions run webhooks api` over them with
    private destinations allowed and short backoff (the session's workers use neither)."""
    url = await create_database(settings, "hooks")
    broker = LocalBroker().start()
    receiver = await Receiver().start()
    local = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers, "database_url": url})
    await migrate(url)
    await create_topics(local)
    worker = WorkerProcess(local, workers=WORKERS, extra_env=FAST_WEBHOOKS_ENV, log_path=log).start()
    pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
    producer = AIOKafkaProducer(bootstrap_servers=local.kafka_bootstrap_servers, acks="all")
    await producer.start()
    hooks = Hooks(local, worker, pool, producer, receiver)
    try:
        await worker.wait_ready()
        yield hooks
    finally:
        hooks.worker.stop()
        await producer.stop()
        await pool.close()
        await receiver.stop()
        broker.stop()
