"""What every browser test shares: Debian's Chromium, signing in, tokens, screenshots.

Set SUSPENSIONS_SCREENSHOTS to a folder to keep a screenshot of each page (docs/screenshots holds the
committed ones).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import asyncpg
from playwright.async_api import Browser, Page, expect

from suspensions import access
from suspensions.access import Role
from tests.support import uid

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic"]
SHOTS = Path(os.environ["SUSPENSIONS_SCREENSHOTS"]) if os.environ.get("SUSPENSIONS_SCREENSHOTS") else None


async def token(db: asyncpg.Pool, role: Role, *spaces: str) -> str:
    return (await named_token(db, role, *spaces))[1]


async def named_token(db: asyncpg.Pool, role: Role, *spaces: str) -> tuple[str, str]:
    name = uid(role.name.lower())
    async with db.acquire() as conn:
        return name, await access.create_token(conn, name, role, list(spaces))


async def signed_in(browser: Browser, console: str, secret: str) -> Page:
    page = await browser.new_page(viewport={"width": 1280, "height": 860})
    await page.goto(console + "/")
    await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    await shot(page, "signin")
    await page.get_by_label("API token").fill(secret)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("heading", name=re.compile("at a glance"))).to_be_visible()  # the overview
    return page


async def shot(page: Page, name: str) -> None:
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SHOTS / f"{name}.png"))
