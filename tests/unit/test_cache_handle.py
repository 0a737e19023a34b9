"""The cache façade end to end over the memory store, a scripted upstream and a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate

import pytest

from gatekeeper.errors import StorageError, UpstreamConnectError
from gatekeeper.gateway.cache import (
    CacheEntry,
    CacheOptions,
    CacheRequest,
    CacheResponse,
    Headers,
    HttpCache,
    MemoryStore,
)
from gatekeeper.testing import FakeClock

Reply = tuple[int, Headers, bytes]


class Upstream:
    """A scripted upstream: records every request it gets and answers from ``reply``."""

    def __init__(self, clock: FakeClock, reply: Callable[[CacheRequest], Reply]) -> None:
        self.clock = clock
        self.reply = reply
        self.calls: list[CacheRequest] = []
        self.fail = False
        self.chunk = 0  # > 0: stream the body in chunks of this size
        self.complete = False  # True: hand the body over whole, as a small upstream reply does

    async def forward(self, request: CacheRequest) -> CacheResponse:
        self.calls.append(request)
        if self.fail:
            raise UpstreamConnectError("connection refused")
        status, headers, body = self.reply(request)
        headers = [("date", formatdate(self.clock.now(), usegmt=True)), *headers]
        if self.complete:
            return CacheResponse(status, headers, self._stream(body), body)
        return CacheResponse(status, headers, self._stream(body))

    async def _stream(self, body: bytes) -> AsyncIterator[bytes]:
        size = self.chunk or max(1, len(body))
        for start in range(0, len(body), size):
            yield body[start : start + size]


async def fetch(
    cache: HttpCache, upstream: Upstream, target: str = "/a", *, method: str = "GET", **headers: str
) -> tuple[int, dict[str, str], bytes]:
    request = CacheRequest(
        method, "api.test", target, [(k.replace("_", "-"), v) for k, v in headers.items()]
    )
    response = await cache.handle(request, upstream.forward)
    body = b"".join([chunk async for chunk in response.body])
    return response.status, {k.lower(): v for k, v in response.headers}, body


def make(clock: FakeClock, **options: object) -> HttpCache:
    store = MemoryStore(clock=clock, max_entry_bytes=10_000, max_total_bytes=100_000)
    return HttpCache(store, options=CacheOptions(**options), clock=clock)  # type: ignore[arg-type]


def static(status: int, body: bytes = b"hello", **fields: str) -> Callable[[CacheRequest], Reply]:
    headers = [(k.replace("_", "-"), v) for k, v in fields.items()]
    return lambda _request: (status, headers, body)


@pytest.mark.parametrize("complete", [False, True], ids=["streamed", "complete"])
async def test_max_age_hit_then_expiry(fake_clock: FakeClock, complete: bool) -> None:
    """A max-age response is stored, served as a hit with Age until it expires, then fetched."""
    cache, up = make(fake_clock), Upstream(fake_clock, static(200, cache_control="max-age=60"))
    up.complete = complete
    status, headers, body = await fetch(cache, up)
    assert (status, body) == (200, b"hello")
    assert headers["cache-status"] == "gatekeeper; fwd=uri-miss; stored; ttl=60"
    fake_clock.advance(10)
    status, headers, body = await fetch(cache, up)
    assert (status, body, len(up.calls)) == (200, b"hello", 1)
    assert headers["cache-status"] == "gatekeeper; hit; ttl=50"
    assert headers["age"] == "10"
    assert headers["content-length"] == "5"
    fake_clock.advance(51)
    _, headers, _ = await fetch(cache, up)
    assert len(up.calls) == 2
    # without a validator or stale window, the store dropped the entry when it expired
    assert headers["cache-status"] == "gatekeeper; fwd=uri-miss; stored; ttl=60"


async def test_s_maxage_takes_precedence_over_max_age(fake_clock: FakeClock) -> None:
    """A shared cache uses s-maxage when both are present."""
    cache = make(fake_clock)
    up = Upstream(fake_clock, static(200, cache_control="max-age=5, s-maxage=100"))
    await fetch(cache, up)
    fake_clock.advance(50)
    _, headers, _ = await fetch(cache, up)
    assert headers["cache-status"] == "gatekeeper; hit; ttl=50"
    assert len(up.calls) == 1


@pytest.mark.parametrize(
    ("fields", "request_fields", "detail"),
    [
        ({"cache_control": "no-store, max-age=60"}, {}, "no-store"),
        ({"cache_control": "private, max-age=60"}, {}, "private"),
        ({"cache_control": "max-age=60"}, {"cache_control": "no-store"}, "no-store"),
        ({"cache_control": "max-age=60", "set_cookie": "s=1"}, {}, "set-cookie"),
        ({"cache_control": "max-age=60", "vary": "*"}, {}, "vary-star"),
        ({"cache_control": "max-age=60"}, {"authorization": "Bearer x"}, "authorization"),
        ({}, {}, "no-freshness"),
    ],
)
async def test_responses_that_must_not_be_stored(
    fake_clock: FakeClock, fields: dict[str, str], request_fields: dict[str, str], detail: str
) -> None:
    """no-store, private, Set-Cookie, Vary: *, Authorization and no freshness are never stored."""
    cache, up = make(fake_clock), Upstream(fake_clock, static(200, **fields))
    _, headers, _ = await fetch(cache, up, **request_fields)
    assert headers["cache-status"] == f"gatekeeper; fwd=uri-miss; detail={detail}"
    await fetch(cache, up, **request_fields)
    assert len(up.calls) == 2


async def test_authorization_with_public_or_s_maxage_is_stored(fake_clock: FakeClock) -> None:
    """A response to an authorized request is shared when it says public or s-maxage."""
    cache = make(fake_clock)
    up = Upstream(fake_clock, static(200, cache_control="public, max-age=60"))
    await fetch(cache, up, authorization="Bearer a")
    _, headers, _ = await fetch(cache, up, authorization="Bearer b")
    assert headers["cache-status"].startswith("gatekeeper; hit")
    assert len(up.calls) == 1


async def test_no_cache_response_is_revalidated_every_time(fake_clock: FakeClock) -> None:
    """A no-cache response is stored but each use asks the upstream with its ETag first."""

    def reply(request: CacheRequest) -> Reply:
        if request.header("if-none-match") == '"v1"':
            return 304, [("etag", '"v1"')], b""
        return 200, [("cache-control", "no-cache"), ("etag", '"v1"')], b"body"

    cache, up = make(fake_clock), Upstream(fake_clock, reply)
    _, headers, _ = await fetch(cache, up)
    assert "stored" in headers["cache-status"]
    status, headers, body = await fetch(cache, up)
    assert (status, body) == (200, b"body")
    assert headers["cache-status"].startswith("gatekeeper; fwd=stale; fwd-status=304")
    assert up.calls[1].header("if-none-match") == '"v1"'
    assert len(up.calls) == 2


async def test_last_modified_revalidation_refreshes_entry(fake_clock: FakeClock) -> None:
    """A stale entry is revalidated with If-Modified-Since; the 304 makes it fresh again."""
    stamp = formatdate(fake_clock.now() - 3600, usegmt=True)

    def reply(request: CacheRequest) -> Reply:
        if request.header("if-modified-since") == stamp:
            return 304, [("cache-control", "max-age=30")], b""
        return 200, [("cache-control", "max-age=10"), ("last-modified", stamp)], b"doc"

    cache, up = make(fake_clock), Upstream(fake_clock, reply)
    await fetch(cache, up)
    fake_clock.advance(11)
    status, headers, body = await fetch(cache, up)
    assert (status, body) == (200, b"doc")
    assert headers["cache-status"] == "gatekeeper; fwd=stale; fwd-status=304; ttl=30"
    assert headers["cache-control"] == "max-age=30"
    fake_clock.advance(20)
    _, headers, _ = await fetch(cache, up)
    assert headers["cache-status"] == "gatekeeper; hit; ttl=10"
    assert len(up.calls) == 2


async def test_stale_entry_replaced_when_upstream_sends_new_body(fake_clock: FakeClock) -> None:
    """A 200 to a revalidation replaces the stored entry."""
    versions = iter([b"one", b"two"])

    def reply(request: CacheRequest) -> Reply:
        return 200, [("cache-control", "max-age=10"), ("etag", '"x"')], next(versions)

    cache, up = make(fake_clock), Upstream(fake_clock, reply)
    await fetch(cache, up)
    fake_clock.advance(11)
    _, headers, body = await fetch(cache, up)
    assert body == b"two"
    assert headers["cache-status"] == "gatekeeper; fwd=stale; fwd-status=200; stored; ttl=10"
    _, headers, body = await fetch(cache, up)
    assert (body, headers["cache-status"]) == (b"two", "gatekeeper; hit; ttl=10")


async def test_client_conditional_request_gets_304_from_cache(fake_clock: FakeClock) -> None:
    """A client whose If-None-Match matches the stored ETag gets a 304 without a body."""
    cache = make(fake_clock)
    up = Upstream(fake_clock, static(200, cache_control="max-age=60", etag='W/"e1"'))
    await fetch(cache, up)
    status, headers, body = await fetch(cache, up, if_none_match='"zz", "e1"')
    assert (status, body) == (304, b"")
    assert headers["etag"] == 'W/"e1"'
    assert "content-length" not in headers
    status, _, body = await fetch(cache, up, if_none_match='"other"')
    assert (status, body) == (200, b"hello")
    assert len(up.calls) == 1


async def test_vary_keeps_one_entry_per_normalized_variant(fake_clock: FakeClock) -> None:
    """Vary: Accept-Encoding stores a variant per (normalized) value of that request field."""

    def reply(request: CacheRequest) -> Reply:
        encoding = request.header("accept-encoding") or "identity"
        return (
            200,
            [("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
            encoding.encode(),
        )

    cache, up = make(fake_clock), Upstream(fake_clock, reply)
    _, _, body = await fetch(cache, up, accept_encoding="gzip")
    assert body == b"gzip"
    _, headers, body = await fetch(cache, up, accept_encoding="br")
    assert (body, headers["cache-status"]) == (b"br", "gatekeeper; fwd=vary-miss; stored; ttl=60")
    _, headers, body = await fetch(cache, up, accept_encoding="GZIP")
    assert (body, headers["cache-status"]) == (b"gzip", "gatekeeper; hit; ttl=60")
    _, headers, body = await fetch(cache, up)
    assert body == b"identity"
    assert len(up.calls) == 3


async def test_stale_while_revalidate_serves_stale_and_refreshes_once(
    fake_clock: FakeClock,
) -> None:
    """Inside the window the stale entry is served at once and one background fetch refreshes it."""
    versions = iter([b"old", b"new"])

    def reply(request: CacheRequest) -> Reply:
        return 200, [("cache-control", "max-age=10, stale-while-revalidate=30")], next(versions)

    cache, up = make(fake_clock), Upstream(fake_clock, reply)
    await fetch(cache, up)
    fake_clock.advance(15)
    _, headers, body = await fetch(cache, up)
    _, headers2, body2 = await fetch(cache, up)
    assert (body, body2) == (b"old", b"old")
    assert headers["cache-status"] == "gatekeeper; hit; ttl=-5; detail=stale-while-revalidate"
    assert headers2["cache-status"] == headers["cache-status"]
    await cache.drain()
    assert len(up.calls) == 2
    _, headers, body = await fetch(cache, up)
    assert (body, headers["cache-status"]) == (b"new", "gatekeeper; hit; ttl=10")


async def test_past_stale_while_revalidate_window_fetches(fake_clock: FakeClock) -> None:
    """Past the stale-while-revalidate window the client waits for a fresh response."""
    cache = make(fake_clock)
    up = Upstream(fake_clock, static(200, cache_control="max-age=10, stale-while-revalidate=5"))
    await fetch(cache, up)
    fake_clock.advance(16)
    _, headers, _ = await fetch(cache, up)
    assert headers["cache-status"] == "gatekeeper; fwd=uri-miss; stored; ttl=10"
    assert len(up.calls) == 2


@pytest.mark.parametrize("failure", ["connect", "503"])
async def test_stale_if_error_serves_stale_on_upstream_failure(
    fake_clock: FakeClock, failure: str
) -> None:
    """Inside stale-if-error a failed or 5xx upstream is replaced by the stale entry."""
    healthy = True

    def reply(request: CacheRequest) -> Reply:
        if healthy:
            return 200, [("cache-control", "max-age=10, stale-if-error=60"), ("etag", '"a"')], b"ok"
        return 503, [], b"down"

    cache, up = make(fake_clock), Upstream(fake_clock, reply)
    await fetch(cache, up)
    fake_clock.advance(20)
    healthy = False
    up.fail = failure == "connect"
    status, headers, body = await fetch(cache, up)
    assert (status, body) == (200, b"ok")
    expected = "gatekeeper; fwd=stale" + ("; fwd-status=503" if failure == "503" else "")
    assert headers["cache-status"] == expected + "; ttl=-10; detail=stale-if-error"
    fake_clock.advance(60)
    if failure == "connect":
        with pytest.raises(UpstreamConnectError):
            await fetch(cache, up)
    else:
        status, _, body = await fetch(cache, up)
        assert (status, body) == (503, b"down")


async def test_must_revalidate_forbids_stale_if_error(fake_clock: FakeClock) -> None:
    """must-revalidate wins over stale-if-error: the error reaches the client."""
    cache = make(fake_clock)
    up = Upstream(
        fake_clock,
        static(200, cache_control="max-age=1, must-revalidate, stale-if-error=60", etag='"a"'),
    )
    await fetch(cache, up)
    fake_clock.advance(5)
    up.fail = True
    with pytest.raises(UpstreamConnectError):
        await fetch(cache, up)


@pytest.mark.parametrize("complete", [False, True], ids=["streamed", "complete"])
async def test_concurrent_misses_are_coalesced(fake_clock: FakeClock, complete: bool) -> None:
    """20 concurrent misses of one URI cause a single upstream request; all get the body."""
    gate = asyncio.Event()
    up = Upstream(fake_clock, static(200, b"shared", cache_control="max-age=60"))
    up.complete = complete
    original = up.forward

    async def slow_forward(request: CacheRequest) -> CacheResponse:
        await gate.wait()
        return await original(request)

    cache = make(fake_clock)
    request = CacheRequest("GET", "api.test", "/hot", [])

    async def one() -> tuple[bytes, str]:
        response = await cache.handle(request, slow_forward)
        body = b"".join([c async for c in response.body])
        return body, dict(response.headers)["cache-status"]

    tasks = [asyncio.create_task(one()) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert len(up.calls) == 1
    assert {body for body, _ in results} == {b"shared"}
    statuses = [status for _, status in results]
    assert statuses.count("gatekeeper; fwd=uri-miss; stored; ttl=60") == 1
    assert statuses.count("gatekeeper; fwd=uri-miss; collapsed; ttl=60") == 19


async def test_followers_fetch_themselves_when_the_leader_fails(fake_clock: FakeClock) -> None:
    """When the leading fetch fails, waiting requests fall back to their own fetches."""
    gate = asyncio.Event()
    up = Upstream(fake_clock, static(200, cache_control="max-age=60"))
    attempts = 0

    async def flaky(request: CacheRequest) -> CacheResponse:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await gate.wait()
            raise UpstreamConnectError("reset")
        return await up.forward(request)

    cache = make(fake_clock, coalesce_timeout=30.0)
    request = CacheRequest("GET", "api.test", "/x", [])
    tasks = [asyncio.create_task(cache.handle(request, flaky)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], UpstreamConnectError)
    assert all(isinstance(r, CacheResponse) and r.status == 200 for r in results[1:])
    assert attempts >= 2


async def test_followers_do_not_wait_past_the_bound(fake_clock: FakeClock) -> None:
    """A follower whose leader hangs fetches on its own after coalesce_timeout."""
    hang = asyncio.Event()
    up = Upstream(fake_clock, static(200, cache_control="max-age=60"))

    async def forward(request: CacheRequest) -> CacheResponse:
        if not up.calls:
            up.calls.append(request)
            await hang.wait()
        return await up.forward(request)

    cache = make(fake_clock, coalesce_timeout=0.05)
    request = CacheRequest("GET", "api.test", "/slow", [])
    leader = asyncio.create_task(cache.handle(request, forward))
    await asyncio.sleep(0)
    response = await cache.handle(request, forward)
    assert response.status == 200
    hang.set()
    await leader


async def test_large_body_streams_through_uncached(fake_clock: FakeClock) -> None:
    """A body past max_object_bytes reaches the client whole and is not stored."""
    body = bytes(range(256)) * 40  # 10 KiB
    cache = make(fake_clock, max_object_bytes=4096)
    up = Upstream(fake_clock, static(200, body, cache_control="max-age=60"))
    up.chunk = 1000
    _, headers, got = await fetch(cache, up)
    assert got == body
    assert "stored" in headers["cache-status"]  # no length announced: the copy was attempted
    _, headers, got = await fetch(cache, up)
    assert got == body
    assert len(up.calls) == 2
    assert cache.stats.not_stored == 2


async def test_declared_large_body_is_not_even_copied(fake_clock: FakeClock) -> None:
    """A Content-Length past the bound is passed through with detail=too-large."""
    cache = make(fake_clock, max_object_bytes=10)
    up = Upstream(
        fake_clock, static(200, b"x" * 100, cache_control="max-age=60", content_length="100")
    )
    _, headers, body = await fetch(cache, up)
    assert headers["cache-status"] == "gatekeeper; fwd=uri-miss; detail=too-large"
    assert len(body) == 100


async def test_head_is_answered_from_a_stored_get(fake_clock: FakeClock) -> None:
    """HEAD hits the GET entry: same headers, no body."""
    cache, up = make(fake_clock), Upstream(fake_clock, static(200, cache_control="max-age=60"))
    await fetch(cache, up)
    status, headers, body = await fetch(cache, up, method="HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", "5")
    assert headers["cache-status"].startswith("gatekeeper; hit")


async def test_unsafe_method_bypasses_and_invalidates(fake_clock: FakeClock) -> None:
    """POST is forwarded with fwd=method and a success evicts the stored URI."""
    cache, up = make(fake_clock), Upstream(fake_clock, static(200, cache_control="max-age=60"))
    await fetch(cache, up)
    _, headers, _ = await fetch(cache, up, method="POST")
    assert headers["cache-status"] == "gatekeeper; fwd=method"
    _, headers, _ = await fetch(cache, up)
    assert headers["cache-status"].startswith("gatekeeper; fwd=uri-miss")
    assert len(up.calls) == 3


async def test_range_requests_bypass(fake_clock: FakeClock) -> None:
    """A Range request is forwarded untouched and not stored."""
    cache, up = make(fake_clock), Upstream(fake_clock, static(200, cache_control="max-age=60"))
    _, headers, _ = await fetch(cache, up, range="bytes=0-1")
    assert headers["cache-status"] == "gatekeeper; fwd=bypass"
    _, headers, _ = await fetch(cache, up)
    assert headers["cache-status"].startswith("gatekeeper; fwd=uri-miss")


async def test_request_no_cache_forces_revalidation(fake_clock: FakeClock) -> None:
    """A client's no-cache sends a conditional request; honor_request_directives=False stops it."""
    cache = make(fake_clock)
    up = Upstream(fake_clock, static(200, cache_control="max-age=60", etag='"a"'))
    await fetch(cache, up)
    _, headers, _ = await fetch(cache, up, cache_control="no-cache")
    assert headers["cache-status"].startswith("gatekeeper; fwd=request; fwd-status=200")
    deaf = make(fake_clock, honor_request_directives=False)
    await fetch(deaf, up)
    _, headers, _ = await fetch(deaf, up, cache_control="no-cache")
    assert headers["cache-status"].startswith("gatekeeper; hit")


