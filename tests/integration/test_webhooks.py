"""Issue 22: webhooks delivered to a real HTTP receiver on loopback, from a webhooks worker of the module's
own stack (its own broker and database, so private destinations can be allowed and backoff made short).

Lifecycle events are published on `suspension.events` as the state worker publishes them; what is
asserted is what the receiver got (headers, bodies, times) and what PostgreSQL recorded."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
import pytest_asyncio
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from models.version import SERVICE_VERSION
from suspensions import access
from suspensions.access import Role
from suspensions.local.ports import free_port
from tests.operator_support import auth
from tests.support import run_cli_env, uid, wait_until
from tests.webhook_receiver import FAST_WEBHOOKS_ENV, Answer, Hooks, lifecycle_event, open_hooks
from workers.runtime.config import Settings
from workers.webhooks import store
from workers.webhooks.delivery import Sender
from workers.webhooks.signing import new_secret

pytestmark = pytest.mark.integration

RECEIVER_EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "webhook_receiver.py"


@pytest_asyncio.fixture(scope="module")
async def hooks(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hooks]:
    async with open_hooks(settings, tmp_path_factory.mktemp("webhooks") / "worker.log") as stack:
        yield stack


def cli(hooks: Hooks, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli_env(hooks.settings, FAST_WEBHOOKS_ENV, *args)


def signatures(header: str) -> list[str]:
    return [part.split(",", 1)[1] for part in header.split(" ")]


async def test_signed_bodies_in_order_per_customer(hooks: Hooks) -> None:
    space, first, second = uid("space"), uid("cust"), uid("cust")
    added = cli(hooks, "webhooks", "add", "--space", space, "--url", hooks.receiver.url("signed"),
                    "--description", "door access", "--json")
    assert added.returncode == 0, added.stderr
    endpoint = json.loads(added.stdout)
    assert set(endpoint) == {"id", "secret", "url", "space_id", "events"}
    assert endpoint["secret"].startswith("whsec_") and endpoint["events"] == []
    other_space = uid("space")
    await hooks.add(other_space, "signed")  # another space's endpoint: its events only
    events = [lifecycle_event(space, first, 1), lifecycle_event(space, second, 1),
              lifecycle_event(space, first, 2, "lifted"), lifecycle_event(space, first, 3, "suspended"),
              lifecycle_event(space, second, 2, "lifted")]
    values = await hooks.publish(*events)

    received = await hooks.receiver.wait_for("signed", len(events))
    verifier = Webhook(endpoint["secret"])
    by_id = {str(event["event_id"]): value for event, value in zip(events, values, strict=True)}
    for request in received:
        payload = verifier.verify(request.body, request.headers)  # raises unless the signature is right
        assert request.headers["webhook-id"] == payload["data"]["event_id"]
        assert request.headers["content-type"] == "application/json"
        assert request.headers["user-agent"] == f"suspensions-webhooks/{SERVICE_VERSION} suspensions/{SERVICE_VERSION}"
        assert payload["type"] == f"suspension.{payload['data']['type']}"
        assert payload["timestamp"] == payload["data"]["occurred_at"]
        # The record exactly as on the topic, byte for byte.
        assert request.body.endswith(b',"data":' + by_id[request.headers["webhook-id"]] + b"}")
    with pytest.raises(WebhookVerificationError):
        Webhook(base64.b64encode(b"another secret").decode()).verify(received[0].body, received[0].headers)
    for customer in (first, second):
        versions = [orjson.loads(r.body)["data"]["version"] for r in received
                    if orjson.loads(r.body)["data"]["customer_id"] == customer]
        assert versions == sorted(versions)
    rows = await hooks.delivered(endpoint["id"], len(events))
    assert [row["status"] for row in rows] == ["delivered"] * len(events)
    assert [row["attempts"] for row in rows] == [1] * len(events)
    assert len(received) == len(events)  # nothing of the other space

    shown = cli(hooks, "webhooks", "deliveries", endpoint["id"], "--json")
    assert shown.returncode == 0, shown.stderr
    log = json.loads(shown.stdout)
    assert len(log) == len(events) and {item["status_code"] for item in log} == {200}
    assert all(item["status"] == "delivered" and item["latency_ms"] is not None for item in log)
    listed = json.loads(cli(hooks, "webhooks", "list", "--space", space, "--json").stdout)
    assert [(item["id"], item["health"], item["pending"]) for item in listed] == [(endpoint["id"], "ok", 0)]
    assert "secret" not in listed[0]
    delivered = await asyncio.to_thread(hooks.worker.metric, "suspensions_webhook_deliveries_total",
                                        outcome="delivered")
    assert delivered >= len(events)


async def test_event_filter(hooks: Hooks) -> None:
    space, customer = uid("space"), uid("cust")
    only_lifts, _ = await hooks.add(space, "lifts", "lifted")
    everything, _ = await hooks.add(space, "all")
    await hooks.publish(lifecycle_event(space, customer, 1), lifecycle_event(space, customer, 2, "lifted"))
    await hooks.delivered(everything, 2)
    [lift] = await hooks.delivered(only_lifts, 1)
    assert lift["event_type"] == "lifted"


async def test_retries_after_errors_and_timeouts_with_backoff_keep_order(hooks: Hooks) -> None:
    space, slow, other = uid("space"), uid("cust"), uid("cust")
    endpoint, _ = await hooks.add(space, "flaky")
    hooks.receiver.script("flaky", Answer(500), Answer(502), Answer(200, delay_s=1.5), Answer(500), customer=slow)
    first, later = lifecycle_event(space, slow, 1), lifecycle_event(space, slow, 2, "lifted")
    await hooks.publish(first)
    await hooks.receiver.wait_for("flaky", 1)
    await hooks.publish(later, lifecycle_event(space, other, 1))
    rows = await hooks.delivered(endpoint, 3)

    attempts = await hooks.attempts(endpoint, str(first["event_id"]))
    assert [(a["status_code"], a["error"]) for a in attempts] == [
        (500, "HTTP 500"), (502, "HTTP 502"), (None, "timeout"), (500, "HTTP 500"), (200, None)]
    assert attempts[2]["latency_ms"] >= 1000
    # Exponential backoff (0.2 s doubled per attempt, jitter between half and all of it) after each failure.
    ends = [a["attempted_at"] for a in attempts]
    gaps = [(ends[i + 1] - ends[i]).total_seconds() for i in range(len(ends) - 1)]
    for number, gap in enumerate(gaps, start=1):
        step = 0.2 * 2 ** (number - 1)
        assert gap >= step / 2 - 0.02, (number, gaps)
    assert gaps[3] >= 0.8 - 0.02 and gaps[0] < 1.5
    # The later event of the same customer waited for the first; the other customer's did not.
    got = [(orjson.loads(r.body)["data"]["customer_id"], orjson.loads(r.body)["data"]["version"], r.at)
           for r in hooks.receiver.at("flaky")]
    first_ok = max(at for customer, version, at in got if customer == slow and version == 1)
    assert [at for customer, version, at in got if customer == slow and version == 2][0] >= first_ok
    assert [at for customer, _, at in got if customer == other][0] < first_ok
    assert {row["status"] for row in rows} == {"delivered"}


async def test_retry_after_is_honoured(hooks: Hooks) -> None:
    space, customer = uid("space"), uid("cust")
    endpoint, _ = await hooks.add(space, "busy")
    hooks.receiver.script("busy", Answer(503, headers={"Retry-After": "2"}))
    event = lifecycle_event(space, customer, 1)
    await hooks.publish(event)
    await hooks.delivered(endpoint, 1)
    first, second = await hooks.attempts(endpoint, str(event["event_id"]))
    assert first["status_code"] == 503 and second["status_code"] == 200
    assert (second["attempted_at"] - first["attempted_at"]).total_seconds() >= 2.0  # the backoff alone: 0.2 s


async def test_gone_disables_the_endpoint_at_once(hooks: Hooks) -> None:
    space, customer = uid("space"), uid("cust")
    gone, _ = await hooks.add(space, "gone")
    alive, _ = await hooks.add(space, "alive")
    hooks.receiver.always("gone", Answer(410))
    await hooks.publish(lifecycle_event(space, customer, 1))
    await hooks.delivered(alive, 1)
    await wait_until(lambda: hooks.db.fetchval("SELECT NOT enabled FROM webhook_endpoints WHERE endpoint_id = $1",
                                               gone), 30, "the endpoint disabled")
    await hooks.publish(lifecycle_event(space, customer, 2, "lifted"))
    await hooks.delivered(alive, 2)  # the later event went out to the live endpoint...
    assert len(hooks.receiver.at("gone")) == 1  # ...and nothing more to the gone one
    listed = json.loads(cli(hooks, "webhooks", "list", "--space", space, "--json").stdout)
    health = {item["id"]: (item["health"], item["disabled_reason"]) for item in listed}
    assert health[gone][0] == "disabled" and "410" in health[gone][1]
    assert health[alive] == ("ok", None)


async def test_rotation_signs_with_both_secrets_for_a_while(hooks: Hooks) -> None:
    space, customer = uid("space"), uid("cust")
    endpoint, old = await hooks.add(space, "rotated")
    rotated = cli(hooks, "webhooks", "rotate-secret", endpoint, "--json")
    assert rotated.returncode == 0, rotated.stderr
    new = json.loads(rotated.stdout)["secret"]
    assert new != old
    await hooks.publish(lifecycle_event(space, customer, 1))
    [request] = await hooks.receiver.wait_for("rotated", 1)
    assert len(signatures(request.headers["webhook-signature"])) == 2
    Webhook(new).verify(request.body, request.headers)
    Webhook(old).verify(request.body, request.headers)
    # Once the overlap is over, only the new secret signs.
    await hooks.db.execute("UPDATE webhook_endpoints SET previous_secret_until = now() - interval '1 second'"
                           " WHERE endpoint_id = $1", endpoint)
    await hooks.publish(lifecycle_event(space, customer, 2, "lifted"))
    _, after = await hooks.receiver.wait_for("rotated", 2)
    assert len(signatures(after.headers["webhook-signature"])) == 1
    Webhook(new).verify(after.body, after.headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(after.body, after.headers)


async def test_replay_sends_again_since_a_moment(hooks: Hooks) -> None:
    space, customer = uid("space"), uid("cust")
    endpoint, secret = await hooks.add(space, "replayed")
    await hooks.publish(lifecycle_event(space, customer, 1))
    await hooks.delivered(endpoint, 1)
    since = datetime.now(UTC)
    await hooks.publish(lifecycle_event(space, customer, 2, "lifted"), lifecycle_event(space, customer, 3))
    await hooks.delivered(endpoint, 3)
    replayed = cli(hooks, "webhooks", "replay", endpoint, "--since", since.isoformat(), "--json")
    assert replayed.returncode == 0, replayed.stderr
    assert json.loads(replayed.stdout) == {"id": endpoint, "replayed": 2}
    received = await hooks.receiver.wait_for("replayed", 5)
    first, again = received[1:3], received[3:5]
    assert [r.headers["webhook-id"] for r in again] == [r.headers["webhook-id"] for r in first]
    assert [r.body for r in again] == [r.body for r in first]
    for request in again:
        Webhook(secret).verify(request.body, request.headers)
    rows = await hooks.delivered(endpoint, 5)
    assert sorted(row["replay"] > 0 for row in rows) == [False, False, False, True, True]
    missing = cli(hooks, "webhooks", "replay", "ep_nothing", "--since", since.isoformat())
    assert missing.returncode == 1


async def test_one_endpoint_down_does_not_delay_another(hooks: Hooks) -> None:
    space = uid("space")
    down, _ = await hooks.add(space, "down")
    up, _ = await hooks.add(space, "up")
    hooks.receiver.always("down", Answer(200, delay_s=5))  # every attempt times out (after 1 s)
    customers = [uid("cust") for _ in range(30)]
    started = asyncio.get_running_loop().time()
    await hooks.publish(*(lifecycle_event(space, customer, 1) for customer in customers))
    await hooks.delivered(up, len(customers), timeout_s=10)
    took = asyncio.get_running_loop().time() - started
    pending = [row for row in await hooks.deliveries(down) if row["status"] == "pending"]
    assert len(pending) == len(customers) and took < 3.0, took
    # What operators alert on: the age of the oldest pending delivery, per endpoint (refreshed every 5 s).
    age = await wait_until(lambda: asyncio.to_thread(hooks.worker.metric, "suspensions_webhook_oldest_pending_seconds",
                                                     endpoint=down), 15, "the oldest pending delivery's age")
    assert age > 0
    assert await asyncio.to_thread(hooks.worker.metric, "suspensions_webhook_attempts_total", outcome="timeout") > 0
    cli(hooks, "webhooks", "remove", down)
    assert await hooks.db.fetchval("SELECT count(*) FROM webhook_deliveries WHERE endpoint_id = $1", down) == 0


async def test_kill_9_in_the_middle_delivers_and_records_each_event_once(hooks: Hooks) -> None:
    space = uid("space")
    endpoint, secret = await hooks.add(space, "crash")
    hooks.receiver.always("crash", Answer(200, delay_s=0.05))
    customers = [uid("cust") for _ in range(20)]
    events = [lifecycle_event(space, customer, version, "suspended" if version % 2 else "lifted")
              for version in range(1, 11) for customer in customers]
    await hooks.publish(*events)
    await hooks.receiver.wait_for("crash", 40)
    hooks.worker.kill()
    cut = len(hooks.receiver.at("crash"))
    assert cut < len(events)
    await hooks.start_worker().wait_ready()
    rows = await hooks.delivered(endpoint, len(events), timeout_s=90)

    assert len(rows) == len(events) and {row["status"] for row in rows} == {"delivered"}
    successes = await hooks.db.fetch(
        "SELECT d.event_id, count(*) AS n FROM webhook_attempts a JOIN webhook_deliveries d USING (delivery_id)"
        " WHERE d.endpoint_id = $1 AND a.status_code = 200 GROUP BY d.event_id", endpoint)
    assert len(successes) == len(events) and {row["n"] for row in successes} == {1}
    received = hooks.receiver.at("crash")
    verifier = Webhook(secret)
    seen: dict[str, list[int]] = {}
    for request in received:
        data = verifier.verify(request.body, request.headers)["data"]
        assert request.headers["webhook-id"] == data["event_id"]  # a duplicate after the crash: the same id
        versions = seen.setdefault(data["customer_id"], [])
        if data["version"] not in versions:
            versions.append(data["version"])
    assert {str(event["event_id"]) for event in events} == {r.headers["webhook-id"] for r in received}
    assert all(versions == list(range(1, 11)) for versions in seen.values())  # first arrivals in order


async def test_only_public_https_destinations_unless_allowed(hooks: Hooks) -> None:
    """SSRF: refused at registration (the CLI, without SUSPENSIONS_WEBHOOKS_ALLOW_PRIVATE) and at delivery
    time for what a name resolves to then: nothing reaches the receiver listening on loopback."""
    space = uid("space")
    refused = run_cli_env(hooks.settings, {}, "webhooks", "add", "--space", space, "--url", "https://10.1.2.3/hook")
    assert refused.returncode == 2 and "refused: 10.1.2.3 is a private address" in refused.stderr, refused.stderr
    async with hooks.db.acquire() as conn:
        for url in ("https://127.0.0.1/hook", "https://169.254.169.254/latest/meta-data", "https://[::1]/hook",
                    "https://[::ffff:10.0.0.1]/hook", hooks.receiver.url("ssrf")):
            with pytest.raises(store.EndpointError):
                await store.add_endpoint(conn, space, url, [], None, False, datetime.now(UTC))
        assert await store.endpoints(conn, space) == []

    port = hooks.receiver.port
    async with Sender(timeout_s=2, allow_private=False, max_connections=4) as sender:
        for url, why in ((f"https://localhost:{port}/ssrf", "localhost resolves to 127.0.0.1, a loopback address"),
                         (f"https://127.0.0.1:{port}/ssrf", "127.0.0.1 is a loopback address"),
                         ("https://10.20.30.40/ssrf", "10.20.30.40 is a private address"),
                         ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is the cloud metadata address"),
                         (f"http://example.com:{port}/ssrf", "only https")):
            result = await sender.send(url, "msg_1", b"{}", [new_secret()])
            assert result.refused and result.status_code is None and why in (result.error or ""), (url, result)
            assert result.outcome == "refused"
    assert hooks.receiver.at("ssrf") == []
    async with Sender(timeout_s=2, allow_private=True, max_connections=4) as sender:  # the rules lifted
        allowed = await sender.send(f"http://localhost:{port}/ssrf", "msg_1", b"{}", [new_secret()])
    assert allowed.status_code == 200 and len(hooks.receiver.at("ssrf")) == 1


async def test_api_for_the_admins_of_the_space(hooks: Hooks) -> None:
    space, customer = uid("space"), uid("cust")
    async with hooks.db.acquire() as conn:
        admin = await access.create_token(conn, uid("admin"), Role.ADMIN, [space])
        operator = await access.create_token(conn, uid("operator"), Role.OPERATOR, [space])
        stranger = await access.create_token(conn, uid("admin"), Role.ADMIN, [uid("space")])
    base = f"http://127.0.0.1:{hooks.worker.api_port}/api/v1/spaces/{space}/webhooks"
    async with httpx.AsyncClient(timeout=30) as client:
        await wait_until(lambda: _answers(client, f"http://127.0.0.1:{hooks.worker.api_port}/healthz"), 60, "the API")
        created = await client.post(base, headers=auth(admin), json={"url": hooks.receiver.url("api"),
                                                                      "events": ["suspension.suspended"]})
        assert created.status_code == 201, created.text
        endpoint = created.json()
        assert endpoint["secret"].startswith("whsec_") and endpoint["events"] == ["suspended"]
        assert (await client.get(base, headers=auth(operator))).status_code == 403
        other = f"http://127.0.0.1:{hooks.worker.api_port}/api/v1/spaces/{space}/webhooks/{endpoint['id']}"
        assert (await client.get(other, headers=auth(stranger))).status_code == 404
        refused = await client.post(base, headers=auth(admin), json={"url": "ftp://nowhere"})
        assert refused.status_code == 422

        sent = await client.post(f"{base}/{endpoint['id']}/test", headers=auth(admin))
        assert sent.status_code == 202
        [test] = await hooks.receiver.wait_for("api", 1)
        body = Webhook(endpoint["secret"]).verify(test.body, test.headers)
        assert body["type"] == "webhook.test" and body["data"] == {"endpoint_id": endpoint["id"], "space_id": space}
        assert test.headers["webhook-id"] == sent.json()["event_id"]

        await hooks.publish(lifecycle_event(space, customer, 1), lifecycle_event(space, customer, 2, "lifted"))
        await hooks.delivered(endpoint["id"], 2)  # the test event and the suspension (not the lift)
        log = (await client.get(f"{base}/{endpoint['id']}/deliveries", headers=auth(admin))).json()
        assert [(item["type"], item["status"], item["status_code"], item["attempts"]) for item in log] == [
            ("suspended", "delivered", 200, 1), ("webhook.test", "delivered", 200, 1)]
        listed = (await client.get(base, headers=auth(admin))).json()
        assert [(item["id"], item["health"], item["pending"]) for item in listed] == [(endpoint["id"], "ok", 0)]

        replayed = await client.post(f"{base}/{endpoint['id']}/replay", headers=auth(admin),
                                     json={"since": "2000-01-01"})
        assert replayed.status_code == 202 and replayed.json()["replayed"] == 1  # not the test event
        await hooks.receiver.wait_for("api", 3)
        rotated = await client.post(f"{base}/{endpoint['id']}/rotate-secret", headers=auth(admin))
        assert rotated.json()["secret"] not in (endpoint["secret"], None)
        removed = await client.delete(f"{base}/{endpoint['id']}", headers=auth(admin))
        assert removed.json() == {"id": endpoint["id"], "removed": True}
        assert (await client.get(f"{base}/{endpoint['id']}", headers=auth(admin))).status_code == 404


async def _answers(client: httpx.AsyncClient, url: str) -> bool:
    try:
        return (await client.get(url)).status_code == 200
    except httpx.TransportError:
        return False


async def test_the_documented_receiver_verifies_deduplicates_and_keeps_the_newest(hooks: Hooks) -> None:
    """docs/examples/webhook_receiver.py, run as documented, against the worker's real deliveries."""
    space, customer = uid("space"), uid("cust")
    port = free_port()
    async with hooks.db.acquire() as conn:
        row, secret = await store.add_endpoint(conn, space, f"http://127.0.0.1:{port}/webhooks", [], None, True,
                                               datetime.now(UTC))
    example = subprocess.Popen([sys.executable, str(RECEIVER_EXAMPLE), "--port", str(port), "--exit-after", "5"],
                               env={**os.environ, "WEBHOOK_SECRET": secret}, stdout=subprocess.PIPE, text=True)
    try:
        assert example.stdout is not None
        assert (await asyncio.to_thread(example.stdout.readline)).startswith("listening on")
        async with httpx.AsyncClient() as client:  # a forged request: refused before anything is done
            forged = await client.post(f"http://127.0.0.1:{port}/webhooks", content=b'{"type":"x"}', headers={
                "webhook-id": "msg_x", "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
                "webhook-signature": "v1,Zm9yZ2Vk"})
        assert forged.status_code == 400
        first, second = lifecycle_event(space, customer, 1), lifecycle_event(space, customer, 2, "lifted")
        await hooks.publish(first, second)
        await hooks.delivered(row["endpoint_id"], 2)
        async with hooks.db.acquire() as conn:
            await store.replay(conn, row["endpoint_id"], datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
            await store.send_test_event(conn, row, datetime.now(UTC))
        out, _ = await asyncio.to_thread(example.communicate, timeout=60)
    finally:
        if example.poll() is None:
            example.kill()
    assert example.returncode == 0
    lines = out.splitlines()
    assert lines[0].startswith("refused:")
    assert lines[1:3] == [f"suspension.suspended {customer} v1", f"suspension.lifted {customer} v2"]
    assert sorted(lines[3:]) == sorted([f"duplicate {first['event_id']}", f"duplicate {second['event_id']}",
                                        f"test event from {row['endpoint_id']}"])
