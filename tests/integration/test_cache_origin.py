"""The cache against a real origin server on loopback, on the memory store and on real Redis.

``Origin`` is a scriptable HTTP/1.1 server (keep-alive, Content-Length or chunked bodies) that
records every request it receives; the cache reaches it through an httpx-based ``forward``.
Freshness is driven by a FakeClock injected into the cache (and into the origin's Date field):
no test sleeps to wait out a TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.utils import formatdate

import httpx
import pytest
import redis.asyncio as aioredis

from gatekeeper.errors import UpstreamConnectError, UpstreamTimeout
from gatekeeper.gateway.cache import (
    CacheOptions,
    CacheRequest,
    CacheResponse,
    HttpCache,
    MemoryStore,
    RedisStore,
    Store,
    TieredStore,
)
from gatekeeper.testing import FakeClock
from tests import services

Reply = tuple[int, list[tuple[str, str]], bytes]


@dataclass
class Seen:
    """One request as the origin received it."""

    method: str
    target: str
    headers: dict[str, str]


@dataclass
class Origin:
    """A real HTTP/1.1 origin on 127.0.0.1 whose answers the test scripts."""

    clock: FakeClock
    handler: Callable[[Seen], Awaitable[Reply] | Reply] = field(
        default=lambda seen: (200, [("cache-control", "max-age=60")], b"hello")
    )
    chunked: bool = False
    chunk_size: int = 16 * 1024
    seen: list[Seen] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.close()
            await self._server.wait_closed()
            self._server = None

    def count(self, target: str | None = None) -> int:
        return sum(1 for s in self.seen if target is None or s.target == target)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.CancelledError:
                    return  # the test is over: an idle keep-alive connection just ends
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    if line:
                        name, _, value = line.partition(":")
                        headers[name.strip().lower()] = value.strip()
                if int(headers.get("content-length", "0")):
                    await reader.readexactly(int(headers["content-length"]))
                seen = Seen(method, target, headers)
                self.seen.append(seen)
                result = self.handler(seen)
                status, fields, body = await result if asyncio.iscoroutine(result) else result  # type: ignore[misc]
                await self._respond(writer, method, status, fields, body)
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        method: str,
        status: int,
        fields: list[tuple[str, str]],
        body: bytes,
    ) -> None:
        out = [f"HTTP/1.1 {status} X", f"date: {formatdate(self.clock.now(), usegmt=True)}"]
        out += [f"{k}: {v}" for k, v in fields]
        no_body = status in (204, 304) or method == "HEAD"
        if self.chunked and not no_body:
            out.append("transfer-encoding: chunked")
        elif status not in (204, 304):
            out.append(f"content-length: {len(body)}")
        writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1"))
        if no_body:
            await writer.drain()
            return
        for start in range(0, len(body), self.chunk_size):
            piece = body[start : start + self.chunk_size]
            writer.write(b"%x\r\n%b\r\n" % (len(piece), piece) if self.chunked else piece)
            await writer.drain()
        if self.chunked:
            writer.write(b"0\r\n\r\n")
        await writer.drain()


_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def forwarder(client: httpx.AsyncClient, origin: Origin) -> Callable[..., Awaitable[CacheResponse]]:
    """The proxy's role: send a CacheRequest to the origin, stream the response back."""

    async def forward(request: CacheRequest) -> CacheResponse:
        url = f"http://127.0.0.1:{origin.port}{request.target}"
        outgoing = client.build_request(request.method, url, headers=request.headers)
        try:
            response = await client.send(outgoing, stream=True)
        except httpx.TimeoutException as exc:
            raise UpstreamTimeout(str(exc)) from exc
        except httpx.TransportError as exc:  # refused, reset, closed keep-alive connection
            raise UpstreamConnectError(str(exc)) from exc
        headers = [
            (k.decode("latin-1"), v.decode("latin-1"))
            for k, v in response.headers.raw
            if k.decode("latin-1").lower() not in _HOP
        ]

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return CacheResponse(response.status_code, headers, body())

    return forward


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis+near", marks=pytest.mark.redis),
        pytest.param("cluster", marks=pytest.mark.redis),
    ]
)
async def store(
    request: pytest.FixtureRequest, fake_clock: FakeClock, redis_prefix: str
) -> AsyncIterator[Store]:
    """Every test runs on memory, on the shared Redis (own prefix), on Redis behind a near
    tier, and on a Redis Cluster (3 masters, a replica each)."""
    if request.param == "memory":
        yield MemoryStore(clock=fake_clock, max_entry_bytes=200_000)
        return
    url = services.redis_url()
    if request.param == "cluster":
        url = request.getfixturevalue("redis_cluster").url
    redis_store = RedisStore.from_url(url, prefix=redis_prefix, max_entry_bytes=200_000)
    try:
        if request.param in ("redis", "cluster"):
            yield redis_store
        else:
            yield TieredStore(MemoryStore(clock=fake_clock, max_entry_bytes=200_000), redis_store)
    finally:
        await redis_store.aclose()


