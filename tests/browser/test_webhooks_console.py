"""Issue 22: the console's webhooks page as an admin uses it, in a real browser (Debian's headless Chromium):
add an endpoint (its secret shown once), send a test event, read the deliveries, replay.

The stack is the webhook tests' own (``tests/webhook_receiver.py``): a webhooks worker and the API allowed
to send to the receiver on loopback."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect
from standardwebhooks.webhooks import Webhook

from suspensions import access
from suspensions.access import Role
from tests.browser.support import SHOTS
from tests.support import uid, wait_for_http, wait_until
from tests.webhook_receiver import Hooks, lifecycle_event, open_hooks
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration

@pytest_asyncio.fixture(scope="module")
async def hooks(settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Hooks]:
    async with open_hooks(settings, tmp_path_factory.mktemp("webhooks-console") / "worker.log") as stack:
        await wait_for_http(f"http://127.0.0.1:{stack.worker.api_port}/healthz")
        yield stack


async def delivery_rows(page: Page, count: int, text: str) -> None:
    """Reload the endpoint's page until ``count`` delivery rows hold ``text``."""
    async def shown() -> bool:
        await page.reload()
        return await page.locator("#deliveries tbody tr", has_text=text).count() >= count

    await wait_until(shown, 30, f"{count} delivery row(s) with {text!r}")


async def test_add_an_endpoint_send_a_test_event_read_deliveries_and_replay(browser: Browser, hooks: Hooks) -> None:
    space, customer = uid("space"), uid("cust")
    async with hooks.db.acquire() as conn:
        admin = await access.create_token(conn, uid("admin"), Role.ADMIN, [space])
    console = f"http://127.0.0.1:{hooks.worker.api_port}"
    page = await browser.new_page(viewport={"width": 1280, "height": 900})
    await page.goto(f"{console}/signin?next=/console/spaces/{space}/webhooks")
    await page.get_by_label("API token").fill(admin)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name=re.compile("Webhooks"))).to_be_visible()
    await expect(page.get_by_text("No endpoint yet")).to_be_visible()

    await page.get_by_label(re.compile("^URL")).fill(hooks.receiver.url("console"))
    await page.get_by_label("Description").fill("door access")
    await page.get_by_role("button", name="Add endpoint").click()
    secret = (await page.locator("#webhook-secret").inner_text()).strip()
    assert secret.startswith("whsec_")
    await expect(page.locator("#webhooks")).to_contain_text("door access")
    await expect(page.locator("#webhooks")).to_contain_text("ok")
    await page.locator("#webhook-created a").click()

    await page.get_by_role("button", name="Send test event").click()
    await expect(page.get_by_role("status")).to_contain_text("Test event queued")
    [test] = await hooks.receiver.wait_for("console", 1)
    assert Webhook(secret).verify(test.body, test.headers)["type"] == "webhook.test"
    await delivery_rows(page, 1, "webhook.test")
    row = page.locator("#deliveries tbody tr", has_text="webhook.test")
    await expect(row).to_contain_text("delivered")
    await expect(row).to_contain_text("200")
    await expect(row).to_contain_text(" ms")

    await hooks.publish(lifecycle_event(space, customer, 1))
    await delivery_rows(page, 1, customer)
    await page.get_by_label(re.compile("Every event since")).fill("2000-01-01")
    await page.get_by_role("button", name="Replay").click()
    await expect(page.get_by_role("status")).to_contain_text("1 event(s) to be sent again")
    await delivery_rows(page, 2, customer)
    replayed = page.locator("#deliveries tbody tr", has_text="replay").first
    await expect(replayed).to_contain_text("delivered")
    assert len(hooks.receiver.at("console")) == 3
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "webhook.png"), full_page=True)
    await page.close()
