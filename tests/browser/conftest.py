"""The browser tests' fixtures: one Chromium per module, and the session workers' console."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from playwright.async_api import Browser, async_playwright

from tests.browser.support import CHROMIUM, CHROMIUM_ARGS
from tests.support import WorkerProcess, wait_for_http


@pytest_asyncio.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    assert Path(CHROMIUM).is_file(), "Debian's chromium is missing: `scripts/dev test` installs it"
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        await launched.close()


@pytest_asyncio.fixture(scope="module")
async def console(workers: WorkerProcess) -> str:
    base = f"http://127.0.0.1:{workers.api_port}"
    await wait_for_http(f"{base}/healthz")
    return base