async def test_only_if_cached_gets_504_on_miss(fake_clock: FakeClock) -> None:
    """only-if-cached never reaches the upstream: a miss is a 504."""
    cache, up = make(fake_clock), Upstream(fake_clock, static(200, cache_control="max-age=60"))
    status, headers, _ = await fetch(cache, up, cache_control="only-if-cached")
    assert status == 504
    assert headers["cache-status"] == "gatekeeper; fwd=uri-miss; detail=only-if-cached"
    assert up.calls == []


class BrokenStore(MemoryStore):
    """A store whose every operation fails, like Redis during an outage."""

    async def get(self, key: str, variant: str) -> CacheEntry | None:
        raise StorageError("down")

    async def get_vary(self, key: str) -> tuple[str, ...] | None:
        raise StorageError("down")

    async def set(self, key: str, variant: str, entry: CacheEntry, ttl: float) -> bool:
        raise StorageError("down")


async def test_store_failure_fails_open(fake_clock: FakeClock) -> None:
    """A failing store turns every request into a miss; requests still succeed."""
    cache = HttpCache(BrokenStore(clock=fake_clock), clock=fake_clock)
    up = Upstream(fake_clock, static(200, cache_control="max-age=60"))
    for _ in range(2):
        status, headers, body = await fetch(cache, up)
        assert (status, body) == (200, b"hello")
        assert headers["cache-status"].startswith("gatekeeper; fwd=miss")
    assert cache.stats.store_errors == 4


