"""The ``Cache-Status`` response field (RFC 9211): how the cache handled a request.

Values the gateway emits (``gatekeeper`` is the configurable cache name):

==========================================  ===============================================
``gatekeeper; hit; ttl=42``                 served from the cache, fresh for 42 s more
``gatekeeper; hit; ttl=-3; detail=stale-while-revalidate``  served stale, refresh started
``gatekeeper; fwd=uri-miss; stored; ttl=60``  nothing stored for the URI; fetched and stored
``gatekeeper; fwd=vary-miss; stored``        the URI is stored, but not this variant
``gatekeeper; fwd=miss; collapsed``          waited for a concurrent fetch of the same URI
``gatekeeper; fwd=stale; fwd-status=304``    revalidated: the upstream confirmed the entry
``gatekeeper; fwd=stale; fwd-status=503; detail=stale-if-error``  upstream failed, stale served
``gatekeeper; fwd=request``                  the request's own directives forced a fetch
``gatekeeper; fwd=method``                   not GET/HEAD
``gatekeeper; fwd=bypass``                   range request, not handled by the cache
==========================================  ===============================================

``detail`` also says why a response was not stored (``no-store``, ``private``, ``set-cookie``,
``too-large``, ...).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

__all__ = ["CacheStatus"]

_TOKEN = re.compile(r"^[A-Za-z*][A-Za-z0-9!#$%&'*+.^_`|~:/-]*$")


@dataclass(slots=True)
class CacheStatus:
    """One cache's entry in the ``Cache-Status`` list, built up while a request is handled."""

    hit: bool = False
    fwd: str | None = None
    fwd_status: int | None = None
    stored: bool = False
    collapsed: bool = False
    ttl: float | None = None
    detail: str | None = None

    def render(self, name: str = "gatekeeper") -> str:
        """The field member, e.g. ``gatekeeper; fwd=uri-miss; stored; ttl=60``."""
        parts = [name]
        if self.hit:
            parts.append("hit")
        elif self.fwd is not None:
            parts.append(f"fwd={self.fwd}")
            if self.fwd_status is not None:
                parts.append(f"fwd-status={self.fwd_status}")
        if self.stored:
            parts.append("stored")
        if self.collapsed:
            parts.append("collapsed")
        if self.ttl is not None:
            # An sf-integer; rounding down keeps a "fresh" answer from overstating freshness.
            parts.append(f"ttl={math.floor(self.ttl)}")
        if self.detail:
            detail = self.detail
            parts.append(f"detail={detail}" if _TOKEN.match(detail) else f'detail="{detail}"')
        return "; ".join(parts)
