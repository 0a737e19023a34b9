"""A route's header rewrites (``request_headers``, ``response_headers``) on every way a
request can take: the express lane, the pipeline (a streamed body) and cache hits."""

from __future__ import annotations

import asyncio

import pytest

from gatekeeper.gateway.config import ConfigFileError, parse_config
from tests.integration.gateway_fixtures import (
    ScriptedUpstream,
    config_for,
    raw_exchange,
    read_request,
    running_gateway,
)

RULES = {
    "request_headers": {"set": {"X-Tenant": "acme", "User-Agent": "gatekeeper"},
                        "remove": ["Cookie"]},
    "response_headers": {"set": {"Strict-Transport-Security": "max-age=63072000"},
                         "remove": ["Server", "X-Powered-By"]},
}  # fmt: skip


def _fields(head: bytes) -> list[tuple[bytes, bytes]]:
    lines = head.split(b"\r\n")[1:]
    return [tuple(line.split(b": ", 1)) for line in lines if line]  # type: ignore[misc]


async def test_rules_rewrite_requests_and_responses_on_every_lane() -> None:
    seen: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head, _ = await read_request(reader)
            seen.append(head)
            writer.write(
                b"HTTP/1.1 200 OK\r\nServer: upstream/1.0\r\nX-Powered-By: php\r\n"
                b"Cache-Control: max-age=60\r\nContent-Length: 2\r\n\r\nok"
            )
            await writer.drain()

    routes = [
        {"name": "api", "path_prefix": "/api", "upstream": "backends", **RULES},
        {"name": "cached", "path_prefix": "/cached", "upstream": "backends", "cache": True,
         **RULES},
    ]  # fmt: skip
    big = b"z" * 100_000  # more than the express lane buffers: the pipeline streams it
    requests = [
        b"GET /api/a HTTP/1.1\r\nHost: t\r\nCookie: s=1\r\nUser-Agent: curl\r\n\r\n",
        b"POST /api/a HTTP/1.1\r\nHost: t\r\nCookie: s=1\r\nContent-Length: %d\r\n\r\n%b"
        % (len(big), big),
        b"GET /cached/a HTTP/1.1\r\nHost: t\r\n\r\n",
        b"GET /cached/a HTTP/1.1\r\nHost: t\r\n\r\n",  # a hit
    ]
    async with (
        ScriptedUpstream(handler) as up,
        running_gateway(config_for([up.url], routes=routes)) as gw,
    ):
        answers = []
        for request in requests:
            raw = await raw_exchange(gw.server.port, request, read_until_close=False)
            answers.append(raw)
    assert len(seen) == 3  # the last one was a cache hit
    for head in seen[:2]:
        fields = _fields(head.lower())
        assert (b"x-tenant", b"acme") in fields
        assert (b"user-agent", b"gatekeeper") in fields
        assert [name for name, _ in fields].count(b"user-agent") == 1
        assert not any(name == b"cookie" for name, _ in fields)
    for raw in answers:
        head = raw.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 200"), raw
        assert b"\r\nstrict-transport-security: max-age=63072000" in head
        assert b"\r\nserver:" not in head
        assert b"x-powered-by" not in head
    assert b"cache-status: gatekeeper; hit" in answers[3].lower()


@pytest.mark.parametrize(
    ("rules", "wanted"),
    [
        ({"request_headers": {"set": {"Host": "x"}}}, "'Host' is managed by the proxy"),
        ({"request_headers": {"remove": ["X-Forwarded-For"]}}, "managed by the proxy"),
        ({"response_headers": {"remove": ["Content-Length"]}}, "managed by the proxy"),
        ({"response_headers": {"set": {"X-A": "1\r\nX-Injected: 1"}}}, "control byte"),
        ({"response_headers": {"set": {"Bad Name": "1"}}}, "not a header field name"),
    ],
)
def test_rules_that_would_break_the_proxy_are_configuration_errors(
    rules: dict[str, object], wanted: str
) -> None:
    config = config_for(["http://127.0.0.1:9"])
    config["routes"] = [{"name": "api", "path_prefix": "/api", "upstream": "backends", **rules}]
    with pytest.raises(ConfigFileError) as error:
        parse_config(config)
    message = str(error.value)
    assert "routes.0." in message
    assert wanted in message
