"""The dashboard in a real browser: Playwright driving Debian's headless Chromium against a gateway whose
ledger and rollups were filled by real requests (openai SDK). Signs in with an API key, checks that the
cards, charts and tables show what the usage API returns, saves a screenshot to
``test-artifacts/dashboard.png``, then signs in as admin and picks the organisation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import pytest
from playwright.async_api import Page, async_playwright

from gateway.services.keys import KeyLimits
from tests.conftest import ADMIN_KEY, ServedGateway
from tests.usage.helpers import chat, get, org_with_key, wait_for_requests

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--no-first-run", "--disable-sync"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "test-artifacts" / "dashboard.png"


async def _loaded(page: Page) -> None:
    await page.wait_for_selector("body[data-loaded='1']", timeout=10_000)
    error = await page.text_content("#app-error")
    assert not error, error


async def _card(page: Page, metric: str) -> str:
    return (await page.text_content(f".card[data-metric='{metric}'] .v") or "").strip()


async def _bars(page: Page, chart: str, series: str) -> list[float]:
    values: list[str] = await page.eval_on_selector_all(
        f"#{chart} rect[data-series='{series}']", "els => els.map(e => e.getAttribute('data-value'))")
    return [float(v) for v in values]


@pytest.fixture
def chromium() -> str:
    if not CHROMIUM.exists():  # CI installs it; a missing browser fails the test, never skips it
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run installs it)")
    return str(CHROMIUM)


@pytest.mark.parametrize("backend", ["embedded"], indirect=True)
async def test_dashboard_shows_what_the_usage_api_returns(gateway: ServedGateway, chromium: str) -> None:
    org, _, key = await org_with_key(gateway, name="ci-bot")
    rt = gateway.app.runtime
    nightly = await rt.keys.create_key(org, "nightly")
    output = await chat(gateway, key, 3, user="alice") + await chat(gateway, nightly.key, 2, user="bob", stream=True)
    limited = await rt.keys.create_key(org, "limited", limits=KeyLimits(rpm=1))
    output += await chat(gateway, limited.key, 1)
    with pytest.raises(openai.RateLimitError):
        await chat(gateway, limited.key, 1)
    await wait_for_requests(gateway, key, 6, rate_limited=1)
    status, api = await get(gateway, "/v1/usage", key, bucket="day", group_by="key")
    assert status == 200
    totals: dict[str, Any] = api["totals"]
    assert (totals["requests"], totals["output_tokens"], totals["rate_limited"]) == (6, output, 1)

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium, headless=True, args=ARGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            await page.goto(gateway.url + "/dashboard")
            await page.fill("#key", key)
            await page.click("#signin-form button[type=submit]")
            await _loaded(page)
            assert (await page.text_content("#who") or "").startswith("usage-")
            assert await _card(page, "Requests") == "6"
            assert await _card(page, "Output tokens") == str(output)
            assert await _card(page, "Rate-limited") == "1"
            assert api["cache_slo"] is None and await _card(page, "Cache SLO") == "none"  # no plan sets one
            billed = float(totals["billed_cost_usd"])
            assert float((await _card(page, "Billed cost")).lstrip("$")) == pytest.approx(billed, rel=0.01)
            points = len(api["data"])
            assert await page.get_attribute("#chart-requests svg", "data-points") == str(points)
            requests = await _bars(page, "chart-requests", "requests")
            assert len(requests) == points and sum(requests) == 6
            assert sum(await _bars(page, "chart-tokens", "output")) == output
            assert sum(await _bars(page, "chart-rejections", "rate-limited")) == 1
            cost_points = await page.eval_on_selector_all("#chart-cost circle[data-series='billed']",
                                                          "els => els.map(e => Number(e.getAttribute('data-value')))")
            assert len(cost_points) == points and sum(cost_points) == pytest.approx(billed)
            keys = await page.eval_on_selector_all("#top-keys tbody tr td:first-child",
                                                   "els => els.map(e => e.textContent)")
            assert sorted(keys) == ["ci-bot", "limited", "nightly"]
            users = await page.eval_on_selector_all("#top-users tbody tr td:first-child",
                                                    "els => els.map(e => e.textContent)")
            assert sorted(users) == ["(none)", "alice", "bob"]
            SCREENSHOT.parent.mkdir(exist_ok=True)
            await page.screenshot(path=str(SCREENSHOT), full_page=True)

            # Hour buckets: one bar per hour of the last 7 days.
            await page.evaluate("delete document.body.dataset.loaded")
            await page.select_option("#bucket", "hour")
            await _loaded(page)
            hourly = await _bars(page, "chart-requests", "requests")
            assert len(hourly) in (168, 169) and sum(hourly) == 6

            # The admin key: the organisation picker lists the organisations; picking ours shows its usage.
            await page.click("#signout")
            await page.fill("#key", ADMIN_KEY)
            await page.click("#signin-form button[type=submit]")
            await _loaded(page)
            assert await page.text_content("#who") == "admin"
            assert not await page.is_hidden("#org-picker")
            options = await page.eval_on_selector_all("#org option", "els => els.map(e => e.value)")
            assert "" in options and org in options
            await page.evaluate("delete document.body.dataset.loaded")
            await page.select_option("#org", org)
            await _loaded(page)
            assert await _card(page, "Requests") == "6"
        finally:
            await browser.close()
