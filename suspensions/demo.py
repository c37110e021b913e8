"""`suspensions dev`: the newcomer's first command, and its narrated demo scenario."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from aiohttp import web
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from rich.console import Console
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from models import Action, MissedInvoices, utc_iso
from suspensions import access, operators
from suspensions.local.ports import free_port, port_open
from suspensions.local.stack import LocalStack
from suspensions.runner import RUNNABLE_NAMES, install_signal_handlers, run_workers
from topics import (
    CRM_OPPORTUNITIES,
    CUSTOMER_PLAN_CHANGES,
    CUSTOMER_SIGNUPS,
    DEADLETTER,
    INVOICE_JOBS,
    INVOICE_JOBS_ACCEPTED,
    INVOICE_JOBS_DROPPED,
    INVOICE_STATUS,
    SETTINGS_CRM_STAGES,
    SETTINGS_OVERDUE,
    SETTINGS_PLANS,
    SETTINGS_SIGNUP,
    SUSPENSION_STATE,
)
from workers.runtime.config import Settings
from workers.runtime.kafka import make_consumer, producer
from workers.runtime.metrics import Metrics
from workers.webhooks import store as webhook_store

WATCHED = (SUSPENSION_STATE.name, INVOICE_JOBS_ACCEPTED.name, INVOICE_JOBS_DROPPED.name, DEADLETTER.name)


async def run_dev(settings: Settings, *, demo: bool, exit_when_done: bool, console: Console) -> int:
    stack = LocalStack(base=settings)
    console.print("[bold]suspensions dev[/bold]: starting the local stack...")
    settings = await stack.start()
    console.print(f"  broker     {settings.kafka_bootstrap_servers}")
    console.print(f"  postgresql {settings.database_location}")  # a password stays off the screen
    console.print("  to use the CLI against it from another terminal:\n"
                  f"    export SUSPENSIONS_KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap_servers}\n"
                  f"    export SUSPENSIONS_DATABASE_URL={settings.database_location}")
    if port_open(settings.api_host, settings.api_port):
        settings = settings.model_copy(update={"api_port": free_port()})  # 8000 is taken: any free port
    console_url = f"http://{settings.api_host}:{settings.api_port}/"
    if demo:  # the demo's webhook receiver listens on loopback, which webhooks refuse by default
        settings = settings.model_copy(update={"webhooks_allow_private": True})
    scenario = Demo(settings, console, Metrics()) if demo else None
    spaces = [scenario.space_new, scenario.space_plans] if scenario else ["demo"]
    conn = await asyncpg.connect(**settings.database_connect_args())
    try:
        token = await access.create_token(conn, f"demo-{uuid.uuid4().hex[:6]}", access.Role.ADMIN, spaces)
    finally:
        await conn.close()
    console.print(f"  console    {console_url}  (sign in with this admin token for {', '.join(spaces)}:)\n"
                  f"             {token}")
    stop = asyncio.Event()
    install_signal_handlers(stop)
    metrics = scenario.metrics if scenario else Metrics()
    workers = asyncio.create_task(run_workers(settings, RUNNABLE_NAMES, stop, metrics))
    code = 0
    try:
        if scenario:
            ok = await scenario.run()
            code = 0 if ok else 1
            if exit_when_done:
                stop.set()
        if not stop.is_set():
            console.print("[bold]running[/bold]: every worker is up. Ctrl-C stops everything.")
        await workers
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await workers
        stack.stop()
        console.print("stopped: broker, database and workers are down.")
    return code


class Demo:
    """Publishes a small scenario and prints every outcome as it arrives."""

    def __init__(self, settings: Settings, console: Console, metrics: Metrics) -> None:
        self.settings = settings
        self.console = console
        self.metrics = metrics
        self.seen: list[tuple[str, dict[str, object] | None]] = []
        self.arrived = asyncio.Condition()
        run = uuid.uuid4().hex[:6]
        self.space_new = f"downtown-{run}"  # keeps new members suspended
        self.space_plans = f"harbour-{run}"  # has a probation plan and a bad-debt CRM stage
        # Fresh names per run: a customer belongs to one space, and the database may be reused.
        self.alice, self.bob, self.carol, self.dave, self.erin, self.frank = (
            f"{name}-{run}" for name in ("alice", "bob", "carol", "dave", "erin", "frank"))

    async def run(self) -> bool:
        watcher = make_consumer(self.settings, None, *WATCHED, auto_offset_reset="latest")
        await watcher.start()
        await watcher.seek_to_end()
        watch_task = asyncio.create_task(self._watch(watcher))
        hooks: DemoWebhooks | None = None
        try:
            hooks = await DemoWebhooks.start(self.settings, self.space_new, self.console)
            async with producer(self.settings) as kafka:
                return await self._scenario(kafka) and await hooks.delivered(self.alice)
        except TimeoutError as error:
            self.console.print(f"[red]demo failed:[/red] {error}")
            return False
        finally:
            if hooks is not None:
                await hooks.stop()
            watch_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch_task
            await watcher.stop()

    async def _watch(self, consumer: AIOKafkaConsumer) -> None:
        async for record in consumer:
            try:
                value = orjson.loads(record.value) if record.value else None
            except orjson.JSONDecodeError:
                value = None
            self._narrate(record.topic, value)
            async with self.arrived:
                self.seen.append((record.topic, value))
                self.arrived.notify_all()

    def _narrate(self, topic: str, value: dict[str, Any] | None) -> None:
        v = value or {}
        if topic == SUSPENSION_STATE.name:
            if v.get("suspended"):
                self.console.print(f"  [red]state[/red]    {v['customer_id']} SUSPENDED "
                                   f"reasons={v['reasons']} version={v['version']}")
            else:
                how = "lifted" if v.get("lifted_at") else "decided: not suspended"
                self.console.print(f"  [green]state[/green]    {v['customer_id']} active "
                                   f"({how}) version={v['version']}")
        elif topic == INVOICE_JOBS_ACCEPTED.name:
            kind = "REBILLED after lift" if v.get("rebilled") else "accepted"
            self.console.print(f"  [cyan]invoice[/cyan]  {v.get('job_id')} for {v.get('customer_id')} "
                               f"{v.get('amount')} {v.get('currency')}: {kind}")
        elif topic == INVOICE_JOBS_DROPPED.name:
            self.console.print(f"  [yellow]invoice[/yellow]  {v.get('job_id')} for {v.get('customer_id')} DROPPED "
                               f"(suspension version {v.get('suspension_version')})")
        elif topic == DEADLETTER.name:
            self.console.print(f"  [magenta]deadletter[/magenta] {v.get('source_topic')}: {v.get('error')}")

    async def _expect(self, topic: str, match: dict[str, object], timeout_s: float = 60.0) -> None:
        def found() -> bool:
            return any(t == topic and v is not None and all(v.get(k) == m for k, m in match.items())
                       for t, v in self.seen)

        async with self.arrived:
            try:
                await asyncio.wait_for(self.arrived.wait_for(found), timeout_s)
            except TimeoutError:
                raise TimeoutError(f"no {topic} record matching {match} within {timeout_s}s") from None

    async def _settings_folded(self, count: float, timeout_s: float = 60.0) -> None:
        """Settings apply as last known when an event is processed: let the triggers see them first."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.metrics.settings_records_folded() < count:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the triggers worker did not load the demo settings")
            await asyncio.sleep(0.05)

    def _step(self, text: str) -> None:
        self.console.print(f"\n[bold]>[/bold] {text}")

    async def _send(self, kafka: AIOKafkaProducer, topic: str, key: str, value: dict[str, object] | bytes) -> None:
        payload = value if isinstance(value, bytes) else orjson.dumps(value)
        await kafka.send_and_wait(topic, payload, key=key.encode())

    def _event(self, customer: str, space: str, **fields: object) -> dict[str, object]:
        return {"event_id": uuid.uuid4().hex, "occurred_at": utc_iso(), "space_id": space,
                "customer_id": customer, **fields}

    def _job(self, customer: str, space: str, job: str) -> dict[str, object]:
        return {"job_id": job, "space_id": space, "customer_id": customer, "contract_id": f"contract-{customer}",
                "period_start": "2026-12-01", "period_end": "2026-12-31", "amount": "120.00", "currency": "EUR"}

    async def _scenario(self, kafka: AIOKafkaProducer) -> bool:
        a, p = self.space_new, self.space_plans
        self._step(f"settings: space {a} keeps new members suspended; in {p}, plan 'probation' suspends "
                   "its joiners and CRM stage 'sales/bad-debt' deactivates accounts")
        folded_before = self.metrics.settings_records_folded()
        await self._send(kafka, SETTINGS_SIGNUP.name, a,
                         {"space_id": a, "keep_new_members_suspended": True, "updated_at": utc_iso()})
        await self._send(kafka, SETTINGS_SIGNUP.name, p,
                         {"space_id": p, "keep_new_members_suspended": False, "updated_at": utc_iso()})
        await self._send(kafka, SETTINGS_PLANS.name, f"probation-{p}",
                         {"space_id": p, "plan_id": f"probation-{p}", "suspend_on_join": True, "updated_at": utc_iso()})
        await self._send(kafka, SETTINGS_CRM_STAGES.name, f"sales-{p}/bad-debt",
                         {"space_id": p, "board_id": f"sales-{p}", "stage_id": "bad-debt",
                          "deactivate_account": True, "updated_at": utc_iso()})
        await self._settings_folded(folded_before + 4)
        await self._send(kafka, SETTINGS_OVERDUE.name, p,
                         {"space_id": p, "suspend_after_days": 0, "lift_when_paid": True, "missed_invoices": "bill",
                          "updated_at": utc_iso()})

        self._step(f"alice signs up in {a} (signup rule)")
        await self._send(kafka, CUSTOMER_SIGNUPS.name, self.alice, self._event(self.alice, a, email="alice@example.com"))
        await self._expect(SUSPENSION_STATE.name, {"customer_id": self.alice, "suspended": True})

        self._step(f"bob signs up in {p}: that space lets new members in, so he is decided active; "
                   "his invoice is accepted")
        await self._send(kafka, CUSTOMER_SIGNUPS.name, self.bob, self._event(self.bob, p))
        await self._expect(SUSPENSION_STATE.name, {"customer_id": self.bob, "suspended": False})
        await self._send(kafka, INVOICE_JOBS.name, self.bob, self._job(self.bob, p, f"inv-{self.bob}"))
        await self._expect(INVOICE_JOBS_ACCEPTED.name, {"job_id": f"inv-{self.bob}"})

        self._step("carol changes to the probation plan (plan rule)")
        await self._send(kafka, CUSTOMER_PLAN_CHANGES.name, self.carol,
                         self._event(self.carol, p, plan_id=f"probation-{p}", previous_plan_id="standard"))
        await self._expect(SUSPENSION_STATE.name, {"customer_id": self.carol, "suspended": True})

        self._step("dave's opportunity moves to the bad-debt stage (CRM rule)")
        await self._send(kafka, CRM_OPPORTUNITIES.name, self.dave,
                         self._event(self.dave, p, opportunity_id="opp-1", board_id=f"sales-{p}", stage_id="bad-debt"))
        await self._expect(SUSPENSION_STATE.name, {"customer_id": self.dave, "suspended": True})

        self._step("an operator suspends erin by hand; erin's invoice of the cycle is dropped")
        suspend = operators.manual_command(Action.SUSPEND, self.erin, p, "admin:ops-1", "unpaid deposit")
        await operators.publish(kafka, [suspend])
        await self._expect(SUSPENSION_STATE.name, {"customer_id": self.erin, "suspended": True})
        await self._send(kafka, INVOICE_JOBS.name, self.erin, self._job(self.erin, p, f"inv-{self.erin}"))
        await self._expect(INVOICE_JOBS_DROPPED.name, {"job_id": f"inv-{self.erin}"})

        self._step("the operator lifts erin's suspension (missed invoices: bill); the dropped invoice is billed")
        lift = operators.manual_command(Action.LIFT, self.erin, p, "admin:ops-1", "deposit paid", MissedInvoices.BILL)
        await operators.publish(kafka, [lift])
        await self._expect(SUSPENSION_STATE.name, {"customer_id": self.erin, "suspended": False})
        await self._expect(INVOICE_JOBS_ACCEPTED.name, {"job_id": f"inv-{self.erin}", "rebilled": True})

        self._step(f"frank's invoice falls overdue ({p} suspends after 0 days, and lifts when paid); "
                   "he pays and the rule releases him")
        due = datetime.now(UTC) + timedelta(seconds=3)
        invoice = {"space_id": p, "customer_id": self.frank, "invoice_id": f"INV-{self.frank}", "amount": "80.00",
                   "currency": "EUR"}
        await self._send(kafka, INVOICE_STATUS.name, self.frank,
                         {**invoice, "event_id": uuid.uuid4().hex, "occurred_at": utc_iso(), "status": "issued",
                          "due_at": utc_iso(due)})
        await self._expect(SUSPENSION_STATE.name, {"customer_id": self.frank, "suspended": True, "reasons": ["overdue"]})
        await self._send(kafka, INVOICE_STATUS.name, self.frank,
                         {**invoice, "event_id": uuid.uuid4().hex, "occurred_at": utc_iso(), "status": "paid"})
        await self._expect(SUSPENSION_STATE.name, {"customer_id": self.frank, "suspended": False})

        self._step("a broken record arrives on customer.signups: it goes to the dead letter topic")
        await self._send(kafka, CUSTOMER_SIGNUPS.name, "mallory", b"{not json")
        await self._expect(DEADLETTER.name, {"source_topic": CUSTOMER_SIGNUPS.name})

        self.console.print("\n[bold green]demo complete[/bold green]: try "
                           f"`suspensions status {self.alice}`, `suspensions history {self.erin}`, "
                           f"`suspensions list --space {p}` or `suspensions doctor` with the exports above.")
        return True


