"""The cache inside the real gateway: listener -> pipeline -> cache -> proxy -> a real origin.

The gateway is the core's ``Snapshot`` served by a ``Flow`` on its ``Server`` on a free loopback
port, with the cache built by ``gateway_cache`` from a YAML-shaped configuration (memory store,
or Redis shared by two gateway replicas). Clients are plain HTTP (httpx); the cache's clock is a
FakeClock, so freshness moves without sleeping.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from gatekeeper.app import Runtime, build_snapshot
from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.cache.adapter import GatewayCache
from gatekeeper.gateway.config import parse_config
from gatekeeper.gateway.flow.flow import Flow
from gatekeeper.gateway.http.server import Server
from gatekeeper.redis_client import redis_from_url
from gatekeeper.settings import Settings
from gatekeeper.testing import FakeClock
from tests.integration.test_cache_origin import Origin, Reply, Seen

Gateway = Callable[..., Awaitable[httpx.AsyncClient]]


@pytest.fixture
async def origin(fake_clock: FakeClock) -> AsyncIterator[Origin]:
    server = Origin(fake_clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def gateway(origin: Origin, fake_clock: FakeClock) -> AsyncIterator[Gateway]:
    """Starts gateways in front of ``origin``; each call is one replica, returned as a client."""
    started: list[tuple[Server, Any, httpx.AsyncClient]] = []

    async def start(
        cache: dict[str, Any] | None = None,
        redis: Any = None,
        metrics: Any = None,
        route: Any = True,
    ) -> httpx.AsyncClient:
        config = parse_config(
            {
                "upstreams": {"origin": {"endpoints": [f"http://127.0.0.1:{origin.port}"]}},
                "routes": [
                    {"name": "cached", "path_prefix": "/", "upstream": "origin", "cache": route}
                ],
                "cache": cache or {"max_object_bytes": 100_000},
            }
        )
        runtime = Runtime(Settings(), config, clock=fake_clock, redis=redis, metrics=metrics)
        state = build_snapshot(runtime, config)  # the composition root builds the cache
        assert isinstance(state.cache, GatewayCache)
        server = Server(Flow(state), host="127.0.0.1", port=0, shutdown_grace=1.0)
        await state.start()
        await server.start()
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}", timeout=10.0)
        started.append((server, state, client))
        client.cache = state.cache  # type: ignore[attr-defined]  # for assertions on stats
        return client

    try:
        yield start
    finally:
        for server, state, client in started:
            await client.aclose()
            await server.stop()
            await state.stop()
            if isinstance(state.cache, GatewayCache):
                await state.cache.cache.drain()


def etag_reply(seen: Seen) -> Reply:
    if seen.headers.get("if-none-match") == '"v1"':
        return 304, [("etag", '"v1"'), ("cache-control", "max-age=10")], b""
    return 200, [("etag", '"v1"'), ("cache-control", "max-age=10")], b"tagged"


async def test_hit_through_the_gateway(
    gateway: Gateway, origin: Origin, fake_clock: FakeClock
) -> None:
    """Through the listener: miss then hit with Age and Cache-Status, one origin request."""
    client = await gateway()
    first = await client.get("/page")
    assert first.status_code == 200
    assert first.text == "hello"
    assert first.headers["cache-status"] == "gatekeeper; fwd=uri-miss; stored; ttl=60"
    fake_clock.advance(7)
    second = await client.get("/page")
    assert second.text == "hello"
    assert second.headers["cache-status"] == "gatekeeper; hit; ttl=53"
    assert second.headers["age"] == "7"
    assert second.headers["content-length"] == "5"
    head = await client.head("/page")
    assert head.headers["content-length"] == "5"
    assert head.content == b""
    assert origin.count() == 1


async def test_revalidation_and_client_304_through_the_gateway(
    gateway: Gateway, origin: Origin, fake_clock: FakeClock
) -> None:
    """A stale entry is revalidated with the origin's ETag; a conditional client gets a 304."""
    origin.handler = etag_reply
    client = await gateway()
    assert (await client.get("/doc")).text == "tagged"
    fake_clock.advance(20)
    again = await client.get("/doc")
    assert again.text == "tagged"
    assert again.headers["cache-status"] == "gatekeeper; fwd=stale; fwd-status=304; ttl=10"
    assert origin.seen[1].headers["if-none-match"] == '"v1"'
    conditional = await client.get("/doc", headers={"if-none-match": '"v1"'})
    assert conditional.status_code == 304
    assert conditional.content == b""
    assert origin.count() == 2


