"""Issue 26: a space at a glance and people by name, in a real browser (Debian's headless Chromium), over the
known data of ``tests/integration/overview_scenario.py``: the numbers on the page are the ones published, per
reason and per currency; the range switch; a figure's link to its list; search by name and email; the export.

With SUSPENSIONS_SCREENSHOTS set, the overview's screenshot is kept (docs/screenshots/overview.png).
"""

from __future__ import annotations

import csv
import io
import re

import asyncpg
import pytest
import pytest_asyncio
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, expect

from suspensions.access import Role
from tests.browser.support import SHOTS, signed_in, token
from tests.integration.overview_scenario import Scenario, build
from tests.support import WorkerProcess

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture(scope="module")
async def scenario(producer: AIOKafkaProducer, db: asyncpg.Pool, workers: WorkerProcess) -> Scenario:
    return await build(producer, db)


async def test_the_overview_shows_the_published_figures_and_leads_to_their_lists(
        browser: Browser, console: str, db: asyncpg.Pool, scenario: Scenario) -> None:
    page = await signed_in(browser, console, await token(db, Role.VIEWER, scenario.space))
    await expect(page.locator("#now-suspended .big")).to_have_text(str(scenario.suspended_now))
    for reason, customers in scenario.now_by_reason.items():
        await expect(page.locator(f"#now-reason-{reason} .big")).to_have_text(str(customers))
    await expect(page.locator("#now-reason-crm_stage .big")).to_have_text("0")  # lifted: nobody now
    await expect(page.locator("#now-scheduled-suspensions .big")).to_have_text(str(scenario.scheduled_suspensions))
    await expect(page.locator("#now-scheduled-lifts .big")).to_have_text(str(scenario.scheduled_lifts))
    await expect(page.locator("#now-dead-letters .big")).to_have_text(str(scenario.dead_letters))
    await expect(page.locator("#range-suspensions .big")).to_have_text(str(scenario.suspensions))
    await expect(page.locator("#range-lifts .big")).to_have_text(str(scenario.lifts))
    for kind, per_currency in (("dropped", scenario.dropped), ("billed", scenario.billed),
                               ("waived", scenario.waived)):
        for currency in ("EUR", "GBP"):
            cell = page.locator(f'tr.total[data-currency="{currency}"] td[data-kind="{kind}"]')
            if currency in per_currency:
                jobs, amount = per_currency[currency]
                await expect(cell).to_have_text(f"{amount} {currency} ({jobs})")
            else:
                await expect(cell).to_have_text("0")
    # Each chart is drawn with a pattern per series (not colour alone) and its numbers in a table beside it.
    await expect(page.locator("svg.chart")).to_have_count(3 + 2)  # three charts and one per currency
    await expect(page.locator("#suspended-p1")).to_have_count(1)
    await expect(page.locator("#table-suspended tbody tr").first).to_contain_text(
        str(scenario.now_by_reason["manual"]))
    if SHOTS is not None:  # the whole page, on the week's range (the README's)
        await page.get_by_role("link", name="7 days", exact=True).click()
        await expect(page.locator("#table-flows tbody tr")).to_have_count(7)
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / "overview.png"), full_page=True)

    await page.get_by_role("link", name="90 days", exact=True).click()
    await expect(page.get_by_role("link", name="90 days", exact=True)).to_have_attribute("aria-current", "page")
    await expect(page.locator("#range-heading")).to_contain_text("(90 days")
    await expect(page.locator("#table-flows tbody tr")).to_have_count(90)
    await expect(page.locator("#range-suspensions .big")).to_have_text(str(scenario.suspensions))

    # A figure leads to its list: the customers suspended for `manual` now.
    await page.locator("#now-reason-manual").click()
    await expect(page.get_by_role("heading", name=re.compile("Customers"))).to_be_visible()
    rows = page.locator("#customers tbody tr")
    await expect(rows).to_have_count(scenario.now_by_reason["manual"])
    await expect(page.get_by_role("link", name=str(scenario.names["zoe"]))).to_be_visible()
    await expect(page.get_by_role("link", name=scenario.ids["anon"])).to_be_visible()  # no name: its id
    # The lifts scheduled within 7 days lead to the customers they are scheduled for.
    await page.goto(f"{console}/console/spaces/{scenario.space}")
    await page.locator("#now-scheduled-lifts").click()
    await expect(rows).to_have_count(scenario.scheduled_lifts)
    await expect(page.get_by_role("link", name=scenario.ids["anon"])).to_be_visible()
    # And the lifts of the range lead to the suspensions lifted in it.
    await page.goto(f"{console}/console/spaces/{scenario.space}")
    await page.locator("#range-lifts").click()
    await expect(page.locator("#suspensions tbody tr")).to_have_count(scenario.lifts)
    await expect(page.locator("#suspensions")).to_contain_text("100.00 EUR")
    await page.close()


async def test_people_by_name_and_email_and_the_export(browser: Browser, console: str, db: asyncpg.Pool,
                                                       scenario: Scenario) -> None:
    page = await signed_in(browser, console, await token(db, Role.VIEWER, scenario.space))
    await page.get_by_label("Search customers").fill("MARI")  # a prefix of two names, any case
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("#customers tbody tr")).to_have_count(2)
    await expect(page.get_by_role("link", name="Maria Harbour")).to_be_visible()
    await expect(page.get_by_role("link", name="mario Rossi")).to_be_visible()
    await page.get_by_label("Search customers").fill("z@null")  # an email's prefix
    await page.get_by_role("button", name="Search").click()
    await expect(page.locator("#customers tbody tr")).to_have_count(1)
    await page.get_by_role("link", name=str(scenario.names["zoe"])).click()
    await expect(page.locator(".person-email")).to_have_text("z@null.test")
    await expect(page.locator(".person-name")).to_have_text(str(scenario.names["zoe"]))

    await page.goto(f"{console}/console/spaces/{scenario.space}")
    href = await page.get_by_role("link", name="Export suspensions (CSV)").get_attribute("href")
    assert href
    exported = await page.request.get(console + href)
    assert exported.status == 200 and exported.headers["content-type"].startswith("text/csv")
    rows = {row["customer_id"]: row for row in csv.DictReader(io.StringIO(await exported.text()))}
    assert set(rows) == set(scenario.ids.values())
    assert rows[scenario.ids["maria"]]["amount_billed"] == "100.00 EUR; 30.50 GBP"
    assert rows[scenario.ids["formula"]]["display_name"].startswith("'=")
    await page.close()
