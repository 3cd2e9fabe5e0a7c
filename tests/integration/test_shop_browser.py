"""The demo shop end to end in headless Chromium (Debian's, driven by Playwright; nothing
downloads a browser): the real analytics.js into ``cdp collector``, the worker's pop-up
decision across origins, sign-up, the next page, and a second browser logging in.

Screenshots of each state are kept in build/test-artifacts/shop/.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from streams.demo.shop import BUNDLE
from streams.runtime.broker import EmbeddedBroker, free_port
from tests.integration.conftest import wait_until, worker_env

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "build" / "test-artifacts" / "shop"


@dataclass
class Demo:
    shop: str
    collector: str
    api: str
    process: subprocess.Popen[bytes]
    log_file: Path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")[-3000:]


@pytest.fixture
def demo(broker: EmbeddedBroker, tmp_path: Path) -> Iterator[Demo]:
    ports = {name: free_port() for name in ("web", "collector", "shop")}
    env = worker_env(
        broker,
        tmp_path,
        CDP_WEB_PORT=str(ports["web"]),
        CDP_COLLECTOR_PORT=str(ports["collector"]),
        CDP_DEMO_SHOP_PORT=str(ports["shop"]),
    )
    log_file = tmp_path / "demo.log"
    with open(log_file, "ab") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "streams", "demo", "--duration", "600", "--rate", "2"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    made = Demo(
        f"http://127.0.0.1:{ports['shop']}/shop",
        f"http://127.0.0.1:{ports['collector']}",
        f"http://127.0.0.1:{ports['web']}",
        process,
        log_file,
    )

    def up() -> bool:
        assert process.poll() is None, f"cdp demo exited:\n{made.log()}"
        try:
            return (
                httpx.get(f"{made.api}/ready", timeout=1).status_code == 200
                and httpx.get(f"{made.collector}/health", timeout=1).status_code == 200
                and httpx.get(made.shop, timeout=1).status_code == 200
            )
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout=90, interval=0.3)
        yield made
    finally:
        # Ctrl-C: the demo stops its worker, collector and shop itself.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_cors_is_for_the_configured_origin_and_the_decision_routes(demo: Demo) -> None:
    shop_origin = demo.shop.removesuffix("/shop")
    preflight = {"Access-Control-Request-Method": "POST"}
    allowed = httpx.options(f"{demo.collector}/v1/t", headers={"Origin": shop_origin, **preflight})
    assert allowed.status_code == 204
    assert allowed.headers["Access-Control-Allow-Origin"] == shop_origin
    other = httpx.options(
        f"{demo.collector}/v1/t", headers={"Origin": "http://evil.example", **preflight}
    )
    assert other.status_code == 403
    assert "Access-Control-Allow-Origin" not in other.headers
    decision = httpx.get(
        f"{demo.api}/decisions/newsletter-popup",
        params={"anonymous_id": "nobody"},
        headers={"Origin": shop_origin},
    )
    assert decision.headers["Access-Control-Allow-Origin"] == shop_origin
    profiles = httpx.get(
        f"{demo.api}/profiles", params={"anonymous_id": "nobody"}, headers={"Origin": shop_origin}
    )
    assert "Access-Control-Allow-Origin" not in profiles.headers


def test_the_popup_in_a_real_browser(demo: Demo) -> None:
    from playwright.sync_api import Page, sync_playwright

    assert BUNDLE.is_file(), (
        "no analytics.js bundle: make install runs npm ci && npm run build:shop"
    )
    assert CHROMIUM.exists(), "Debian's chromium is missing: .ci/run installs it"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    email = f"shopper-{uuid.uuid4().hex[:8]}@example.com"

    def decided(page: Page) -> str:
        page.wait_for_function("document.body.dataset.decision !== 'pending'", timeout=20_000)
        reason: str = page.evaluate("document.body.dataset.decision")
        return reason

    def profile() -> dict[str, Any] | None:
        found = httpx.get(f"{demo.api}/profiles", params={"email": email}, timeout=5)
        return found.json() if found.status_code == 200 else None

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            first = browser.new_context(viewport={"width": 1000, "height": 700})
            page = first.new_page()
            page.goto(f"{demo.shop}/category/baking")
            # The page view is sent before the question: the worker may know the visitor
            # already, never as a subscriber.
            assert decided(page) in ("unknown_visitor", "not_subscribed")
            assert page.is_visible("#popup")
            page.goto(f"{demo.shop}/product/stand-mixer")
            # Known by now (the first page view), not as a subscriber: still shown.
            assert decided(page) in ("unknown_visitor", "not_subscribed")
            page.click("#add-to-cart")
            page.wait_for_selector("text=Added to your cart.")
            assert page.is_visible("#popup")
            page.screenshot(path=str(ARTIFACTS / "1-anonymous-visitor-sees-the-popup.png"))

            page.fill("#signup-email", email)
            page.click("#signup button[type=submit]")
            page.wait_for_function("document.body.dataset.signedUp === 'yes'", timeout=20_000)
            assert not page.is_visible("#popup")
            page.screenshot(path=str(ARTIFACTS / "2-signed-up.png"))

            def subscribed() -> bool:
                found = profile()
                return found is not None and found["newsletter"]["status"] == "subscribed"

            wait_until(subscribed, timeout=20, interval=0.3)
            page.goto(f"{demo.shop}/category/toys")
            assert decided(page) == "known_subscriber"
            assert not page.is_visible("#popup")
            page.screenshot(path=str(ARTIFACTS / "3-next-page-no-popup.png"))

            second = browser.new_context(viewport={"width": 1000, "height": 700})
            other = second.new_page()
            other.goto(f"{demo.shop}/login")
            assert decided(other) == "login-page"
            other.fill("#login-email", email)
            other.click("#login button[type=submit]")
            other.wait_for_url(demo.shop)
            assert decided(other) == "known_subscriber"
            assert not other.is_visible("#popup")
            other.screenshot(path=str(ARTIFACTS / "4-second-browser-logged-in-no-popup.png"))
        finally:
            browser.close()

    # The browser's events built one profile: both browsers' devices, the views and the cart.
    def both_devices() -> bool:
        found = profile()
        return found is not None and len(found["identities"]["anonymous_ids"]) == 2

    wait_until(both_devices, timeout=20, interval=0.3)
    found = profile()
    assert found is not None
    assert found["views"]["by_category"].get("baking", 0) >= 2
    assert list(found["cart"]["items"]) == ["stand-mixer"]
    assert found["consent"]["email_marketing"]["granted"] is True
