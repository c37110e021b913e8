"""Issue 23: a customer's invoices on the console's customer page, in a real browser (Debian's Chromium)."""

from __future__ import annotations

from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, expect

from suspensions.access import Role
from tests.browser.support import shot, signed_in, token
from tests.integration.test_overdue import ahead, invoice, publish, set_rule
from tests.support import TopicTail, WorkerProcess, uid
from topics import SUSPENSION_STATE
from workers.runtime.config import Settings

pytestmark = pytest.mark.integration


async def test_the_customer_page_lists_overdue_open_and_settled_invoices(
        browser: Browser, console: str, settings: Settings, workers: WorkerProcess, producer: AIOKafkaProducer,
        tail: TopicTail, db: asyncpg.Pool) -> None:
    space, customer = uid("space"), uid("cust")
    await set_rule(producer, db, space, 0)
    await publish(settings, invoice(space, customer, "INV-LATE", "issued", ahead(2)),
                  invoice(space, customer, "INV-OPEN", "issued", datetime(2099, 1, 1, tzinfo=UTC)),
                  invoice(space, customer, "INV-PAID", "paid"))
    await tail.wait_for(SUSPENSION_STATE.name, customer_id=customer, reasons=["overdue"], timeout_s=30)
    page = await signed_in(browser, console, await token(db, Role.VIEWER, space))
    await page.goto(f"{console}/console/spaces/{space}/customers/{customer}")
    table = page.locator("#invoices table")
    await expect(table.get_by_role("row")).to_have_count(4)  # the header and three invoices
    late = table.get_by_role("row").filter(has_text="INV-LATE")
    await expect(late).to_contain_text("overdue")
    await expect(late).to_contain_text("suspended for it")
    await expect(table.get_by_role("row").filter(has_text="INV-OPEN")).to_contain_text("2099-01-01 00:00:00.000 UTC")
    await expect(table.get_by_role("row").filter(has_text="INV-PAID")).to_contain_text("settled: paid")
    await expect(page.locator(".badge.reason").first).to_have_text("overdue")
    await shot(page, "customer-invoices")
    await page.close()