@pytest.fixture
async def origin(fake_clock: FakeClock) -> AsyncIterator[Origin]:
    server = Origin(fake_clock)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as http:
        yield http


@dataclass
class Harness:
    cache: HttpCache
    origin: Origin
    forward: Callable[..., Awaitable[CacheResponse]]

    async def get(
        self, target: str = "/a", method: str = "GET", **fields: str
    ) -> tuple[int, dict[str, str], bytes]:
        headers = [(k.replace("_", "-"), v) for k, v in fields.items()]
        response = await self.cache.handle(
            CacheRequest(method, "origin.test", target, headers), self.forward
        )
        body = b"".join([chunk async for chunk in response.body])
        return response.status, {k.lower(): v for k, v in response.headers}, body


@pytest.fixture
async def h(
    store: Store, origin: Origin, client: httpx.AsyncClient, fake_clock: FakeClock
) -> AsyncIterator[Harness]:
    cache = HttpCache(store, options=CacheOptions(max_object_bytes=100_000), clock=fake_clock)
    try:
        yield Harness(cache, origin, forwarder(client, origin))
    finally:
        await cache.drain()


def reply(status: int, body: bytes = b"hello", **fields: str) -> Callable[[Seen], Reply]:
    headers = [(k.replace("_", "-"), v) for k, v in fields.items()]
    return lambda _seen: (status, headers, body)


async def test_max_age_hit(h: Harness, fake_clock: FakeClock) -> None:
    """A max-age=60 response is served from the cache with Age; the origin sees one request."""
    h.origin.handler = reply(200, cache_control="max-age=60")
    status, headers, body = await h.get()
    assert (status, body) == (200, b"hello")
    assert headers["cache-status"] == "gatekeeper; fwd=uri-miss; stored; ttl=60"
    fake_clock.advance(30)
    status, headers, body = await h.get()
    assert (status, body) == (200, b"hello")
    assert headers["cache-status"] == "gatekeeper; hit; ttl=30"
    assert headers["age"] == "30"
    assert h.origin.count() == 1


async def test_s_maxage_precedence(h: Harness, fake_clock: FakeClock) -> None:
    """s-maxage=100 outlives max-age=1 in the shared cache."""
    h.origin.handler = reply(200, cache_control="max-age=1, s-maxage=100")
    await h.get()
    fake_clock.advance(50)
    _, headers, _ = await h.get()
    assert headers["cache-status"] == "gatekeeper; hit; ttl=50"
    assert h.origin.count() == 1


@pytest.mark.parametrize(
    ("cache_control", "detail"), [("no-store", "no-store"), ("private, max-age=60", "private")]
)
async def test_no_store_and_private_are_not_stored(
    h: Harness, cache_control: str, detail: str
) -> None:
    """no-store and private responses go to the origin every time."""
    h.origin.handler = reply(200, cache_control=cache_control)
    for _ in range(2):
        _, headers, _ = await h.get()
        assert headers["cache-status"] == f"gatekeeper; fwd=uri-miss; detail={detail}"
    assert h.origin.count() == 2


def etag_origin(
    cache_control: str, etag: str = '"v1"', body: bytes = b"doc"
) -> Callable[[Seen], Reply]:
    def handler(seen: Seen) -> Reply:
        if seen.headers.get("if-none-match") == etag:
            return 304, [("etag", etag), ("cache-control", cache_control)], b""
        return 200, [("etag", etag), ("cache-control", cache_control)], body

    return handler


