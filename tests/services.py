"""The services the suite talks to: the configured ones when they answer, private ones if not.

Four services, each configured by an environment variable with a local default (``SERVICES``):
Redis (``GATEKEEPER_TEST_REDIS_URL``, ``redis://127.0.0.1:6379/15``), PostgreSQL
(``GATEKEEPER_TEST_POSTGRES_URL``, ``postgresql+asyncpg://postgres@127.0.0.1:5432/test``),
RabbitMQ (``GATEKEEPER_TEST_AMQP_URL``, ``amqp://guest:guest@127.0.0.1:5672/``) and NATS with
JetStream (``GATEKEEPER_TEST_NATS_URL``, ``nats://127.0.0.1:4222``).

At the start of the session (``tests/conftest.py``) a ``Provider`` probes each one; one that does
not answer is replaced by a private server (``tests.servers``, ``tests.private_servers``) that is
stopped when the session ends. The resolved URLs are written back to the variables, so whatever
reads them afterwards (test modules at import, fixtures, child processes) sees the same ones.
``redis_url()`` and its siblings give them, and fail loudly when asked before the session started
or when neither the configured service nor a private one is there.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from tests.private_servers import NatsServer, PostgresServer, RabbitMQServer
from tests.probes import amqp_answers, nats_answers, postgres_answers, redis_answers
from tests.servers import RedisServer

__all__ = [
    "SERVICES",
    "Provider",
    "Service",
    "amqp_url",
    "nats_url",
    "postgres_url",
    "redis_url",
    "session",
]


class PrivateServer(Protocol):
    @property
    def url(self) -> str: ...  # read once started

    def start(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Service:
    name: str
    variable: str
    default: str
    answers: Callable[[str], str | None]  # None when it answers, else why not
    private: Callable[[], PrivateServer]


SERVICES = {
    "redis": Service("Redis", "GATEKEEPER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15",
                     redis_answers, RedisServer),
    "postgres": Service("PostgreSQL", "GATEKEEPER_TEST_POSTGRES_URL",
                        "postgresql+asyncpg://postgres@127.0.0.1:5432/test",
                        postgres_answers, PostgresServer),
    "amqp": Service("RabbitMQ", "GATEKEEPER_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/",
                    amqp_answers, RabbitMQServer),
    "nats": Service("NATS", "GATEKEEPER_TEST_NATS_URL", "nats://127.0.0.1:4222",
                    nats_answers, NatsServer),
}  # fmt: skip


@dataclass(frozen=True)
class _Outcome:
    url: str | None = None
    error: str | None = None
    server: PrivateServer | None = None
    note: str | None = None


class Provider:
    """Resolves services to URLs that answer, starting private servers for those that do not."""

    def __init__(
        self, services: dict[str, Service], environ: MutableMapping[str, str] | None = None
    ) -> None:
        self.services = services
        self.environ = os.environ if environ is None else environ
        self.urls: dict[str, str] = {}
        self.errors: dict[str, str] = {}
        self.private: dict[str, PrivateServer] = {}
        self.notes: list[str] = []

    def resolve(self) -> None:
        """Probe every service at once (the slow part is starting private ones); export the
        URLs that answer to the services' variables."""
        with ThreadPoolExecutor(max(len(self.services), 1)) as pool:
            outcomes = dict(
                zip(self.services, pool.map(self._resolve, self.services.values()), strict=True)
            )
        for key, outcome in outcomes.items():
            if outcome.note is not None:
                self.notes.append(outcome.note)
            if outcome.server is not None:
                self.private[key] = outcome.server
            if outcome.url is None:
                self.errors[key] = outcome.error or "unknown"
            else:
                self.urls[key] = self.environ[self.services[key].variable] = outcome.url

    def _resolve(self, service: Service) -> _Outcome:
        url = self.environ.get(service.variable) or service.default
        if (why := service.answers(url)) is None:
            return _Outcome(url=url)
        server = None
        try:
            server = service.private()
            server.start()
        except Exception as exc:
            if server is not None:
                server.stop()
            return _Outcome(
                error=f"{service.name} did not answer at {url} ({why}) and a private one did "
                f"not start: {exc}",
                note=f"{service.name} FAILED to start ({url}: {why})",
            )
        return _Outcome(url=server.url, server=server,
                        note=f"{service.name} at {server.url} ({url}: {why})")  # fmt: skip

    def url(self, key: str) -> str:
        if key in self.errors:
            raise RuntimeError(self.errors[key])
        return self.urls[key]

    def announcement(self) -> str | None:
        """One line naming the private servers started, or None when every service answered."""
        if not self.notes:
            return None
        return "private test services (the configured ones did not answer): " + "; ".join(
            sorted(self.notes)
        )

    def stop(self) -> None:
        """Stop every private server (idempotent)."""
        while self.private:
            _key, server = self.private.popitem()
            server.stop()


_session: Provider | None = None


def session() -> Provider:
    """The provider of this test session (created and resolved by ``tests/conftest.py``)."""
    global _session
    if _session is None:
        _session = Provider(SERVICES)
        atexit.register(_session.stop)  # in case the session ends without its last hook
    return _session


def _url(key: str) -> str:
    provider = session()
    if key not in provider.urls and key not in provider.errors:
        raise RuntimeError("test service URLs are known once the session has started")
    return provider.url(key)


def redis_url() -> str:
    return _url("redis")


def postgres_url() -> str:
    return _url("postgres")


def amqp_url() -> str:
    return _url("amqp")


def nats_url() -> str:
    return _url("nats")
