"""The status page in a real headless browser (Debian chromium), against `dnsfailover serve`.

The page is opened at a phone's size, an endpoint is stopped, and the page must show it DOWN
and the name's new answer by itself (it refreshes every 2 s), with no sideways scrolling.
A screenshot is kept in test-artifacts/status-page.png.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service as DriverService
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from support import HttpEndpoints, Server

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
PHONE = {"width": 390, "height": 844, "pixelRatio": 3.0}
A, B = "127.0.0.81", "127.0.0.82"
WWW = "www.example.test."


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ):
        options.add_argument(arg)
    # Headless windows are at least 500 px wide: emulate the phone's viewport instead.
    options.add_experimental_option("mobileEmulation", {"deviceMetrics": PHONE})
    driver = webdriver.Chrome(service=DriverService(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def wait_until(what: str, predicate: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"the page did not show {what} within {timeout:.0f}s")
        time.sleep(0.1)


HEAD = """\
checks:
  web: {type: http, path: /healthz, interval: 200ms, timeout: 150ms, fall: 2, rise: 2}
zones:
  example.test.:
    soa: {mname: ns1.example.test., rname: hostmaster.example.test.}
    nameservers: [ns1.example.test.]
    records:
      ns1: {type: A, values: [127.0.0.1]}
    failover:
"""  # one web check and the zone up to its failover names


def config(tmp_path: Path, ports: dict[str, int]) -> Path:
    path = tmp_path / "page.yaml"
    path.write_text(
        HEAD
        + f"""\
      www:
        policy: active-active
        check: web
        endpoints:
          - {{address: {A}, check_port: {ports[A]}}}
          - {{address: {B}, check_port: {ports[B]}}}
"""
    )
    return path


def test_status_page_shows_a_failing_endpoint_on_a_phone(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    serve: Callable[..., Server],
    browser: WebDriver,
) -> None:
    ports = {a: http_endpoints.start(a) for a in (A, B)}
    server = serve(config(tmp_path, ports))
    assert server.api is not None, "serve printed no API address"
    browser.get(server.api + "/")

    # The page re-renders every 2 s, so read it in one script call (no stale elements).
    def attr(selector: str, name: str) -> str:
        script = (
            "const e = document.querySelector(arguments[0]);"
            "return e && e.getAttribute(arguments[1]);"
        )
        return str(browser.execute_script(script, selector, name) or "")

    def text(selector: str) -> str:
        script = "const e = document.querySelector(arguments[0]); return e ? e.innerText : '';"
        return str(browser.execute_script(script, selector))

    def card() -> str:
        return attr(f'[data-name="{WWW}"][data-answer]', "data-answer")

    def state(address: str) -> str:
        return attr(f'.ep[data-endpoint="{address}"]', "data-state")

    wait_until(f"{WWW} answering {A} and {B}", lambda: card() == f"{A},{B}")
    assert state(B) == "up"
    assert browser.execute_script("return window.innerWidth") == PHONE["width"]

    http_endpoints.stop(B)
    wait_until(f"{B} DOWN", lambda: state(B) == "down")
    wait_until(f"{WWW} answering only {A}", lambda: card() == A)
    assert server.answer(WWW) == (A,)  # what the page says is what DNS answers
    assert "DOWN" in text(f'.ep[data-endpoint="{B}"]')
    assert "degraded" in text(f'[data-name="{WWW}"][data-answer]')
    wait_until("the answer change in recent events", lambda: WWW in text("#events"))
    banner = browser.find_element(By.ID, "banner")  # never re-rendered: not stale
    assert not banner.is_displayed()

    overflow = browser.execute_script(
        "return document.documentElement.scrollWidth - window.innerWidth"
    )
    assert overflow <= 0, f"the page scrolls sideways by {overflow}px on a phone"
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "status-page.png"))

    # The page says so when the server goes away, and keeps trying.
    server.stop()
    wait_until("the unreachable banner", banner.is_displayed)
    assert "cannot reach" in banner.text


P, S = "127.0.0.83", "127.0.0.84"  # api: primary and backup tiers
API = "api.example.test."


def failover_config(tmp_path: Path, ports: dict[str, int]) -> Path:
    path = tmp_path / "failover.yaml"
    path.write_text(
        HEAD
        + f"""\
      www:
        policy: active-active
        check: web
        endpoints:
          - {{address: {A}, check_port: {ports[A]}}}
      api:
        policy: active-passive
        check: web
        failback: manual
        tiers:
          - name: primary
            endpoints: [{{address: {P}, check_port: {ports[P]}}}]
          - name: backup
            endpoints: [{{address: {S}, check_port: {ports[S]}}}]
