"""The virtual waiting room: a fair, honest FIFO queue per tenant with signed tokens.

    from gatekeeper.waitingroom import WaitingRoomComponent   # inside a Gatekeeper process
    from gatekeeper.waitingroom import build                  # hand-assembled (tests, embedding)

See ``docs/waitingroom.md``. The backend SDK is :mod:`gatekeeper.sdk.waitingroom`.
"""

from __future__ import annotations

from gatekeeper.waitingroom.access import SecretKeyRequired, TenantAccess
from gatekeeper.waitingroom.component import WaitingRoomComponent, create_component
from gatekeeper.waitingroom.config import TenantConfig, WaitingRoomSettings
from gatekeeper.waitingroom.config_repository import (
    CachedConfigs,
    ConfigRepository,
    MemoryConfigRepository,
    SqlConfigRepository,
)
from gatekeeper.waitingroom.deadline import StoreGuard, StoreUnavailable
from gatekeeper.waitingroom.gate import GateDecision, WaitingRoomGate
from gatekeeper.waitingroom.memory_store import MemoryStore
from gatekeeper.waitingroom.redis_store import RedisStore
from gatekeeper.waitingroom.service import Verification, WaitingRoomService
from gatekeeper.waitingroom.store import TicketState, WaitingRoomStore
from gatekeeper.waitingroom.tenant_admin import TenantAdmin
from gatekeeper.waitingroom.tenants import TenantKey, TenantRecord, new_secret
from gatekeeper.waitingroom.testing import build
from gatekeeper.waitingroom.tokens import EdDSASigner, HS256Signer, TokenCodec
from gatekeeper.waitingroom.worker import AdmissionWorker

__all__ = [
    "AdmissionWorker",
    "CachedConfigs",
    "ConfigRepository",
    "EdDSASigner",
    "GateDecision",
    "HS256Signer",
    "MemoryConfigRepository",
    "MemoryStore",
    "RedisStore",
    "SecretKeyRequired",
    "SqlConfigRepository",
    "StoreGuard",
    "StoreUnavailable",
    "TenantAccess",
    "TenantAdmin",
    "TenantConfig",
    "TenantKey",
    "TenantRecord",
    "TicketState",
    "TokenCodec",
    "Verification",
    "WaitingRoomComponent",
    "WaitingRoomGate",
    "WaitingRoomService",
    "WaitingRoomSettings",
    "WaitingRoomStore",
    "build",
    "create_component",
    "new_secret",
]