async def test_upstream_cache_status_is_kept_before_ours(fake_clock: FakeClock) -> None:
    """An upstream's Cache-Status member stays, ours is appended after it (RFC 9211)."""
    cache = make(fake_clock)
    up = Upstream(fake_clock, static(200, cache_control="max-age=60", cache_status="origin; hit"))
    await fetch(cache, up)
    request = CacheRequest("GET", "api.test", "/a", [])
    response = await cache.handle(request, up.forward)
    values = [v for k, v in response.headers if k == "cache-status"]
    assert values == ["origin; hit", "gatekeeper; hit; ttl=60"]


async def test_every_response_carries_its_cache_status(fake_clock: FakeClock) -> None:
    """The structured CacheStatus rides on each response and maps to a metric result."""
    from gatekeeper.gateway.cache.adapter import metric_result

    cache, up = make(fake_clock), Upstream(fake_clock, static(200, cache_control="max-age=60"))
    results = []
    for method in ("GET", "GET", "POST"):
        response = await cache.handle(CacheRequest(method, "h", "/", []), up.forward)
        _ = [c async for c in response.body]
        results.append(metric_result(response.cache_status))
    assert results == ["miss", "hit", "bypass"]


class LaggingStore(MemoryStore):
    """Reads the store, then delays the answer: a lookup that raced with a concurrent write."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.hold = asyncio.Event()
        self.lag_next = False

    async def lookup(self, key: str) -> tuple[tuple[str, ...] | None, CacheEntry | None]:
        found = await super().lookup(key)
        if self.lag_next:
            self.lag_next = False
            await self.hold.wait()
        return found


async def test_a_miss_read_before_a_concurrent_store_does_not_fetch_again(
    fake_clock: FakeClock,
) -> None:
    """A lookup that missed just before a leader stored uses the leader's entry, not the origin."""
    store = LaggingStore(fake_clock)
    cache = HttpCache(store, clock=fake_clock)
    up = Upstream(fake_clock, static(200, b"once", cache_control="max-age=60"))
    request = CacheRequest("GET", "h", "/r", [])
    store.lag_next = True
    late = asyncio.create_task(cache.handle(request, up.forward))  # misses, then lags
    await asyncio.sleep(0)
    first = await cache.handle(request, up.forward)  # leads, fetches, stores
    assert b"".join([c async for c in first.body]) == b"once"
    store.hold.set()
    response = await late
    assert b"".join([c async for c in response.body]) == b"once"
    assert len(up.calls) == 1
    assert dict(response.headers)["cache-status"] == "gatekeeper; fwd=uri-miss; collapsed; ttl=60"


