"""The dashboards in a real Chromium, against a real `gatekeeper serve` process."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx
import pytest
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright, expect

from gatekeeper.gateway.mock_backend import run_backends
from tests.servers import free_port, tool, wait_for_port

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
ADMIN = "dashboard-e2e-token"


@dataclass
class Demo:
    url: str
    process: subprocess.Popen[bytes]


def _config(port: int, backends: list[str]) -> dict[str, object]:
    """The demo's gateway: ``/api`` round robin over the backends, 5 requests per 10 s per
    client IP. Counted with a sliding log rather than the demo's fixed window, so that no window
    boundary falls inside a test's burst and lets a sixth request through."""
    return {
        "listener": {"host": "127.0.0.1", "port": port, "shutdown_grace": 1},
        "policies": {"per-ip": {"rate": "5/10s", "algorithm": "sliding_log"}},
        "upstreams": {
            "backends": {"strategy": "round_robin", "endpoints": [{"url": u} for u in backends]}
        },
        "routes": [
            {
                "name": "api",
                "path_prefix": "/api",
                "upstream": "backends",
                "limits": [{"policy": "per-ip", "key": "ip"}],
                "retry": {"attempts": 1},
            }
        ],
    }


def _spawn(config: Path, cwd: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "GATEKEEPER_ADMIN_TOKEN": ADMIN,
        "GATEKEEPER_LOG_LEVEL": "warning",
        "GATEKEEPER_BUSINESS_IDS": "shop",  # one waiting-room tenant
        "GATEKEEPER_DATABASE_URL": f"sqlite+aiosqlite:///{cwd / 'gk.db'}",
        "GATEKEEPER_AUTO_MIGRATE": "true",
    }
    env.pop("GATEKEEPER_REDIS_URL", None)
    command = [sys.executable, "-m", "gatekeeper", "serve", "--config", str(config)]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
async def demo(tmp_path: Path) -> AsyncIterator[Demo]:
    """A `gatekeeper serve` process in front of 3 mock backends, like `gatekeeper demo`."""
    backends = await run_backends(3)
    port = free_port()
    config = tmp_path / "gatekeeper.yaml"
    config.write_text(json.dumps(_config(port, [b.url for b in backends])))
    log = (tmp_path / "gatekeeper.log").open("wb")
    process = _spawn(config, tmp_path, log)
    try:
        await asyncio.to_thread(_wait_until_listening, process, port, tmp_path / "gatekeeper.log")
        yield Demo(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, 10)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)
        log.close()
        for backend in backends:
            await backend.stop()


def _wait_until_listening(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Wait for the demo's port, failing early (with its log) if the process dies."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gatekeeper exited with {process.returncode}:\n{log.read_text()}")
        try:
            wait_for_port(port, timeout=0.5)
            return
        except TimeoutError:
            continue
    pytest.fail(f"gatekeeper did not listen within 60 s:\n{log.read_text()[-3000:]}")


@dataclass
class Watched:
    page: Page
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=tool("chromium"),
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def _open(browser: Browser, demo: Demo, path: str, **context: object) -> Watched:
    ctx = await browser.new_context(**context)  # type: ignore[arg-type]
    page = await ctx.new_page()
    watched = Watched(page)

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            watched.errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
    page.on(
        "request",
        lambda request: (
            None
            if request.url.startswith((demo.url, "data:"))
            else watched.foreign.append(request.url)
        ),
    )
    await page.goto(demo.url + path)
    await expect(page.locator("#conn-status")).to_contain_text("live", timeout=10_000)
    return watched


def _script_errors(errors: list[str], *expected_statuses: int) -> list[str]:
    """Console errors minus Chromium's note on each deliberately refused request (401, 429)."""
    noted = tuple(f"the server responded with a status of {code}" for code in expected_statuses)
    return [e for e in errors if not (e.startswith("Failed to load resource") and noted
                                      and any(n in e for n in noted))]  # fmt: skip


async def _shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / name), full_page=True)