async def test_no_cache_is_revalidated_on_every_use(h: Harness) -> None:
    """A no-cache response is stored, and each use is a conditional request answered by 304."""
    h.origin.handler = etag_origin("no-cache")
    await h.get()
    for _ in range(2):
        status, headers, body = await h.get()
        assert (status, body) == (200, b"doc")
        assert headers["cache-status"] == "gatekeeper; fwd=stale; fwd-status=304; ttl=0"
    assert [s.headers.get("if-none-match") for s in h.origin.seen] == [None, '"v1"', '"v1"']


async def test_etag_revalidation_refreshes_the_entry(h: Harness, fake_clock: FakeClock) -> None:
    """A stale entry is revalidated with If-None-Match; the 304 makes it fresh for max-age again."""
    h.origin.handler = etag_origin("max-age=10")
    await h.get()
    fake_clock.advance(15)
    status, headers, body = await h.get()
    assert (status, body) == (200, b"doc")
    assert headers["cache-status"] == "gatekeeper; fwd=stale; fwd-status=304; ttl=10"
    fake_clock.advance(5)
    _, headers, _ = await h.get()
    assert headers["cache-status"] == "gatekeeper; hit; ttl=5"
    assert h.origin.count() == 2


async def test_last_modified_revalidation(h: Harness, fake_clock: FakeClock) -> None:
    """A stale entry with Last-Modified is revalidated with If-Modified-Since."""
    stamp = formatdate(fake_clock.now() - 86400, usegmt=True)

    def handler(seen: Seen) -> Reply:
        if seen.headers.get("if-modified-since") == stamp:
            return 304, [("cache-control", "max-age=10")], b""
        return 200, [("last-modified", stamp), ("cache-control", "max-age=10")], b"lm"

    h.origin.handler = handler
    await h.get()
    fake_clock.advance(11)
    status, headers, body = await h.get()
    assert (status, body) == (200, b"lm")
    assert headers["cache-status"].startswith("gatekeeper; fwd=stale; fwd-status=304")
    assert h.origin.seen[1].headers["if-modified-since"] == stamp


async def test_conditional_client_gets_304_after_revalidation(
    h: Harness, fake_clock: FakeClock
) -> None:
    """A client's matching If-None-Match gets a 304, from a fresh or a revalidated entry."""
    h.origin.handler = etag_origin("max-age=10")
    await h.get()
    status, _, body = await h.get(if_none_match='"v1"')
    assert (status, body) == (304, b"")
    fake_clock.advance(20)
    status, headers, body = await h.get(if_none_match='"v1"')
    assert (status, body) == (304, b"")
    assert headers["cache-status"].startswith("gatekeeper; fwd=stale; fwd-status=304")


async def test_vary_selects_variants(h: Harness) -> None:
    """Vary: Accept-Language stores one variant per language; Vary: * is never reused."""

    def handler(seen: Seen) -> Reply:
        if seen.target == "/star":
            return 200, [("cache-control", "max-age=60"), ("vary", "*")], b"*"
        lang = seen.headers.get("accept-language", "none")
        return 200, [("cache-control", "max-age=60"), ("vary", "Accept-Language")], lang.encode()

    h.origin.handler = handler
    assert (await h.get(accept_language="fr"))[2] == b"fr"
    assert (await h.get(accept_language="de"))[2] == b"de"
    _, headers, body = await h.get(accept_language="FR")
    assert (body, headers["cache-status"]) == (b"fr", "gatekeeper; hit; ttl=60")
    _, headers, body = await h.get(accept_language="de")
    assert (body, headers["cache-status"]) == (b"de", "gatekeeper; hit; ttl=60")
    assert h.origin.count("/a") == 2
    await h.get("/star")
    _, headers, _ = await h.get("/star")
    assert headers["cache-status"] == "gatekeeper; fwd=uri-miss; detail=vary-star"
    assert h.origin.count("/star") == 2


async def test_stale_while_revalidate(h: Harness, fake_clock: FakeClock) -> None:
    """Within the window the stale body is served at once; one background fetch refreshes it."""
    versions = iter([b"v1", b"v2", b"v3"])
    h.origin.handler = lambda seen: (
        200,
        [("cache-control", "max-age=10, stale-while-revalidate=60")],
        next(versions),
    )
    await h.get()
    fake_clock.advance(20)
    results = [await h.get() for _ in range(3)]
    assert [body for _, _, body in results] == [b"v1"] * 3
    assert all(
        r[1]["cache-status"] == "gatekeeper; hit; ttl=-10; detail=stale-while-revalidate"
        for r in results
    )
    await h.cache.drain()
    assert h.origin.count() == 2
    _, headers, body = await h.get()
    assert (body, headers["cache-status"]) == (b"v2", "gatekeeper; hit; ttl=10")


