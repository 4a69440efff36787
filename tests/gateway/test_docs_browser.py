"""``/docs`` in a real browser (Playwright driving Debian's headless Chromium) with every request outside the
gateway refused: Swagger UI renders the schema, the OpenAI endpoints included, from the package alone."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.async_api import Route, async_playwright

from tests.conftest import ServedGateway
from tests.usage.test_dashboard_browser import ARGS, chromium  # noqa: F401 - the fixture


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_docs_render_with_no_network(gateway: ServedGateway, chromium: str) -> None:  # noqa: F811
    outside: list[str] = []

    async def only_the_gateway(route: Route) -> None:
        url = route.request.url
        if url.startswith(gateway.url + "/") or url.startswith("data:"):
            await route.continue_()
        else:
            outside.append(url)
            await route.abort()

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, args=ARGS)
        try:
            page = await browser.new_page()
            await page.route("**/*", only_the_gateway)
            errors: list[Any] = []
            page.on("pageerror", lambda error: errors.append(error))
            await page.goto(gateway.url + "/docs")
            await page.wait_for_selector(".opblock", timeout=15_000)
            summaries = await page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
            assert "/v1/chat/completions" in summaries and "/v1/completions" in summaries
            assert "/admin/orgs" in summaries and "/v1/models" in summaries
            assert not await page.query_selector(".errors-wrapper"), "Swagger UI reported schema errors"
            assert not errors, errors
        finally:
            await browser.close()
    assert not outside, f"the docs asked for outside URLs: {outside}"