async def test_dashboard_loads_without_console_errors_on_laptop_and_phone(
    browser: Browser, demo: Demo
) -> None:
    """Both pages load on a laptop and a phone viewport with no console error and no CDN."""
    for name, viewport in (("laptop", (1280, 900)), ("phone", (390, 844))):
        for path, label in (("/dashboard", "dashboard"), ("/dashboard/waiting-room", "rooms")):
            w = await _open(
                browser, demo, path, viewport={"width": viewport[0], "height": viewport[1]}
            )
            await expect(w.page.locator("#mode")).to_have_text("local")
            width = await w.page.evaluate("document.documentElement.scrollWidth")
            assert width <= viewport[0] + 1, f"{path} overflows horizontally on {name}"
            await _shot(w.page, f"{label}-{name}.png")
            assert w.errors == []
            assert w.foreign == []
            await w.page.context.close()


async def test_numbers_move_when_traffic_flows(browser: Browser, demo: Demo) -> None:
    """Requests sent behind the page's back show up in its counters, log and pool, unreloaded."""
    w = await _open(browser, demo, "/dashboard")
    page = w.page
    await expect(page.locator("#requests-total")).to_have_text("0")
    await page.evaluate("window.__marker = 1")  # survives only if the page is not reloaded
    async with httpx.AsyncClient(base_url=demo.url) as client:
        codes = [(await client.get("/api/info")).status_code for _ in range(7)]
    assert codes == [200] * 5 + [429] * 2
    await expect(page.locator("#requests-total")).to_have_text("7", timeout=10_000)
    await expect(page.locator("#log-lines tr")).to_have_count(7)
    await expect(page.locator("#log-lines tr").first).to_contain_text("RL")
    await expect(page.locator("#top-ips")).to_contain_text("127.0.0.1")
    await expect(page.locator("#policies")).to_contain_text("per-ip")
    await expect(page.locator("#pools article")).to_have_count(1)
    assert await page.evaluate("window.__marker") == 1
    await _shot(page, "dashboard-traffic.png")
    assert w.errors == []


async def test_flagged_clients_panel_shows_a_scanner(browser: Browser, demo: Demo) -> None:
    """30 missing paths from one address (the default scanning threshold) put it in the
    Flagged clients panel, fed by the operators' /dashboard/abuse (loopback is one)."""
    w = await _open(browser, demo, "/dashboard")
    page = w.page
    await expect(page.locator("#abuse-flagged")).to_contain_text("nobody")
    async with httpx.AsyncClient(base_url=demo.url) as client:
        codes = {(await client.get(f"/wp-content/probe-{i}.php")).status_code for i in range(30)}
    assert codes == {404}
    rows = page.locator("#abuse-flagged tr")
    await expect(rows.first).to_contain_text("ip:127.0.0.1", timeout=10_000)  # (every 5 s)
    await expect(rows.first).to_contain_text("scanning")
    await expect(rows.first).to_contain_text("30 / 30")
    await _shot(page, "dashboard-flagged.png")
    assert w.errors == []


async def test_admin_switches_a_pools_strategy(browser: Browser, demo: Demo) -> None:
    """With the admin token, choosing a strategy and pressing Apply changes the live pool."""
    w = await _open(browser, demo, "/dashboard")
    page = w.page
    pool = page.locator("#pools article").first
    await expect(pool.locator("[data-role=strategy]")).to_have_text("round_robin", timeout=10_000)
    # Without the token the gateway refuses, and the page says so.
    await pool.get_by_label("Strategy", exact=True).select_option("least_connections")
    await pool.get_by_role("button", name="Apply").click()
    await expect(page.locator("#strategy-result")).to_contain_text("Refused (401)")
    # With it (typed in the admin field, operated from the keyboard), the switch happens.
    await page.locator(".admin summary").click()
    await page.get_by_label("Bearer token").fill(ADMIN)
    await pool.get_by_label("Strategy", exact=True).select_option("least_connections")
    await pool.get_by_role("button", name="Apply").focus()
    await page.keyboard.press("Enter")
    await expect(page.locator("#strategy-result")).to_have_text(
        re.compile("now uses least_connections")
    )
    await expect(pool.locator("[data-role=strategy]")).to_have_text(
        "least_connections", timeout=10_000
    )
    async with httpx.AsyncClient(base_url=demo.url) as client:
        stats = (await client.get("/stats")).json()
    (only,) = stats["pools"].values()
    assert only["strategy"] == "least_connections"
    await _shot(page, "dashboard-strategy.png")
    assert _script_errors(w.errors, 401) == []