async def test_stale_if_error_on_5xx_and_on_dead_origin(h: Harness, fake_clock: FakeClock) -> None:
    """Inside stale-if-error a 503 or an unreachable origin is replaced by the stale entry."""
    healthy = True

    def handler(seen: Seen) -> Reply:
        if healthy:
            return 200, [("cache-control", "max-age=10, stale-if-error=300")], b"good"
        return 503, [("content-type", "text/plain")], b"overloaded"

    h.origin.handler = handler
    await h.get()
    fake_clock.advance(30)
    healthy = False
    status, headers, body = await h.get()
    assert (status, body) == (200, b"good")
    assert headers["cache-status"] == (
        "gatekeeper; fwd=stale; fwd-status=503; ttl=-20; detail=stale-if-error"
    )
    await h.origin.stop()
    status, headers, body = await h.get()
    assert (status, body) == (200, b"good")
    assert headers["cache-status"] == "gatekeeper; fwd=stale; ttl=-20; detail=stale-if-error"
    fake_clock.advance(300)
    with pytest.raises(UpstreamConnectError):
        await h.get()


async def test_twenty_concurrent_misses_one_origin_request(h: Harness) -> None:
    """20 concurrent misses of one URI produce exactly one origin request; all get the body."""
    release = asyncio.Event()

    async def slow(seen: Seen) -> Reply:
        await release.wait()
        return 200, [("cache-control", "max-age=60")], b"x" * 5000

    h.origin.handler = slow
    tasks = [asyncio.create_task(h.get("/hot")) for _ in range(20)]
    for _ in range(100):  # bounded: until the leader's request reached the origin
        if h.origin.count("/hot"):
            break
        await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*tasks)
    assert h.origin.count("/hot") == 1
    assert all(body == b"x" * 5000 for _, _, body in results)
    statuses = sorted(headers["cache-status"] for _, headers, _ in results)
    assert statuses.count("gatekeeper; fwd=uri-miss; collapsed; ttl=60") == 19
    assert h.cache.stats.collapsed == 19


async def test_large_chunked_body_streams_through_uncached(h: Harness) -> None:
    """A chunked body past max_object_bytes reaches the client whole and is never stored."""
    big = bytes(range(256)) * 1024  # 256 KiB > 100 KB bound
    h.origin.chunked = True
    h.origin.handler = reply(200, big, cache_control="max-age=60")
    _, _, body = await h.get("/big")
    assert body == big
    _, headers, body = await h.get("/big")
    assert body == big
    assert headers["cache-status"].startswith("gatekeeper; fwd=uri-miss")
    assert h.origin.count("/big") == 2


async def test_declared_large_body_is_passed_through(h: Harness) -> None:
    """A Content-Length past the bound is not copied at all: detail=too-large."""
    h.origin.handler = reply(200, b"y" * 150_000, cache_control="max-age=60")
    _, headers, body = await h.get("/big")
    assert len(body) == 150_000
    assert headers["cache-status"] == "gatekeeper; fwd=uri-miss; detail=too-large"


async def test_small_chunked_body_is_stored(h: Harness) -> None:
    """A chunked body under the bound is assembled from its chunks and stored."""
    h.origin.chunked = True
    h.origin.chunk_size = 1000
    h.origin.handler = reply(200, b"z" * 5000, cache_control="max-age=60")
    await h.get()
    _, headers, body = await h.get()
    assert body == b"z" * 5000
    assert headers["cache-status"] == "gatekeeper; hit; ttl=60"


@pytest.mark.redis
async def test_redis_store_is_shared_by_replicas(
    origin: Origin,
    client: httpx.AsyncClient,
    fake_clock: FakeClock,
    redis_prefix: str,
    any_redis_url: str,
) -> None:
    """A response stored by replica A is a hit on replica B (separate clients, same Redis or
    cluster)."""
    stores = [RedisStore.from_url(any_redis_url, prefix=redis_prefix) for _ in range(2)]
    try:
        a, b = (HttpCache(s, clock=fake_clock) for s in stores)
        forward = forwarder(client, origin)
        request = CacheRequest("GET", "origin.test", "/shared", [])
        first = await a.handle(request, forward)
        assert b"".join([c async for c in first.body]) == b"hello"
        second = await b.handle(request, forward)
        assert b"".join([c async for c in second.body]) == b"hello"
        assert dict(second.headers)["cache-status"] == "gatekeeper; hit; ttl=60"
        assert origin.count() == 1
    finally:
        for s in stores:
            await s.aclose()


