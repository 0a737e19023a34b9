"""Assemble a waiting room by hand: for tests (ours and users') and benchmarks.

``build`` wires a service (and optionally a FastAPI app serving its routes) from explicit parts,
with no environment and no composition root, so that a test decides the clock, the store and
the tenants.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI

from gatekeeper.types import Clock
from gatekeeper.waitingroom.access import TenantAccess
from gatekeeper.waitingroom.admin import tenant_admin_router
from gatekeeper.waitingroom.api import build_router
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
    """A hand-assembled waiting room: its service, worker and an app serving its routes."""

    service: WaitingRoomService
    worker: AdmissionWorker
    app: FastAPI


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
    """A service + worker + app (the waiting room's routes and its tenant admin routes, which
    take ``admin_token``). Configs are cached for 0 s unless ``settings`` say otherwise."""
    wr = settings or WaitingRoomSettings(config_cache_seconds=0)
    configs = CachedConfigs(repository, clock, wr.config_cache_seconds)
    codec = TokenCodec(signer or HS256Signer(TEST_SECRET))
    access = TenantAccess(configs, clock, admin_token=admin_token, ttl=wr.config_cache_seconds)
    service = WaitingRoomService(store, configs, codec, clock, wr, limiter=limiter, access=access)
    worker = AdmissionWorker(store, configs, clock, wr, owner=owner)
    app = FastAPI()
    app.include_router(build_router(service))
    app.include_router(tenant_admin_router(service))
    return WaitingRoom(service, worker, app)