async def test_a_short_lived_variant_does_not_hide_a_long_lived_one(fake_clock: FakeClock) -> None:
    """Variants share one index that outlives each of them: the long-lived one stays a hit."""

    def reply(request: CacheRequest) -> Reply:
        lang = request.header("accept-language") or ""
        age = "600" if lang == "en" else "5"
        return 200, [("cache-control", f"max-age={age}"), ("vary", "accept-language")], b"x"

    cache, up = make(fake_clock), Upstream(fake_clock, reply)
    await fetch(cache, up, accept_language="en")
    await fetch(cache, up, accept_language="fr")
    fake_clock.advance(60)
    _, headers, _ = await fetch(cache, up, accept_language="en")
    assert headers["cache-status"] == "gatekeeper; hit; ttl=540"
    assert len(up.calls) == 2


async def test_concurrent_revalidations_are_coalesced(fake_clock: FakeClock) -> None:
    """20 concurrent requests for one stale entry send a single conditional request."""

    def reply(request: CacheRequest) -> Reply:
        if request.header("if-none-match") == '"e"':
            return 304, [("etag", '"e"'), ("cache-control", "max-age=30")], b""
        return 200, [("etag", '"e"'), ("cache-control", "max-age=30")], b"body"

    cache, up = make(fake_clock), Upstream(fake_clock, reply)
    await fetch(cache, up)
    fake_clock.advance(31)
    gate = asyncio.Event()

    async def gated(request: CacheRequest) -> CacheResponse:
        await gate.wait()
        return await up.forward(request)

    request = CacheRequest("GET", "api.test", "/a", [])

    async def one() -> tuple[bytes, str]:
        response = await cache.handle(request, gated)
        return b"".join([c async for c in response.body]), dict(response.headers)["cache-status"]

    tasks = [asyncio.create_task(one()) for _ in range(20)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks)
    assert len(up.calls) == 2  # the first fetch and one revalidation
    assert {body for body, _ in results} == {b"body"}
    statuses = [status for _, status in results]
    assert statuses.count("gatekeeper; fwd=stale; fwd-status=304; ttl=30") == 1
    assert statuses.count("gatekeeper; fwd=stale; collapsed; ttl=30") == 19