async def test_burst_demo_shows_five_green_then_red_blocks(browser: Browser, demo: Demo) -> None:
    """Burst x8 against the 5-per-10-s route draws five green blocks, then three red ones."""
    w = await _open(browser, demo, "/dashboard")
    page = w.page
    await page.get_by_role("button", name=re.compile(r"^Burst .8$")).click()
    blocks = page.locator("#burst-blocks li")
    await expect(blocks).to_have_count(8, timeout=10_000)
    classes = [await blocks.nth(i).get_attribute("class") for i in range(8)]
    assert classes == ["ok"] * 5 + ["bad"] * 3
    texts = await blocks.all_inner_texts()
    assert texts == ["200"] * 5 + ["429"] * 3
    await expect(page.locator("#burst-status")).to_contain_text("resets in")
    await page.get_by_role("button", name="Send 1 request").click()
    await expect(blocks).to_have_count(9)
    assert await blocks.nth(8).get_attribute("class") == "bad"
    await _shot(page, "dashboard-burst.png")
    assert _script_errors(w.errors, 429) == []


async def test_waiting_room_view_shows_each_tenants_queue(browser: Browser, demo: Demo) -> None:
    """Visitors enqueued through the real /queue API appear in the tenant's row, live."""
    w = await _open(browser, demo, "/dashboard/waiting-room")
    page = w.page
    async with httpx.AsyncClient(base_url=demo.url) as client:
        for user in range(6):
            response = await client.post(
                "/queue/enqueue", headers={"business_id": "shop", "user_id": f"visitor-{user}"}
            )
            assert response.status_code == 200, response.text
    row = page.locator("#rooms tr[data-tenant=shop]")
    await expect(row.locator("td").last).to_have_text("6", timeout=10_000)  # tokens issued
    # Queue length (a gauge the admission worker publishes on its own beat) and admissions
    # (counted as they happen) settle together within a few snapshots: everyone is accounted for.
    await page.wait_for_function(
        """() => {
            const row = document.querySelector("#rooms tr[data-tenant=shop]");
            const cells = row ? row.querySelectorAll("td") : [];
            const count = (i) => Number(cells[i].textContent);
            return cells.length > 3 && count(0) + count(3) === 6;
        }""",
        timeout=15_000,
    )
    await _shot(page, "waiting-room-tenant.png")
    assert w.errors == []


CONTRAST_JS = """
(selectors) => {
  const rgb = (text) => text.match(/[\\d.]+/g).slice(0, 4).map(Number);
  const lum = ([r, g, b]) => {
    const c = [r, g, b].map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * c[0] + 0.7152 * c[1] + 0.0722 * c[2];
  };
  const background = (el) => {
    for (let node = el; node; node = node.parentElement) {
      const c = rgb(getComputedStyle(node).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c;
    }
    return [255, 255, 255];
  };
  const out = [];
  for (const selector of selectors) {
    for (const el of document.querySelectorAll(selector)) {
      const fg = lum(rgb(getComputedStyle(el).color));
      const bg = lum(background(el));
      const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
      out.push([selector, Math.round(ratio * 100) / 100]);
    }
  }
  return out;
}
"""


async def test_dashboard_is_keyboard_operable_labelled_and_contrasted(
    browser: Browser, demo: Demo
) -> None:
    """Tab reaches every control, each control has a label, and text keeps a 4.5:1 contrast."""
    w = await _open(browser, demo, "/dashboard")
    page = w.page
    await expect(page.locator("#pools article")).to_have_count(1, timeout=10_000)
    reached: list[str] = []
    for _ in range(40):
        await page.keyboard.press("Tab")
        reached.append(
            await page.evaluate(
                "(() => { const e = document.activeElement;"
                " return e.id || e.textContent.trim().slice(0, 40); })()"
            )
        )
    for wanted in ("burst-one", "burst-eight", "strategy-0", "Apply"):
        assert wanted in reached, (wanted, reached)
    assert any(text.startswith("Admin token") for text in reached)
    unlabelled = await page.evaluate(
        "[...document.querySelectorAll('select, input')]"
        '.filter(e => !document.querySelector(`label[for="${e.id}"]`)).map(e => e.outerHTML)'
    )
    assert unlabelled == []
    ratios = await page.evaluate(
        CONTRAST_JS,
        [".card dt", ".card dd", ".hint", "nav a", "button", "h2", "td", ".badge", "#conn-status"],
    )
    assert ratios
    low = [(selector, ratio) for selector, ratio in ratios if ratio < 4.5]
    assert low == []
    assert w.errors == []
