"""What the configuration accepts, the gateway serves: every algorithm with every key kind, on
every way a request is served, against the memory store and Redis (issue 14: a concurrency
policy that `serve --check` accepted answered 500 to every request)."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from gatekeeper.gateway.config import parse_config
from gatekeeper.limits.policy import Algorithm
from tests.integration.gateway_fixtures import backends, config_for, running_gateway

KEYS = ["ip", "global", "api_key", "header:x-user", "query:user"]
WAYS = {
    # relayed on callbacks
    "get": b"GET {path}?user=u1 HTTP/1.1\r\nHost: t\r\nX-User: u1\r\nX-API-Key: k1\r\n\r\n",
    # a body streamed upstream in a task
    "chunked_post": b"POST {path}?user=u1 HTTP/1.1\r\nHost: t\r\nX-User: u1\r\nX-API-Key: k1\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    # small body read whole, relayed
    "small_post": b"POST {path}?user=u1 HTTP/1.1\r\nHost: t\r\nX-User: u1\r\nX-API-Key: k1\r\n"
    b"Content-Length: 3\r\n\r\nabc",
}
COMBINATIONS = list(itertools.product(list(Algorithm), KEYS))


def _config(urls: list[str], store: str) -> dict[str, Any]:
    policies: dict[str, Any] = {}
    routes: list[dict[str, Any]] = []
    for n, (algorithm, key) in enumerate(COMBINATIONS):
        name = f"matrix-{store}-{n}"
        policies[name] = {"rate": "1000/minute", "algorithm": algorithm.value}
        for cached in (False, True):
            routes.append(
                {
                    "name": f"r{n}{'c' if cached else ''}",
                    "path_prefix": f"/{'c' if cached else 'p'}{n}",
                    "upstream": "backends",
                    "limits": [{"policy": name, "key": key}],
                    "cache": cached,
                }
            )
    return config_for(urls, policies=policies, routes=routes, limiter={"deadline": 2.0})


async def _status(port: int, raw: bytes) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        return int(head.split(b" ", 2)[1])
    finally:
        writer.close()


@pytest.mark.parametrize("store", ["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def test_every_algorithm_with_every_key_is_served_on_every_way(
    store: str, redis_url: str, redis_prefix: str
) -> None:
    """6 algorithms x 5 key kinds, each on a plain and a cached route, each asked by a GET, a
    small POST and a chunked POST: all accepted by the configuration, all answered 200."""
    async with backends(1) as bs:
        data = _config([bs[0].url], f"{store}-{redis_prefix}")
        parse_config(data)  # what `serve --check` validates
        url = redis_url if store == "redis" else ""
        async with running_gateway(data, redis_url=url) as gw:
            answers: dict[tuple[str, str, str], int] = {}
            for n, (algorithm, key) in enumerate(COMBINATIONS):
                for prefix in ("p", "c"):
                    for way, raw in WAYS.items():
                        path = f"/{prefix}{n}/x"
                        request = raw.replace(b"{path}", path.encode())
                        answers[(f"{algorithm.value}/{key}/{prefix}", way, path)] = await _status(
                            gw.server.port, request
                        )
    wrong = {k: v for k, v in answers.items() if v != 200}
    assert not wrong, wrong
    assert len(answers) == len(COMBINATIONS) * 2 * len(WAYS)
