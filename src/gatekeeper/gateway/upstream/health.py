"""Active health checks: a GET to each endpoint every ``interval`` seconds.

A tiny HTTP/1.1 client on :func:`asyncio.open_connection` (one connection per check, closed
after the status line: checks must not hold upstream connections). A 2xx or 3xx status within
``timeout`` is a pass; anything else (refused, reset, timed out, 4xx, 5xx, garbage) a failure.
``unhealthy_threshold`` consecutive failures take an endpoint out of rotation,
``healthy_threshold`` consecutive passes bring it back (and lift an outlier ejection, as Envoy
does, since the endpoint has just proven itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import structlog

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.upstream.endpoint import Endpoint

__all__ = ["HealthCheckConfig", "HealthChecker", "probe"]

_log = structlog.get_logger("gatekeeper.gateway.upstream.health")


@dataclass(frozen=True, slots=True)
class HealthCheckConfig:
    """What to request, how often, how long to wait, and how many results flip the state."""

    path: str = "/health"
    interval: float = 5.0
    timeout: float = 1.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3
    host_header: str | None = None
    jitter: float = 0.1  # fraction of ``interval``: replicas do not probe in lockstep

    def __post_init__(self) -> None:
        if not self.path.startswith("/") or any(c in self.path for c in " \r\n"):
            raise ConfigurationError(f"health.path must be an absolute path, got {self.path!r}")
        if self.interval <= 0 or self.timeout <= 0:
            raise ConfigurationError("health.interval and health.timeout must be > 0")
        if self.healthy_threshold < 1 or self.unhealthy_threshold < 1:
            raise ConfigurationError("health thresholds must be >= 1")
        if not 0 <= self.jitter < 1:
            raise ConfigurationError("health.jitter must be in [0, 1)")


async def probe(
    host: str,
    port: int,
    path: str = "/health",
    seconds: float = 1.0,
    host_header: str = "",
    *,
    tls: ssl.SSLContext | None = None,
    server_name: str | None = None,
) -> tuple[bool, str]:
    """GET ``path`` from ``host:port`` (over TLS with ``tls``) within ``seconds``:
    (passed, reason).

    Never raises for network trouble: every failure becomes ``(False, reason)``.
    """
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host_header or f'{host}:{port}'}\r\n"
        "User-Agent: gatekeeper-health-check\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    ).encode("latin-1")
    try:
        async with asyncio.timeout(seconds):
            if tls is None:
                reader, writer = await asyncio.open_connection(host, port)
            else:
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=server_name or host
                )
            try:
                writer.write(request)
                await writer.drain()
                line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return False, f"no answer within {seconds:g}s"
    except OSError as exc:
        return False, f"connection failed: {exc.strerror or exc.__class__.__name__}"
    parts = line.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        return False, "not an HTTP/1.x response"
    status = int(parts[1])
    if 200 <= status < 400:
        return True, ""
    return False, f"status {status}"


class HealthChecker:
    """Runs the checks of one pool in a background task between :meth:`start` and :meth:`stop`."""

    def __init__(
        self,
        endpoints: Callable[[], Sequence[Endpoint]],
        config: HealthCheckConfig,
        *,
        rng: random.Random | None = None,
        on_change: Callable[[Endpoint, bool], None] | None = None,
    ) -> None:
        self.config = config
        self.rounds = 0
        #: Called with (endpoint, healthy) when an endpoint changes state (metrics, logs).
        self.on_change = on_change
        self._endpoints = endpoints
        self._rng = rng or random.Random()
        self._task: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        """Whether the background checking task is alive."""
        return self._task is not None and not self._task.done()

    def record(self, ep: Endpoint, passed: bool, reason: str = "") -> None:
        """Apply one check result to ``ep`` (thresholds of consecutive results)."""
        if passed:
            ep.health_failures = 0
            ep.health_successes += 1
            ep.last_check_error = ""
            if not ep.healthy and ep.health_successes >= self.config.healthy_threshold:
                ep.healthy = True
                ep.ejected_until = 0.0
                _log.info("endpoint_healthy", endpoint=ep.address)
                if self.on_change is not None:
                    self.on_change(ep, True)
        else:
            ep.health_successes = 0
            ep.health_failures += 1
            ep.last_check_error = reason
            if ep.healthy and ep.health_failures >= self.config.unhealthy_threshold:
                ep.healthy = False
                _log.warning("endpoint_unhealthy", endpoint=ep.address, reason=reason)
                if self.on_change is not None:
                    self.on_change(ep, False)

    async def check_once(self) -> None:
        """Probe every endpoint once, concurrently, and record the results."""
        config = self.config
        endpoints = list(self._endpoints())
        results = await asyncio.gather(
            *(
                probe(
                    e.host,
                    e.port,
                    config.path,
                    config.timeout,
                    config.host_header or e.host_header.decode(),
                    tls=e.tls,
                    server_name=e.server_name,
                )
                for e in endpoints
            )
        )
        for ep, (passed, reason) in zip(endpoints, results, strict=True):
            self.record(ep, passed, reason)
        self.rounds += 1

    async def start(self) -> None:
        """Start checking in the background (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="gatekeeper-health-check")

    async def stop(self) -> None:
        """Stop checking and wait for the task to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        config = self.config
        while True:  # ends when stop() cancels the task
            try:
                await self.check_once()
            except Exception as exc:  # a bug in one round must not end health checking
                _log.error("health_check_round_failed", error=repr(exc))
            spread = config.interval * config.jitter
            await asyncio.sleep(config.interval + self._rng.uniform(-spread, spread))
