"""Assemble a waiting room by hand: for tests (ours and users') and benchmarks.

``build`` wires a service, its worker and its endpoints (in a dispatcher, and as an ASGI app)
from explicit parts, with no environment and no composition root, so that a test decides the
clock, the store and the tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatekeeper.endpoints import ASGIApp, Dispatcher, asgi_app
from gatekeeper.types import Clock
from gatekeeper.waitingroom.access import TenantAccess
from gatekeeper.waitingroom.admin import tenant_admin_endpoints
from gatekeeper.waitingroom.api import waitingroom_endpoints
from gatekeeper.waitingroom.config import WaitingRoomSettings
from gatekeeper.waitingroom.config_repository import CachedConfigs, ConfigRepository
from gatekeeper.waitingroom.deadline import StoreGuard
from gatekeeper.waitingroom.service import WaitingRoomService
from gatekeeper.waitingroom.store import WaitingRoomStore
from gatekeeper.waitingroom.tokens import HS256Signer, Signer, TokenCodec
from gatekeeper.waitingroom.worker import AdmissionWorker

__all__ = ["TEST_SECRET", "TEST_TENANT_KEY", "WaitingRoom", "build", "patient_guard"]

TEST_SECRET = "test-secret-test-secret-test-secret!"
# A well-formed tenant secret key for tests (``MemoryConfigRepository({"shop": [it]})``).
TEST_TENANT_KEY = "gkwr_7e57c0de_" + "test-tenant-key-" * 2 + "for-testing"


def patient_guard() -> StoreGuard:
    """The store's guard for tests that are not about outages: a 2 s deadline, so that a loaded
    machine's pauses are not taken for a dead Redis (the shipped default is 0.25 s)."""
    return StoreGuard(deadline=2.0)


@dataclass
class WaitingRoom:
    """A hand-assembled waiting room: its service, worker, endpoint table and an ASGI app
    serving that table."""

    service: WaitingRoomService
    worker: AdmissionWorker
    dispatcher: Dispatcher
    app: ASGIApp


def build(
    store: WaitingRoomStore,
    repository: ConfigRepository,
    clock: Clock,
    *,
    settings: WaitingRoomSettings | None = None,
    signer: Signer | None = None,
    limiter: Any = None,
    owner: str | None = None,
    admin_token: str | None = None,
) -> WaitingRoom:
    """A service + worker + endpoint table (the waiting room's endpoints and its tenant admin
    endpoints, which take ``admin_token``). Configs are cached for 0 s unless ``settings`` say
    otherwise."""
    wr = settings or WaitingRoomSettings(config_cache_seconds=0)
    configs = CachedConfigs(repository, clock, wr.config_cache_seconds)
    codec = TokenCodec(signer or HS256Signer(TEST_SECRET))
    access = TenantAccess(configs, clock, admin_token=admin_token, ttl=wr.config_cache_seconds)
    service = WaitingRoomService(store, configs, codec, clock, wr, limiter=limiter, access=access)
    worker = AdmissionWorker(store, configs, clock, wr, owner=owner)
    dispatcher = Dispatcher([*waitingroom_endpoints(service), *tenant_admin_endpoints(service)])
    return WaitingRoom(service, worker, dispatcher, asgi_app(dispatcher))