class DemoWebhooks:
    """A webhook endpoint of the demo's first space, on a small receiver of the demo's own (loopback): it
    verifies each delivery's Standard Webhooks signature and narrates it (docs/webhooks.md)."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.verifier: Webhook | None = None  # once the endpoint, and so its secret, exists
        self.received: list[dict[str, Any]] = []
        self.arrived = asyncio.Event()
        app = web.Application()
        app.router.add_post("/webhooks", self.receive)
        self.runner = web.AppRunner(app, access_log=None)

    @classmethod
    async def start(cls, settings: Settings, space: str, console: Console) -> DemoWebhooks:
        hooks = cls(console)
        await hooks.runner.setup()
        await web.TCPSite(hooks.runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{hooks.runner.addresses[0][1]}/webhooks"
        conn = await asyncpg.connect(**settings.database_connect_args())
        try:
            row, secret = await webhook_store.add_endpoint(conn, space, url, [], "the demo's receiver", True,
                                                           datetime.now(UTC))
        finally:
            await conn.close()
        hooks.verifier = Webhook(secret)
        console.print(f"  webhooks   endpoint {row['endpoint_id']} of {space} -> {url}")
        return hooks

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            if self.verifier is None:
                raise WebhookVerificationError("no secret yet")
            payload = self.verifier.verify(body, dict(request.headers))
        except WebhookVerificationError:
            self.console.print("  [red]webhook[/red]  a request with a bad signature, refused")
            return web.Response(status=400)
        data = payload["data"]
        self.console.print(f"  [blue]webhook[/blue]  {payload['type']} for {data.get('customer_id')} "
                           f"(webhook-id {request.headers['webhook-id'][:8]}..., signature verified)")
        self.received.append(payload)
        self.arrived.set()
        return web.Response(status=204)

    async def delivered(self, customer: str, timeout_s: float = 30.0) -> bool:
        """Whether the receiver got the customer's suspension (the webhooks worker's delivery) in time."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not any(p["type"] == "suspension.suspended" and p["data"].get("customer_id") == customer
                      for p in self.received):
            self.arrived.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                self.console.print(f"[red]demo failed:[/red] no webhook for {customer} within {timeout_s}s")
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), left)
        return True

    async def stop(self) -> None:
        await self.runner.cleanup()
