"""Fixtures for the identity, admin and SDK tests: a real database (SQLite and PostgreSQL, via
``sql_database``), the real limiter on the memory store, a fake clock, and the routers on a
endpoint table of their own reached through httpx's ASGI transport.

Import the fixtures into a test module with ``from tests.integration._identity_harness import
api, identity  # noqa: F401``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from gatekeeper.endpoints import ASGIApp, Dispatcher, asgi_app
from gatekeeper.identity.component import IdentityComponent
from gatekeeper.identity.service import Identity, IdentityOptions
from gatekeeper.identity.tokens import KeyRing
from gatekeeper.limits.limiter import Limiter
from gatekeeper.limits.storage.memory import MemoryStorage
from gatekeeper.persistence import Database
from gatekeeper.testing import FakeClock

ADMIN_TOKEN = "admin-token-for-tests-0123456789"
JWT_KEYS = "k1:identity-test-secret-0123456789abcdef"
PASSWORD = "correct horse battery"


def options(**overrides: Any) -> IdentityOptions:
    """Options for tests: cheap argon2 (the cost is not what is tested), fixed keys."""
    values: dict[str, Any] = {
        "admin_token": ADMIN_TOKEN,
        "keys": KeyRing.parse(JWT_KEYS),
        "argon2_time_cost": 1,
        "argon2_memory_kib": 64,
    }
    values.update(overrides)
    return IdentityOptions(**values)


def build_identity(
    db: Database, clock: FakeClock, *, redis: Any = None, **overrides: Any
) -> Identity:
    limiter = Limiter(MemoryStorage(clock=clock), clock=clock)
    return Identity(db, clock, limiter, redis, options(**overrides))


def build_table(identity: Identity) -> Dispatcher:
    """The identity component's endpoints, and the waiting room's tenant admin endpoints, in a
    table of their own."""
    from gatekeeper.component import Context
    from gatekeeper.settings import Settings

    context = Context(
        settings=Settings(), clock=identity.clock, limiter=identity.limiter, database=identity.db
    )
    component = IdentityComponent(context, identity=identity)
    # The waiting room's tenant admin endpoints, opened to admins and audited by this identity.
    from gatekeeper.waitingroom.admin import tenant_admin_endpoints
    from gatekeeper.waitingroom.memory_store import MemoryStore
    from gatekeeper.waitingroom.sql_repository import SqlConfigRepository
    from gatekeeper.waitingroom.testing import build

    room = build(
        MemoryStore(), SqlConfigRepository(identity.db, clock=identity.clock), identity.clock
    )
    tenants = tenant_admin_endpoints(
        room.service, users=context.users_guard, audit=identity.audit.record
    )
    return Dispatcher([*component.endpoints(), *tenants])


def build_app(identity: Identity) -> ASGIApp:
    """The identity component's endpoints (and the tenant admin ones) as an ASGI app."""
    return asgi_app(build_table(identity))


@dataclass
class Api:
    """An HTTP client on the identity routers plus handles on what is behind them."""

    client: httpx.AsyncClient
    identity: Identity
    clock: FakeClock

    async def register(self, email: str, password: str = PASSWORD) -> dict[str, Any]:
        response = await self.client.post(
            "/auth/register", json={"email": email, "password": password}
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    async def new_key(self, access_token: str, **body: Any) -> dict[str, Any]:
        response = await self.client.post(
            "/auth/create_api_key", json=body, headers=bearer(access_token)
        )
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


ADMIN = bearer(ADMIN_TOKEN)


@pytest.fixture
async def identity(sql_database: Database, fake_clock: FakeClock) -> Identity:
    """The identity services on a migrated database of each engine."""
    return build_identity(sql_database, fake_clock)


@pytest.fixture
async def api(identity: Identity, fake_clock: FakeClock) -> AsyncIterator[Api]:
    """An HTTP client on the identity, admin and SDK routes."""
    transport = httpx.ASGITransport(app=build_app(identity), client=("198.51.100.7", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gatekeeper.test") as c:
        yield Api(c, identity, fake_clock)