async def test_coalescing_through_the_gateway(gateway: Gateway, origin: Origin) -> None:
    """20 concurrent clients missing the same URI cause one request to the origin."""
    release = asyncio.Event()

    async def slow(seen: Seen) -> Reply:
        await release.wait()
        return 200, [("cache-control", "max-age=60")], b"popular"

    origin.handler = slow
    client = await gateway()
    tasks = [asyncio.create_task(client.get("/hot")) for _ in range(20)]
    for _ in range(200):  # bounded wait until the leading request reached the origin
        if origin.count():
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # let the other 19 requests reach the cache and wait there
    release.set()
    responses = await asyncio.gather(*tasks)
    assert [r.text for r in responses] == ["popular"] * 20
    assert origin.count() == 1
    collapsed = [r for r in responses if "collapsed" in r.headers["cache-status"]]
    assert len(collapsed) == 19


async def test_large_body_streams_through_the_gateway_uncached(
    gateway: Gateway, origin: Origin
) -> None:
    """A 2 MB chunked body passes through whole and is not stored (bound 100 KB)."""
    big = bytes(range(256)) * 8192
    origin.chunked = True
    origin.chunk_size = 64 * 1024
    origin.handler = lambda seen: (200, [("cache-control", "max-age=60")], big)
    client = await gateway()
    for _ in range(2):
        response = await client.get("/big")
        assert response.content == big
    assert origin.count() == 2


async def test_no_store_and_stale_if_error_through_the_gateway(
    gateway: Gateway, origin: Origin, fake_clock: FakeClock
) -> None:
    """no-store responses are forwarded each time; a 503 inside stale-if-error serves stale."""
    healthy = True

    def handler(seen: Seen) -> Reply:
        if seen.target == "/private":
            return 200, [("cache-control", "no-store")], b"secret"
        if healthy:
            return 200, [("cache-control", "max-age=5, stale-if-error=60")], b"ok"
        return 503, [], b"down"

    origin.handler = handler
    client = await gateway()
    for _ in range(2):
        response = await client.get("/private")
        assert response.headers["cache-status"] == "gatekeeper; fwd=uri-miss; detail=no-store"
    assert (await client.get("/sie")).text == "ok"
    fake_clock.advance(10)
    healthy = False
    stale = await client.get("/sie")
    assert (stale.status_code, stale.text) == (200, "ok")
    assert "detail=stale-if-error" in stale.headers["cache-status"]


async def test_memory_stores_are_per_replica(gateway: Gateway, origin: Origin) -> None:
    """Two replicas with the default memory store each fetch once: nothing is shared."""
    host = {"host": "api.example"}
    await (await gateway()).get("/x", headers=host)
    await (await gateway()).get("/x", headers=host)
    assert origin.count() == 2


@pytest.mark.redis
async def test_redis_store_shared_by_two_gateway_replicas(
    gateway: Gateway, origin: Origin, redis_prefix: str, any_redis_url: str
) -> None:
    """Replica B serves from Redis (one server, or a cluster) what replica A stored: the
    origin sees one request."""
    clients = [redis_from_url(any_redis_url) for _ in range(2)]
    try:
        settings = {"store": "redis", "redis_prefix": redis_prefix}
        a = await gateway(settings, redis=clients[0])
        b = await gateway(settings, redis=clients[1])
        # behind a load balancer every replica sees the same Host
        host = {"host": "api.example"}
        stored = await a.get("/shared", headers=host)
        assert stored.headers["cache-status"].endswith("stored; ttl=60")
        hit = await b.get("/shared", headers=host)
        assert hit.text == "hello"
        assert hit.headers["cache-status"] == "gatekeeper; hit; ttl=60"
        assert origin.count() == 1
    finally:
        for client in clients:
            await client.aclose()


