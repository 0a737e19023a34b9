"""Reloading the configuration file without dropping requests (``SIGHUP``, ``/admin/reload``).

A reload reads and validates the file, builds a complete new
:class:`~gatekeeper.gateway.flow.flow.Snapshot` (pools, router, proxy, plans), starts it, and
swaps it into the flow. Requests already in flight finish on the old state (they hold a reference
to it); its health checks stop at once and its idle upstream connections are closed after the
shutdown grace period, and so is its response cache when the new state did not keep it (the
``cache:`` settings changed, or no route caches any more). An invalid file raises
:class:`~gatekeeper.gateway.config.ConfigFileError` listing every problem, is logged, and
changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.config import ConfigFileError, GatewayConfig, load_config

if TYPE_CHECKING:
    from gatekeeper.gateway.flow.flow import Flow
    from gatekeeper.gateway.flow.snapshot import Snapshot

__all__ = ["Reloader"]

logger = logging.getLogger("gatekeeper.gateway")


class Reloader:
    """Reloads ``path`` into ``flow`` (one reload at a time): ``build`` makes a snapshot of a
    configuration, ``applied`` hears of each one taken in, ``grace`` is how long requests in
    flight keep the old snapshot's connections."""

    def __init__(
        self,
        flow: Flow,
        build: Callable[[GatewayConfig], Snapshot],
        path: str | Path,
        *,
        grace: float,
        applied: Callable[[GatewayConfig, Snapshot], None] | None = None,
    ) -> None:
        self.flow = flow
        self.build = build
        self.applied = applied
        self.grace = grace
        self.path = Path(path)
        self.generation = 0
        self._lock = asyncio.Lock()
        self._closing: set[asyncio.Task[None]] = set()

    async def reload(self) -> GatewayConfig:
        """Apply the file now; raises ConfigFileError (and keeps the old config) if invalid."""
        flow = self.flow
        async with self._lock:
            try:
                config = load_config(self.path)
                state = self.build(config)
            except ConfigFileError as exc:
                logger.error("configuration reload refused:\n%s", exc)
                raise
            except ConfigurationError as exc:
                logger.error("configuration reload refused: %s", exc)
                raise ConfigFileError(str(exc), [f"{self.path}: {exc}"]) from exc
            await state.start()
            old = flow.swap(state)
            if self.applied is not None:
                self.applied(config, state)
            self.generation += 1
            logger.info(
                "configuration reloaded from %s (generation %d)", self.path, self.generation
            )
        await old.stop()  # idle connections only; in-flight ones finish and close on release
        loop = asyncio.get_running_loop()
        loop.call_later(self.grace, old.proxy.close)
        if old.cache is not None and old.cache is not state.cache:
            task = loop.create_task(_close_later(old.cache, self.grace))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        return config

    def install_sighup(self) -> None:
        """Reload on SIGHUP (Unix)."""
        import signal

        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)

    def _on_sighup(self) -> None:
        task = asyncio.get_running_loop().create_task(self.reload())
        task.add_done_callback(_swallow_refusal)


async def _close_later(cache: Any, delay: float) -> None:
    """Close a replaced cache once the requests still using it have had their grace."""
    await asyncio.sleep(delay)
    try:
        await cache.aclose()
    except Exception:
        logger.exception("closing the replaced response cache failed")


def _swallow_refusal(task: asyncio.Task[GatewayConfig]) -> None:
    if not task.cancelled() and isinstance(task.exception(), ConfigFileError):
        return  # logged in reload(); the old configuration stays
    if not task.cancelled() and task.exception() is not None:
        logger.error("reload failed", exc_info=task.exception())
