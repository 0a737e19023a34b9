"""The façade the proxy calls: ``response = await cache.handle(request, forward)``.

One call handles one client request on a cacheable route:

1. anything but GET/HEAD (and range requests) is forwarded untouched; a successful unsafe
   request invalidates the stored URI (RFC 9111 4.4);
2. the stored variant is looked up (vary index, then entry);
3. a usable entry is served (``hit``), with ``Age``, or a 304 if the client's own validators
   match; a stale one inside ``stale-while-revalidate`` is served while one background refresh
   runs;
4. otherwise the upstream is asked, conditionally when the entry has a validator; a 304
   freshens the entry; an error or 5xx inside ``stale-if-error`` serves the stale entry;
5. a new storable response streams to the client while a copy is kept (up to the size bound)
   and stored at the end; concurrent misses of the same URI wait for that one fetch.

Every response gets a ``Cache-Status`` member (see :mod:`.status`). Store failures are logged
and treated as misses: the cache never fails a request the upstream could answer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from gatekeeper.errors import StorageError, UpstreamError
from gatekeeper.gateway.cache.coalescing import Coalescer, Flight
from gatekeeper.gateway.cache.control import CacheControl, parse_cache_control
from gatekeeper.gateway.cache.entry import CacheEntry
from gatekeeper.gateway.cache.exchange import (
    CacheRequest,
    CacheResponse,
    Forward,
    body_of,
    iterate_once,
)
from gatekeeper.gateway.cache.keys import primary_key, secondary_key, vary_names, vary_values
from gatekeeper.gateway.cache.options import CacheOptions
from gatekeeper.gateway.cache.policy import (
    Freshness,
    bypass_reason,
    freshness,
    not_storable_reason,
    serve_stale_on_error,
    serve_while_revalidating,
    store_ttl,
)
from gatekeeper.gateway.cache.serve import (
    add_cache_status,
    conditional_headers,
    response_from_entry,
    storable_headers,
)
from gatekeeper.gateway.cache.stats import CacheStats
from gatekeeper.gateway.cache.status import CacheStatus
from gatekeeper.gateway.cache.store import Store
from gatekeeper.types import Clock, SystemClock

__all__ = ["HttpCache"]

log = logging.getLogger(__name__)

_SAFE = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
_INDEX_TTL = 3600.0
_NO_DIRECTIVES = parse_cache_control(None)


@dataclass(slots=True)
class _Lookup:
    """What the store holds for one request."""

    primary: str
    names: tuple[str, ...] | None
    variant: str
    entry: CacheEntry | None
    fwd: str
    ticket: int = 0


class HttpCache:
    """An RFC 9111 shared cache in front of one ``forward`` coroutine per request."""

    def __init__(
        self,
        store: Store,
        *,
        options: CacheOptions | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.options = options or CacheOptions()
        self.clock: Clock = clock or SystemClock()
        self.stats = CacheStats()
        self._coalescer = Coalescer()
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    # -- the entry point ------------------------------------------------------------------

    async def handle(
        self, request: CacheRequest, forward: Forward, *, namespace: str = ""
    ) -> CacheResponse:
        """Answer ``request`` from the cache or through ``forward`` (see the module docstring).

        ``namespace`` separates caches that share a store (e.g. one per route). Raises what
        ``forward`` raises when no stale entry may stand in.
        """
        reason = bypass_reason(request)
        if reason is not None:
            return await self._bypass(request, forward, reason, namespace)
        look = await self._lookup(request, namespace)
        request_cc = parse_cache_control(request.header("cache-control"))
        if look.entry is None:
            if request_cc.only_if_cached:
                return self._only_if_cached(look.fwd)
            return await self._miss(request, forward, look, CacheStatus(fwd=look.fwd))
        state = freshness(
            look.entry,
            request_cc,
            self.clock.now(),
            honor_request=self.options.honor_request_directives,
        )
        if state.usable:
            self.stats.hits += 1
            return self._serve(look.entry, request, CacheStatus(hit=True, ttl=state.ttl))
        if request_cc.only_if_cached:
            return self._only_if_cached("stale")
        if serve_while_revalidating(look.entry, state) and self._start_refresh(
            request, forward, look
        ):
            self.stats.stale_hits += 1
            status = CacheStatus(hit=True, ttl=state.ttl, detail="stale-while-revalidate")
            return self._serve(look.entry, request, status)
        fresh_but_refused = state.ttl > 0 and not look.entry.cache_control.no_cache
        fwd = "request" if fresh_but_refused else "stale"
        return await self._revalidate(request, forward, look, state, request_cc, fwd)

    def fresh_hit(self, request: CacheRequest, *, namespace: str = "") -> CacheResponse | None:
        """The answer to ``request`` when the store holds a usable entry in this process
        (no Vary), found synchronously; ``None``: call :meth:`handle`, which decides the rest.

        The same rules as :meth:`handle` for the case it covers (a fresh hit, or the 304 a
        client's own validators earn), for callers that must not await (the express lane).
        """
        if bypass_reason(request) is not None:
            return None
        request_cc = parse_cache_control(request.header("cache-control"))
        found = self.peek_fresh(primary_key(request, namespace), request_cc)
        if found is None:
            return None
        entry, status = found
        self.stats.hits += 1
        return self._serve(entry, request, status)

    def peek_fresh(
        self, primary: str, request_cc: CacheControl = _NO_DIRECTIVES
    ) -> tuple[CacheEntry, CacheStatus] | None:
        """The usable entry of URI key ``primary`` (no Vary) held in this process, and its
        Cache-Status; ``None`` when the store cannot tell without awaiting. The caller that
        serves it calls :meth:`count_hit`."""
        peek = getattr(self.store, "peek", None)
        if peek is None:
            return None
        try:
            names, entry = peek(primary)
        except StorageError:
            return None
        if entry is None or names != ():
            return None
        now = self.clock.now()
        state = freshness(
            entry, request_cc, now, honor_request=self.options.honor_request_directives
        )
        if not state.usable:
            return None
        return entry, CacheStatus(hit=True, ttl=state.ttl)

    def count_hit(self, status: CacheStatus) -> None:
        """Count a hit served from :meth:`peek_fresh`."""
        self.stats.hits += 1
        self._count(status)

    # -- steps ----------------------------------------------------------------------------

    async def _bypass(
        self, request: CacheRequest, forward: Forward, reason: str, namespace: str
    ) -> CacheResponse:
        self.stats.bypassed += 1
        response = await forward(request)
        if request.method.upper() not in _SAFE and response.status < 400:
            # RFC 9111 4.4: a successful unsafe request makes the stored URI obsolete.
            primary = primary_key(request, namespace)
            self._coalescer.forget_published(primary)
            try:
                await self.store.delete(primary)
            except StorageError as exc:
                self._store_failed("invalidate", exc)
        status = CacheStatus(fwd=reason)
        self._count(status)
        value = status.render(self.options.name)
        headers = add_cache_status(response.headers, value)
        return replace(response, headers=headers, cache_status=status)

    async def _lookup(self, request: CacheRequest, namespace: str) -> _Lookup:
        primary = primary_key(request, namespace)
        ticket = self._coalescer.ticket()
        look = await self._read(request, primary)
        look.ticket = ticket
        return look

    async def _read(self, request: CacheRequest, primary: str) -> _Lookup:
        try:
            names, entry = await self.store.lookup(primary)
            if names is None:
                return _Lookup(primary, None, "", None, "uri-miss")
            variant = secondary_key(vary_values(request.headers, names))
            if names:  # a Vary response: the variant is a second read
                entry = await self.store.get(primary, variant)
        except StorageError as exc:
            self._store_failed("lookup", exc)
            return _Lookup(primary, None, "", None, "miss")
        if entry is None:
            return _Lookup(primary, names, variant, None, "vary-miss" if names else "miss")
        return _Lookup(primary, names, variant, entry, "hit")

    def _serve(
        self, entry: CacheEntry, request: CacheRequest, status: CacheStatus
    ) -> CacheResponse:
        self._count(status)
        value = status.render(self.options.name)
        response = response_from_entry(entry, request, self.clock.now(), value)
        response.cache_status = status
        return response

    def _only_if_cached(self, fwd: str) -> CacheResponse:
        # RFC 9111 5.2.1.7: no stored response may be used, so answer 504 without forwarding.
        status = CacheStatus(fwd=fwd, detail="only-if-cached")
        self._count(status)
        body = b'{"error": "not in the cache and the request says only-if-cached"}\n'
        headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
        value = status.render(self.options.name)
        headers = add_cache_status(headers, value)
        return CacheResponse(504, headers, iterate_once(body), body, cache_status=status)

    async def _miss(
        self, request: CacheRequest, forward: Forward, look: _Lookup, status: CacheStatus
    ) -> CacheResponse:
        """Fetch (or wait for a concurrent fetch of) a response nothing usable is stored for."""
        self.stats.misses += 1
        flight: Flight | None = None
        if self.options.coalesce and request.method.upper() == "GET":
            flight_key = f"{look.primary}:{look.variant if look.names is not None else '?'}"
            flight, leader = self._coalescer.join(flight_key)
            if not leader:
                entry = await flight.wait(self.options.coalesce_timeout)
                if entry is not None and self._selects(entry, request):
                    self.stats.collapsed += 1
                    status.collapsed = True
                    status.ttl = self._ttl(entry)
                    return self._serve(entry, request, status)
                flight = None  # the leader could not share: fetch on our own, uncoalesced
            else:
                entry = self._coalescer.published_since(flight_key, look.ticket)
                if entry is not None and self._selects(entry, request):
                    # stored by a fetch that ended between our lookup and now: use it
                    flight.finish(entry)
                    self.stats.collapsed += 1
                    status.collapsed = True
                    status.ttl = self._ttl(entry)
                    return self._serve(entry, request, status)
        request_time = self.clock.now()
        try:
            response = await forward(request)
        except BaseException:
            if flight is not None:
                flight.finish(None)
            raise
        return await self._store_while_streaming(
            request, response, look, status, flight, request_time
        )

    async def _revalidate(
        self,
        request: CacheRequest,
        forward: Forward,
        look: _Lookup,
        state: Freshness,
        request_cc: CacheControl,
        fwd: str,
    ) -> CacheResponse:
        """Ask the upstream about a stored entry; fall back to it on errors if allowed.

        Concurrent revalidations of one entry are coalesced like misses: when a popular entry
        goes stale, the upstream sees one conditional request, not one per client.
        """
        entry = look.entry
        assert entry is not None
        status = CacheStatus(fwd=fwd)
        flight: Flight | None = None
        if self.options.coalesce and request.method.upper() == "GET":
            flight_key = f"{look.primary}:{look.variant}"
            flight, leader = self._coalescer.join(flight_key)
            if leader:  # a revalidation that ended after our lookup already has the answer
                fresh = self._coalescer.published_since(flight_key, look.ticket)
                if fresh is not None:
                    flight.finish(fresh)
            else:
                fresh = await flight.wait(self.options.coalesce_timeout)
            if fresh is not None and self._selects(fresh, request):
                self.stats.collapsed += 1
                status.collapsed = True
                status.ttl = self._ttl(fresh)
                return self._serve(fresh, request, status)
            if not leader:
                flight = None
        try:
            return await self._ask_upstream(
                request, forward, look, entry, state, request_cc, status, flight
            )
        except BaseException:
            if flight is not None:
                flight.finish(None)  # followers fetch on their own
            raise

    async def _ask_upstream(
        self,
        request: CacheRequest,
        forward: Forward,
        look: _Lookup,
        entry: CacheEntry,
        state: Freshness,
        request_cc: CacheControl,
        status: CacheStatus,
        flight: Flight | None,
    ) -> CacheResponse:
        """One conditional (or, without validators, plain) request; its outcome served."""
        outgoing = request
        if entry.has_validator:
            outgoing = replace(request, headers=conditional_headers(request, entry))
        else:
            self.stats.misses += 1  # nothing to validate with: a full fetch
        request_time = self.clock.now()
        try:
            response = await forward(outgoing)
        except UpstreamError as exc:
            if flight is not None:
                flight.finish(None)
            if serve_stale_on_error(entry, state, request_cc):
                status.detail = "stale-if-error"
                status.ttl = state.ttl
                self.stats.stale_hits += 1
                return self._serve(entry, request, status)
            raise exc
        if response.status == 304 and entry.has_validator:
            await _discard(response)
            refreshed = entry.with_update(response.headers, request_time, self.clock.now())
            self.stats.revalidated += 1
            status.fwd_status = 304
            status.ttl = self._ttl(refreshed)
            await self._store(look.primary, look.names or (), look.variant, refreshed)
            if flight is not None:
                flight.finish(refreshed)
            return self._serve(refreshed, request, status)
        if response.status >= 500 and serve_stale_on_error(entry, state, request_cc):
            if flight is not None:
                flight.finish(None)
            await _discard(response)
            status.fwd_status = response.status
            status.detail = "stale-if-error"
            status.ttl = state.ttl
            self.stats.stale_hits += 1
            return self._serve(entry, request, status)
        status.fwd_status = response.status
        return await self._store_while_streaming(
            request, response, look, status, flight, request_time
        )

    async def _store_while_streaming(
        self,
        request: CacheRequest,
        response: CacheResponse,
        look: _Lookup,
        status: CacheStatus,
        flight: Flight | None,
        request_time: float,
    ) -> CacheResponse:
        """Pass ``response`` to the client, keeping a bounded copy to store at its end."""
        reason = not_storable_reason(request, response.status, response.headers)
        length = response.header("content-length")
        declared = int(length.strip()) if length and length.strip().isdigit() else None
        if reason is None and declared is not None and declared > self.options.max_object_bytes:
            reason = "too-large"
        if reason is not None:
            if flight is not None:
                flight.finish(None)
            self.stats.not_stored += 1
            status.detail = reason
            self._count(status)
            value = status.render(self.options.name)
            headers = add_cache_status(response.headers, value)
            return replace(response, headers=headers, cache_status=status)
        status.stored = True
        times = (request_time, self.clock.now())
        # Freshness left counts the age the response already had (Age, Date, transit).
        probe = CacheEntry(
            response.status,
            response.headers,
            b"",
            times[0],
            times[1],
            default_lifetime=request.default_ttl,
        )
        status.ttl = (probe.lifetime or 0.0) - probe.age(times[1])
        self._count(status)
        headers = add_cache_status(response.headers, status.render(self.options.name))
        if response.content is not None and len(response.content) <= self.options.max_object_bytes:
            # The whole body came with the head (the common small response): store it now.
            entry = self._entry(request, response, response.content, times)
            await self._store_new(look, entry)
            if flight is not None:  # after the write: a later lookup finds it in the store
                flight.finish(entry)
            content = response.content
            return CacheResponse(
                response.status, headers, iterate_once(content), content, cache_status=status
            )
        body = self._tee(request, response, look, times, flight)
        return CacheResponse(response.status, headers, body, cache_status=status)

    def _entry(
        self,
        request: CacheRequest,
        response: CacheResponse,
        body: bytes,
        times: tuple[float, float],
    ) -> CacheEntry:
        names = vary_names(response.header("vary"))
        return CacheEntry(
            status=response.status,
            headers=storable_headers(response.headers),
            body=body,
            request_time=times[0],
            response_time=times[1],
            vary=vary_values(request.headers, names),
            default_lifetime=request.default_ttl,
        )

    async def _store_new(self, look: _Lookup, entry: CacheEntry) -> None:
        names = tuple(entry.vary)
        if await self._store(look.primary, names, secondary_key(entry.vary), entry):
            self.stats.stored += 1

    async def _tee(
        self,
        request: CacheRequest,
        response: CacheResponse,
        look: _Lookup,
        times: tuple[float, float],
        flight: Flight | None,
    ) -> AsyncIterator[bytes]:
        """Yield the upstream body unchanged; store it at the end unless it outgrew the bound."""
        limit = self.options.max_object_bytes
        parts: list[bytes] = []
        size = 0
        over = False
        try:
            async for chunk in response.body:
                if not over:
                    size += len(chunk)
                    if size > limit:
                        # Abandon the copy now: the rest of a large body is only streamed.
                        over = True
                        parts.clear()
                        self.stats.not_stored += 1
                        if flight is not None:
                            flight.finish(None)
                    else:
                        parts.append(chunk)
                yield chunk
            if not over:
                entry = self._entry(request, response, b"".join(parts), times)
                await self._store_new(look, entry)
                if flight is not None:  # after the write: a later lookup finds it in the store
                    flight.finish(entry)
        finally:
            if flight is not None:
                flight.finish(None)  # no-op once finished; covers errors and disconnects
            close = getattr(response.body, "aclose", None)
            if close is not None:
                await close()  # a client that went away must not pin the upstream stream

    # -- stale-while-revalidate -----------------------------------------------------------

    def _start_refresh(self, request: CacheRequest, forward: Forward, look: _Lookup) -> bool:
        """Start one background refresh of the entry; ``False`` when none may start."""
        key = f"{look.primary}:{look.variant}"
        if key in self._refreshing:
            return True  # one refresh per entry is enough; this request is served stale too
        if len(self._refreshing) >= self.options.max_background_refreshes:
            return False
        task = asyncio.create_task(self._refresh(request, forward, look))
        self._refreshing[key] = task
        task.add_done_callback(lambda _: self._refreshing.pop(key, None))
        self.stats.background_refreshes += 1
        return True

    async def _refresh(self, request: CacheRequest, forward: Forward, look: _Lookup) -> None:
        entry = look.entry
        assert entry is not None
        headers = conditional_headers(request, entry)
        upstream = replace(request, method="GET", headers=headers)
        request_time = self.clock.now()
        try:
            response = await forward(upstream)
            if response.status == 304:
                await _discard(response)
                refreshed = entry.with_update(response.headers, request_time, self.clock.now())
                await self._store(look.primary, look.names or (), look.variant, refreshed)
                self.stats.revalidated += 1
                return
            reason = not_storable_reason(upstream, response.status, response.headers)
            body = await body_of(response, self.options.max_object_bytes)
            if reason is not None or body is None:
                return
            fresh = self._entry(request, response, body, (request_time, self.clock.now()))
            await self._store_new(look, fresh)
        except UpstreamError as exc:
            log.info("cache: background refresh of %s failed: %s", request.target, exc)
        except Exception:  # a background task has nobody to raise to
            log.exception("cache: background refresh of %s crashed", request.target)

    # -- helpers --------------------------------------------------------------------------

    def _selects(self, entry: CacheEntry, request: CacheRequest) -> bool:
        """Whether ``entry``'s Vary values match ``request`` (for coalesced followers)."""
        return vary_values(request.headers, entry.vary.keys()) == entry.vary

    def _ttl(self, entry: CacheEntry) -> float:
        return (entry.lifetime or 0.0) - entry.age(self.clock.now())

    async def _store(
        self, primary: str, names: tuple[str, ...], variant: str, entry: CacheEntry
    ) -> bool:
        ttl = store_ttl(entry, self.clock.now(), self.options.validator_grace)
        try:
            if not await self.store.set(primary, variant, entry, ttl):
                return False
            # One index serves every variant: with Vary, outlive this variant so that a
            # shorter-lived sibling stored later does not hide longer-lived ones.
            await self.store.set_vary(primary, names, max(ttl, _INDEX_TTL) if names else ttl)
        except StorageError as exc:
            self._store_failed("store", exc)
            return False
        return True

    def _store_failed(self, action: str, exc: StorageError) -> None:
        self.stats.store_errors += 1
        log.warning("cache: %s failed, serving without the cache: %s", action, exc)

    def _count(self, status: CacheStatus) -> None:
        label = "hit" if status.hit else (status.fwd or "none")
        self.stats.by_status[label] = self.stats.by_status.get(label, 0) + 1

    async def drain(self) -> None:
        """Wait for the background refreshes running now (tests and graceful shutdown)."""
        tasks = list(self._refreshing.values())
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def aclose(self) -> None:
        """Cancel background refreshes and close the store."""
        tasks = list(self._refreshing.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await self.store.aclose()


async def _discard(response: CacheResponse) -> None:
    """Drain a body we do not use, so the upstream connection can be reused."""
    async for _ in response.body:
        pass