"""
    )
    return path


def test_a_failover_shows_failed_over_not_green_with_a_summary(
    tmp_path: Path,
    http_endpoints: HttpEndpoints,
    serve: Callable[..., Server],
    browser: WebDriver,
) -> None:
    ports = {a: http_endpoints.start(a) for a in (A, P, S)}
    server = serve(failover_config(tmp_path, ports))
    assert server.api is not None, "serve printed no API address"
    browser.get(server.api + "/")

    def read(script: str, *args: str) -> str:
        return str(browser.execute_script(script, *args) or "")

    def attr(selector: str, name: str) -> str:
        return read(
            "const e = document.querySelector(arguments[0]);"
            "return e && e.getAttribute(arguments[1]);",
            selector,
            name,
        )

    def text(selector: str) -> str:
        return read(
            "const e = document.querySelector(arguments[0]); return e ? e.innerText : ''", selector
        )

    def style(selector: str, prop: str) -> str:
        return read(
            "const e = document.querySelector(arguments[0]);"
            "return e ? getComputedStyle(e)[arguments[1]] : '';",
            selector,
            prop,
        )

    card = f'.card[data-name="{API}"]'
    summary = "#summary"
    wait_until("2 healthy names", lambda: attr(summary, "data-summary") == "2 names: 2 healthy")
    wait_until(
        f"{S} as a standby", lambda: attr(f'.ep[data-endpoint="{S}"]', "data-role") == "standby"
    )
    standby = f'.ep[data-endpoint="{S}"]'
    assert "UP standby" in text(standby)
    assert "line-through" not in style(f"{standby} .addr", "textDecorationLine")
    green = style(f"{card} .badge", "backgroundColor")
    assert attr(card, "data-state") == "healthy"

    http_endpoints.stop(P)
    wait_until(f"{API} failed over", lambda: attr(card, "data-state") == "failed_over")
    wait_until(
        "the summary",
        lambda: attr(summary, "data-summary") == "2 names: 1 healthy, 1 failed over",
    )
    assert server.answer(API) == (S,)  # what the page says is what DNS answers
    shown = text(summary)
    assert "1 healthy" in shown
    assert "1 failed over" in shown
    assert "null" not in shown
    assert "failed over to backup (primary down)" in text(card)
    badge = style(f"{card} .badge", "backgroundColor")
    assert badge != green, "a failed-over name has the healthy name's green badge"
    assert style(f'{summary} [data-state="failed_over"] .badge', "backgroundColor") == badge
    assert style(f'{summary} [data-state="healthy"] .badge', "backgroundColor") == green

    down = f'.ep[data-endpoint="{P}"]'
    assert attr(down, "data-role") == "down"
    assert "line-through" in style(f"{down} .addr", "textDecorationLine")
    assert attr(f'.ep[data-endpoint="{S}"]', "data-role") == "serving"
    wait_until("a live streak", lambda: "consecutive failures" in text(f"{down} .reason"))
    first = text(f"{down} .reason")
    wait_until("the streak to grow", lambda: text(f"{down} .reason") != first)
    assert "DOWN since" in text(down)
    assert "for " in text(down)
    ARTIFACTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(ARTIFACTS / "status-page-failed-over.png"))
