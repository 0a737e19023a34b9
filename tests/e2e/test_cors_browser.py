"""A real Chromium: a page on one origin calls Gatekeeper on another. The gateway answers the
preflight itself, the page reads the answer and its RateLimit fields, and a route without CORS
stays closed to it (the browser refuses to hand the answer over)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from playwright.async_api import async_playwright

from gatekeeper.gateway.mock_backend import MockBackend
from tests.integration.gateway_fixtures import backends, config_for, running_gateway
from tests.servers import tool

pytestmark = pytest.mark.browser

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

PAGE = """<!doctype html><title>shop</title><script>
async function call(url) {
  try {
    const answer = await fetch(url, {method: "POST", body: JSON.stringify({item: 42}),
      headers: {"Content-Type": "application/json", "X-Client": "shop"}});
    return {status: answer.status, ratelimit: answer.headers.get("RateLimit"),
            requestId: answer.headers.get("X-Request-ID"), body: await answer.json()};
  } catch (error) {
    return {error: String(error)};
  }
}
</script>"""


class Page:
    """A one-page site on an origin of its own (a port of its own on loopback)."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Page:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            body = PAGE.encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: %d\r\n"
                b"connection: close\r\n\r\n%b" % (len(body), body)
            )
            await writer.drain()
            writer.close()

        self._server = await asyncio.start_server(serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def backend() -> AsyncIterator[MockBackend]:
    async with backends(1) as started:
        yield started[0]


async def test_a_page_of_another_origin_calls_a_cors_route_and_reads_its_limits(
    backend: MockBackend,
) -> None:
    """The preflight is answered by the gateway (the backend never sees it, the limit of 3
    is not spent by it); the page reads the JSON and the exposed RateLimit field; the same
    call to a route without CORS is refused by the browser."""
    async with Page() as site:
        data = config_for(
            [backend.url],
            policies={"three": {"rate": "3/minute", "algorithm": "fixed_window"}},
            routes=[
                {"name": "open", "path_prefix": "/api", "upstream": "backends",
                 "limits": ["three"], "cors": {"allow_origins": [site.origin],
                 "allow_headers": ["content-type", "x-client"]}},
                {"name": "closed", "path_prefix": "/private", "upstream": "backends"},
            ],
        )  # fmt: skip
        async with running_gateway(data) as gw, async_playwright() as pw:
            api = gw.url.replace("127.0.0.1", "localhost")  # another origin than the page's
            browser = await pw.chromium.launch(executable_path=tool("chromium"), args=ARGS)
            try:
                page = await browser.new_page()
                await page.goto(site.origin)
                before = backend.requests
                first = await page.evaluate(f"call({json.dumps(api + '/api/orders')})")
                answers = [first]
                for _ in range(3):
                    answers.append(await page.evaluate(f"call({json.dumps(api + '/api/orders')})"))
                forwarded = backend.requests - before
                # (Without cors, the route passes the preflight on to its upstream, which
                # answers it without Access-Control-Allow-Origin.)
                refused = await page.evaluate(f"call({json.dumps(api + '/private/x')})")
            finally:
                await browser.close()
    assert first["status"] == 200, first
    assert first["body"]["backend"] == "backend-1"
    assert first["ratelimit"] is not None
    assert "r=2" in first["ratelimit"]
    assert first["requestId"]
    assert [a["status"] for a in answers] == [200, 200, 200, 429]  # preflights cost nothing
    assert answers[-1]["body"]["error"] == "rate_limited"
    # A JSON body with a custom header is sent only after a successful preflight, and the
    # backend saw nothing but the three admitted POSTs: the gateway answered the preflights.
    assert forwarded == 3
    assert "error" in refused  # no Access-Control-Allow-Origin: the page cannot read it
