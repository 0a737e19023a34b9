"""Where limit state lives, chosen by URL: ``memory://``, ``redis://``, ``rediss://``,
``redis+sentinel://``, ``redis+cluster://``, ``rediss+cluster://``.

Every store implements :class:`gatekeeper.types.Storage`; see ``docs/limits-storage.md``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl, urlsplit

from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.storage.memory import MemoryStorage
from gatekeeper.types import Clock, Storage

__all__ = ["MemoryStorage", "storage_from_url"]


def storage_from_url(
    url: str, *, prefix: str = "gk", clock: Clock | None = None, **options: Any
) -> Storage:
    """Open the store that ``url`` names. Options come from keyword arguments and from the
    URL's query string (``?prefix=x&socket_timeout=0.05``); the query string wins.

    Raises :class:`ConfigurationError` naming the URL when it is malformed or its scheme is
    unknown. Opening is lazy: nothing connects until the first call.
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigurationError(f"storage URL {url!r} is malformed: expected scheme://...")
    try:
        parts = urlsplit(url)
        query = dict(
            parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        )
    except ValueError as exc:
        raise ConfigurationError(f"storage URL {url!r} is malformed: {exc}") from exc
    scheme = parts.scheme.lower()
    prefix = query.pop("prefix", prefix)
    if not prefix or any(c in prefix for c in "{} "):
        raise ConfigurationError(f"storage URL {url!r}: prefix {prefix!r} is not a plain name")
    if scheme == "memory":
        unknown = set(query) | (set(options) - {"sweep_interval"})
        if unknown:
            raise ConfigurationError(
                f"storage URL {url!r}: unknown option(s) {', '.join(sorted(unknown))}"
            )
        return MemoryStorage(clock=clock, prefix=prefix, **options)
    if scheme in ("redis", "rediss", "redis+sentinel", "redis+cluster", "rediss+cluster"):
        from gatekeeper.limits.storage.redis import redis_storage_from_url

        return redis_storage_from_url(url, prefix=prefix, clock=clock, query=query, **options)
    raise ConfigurationError(
        f"storage URL {url!r}: unknown scheme {parts.scheme!r} "
        "(use memory, redis, rediss, redis+sentinel, redis+cluster or rediss+cluster)"
    )
