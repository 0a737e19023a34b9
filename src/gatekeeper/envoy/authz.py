"""``envoy.service.auth.v3.Authorization/Check``: Envoy's ext_authz, decided by the identity
guard the gateway uses.

One call, step by step:

1. the client's address: Envoy's downstream peer, or ``X-Forwarded-For`` when that peer is one
   of the configuration's ``trusted_proxies`` (:mod:`gatekeeper.client_ip`, the gateway's rule);
2. the credentials: ``Authorization: Bearer <JWT>`` and ``X-API-Key`` (or the ``api_key``
   query parameter), as ``envoy.auth`` accepts them
   (:func:`gatekeeper.identity.credentials.credentials`, the gateway's rule); none, where some
   are needed: 401;
3. :meth:`gatekeeper.identity.guard.Guard.check`, the gateway's Authenticate step's one code
   path: deny lists, bans, the credential, the tier's limits;
4. allowed: OK with ``x-gatekeeper-user-id`` and ``x-gatekeeper-tier`` for the upstream (the
   client's own fields of those names are removed first, so they cannot be forged), the tier's
   RateLimit fields for the client; refused: the guard's status (401, 403, 429) with a JSON
   problem body (:mod:`gatekeeper.problem`) and its fields (challenge, Retry-After).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from envoy.config.core.v3.base_pb2 import HeaderValueOption
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from gatekeeper.client_ip import TrustedProxies
from gatekeeper.errors import GatekeeperError
from gatekeeper.gateway.flow.subjects import query_param
from gatekeeper.identity.credentials import credentials, missing_credentials, verdict_fields
from gatekeeper.problem import PROBLEM_JSON, problem_body, problem_of

__all__ = ["IDENTITY_HEADERS", "AuthorizationService"]

USER_ID = "x-gatekeeper-user-id"
TIER = "x-gatekeeper-tier"
IDENTITY_HEADERS = (USER_ID, TIER)

# google.rpc.Code values for CheckResponse.status.
_RPC_OK = 0
_RPC_PERMISSION_DENIED = 7
_RPC_UNAUTHENTICATED = 16
_RPC_UNAVAILABLE = 14
_OVERWRITE = HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

Headers = list[tuple[bytes, bytes]]


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):  # type: ignore[misc]
    """The servicer. ``guard()`` is the identity component's guard (None: identity is not
    running: every call is refused with 503); ``settings()`` the ``envoy.auth`` mode and the
    trusted proxies of the configuration in force."""

    def __init__(
        self,
        guard: Callable[[], Any],
        settings: Callable[[], tuple[str, TrustedProxies]],
    ) -> None:
        self.guard = guard
        self.settings = settings

    async def Check(self, request: Any, context: Any) -> Any:
        mode, trusted = self.settings()
        http = request.attributes.request.http
        headers = http.headers
        peer = request.attributes.source.address.socket_address.address
        ip = peer
        if trusted:
            forwarded = headers.get("x-forwarded-for")
            ip = trusted.client_ip(peer, forwarded.encode("latin-1") if forwarded else None)
        guard = self.guard()
        if guard is None:
            return _denied(503, "auth_unavailable", "identity is not running", [])
        authorization = headers.get("authorization")
        api_key = headers.get("x-api-key")
        bearer, key = credentials(
            None if mode == "optional" else mode,
            authorization.encode("latin-1") if authorization else None,
            api_key.encode("latin-1")
            if api_key
            else query_param(http.path.encode("latin-1"), b"api_key"),
        )
        if bearer is None and key is None and mode != "optional":
            detail, challenge = missing_credentials(mode)
            return _denied(401, "unauthorized", detail, challenge)
        try:
            verdict = await guard.check(ip, bearer=bearer, api_key=key)
        except GatekeeperError as exc:  # the database or the store is down: say so
            found = problem_of(exc)
            return _denied(found.status, found.error, found.detail, list(found.headers))
        fields = verdict_fields(verdict)
        if not verdict.allowed:
            extra: dict[str, Any] = {}
            if verdict.principal is not None:
                extra["tier"] = verdict.principal.tier
            if verdict.retry_after:
                extra["retry_after"] = verdict.retry_after
            return _denied(int(verdict.status), verdict.reason, verdict.message, fields, **extra)
        return _allowed(verdict.principal, fields)


def _allowed(principal: Any, fields: Headers) -> Any:
    response = external_auth_pb2.CheckResponse()
    response.status.code = _RPC_OK
    ok = response.ok_response
    # A client's own x-gatekeeper-* fields never reach the upstream: overwritten when there is
    # a principal, else removed (Envoy removes after it sets: never both for one name).
    if principal is None:
        ok.headers_to_remove.extend(IDENTITY_HEADERS)
    else:
        for name, value in ((USER_ID, principal.user_id), (TIER, principal.tier)):
            option = ok.headers.add()
            option.header.key = name
            option.header.value = value
            option.append_action = _OVERWRITE
    for field_name, field_value in fields:
        added = ok.response_headers_to_add.add()
        added.header.key = field_name.decode("latin-1")
        added.header.value = field_value.decode("latin-1")
        added.append_action = _OVERWRITE
    return response


def _denied(status: int, error: str, detail: str, fields: Headers, **extra: Any) -> Any:
    response = external_auth_pb2.CheckResponse()
    response.status.code = (
        _RPC_UNAUTHENTICATED
        if status == 401
        else _RPC_UNAVAILABLE
        if status == 503
        else _RPC_PERMISSION_DENIED
    )
    response.status.message = detail
    denied = response.denied_response
    denied.status.code = status
    for name, value in [*fields, (b"content-type", PROBLEM_JSON)]:
        option = denied.headers.add()
        option.header.key = name.decode("latin-1")
        option.header.value = value.decode("latin-1")
        option.append_action = _OVERWRITE
    denied.body = problem_body(status, error, detail, **extra).decode()
    return response