@pytest.mark.redis
async def test_redis_records_have_ttls_and_size_bound(
    origin: Origin, client: httpx.AsyncClient, fake_clock: FakeClock, redis_prefix: str
) -> None:
    """Redis records carry a TTL from their freshness; oversized entries are not written."""
    store = RedisStore.from_url(services.redis_url(), prefix=redis_prefix, max_entry_bytes=2_000)
    raw = aioredis.Redis.from_url(services.redis_url())
    try:
        cache = HttpCache(store, clock=fake_clock)
        forward = forwarder(client, origin)
        origin.handler = lambda seen: (
            200,
            [("cache-control", "max-age=60")],
            b"s" if seen.target == "/small" else b"L" * 5_000,
        )
        for target in ("/small", "/large"):
            response = await cache.handle(CacheRequest("GET", "o", target, []), forward)
            _ = [c async for c in response.body]
        keys = [k async for k in raw.scan_iter(match=f"{redis_prefix}*")]
        assert len(keys) == 2  # the small entry and its vary index; nothing for /large
        for key in keys:
            ttl = await raw.pttl(key)
            assert 0 < ttl <= 60_000
        response = await cache.handle(CacheRequest("GET", "o", "/large", []), forward)
        _ = [c async for c in response.body]
        assert origin.count("/large") == 2
    finally:
        await raw.aclose()
        await store.aclose()


async def test_redis_outage_fails_open(
    private_redis: object, origin: Origin, client: httpx.AsyncClient, fake_clock: FakeClock
) -> None:
    """With Redis killed the cache forwards every request and counts store errors."""
    from tests.servers import RedisServer

    assert isinstance(private_redis, RedisServer)
    store = RedisStore.from_url(private_redis.url)
    try:
        cache = HttpCache(store, clock=fake_clock)
        forward = forwarder(client, origin)
        request = CacheRequest("GET", "o", "/a", [])
        _ = [c async for c in (await cache.handle(request, forward)).body]
        private_redis.kill()
        response = await cache.handle(request, forward)
        assert b"".join([c async for c in response.body]) == b"hello"
        assert dict(response.headers)["cache-status"].startswith("gatekeeper; fwd=miss")
        assert cache.stats.store_errors >= 1
    finally:
        await store.aclose()


@pytest.mark.redis
async def test_redis_store_works_with_a_decoding_client(redis_prefix: str) -> None:
    """A shared client with decode_responses=True still round-trips binary bodies."""
    from gatekeeper.gateway.cache import CacheEntry

    client = aioredis.Redis.from_url(services.redis_url(), decode_responses=True)
    store = RedisStore(client, prefix=redis_prefix)
    try:
        entry = CacheEntry(200, [("etag", '"b"')], bytes(range(256)), 1.0, 2.0)
        assert await store.set("k", "", entry, 30)
        await store.set_vary("k", (), 30)
        names, found = await store.lookup("k")
        assert names == ()
        assert found == entry
    finally:
        await store.aclose()
        await client.aclose()


async def test_stale_entry_is_revalidated_once_for_twenty_clients(
    h: Harness, fake_clock: FakeClock
) -> None:
    """When a popular entry goes stale, 20 concurrent clients cause one conditional request."""
    release = asyncio.Event()
    plain = etag_origin("max-age=10")

    async def slow(seen: Seen) -> Reply:
        if seen.headers.get("if-none-match"):
            await release.wait()
        return plain(seen)

    h.origin.handler = slow
    await h.get()
    fake_clock.advance(11)
    tasks = [asyncio.create_task(h.get()) for _ in range(20)]
    for _ in range(100):  # bounded: until the conditional request reached the origin
        if h.origin.count() == 2:
            break
        await asyncio.sleep(0.01)
    release.set()
    results = await asyncio.gather(*tasks)
    assert {body for _, _, body in results} == {b"doc"}
    assert h.origin.count() == 2
