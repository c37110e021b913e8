"""A receiver of the suspensions webhooks, as a door-access or CRM team would write it (docs/webhooks.md).

It depends on nothing of the suspensions project: aiohttp and the Standard Webhooks library
(`pip install aiohttp standardwebhooks`). What it shows:

- verify the signature before anything else (`webhook-id`, `webhook-timestamp`, `webhook-signature`,
  with the endpoint's secret; during a rotation either secret verifies), and refuse what fails (400);
- answer fast (204) and do the work after the answer, from a queue: a slow answer is a timeout to the
  sender, which retries;
- deduplicate on `webhook-id` (a retry, a replay or a crash sends the same event again, same id);
- keep per customer only what is newer than what is held (`data.version`): a replay sends old events
  again after newer ones.

    WEBHOOK_SECRET=whsec_... python docs/examples/webhook_receiver.py --port 8080 [--exit-after N]

prints one line per event acted on (`suspension.suspended c-42 v3`), `duplicate <id>` for an event seen
before, `stale <id>` for an event older than the customer's state held, and `refused: <why>` for a
request whose signature does not verify.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from aiohttp import web
from standardwebhooks.webhooks import Webhook, WebhookVerificationError


class Receiver:
    def __init__(self, secret: str, exit_after: int | None) -> None:
        self.verifier = Webhook(secret)
        self.seen: set[str] = set()  # a real receiver keeps these in its database, with its effects
        self.versions: dict[str, int] = {}  # customer -> the latest state version acted on
        self.queue: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
        self.exit_after = exit_after
        self.handled = 0
        self.done = asyncio.Event()

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        try:
            payload = self.verifier.verify(body, dict(request.headers))
        except WebhookVerificationError as error:
            print(f"refused: {error}", flush=True)
            return web.Response(status=400, text="bad signature")
        await self.queue.put((request.headers["webhook-id"], payload))
        return web.Response(status=204)  # at once: the work happens after the answer

    async def work(self) -> None:
        while True:
            message_id, payload = await self.queue.get()
            self.handle(message_id, payload)
            self.handled += 1
            if self.exit_after is not None and self.handled >= self.exit_after:
                self.done.set()

    def handle(self, message_id: str, payload: dict) -> None:
        if message_id in self.seen:
            print(f"duplicate {message_id}", flush=True)
            return
        self.seen.add(message_id)
        data = payload["data"]
        if payload["type"] == "webhook.test":
            print(f"test event from {data['endpoint_id']}", flush=True)
        elif data["version"] <= self.versions.get(data["customer_id"], 0):
            print(f"stale {message_id}", flush=True)
        else:
            self.versions[data["customer_id"]] = data["version"]
            print(f"{payload['type']} {data['customer_id']} v{data['version']}", flush=True)
            # Act here: open or close the door, update the CRM, email the member...


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--exit-after", type=int, default=None, help="Stop after this many verified requests handled.")
    args = parser.parse_args()
    secret = os.environ.get("WEBHOOK_SECRET")
    if not secret:
        print("set WEBHOOK_SECRET to the endpoint's signing secret (whsec_...)", file=sys.stderr)
        return 2
    receiver = Receiver(secret, args.exit_after)
    app = web.Application()
    app.router.add_post("/webhooks", receiver.receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", args.port).start()
    print(f"listening on http://127.0.0.1:{args.port}/webhooks", flush=True)
    worker = asyncio.create_task(receiver.work())
    try:
        await receiver.done.wait()
    finally:
        worker.cancel()
        await runner.cleanup()
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(0)
