"""Observability: Prometheus metrics, structured logs with an access line, live dashboards.

The public surface; see docs/observability.md.
"""

from __future__ import annotations

from gatekeeper.observability.access import AccessEntry, AccessLog, Termination
from gatekeeper.observability.component import (
    Observability,
    ObservabilityComponent,
    create_component,
)
from gatekeeper.observability.events import LiveStats
from gatekeeper.observability.live_store import MemoryLiveStore, RedisLiveStore
from gatekeeper.observability.logging import (
    REQUEST_ID_HEADER,
    RequestIdMiddleware,
    accept_request_id,
    configure,
    get_logger,
    new_request_id,
    request_id_of,
)
from gatekeeper.observability.metrics import CONTENT_TYPE, Metrics, enable_multiprocess

__all__ = [
    "CONTENT_TYPE",
    "REQUEST_ID_HEADER",
    "AccessEntry",
    "AccessLog",
    "LiveStats",
    "MemoryLiveStore",
    "Metrics",
    "Observability",
    "ObservabilityComponent",
    "RedisLiveStore",
    "RequestIdMiddleware",
    "Termination",
    "accept_request_id",
    "configure",
    "create_component",
    "enable_multiprocess",
    "get_logger",
    "new_request_id",
    "request_id_of",
]
