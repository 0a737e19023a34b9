"""The gateway's HTTP cache: RFC 9111 freshness and validation, Vary, stale-while-revalidate,
stale-if-error, request coalescing, ``Cache-Status`` (RFC 9211), memory and Redis stores.

Use::

    cache = HttpCache(store_from_url("memory://", clock=clock, max_entry_bytes=2**20))
    response = await cache.handle(CacheRequest("GET", host, target, headers), forward)
"""

from __future__ import annotations

from gatekeeper.gateway.cache.cache import HttpCache
from gatekeeper.gateway.cache.control import CacheControl, parse_cache_control, parse_http_date
from gatekeeper.gateway.cache.entry import CacheEntry
from gatekeeper.gateway.cache.exchange import CacheRequest, CacheResponse, Forward, Headers
from gatekeeper.gateway.cache.memory import MemoryStore
from gatekeeper.gateway.cache.options import CacheOptions
from gatekeeper.gateway.cache.redis import RedisStore
from gatekeeper.gateway.cache.stats import CacheStats
from gatekeeper.gateway.cache.status import CacheStatus
from gatekeeper.gateway.cache.store import Store, store_from_url
from gatekeeper.gateway.cache.tiered import TieredStore

__all__ = [
    "CacheControl",
    "CacheEntry",
    "CacheOptions",
    "CacheRequest",
    "CacheResponse",
    "CacheStats",
    "CacheStatus",
    "Forward",
    "Headers",
    "HttpCache",
    "MemoryStore",
    "RedisStore",
    "Store",
    "TieredStore",
    "parse_cache_control",
    "parse_http_date",
    "store_from_url",
]
