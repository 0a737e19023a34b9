"""What ``gatekeeper serve`` refuses before it opens a connection, checked in one place.

``gatekeeper serve`` and ``gatekeeper serve --check`` both call :func:`load_checked`, so that
``--check`` answers OK only for what the start-up accepts: the environment (``Settings``), the
file, and their cross-checks (``cache.store: redis`` without ``GATEKEEPER_REDIS_URL``, Redis
shared without ``GATEKEEPER_JWT_SECRET``, a malformed store or database URL, an unreadable TLS
or key file, a bad route table...). Every check calls the function the start-up itself calls on
the same input (one rule, one place), so the two cannot drift apart. What needs a connection (a
database not at head, a store that does not answer) is found by ``serve`` only.

A component takes part by defining, next to its factory in
:data:`gatekeeper.app.COMPONENT_FACTORIES`, a module-level ``preflight(settings) -> None`` that
raises :class:`~gatekeeper.errors.ConfigurationError` for what its factory would refuse.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from typing import Any

from gatekeeper.errors import ConfigurationError, GatekeeperError
from gatekeeper.gateway.config import GatewayConfig, load_config
from gatekeeper.settings import Settings, from_environment

__all__ = ["StartRefused", "load_checked", "preflight"]


class StartRefused(ConfigurationError):
    """``serve`` must not start: ``problems`` says why, one line each."""

    def __init__(self, problems: Sequence[str], *, exit_code: int = 1) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)
        self.exit_code = exit_code


def load_checked(
    path: str | None, *, components: Sequence[str] | None = None
) -> tuple[Settings, GatewayConfig, str]:
    """The settings, the configuration and its path, once everything :func:`preflight` checks
    passed; else :class:`StartRefused` (exit code 2 when no file is named at all)."""
    try:
        settings = from_environment(Settings)
    except ConfigurationError as exc:
        raise StartRefused(str(exc).splitlines()) from exc
    path = path or settings.config_file
    if not path:
        raise StartRefused(["--config (or GATEKEEPER_CONFIG_FILE) is required"], exit_code=2)
    try:
        config = load_config(path)
    except GatekeeperError as exc:
        raise StartRefused([str(exc)]) from exc
    problems = preflight(settings, config, components=components)
    if problems:
        raise StartRefused(problems)
    return settings, config, path


def preflight(
    settings: Settings, config: GatewayConfig, *, components: Sequence[str] | None = None
) -> list[str]:
    """Every reason the start-up of ``config`` with ``settings`` would refuse, opening nothing.

    ``components`` are the factory specs that will run (default: all of
    ``COMPONENT_FACTORIES``; ``()`` for ``serve --bare``). Builds what the start-up builds
    (stores, clients, the gateway state) without connecting, and drops it again.
    """
    from gatekeeper.app import COMPONENT_FACTORIES, Runtime, build_snapshot, redis_client
    from gatekeeper.limits import storage_from_url
    from gatekeeper.types import SystemClock

    problems: list[str] = []

    def attempt(check: Callable[[], Any]) -> Any:
        try:
            return check()
        except (GatekeeperError, ValueError) as exc:  # ValueError: third-party URL parsers
            problems.extend(str(exc).splitlines())
        return None

    clock = SystemClock()
    attempt(lambda: storage_from_url(settings.storage_url, clock=clock))
    redis = attempt(lambda: redis_client(settings.redis_url)) if settings.redis_url else None
    attempt(lambda: _database(settings))
    if redis is not None or not settings.redis_url:
        # Not with a Redis URL already refused: the cache would add "needs a Redis URL".
        attempt(lambda: build_snapshot(Runtime(settings, config, clock=clock, redis=redis), config))
    specs = list(COMPONENT_FACTORIES) if components is None else list(components)
    for check in filter(None, map(_component_preflight, specs)):
        attempt(functools.partial(check, settings))
    return problems


def _database(settings: Settings) -> None:
    try:
        from gatekeeper.persistence import Database
    except ImportError:  # pragma: no cover - persistence always ships
        return
    # Building the engine parses the URL and loads its driver; disposing an engine that never
    # connected closes nothing.
    Database.from_settings(settings).engine.sync_engine.dispose()


def _component_preflight(spec: str) -> Callable[[Settings], None] | None:
    module_name = spec.partition(":")[0]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            return None  # like the start-up: a component not built yet is skipped
        raise
    check: Callable[[Settings], None] | None = getattr(module, "preflight", None)
    return check