async def test_metrics_and_stats_count_lookups(gateway: Gateway, origin: Origin) -> None:
    """Each lookup is counted in gatekeeper_cache_lookups_total and in the /stats snapshot."""
    from gatekeeper.observability.metrics import Metrics

    metrics = Metrics()
    client = await gateway(metrics=metrics)
    for _ in range(3):
        await client.get("/m")
    text = metrics.render().decode()
    assert 'gatekeeper_cache_lookups_total{result="miss",route="cached"} 1.0' in text
    assert 'gatekeeper_cache_lookups_total{result="hit",route="cached"} 2.0' in text
    stats = client.cache.stats()  # type: ignore[attr-defined]
    assert (stats["hits"], stats["misses"], stats["stored"]) == (2, 1, 1)
    assert stats["store"] == "MemoryStore"


def test_composition_root_builds_no_cache_without_cached_routes(fake_clock: FakeClock) -> None:
    """build_snapshot wires a cache only when some route enables it."""
    upstreams = {"origin": {"endpoints": ["http://127.0.0.1:9"]}}
    plain = parse_config({"upstreams": upstreams, "routes": [{"upstream": "origin"}]})
    assert build_snapshot(Runtime(Settings(), plain, clock=fake_clock), plain).cache is None
    off = parse_config({"upstreams": upstreams, "routes": [{"upstream": "origin", "cache": False}]})
    assert build_snapshot(Runtime(Settings(), off, clock=fake_clock), off).cache is None


def test_bad_cache_settings_are_listed_with_the_file() -> None:
    """parse_config lists every cache problem with its path, next to the core's own problems."""
    from gatekeeper.gateway.config import ConfigFileError

    with pytest.raises(ConfigFileError) as info:
        parse_config(
            {
                "upstreams": {"origin": {"endpoints": ["http://127.0.0.1:9"]}},
                "routes": [{"upstream": "origin", "cache": {"ttl": 5}}],
                "cache": {"store": "disk", "max_object_bytes": 0},
            },
            source="gk.yaml",
        )
    text = str(info.value)
    assert "gk.yaml: cache.store:" in text
    assert "gk.yaml: cache.max_object_bytes:" in text
    assert "gk.yaml: routes.0.cache: unknown field(s) ttl" in text


async def test_stale_while_revalidate_through_the_gateway(
    gateway: Gateway, origin: Origin, fake_clock: FakeClock
) -> None:
    """The stale body is served at once; the background refresh goes through the real proxy."""
    versions = iter([b"v1", b"v2"])
    origin.handler = lambda seen: (
        200,
        [("cache-control", "max-age=10, stale-while-revalidate=60")],
        next(versions),
    )
    client = await gateway()
    assert (await client.get("/swr")).content == b"v1"
    fake_clock.advance(20)
    stale = await client.get("/swr")
    assert stale.content == b"v1"
    assert stale.headers["cache-status"] == (
        "gatekeeper; hit; ttl=-10; detail=stale-while-revalidate"
    )
    await client.cache.cache.drain()  # type: ignore[attr-defined]
    fresh = await client.get("/swr")
    assert (fresh.content, fresh.headers["cache-status"]) == (b"v2", "gatekeeper; hit; ttl=10")
    assert origin.count() == 2