async def test_failed_revalidation_releases_waiting_requests(fake_clock: FakeClock) -> None:
    """When the leading revalidation fails, the others revalidate themselves (and may succeed)."""
    cache = make(fake_clock)
    up = Upstream(fake_clock, static(200, cache_control="max-age=1", etag='"e"'))
    await fetch(cache, up)
    fake_clock.advance(5)
    gate = asyncio.Event()
    attempts = 0

    async def flaky(request: CacheRequest) -> CacheResponse:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            await gate.wait()
            raise UpstreamConnectError("reset")
        return await up.forward(request)

    request = CacheRequest("GET", "api.test", "/a", [])
    tasks = [asyncio.create_task(cache.handle(request, flaky)) for _ in range(3)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], UpstreamConnectError)
    assert all(isinstance(r, CacheResponse) and r.status == 200 for r in results[1:])


async def test_stored_ttl_counts_the_age_the_response_already_has(fake_clock: FakeClock) -> None:
    """A response arriving with Age: 15 and max-age=60 is stored with 45 s of freshness left."""
    cache = make(fake_clock)
    up = Upstream(fake_clock, static(200, cache_control="max-age=60", age="15"))
    _, headers, _ = await fetch(cache, up)
    assert headers["cache-status"] == "gatekeeper; fwd=uri-miss; stored; ttl=45"
    fake_clock.advance(5)
    _, headers, _ = await fetch(cache, up)
    assert headers["cache-status"] == "gatekeeper; hit; ttl=40"
    assert headers["age"] == "20"


@pytest.mark.parametrize(
    ("value", "result"),
    [
        (b"gatekeeper; hit; ttl=5", "hit"),
        (b"gatekeeper; hit; ttl=-5; detail=stale-while-revalidate", "stale"),
        (b"gatekeeper; fwd=stale; fwd-status=503; detail=stale-if-error", "stale"),
        (b"gatekeeper; fwd=stale; fwd-status=304; ttl=9", "revalidated"),
        (b"gatekeeper; fwd=uri-miss; stored; ttl=60", "miss"),
        (b"gatekeeper; fwd=method", "bypass"),
    ],
)
def test_cache_result_reads_our_cache_status_member(value: bytes, result: str) -> None:
    """Access logs can recover the cache's result from our Cache-Status member only."""
    from gatekeeper.gateway.cache.adapter import cache_result
    from gatekeeper.gateway.http.messages import Body, ProxyResponse

    headers = [(b"cache-status", b"origin; hit"), (b"cache-status", value)]
    assert cache_result(ProxyResponse(200, headers, Body.of(b""))) == result
    assert cache_result(ProxyResponse(200, headers[:1], Body.of(b""))) is None
