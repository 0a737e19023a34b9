"""One upstream endpoint and the live state every resilience rule reads and writes.

An :class:`Endpoint` is shared by the balancer (which reads ``in_flight``, the latency estimate
and availability), the active health checker (``healthy``), passive outlier detection
(``ejected_until``) and the endpoint's circuit breaker. Plain attributes with ``__slots__``:
the hot path reads them millions of times and must not pay for properties or locks (all
access happens on one event loop).
"""

from __future__ import annotations

import math
import ssl
from typing import Any

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.upstream.breaker import BreakerState, CircuitBreaker

__all__ = ["DEFAULT_LATENCY", "Endpoint"]

#: The latency assumed for an endpoint without measurements (seconds): optimistic enough that a
#: new endpoint gets traffic, pessimistic enough that it does not get all of it.
DEFAULT_LATENCY = 0.005
_CLOSED = BreakerState.CLOSED


class Endpoint:
    """An upstream ``host:port`` with a weight and mutable statistics.

    Endpoints compare by identity, so they can sit in the ``exclude`` set of a retry.
    """

    __slots__ = (
        "_ewma",
        "_ewma_stamp",
        "address",
        "breaker",
        "consecutive_5xx",
        "consecutive_connect_failures",
        "ejected_until",
        "ejection_decay_at",
        "ejections",
        "failures",
        "health_failures",
        "health_successes",
        "healthy",
        "host",
        "host_header",
        "in_flight",
        "last_check_error",
        "port",
        "requests",
        "server_name",
        "tls",
        "weight",
    )

    def __init__(
        self,
        host: str,
        port: int,
        weight: int = 1,
        *,
        tls: ssl.SSLContext | None = None,
        server_name: str | None = None,
    ) -> None:
        if not host:
            raise ConfigurationError("endpoint host must not be empty")
        if not 0 < port < 65536:
            raise ConfigurationError(f"endpoint {host}: port {port} is not in 1..65535")
        if weight < 1:
            raise ConfigurationError(f"endpoint {host}:{port}: weight must be >= 1, got {weight}")
        self.host = host
        self.port = port
        self.weight = weight
        self.address = f"{host}:{port}"
        # HTTPS endpoints: the context connections use, and the name verified and sent as SNI.
        self.tls = tls
        self.server_name = server_name or host
        # The Host value a request gets when its route does not preserve the client's (the
        # port left out when it is the scheme's default, as clients do).
        name = f"[{host}]" if ":" in host else host
        default_port = 443 if tls is not None else 80
        self.host_header = (name if port == default_port else f"{name}:{port}").encode()
        self.in_flight = 0
        self.requests = 0
        self.failures = 0
        # Active health checks: healthy until checks say otherwise (traffic flows at start).
        self.healthy = True
        self.health_successes = 0
        self.health_failures = 0
        self.last_check_error = ""
        # Passive outlier detection.
        self.consecutive_5xx = 0
        self.consecutive_connect_failures = 0
        self.ejected_until = 0.0
        self.ejections = 0
        self.ejection_decay_at = 0.0
        self.breaker: CircuitBreaker = CircuitBreaker()
        self._ewma = DEFAULT_LATENCY
        self._ewma_stamp: float | None = None

    def __repr__(self) -> str:
        return f"Endpoint({self.address}, weight={self.weight})"

    def available(self, now: float) -> bool:
        """Healthy, not ejected, and its breaker lets a request through at ``now``."""
        if not self.healthy or now < self.ejected_until:
            return False
        breaker = self.breaker
        return breaker.state is _CLOSED or breaker.allows(now)

    def ejected(self, now: float) -> bool:
        """Whether passive outlier detection keeps this endpoint out at ``now``."""
        return now < self.ejected_until

    def observe_latency(self, latency: float, now: float, decay: float) -> None:
        """Fold one response time into the peak-EWMA estimate (Finagle's ``PeakEwma``).

        A slower sample replaces the estimate at once (the *peak*), so a degrading endpoint is
        avoided immediately; faster samples pull it down with weight ``1 - exp(-dt/decay)``.
        """
        stamp = self._ewma_stamp
        self._ewma_stamp = now
        if stamp is None or latency > self._ewma:
            self._ewma = latency
            return
        weight = math.exp(-(now - stamp) / decay)
        self._ewma = self._ewma * weight + latency * (1.0 - weight)

    def latency(self, now: float, decay: float) -> float:
        """The current latency estimate; it decays toward zero while nothing is observed,
        so an endpoint that was slow once is tried again after a while."""
        stamp = self._ewma_stamp
        if stamp is None:
            return self._ewma
        return self._ewma * math.exp(-(now - stamp) / decay)

    def snapshot(self, now: float, decay: float) -> dict[str, Any]:
        """What ``/stats`` shows about this endpoint."""
        return {
            "address": self.address,
            "weight": self.weight,
            "healthy": self.healthy,
            "available": self.available(now),
            "ejected": self.ejected(now),
            "ejected_for": round(max(0.0, self.ejected_until - now), 3),
            "ejections": self.ejections,
            "breaker": self.breaker.snapshot(now),
            "in_flight": self.in_flight,
            "requests": self.requests,
            "failures": self.failures,
            "latency_ms": round(self.latency(now, decay) * 1000.0, 3),
            "last_check_error": self.last_check_error,
        }