async def test_a_hit_on_the_express_lane_is_the_pipelines_hit_byte_for_byte(
    gateway: Gateway, origin: Origin, fake_clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh hit is answered without awaiting (``GatewayCache.fresh_hit``, the express lane);
    the same hits taken the long way (``handle``) give the very same bytes: GET and HEAD from
    the pre-encoded fields, the 304 a client's validators earn and a request with directives
    through the converted request."""
    origin.handler = etag_reply
    client = await gateway()
    # (Every request names the same Host: it is part of the cache key.)
    stored = await client.get("/doc", headers={"host": "h"})
    assert stored.text == "tagged"
    stats = client.cache.cache.stats  # type: ignore[attr-defined]
    for _ in range(100):  # the entry is stored once the body's last read returned
        if stats.stored:
            break
        await asyncio.sleep(0.01)
    fake_clock.advance(3)
    port = int(str(client.base_url).rsplit(":", 1)[1])
    requests = (
        b"GET /doc HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b"HEAD /doc HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n",
        b'GET /doc HTTP/1.1\r\nHost: h\r\nIf-None-Match: "v1"\r\nConnection: close\r\n\r\n',
        b"GET /doc HTTP/1.1\r\nHost: h\r\nCache-Control: max-age=5\r\nConnection: close\r\n\r\n",
    )

    async def answers() -> list[bytes]:
        out = []
        for raw in requests:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            answer = await asyncio.wait_for(reader.read(), 5)
            # Every request has an id of its own (echoed back): the one difference allowed.
            out.append(re.sub(rb"x-request-id: [0-9a-f]+\r\n", b"", answer))
            writer.close()
        return out

    taken: list[int] = []
    fresh_hit = GatewayCache.fresh_hit

    def counting(self: GatewayCache, request: Any) -> Any:
        answer = fresh_hit(self, request)
        taken.append(answer is not None)
        return answer

    monkeypatch.setattr(GatewayCache, "fresh_hit", counting)
    express = await answers()
    assert taken == [True, True, True, True]
    monkeypatch.setattr(GatewayCache, "fresh_hit", lambda self, request: None)
    pipeline = await answers()
    assert express == pipeline
    assert express[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"\r\nage: 3\r\n" in express[0]
    assert express[0].endswith(b"\r\n\r\ntagged")
    assert express[1].endswith(b"content-length: 6\r\nconnection: close\r\n\r\n")
    assert express[2].startswith(b"HTTP/1.1 304 Not Modified\r\n")
    assert express[3] == express[0]
    assert origin.count() == 1


@pytest.mark.parametrize(
    ("fields", "stored"),
    [
        ([], True),
        ([("etag", '"e1"')], True),
        ([("cache-control", "no-store")], False),
        ([("cache-control", "private")], False),
        ([("set-cookie", "sid=1")], False),
        ([("cache-control", "max-age=2")], True),  # its own lifetime wins over the default
    ],
)
async def test_a_route_default_ttl_caches_answers_without_freshness(
    gateway: Gateway,
    origin: Origin,
    fake_clock: FakeClock,
    fields: list[tuple[str, str]],
    stored: bool,
) -> None:
    """cache: {default_ttl: 30}: an answer without max-age, s-maxage or Expires is fresh for
    30 s (nginx's proxy_cache_valid), unless no-store, private or Set-Cookie forbid storing
    it; the client sees the origin's fields as they were (no Cache-Control added)."""
    origin.handler = lambda seen: (200, fields, b"data")
    client = await gateway(route={"default_ttl": 30})
    first = await client.get("/d")
    assert "cache-control" not in first.headers or first.headers["cache-control"] == dict(
        fields
    ).get("cache-control")
    stats = client.cache.cache.stats  # type: ignore[attr-defined]
    for _ in range(100):  # the entry is stored once the body's last read returned
        if stats.stored or not stored:
            break
        await asyncio.sleep(0.01)
    fake_clock.advance(10)
    second = await client.get("/d")
    own_lifetime = ("cache-control", "max-age=2") in fields
    hit = stored and not own_lifetime
    assert ("hit" in second.headers["cache-status"]) is hit
    assert origin.count() == (1 if hit else 2)
    if hit:
        fake_clock.advance(25)  # 35 s in: past the default lifetime
        third = await client.get("/d")
        assert "hit" not in third.headers["cache-status"]


async def test_without_a_default_ttl_an_answer_without_freshness_is_not_stored(
    gateway: Gateway, origin: Origin
) -> None:
    """The default stays RFC 9111's: no freshness and no validator, nothing stored."""
    origin.handler = lambda seen: (200, [], b"data")
    client = await gateway()
    await client.get("/d")
    second = await client.get("/d")
    assert "no-freshness" in second.headers["cache-status"]
    assert origin.count() == 2


def test_a_bad_default_ttl_is_refused_by_name() -> None:
    """serve --check names a default_ttl that is not positive seconds."""
    for bad in (0, -1, "30", True):
        with pytest.raises(ConfigurationError, match="default_ttl"):
            parse_config(
                {
                    "upstreams": {"o": {"endpoints": ["http://127.0.0.1:1"]}},
                    "routes": [
                        {"path_prefix": "/", "upstream": "o", "cache": {"default_ttl": bad}}
                    ],
                }
            )
