"""HTTP plumbing shared by the identity, admin and SDK routers.

:class:`ErrorRoute` turns Gatekeeper's errors into JSON bodies with the right status inside the
routers themselves, so they behave the same on any app they are mounted on. Validation errors
drop the offending ``input`` from the body: it may be a password.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, model_validator

from gatekeeper.errors import (
    AuthenticationError,
    ConfigurationError,
    Conflict,
    GatekeeperError,
    InvalidInput,
    NotFound,
    PermissionDenied,
    PersistenceError,
    RateLimitExceeded,
    StorageError,
    TokenError,
)

__all__ = [
    "ErrorRoute",
    "NotReady",
    "StrictBody",
    "client_address",
    "error_response",
    "presented_credentials",
]

_log = structlog.get_logger("gatekeeper.identity")
# Failures of our own back ends: the caller gets a generic message, the log gets the details
# (which may hold SQL, parameters and server addresses).
_INTERNAL = (PersistenceError, StorageError)


class NotReady(PersistenceError):
    """The identity layer cannot serve: its database is not migrated. The message says how to
    fix it and holds no secrets, so it is shown to callers (503)."""


def _has_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_has_nul(v) for v in value)
    return False


class StrictBody(BaseModel):
    """Base of every request body: unknown fields and NUL characters are refused (422).

    PostgreSQL cannot store NUL in text, and no legitimate name, email or note contains one.
    """

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        if _has_nul(data):
            raise ValueError("strings must not contain NUL (\\x00) characters")
        return data


_STATUS: list[tuple[type[GatekeeperError], int, str]] = [
    (InvalidInput, 422, "invalid_input"),
    (ConfigurationError, 422, "invalid_input"),
    (TokenError, 401, "invalid_token"),
    (AuthenticationError, 401, "unauthorized"),
    (PermissionDenied, 403, "forbidden"),
    (NotFound, 404, "not_found"),
    (Conflict, 409, "conflict"),
    (RateLimitExceeded, 429, "rate_limited"),
    (PersistenceError, 503, "database_unavailable"),
    (StorageError, 503, "storage_unavailable"),
]


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    """The JSON error body every identity route uses."""
    all_headers = dict(headers or {})
    if status == 401:
        all_headers.setdefault("WWW-Authenticate", 'Bearer realm="gatekeeper"')
    return JSONResponse(
        {"error": code, "message": message, **extra}, status_code=status, headers=all_headers
    )


def _from_error(exc: GatekeeperError) -> JSONResponse:
    if isinstance(exc, NotReady):
        return error_response(503, "not_ready", str(exc), {"Retry-After": "5"})
    if isinstance(exc, _INTERNAL):
        _log.error("backend_failure", error=str(exc), kind=type(exc).__name__)
    for kind, status, code in _STATUS:
        if isinstance(exc, kind):
            if isinstance(exc, _INTERNAL):
                what = "the database" if isinstance(exc, PersistenceError) else "storage"
                message = f"{what} is unavailable; retry later"
                return error_response(status, code, message, {"Retry-After": "1"})
            headers = {}
            if isinstance(exc, RateLimitExceeded):
                headers["Retry-After"] = str(exc.decision.retry_after)
            return error_response(status, code, str(exc), headers)
    return error_response(500, "internal_error", "internal error")


class ErrorRoute(APIRoute):
    """An APIRoute whose handler answers errors as JSON (4xx for anything the caller did)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except GatekeeperError as exc:
                return _from_error(exc)
            except RequestValidationError as exc:
                problems = [
                    {
                        "field": ".".join(str(p) for p in e.get("loc", ()) if p != "body"),
                        "problem": e.get("msg", "invalid"),
                    }
                    for e in exc.errors()
                ]
                summary = "; ".join(f"{p['field']}: {p['problem']}" for p in problems)
                return error_response(
                    422, "invalid_input", summary or "invalid request", problems=problems
                )

        return handle


def client_address(request: Request) -> str:
    """The caller's IP (the socket peer; the gateway resolves trusted proxies before us)."""
    resolved = request.scope.get("gatekeeper.client_ip")
    if isinstance(resolved, str):
        return resolved
    return request.client.host if request.client else "unknown"


def presented_credentials(request: Request) -> tuple[str | None, str | None]:
    """``(bearer, api_key)`` as presented: ``Authorization: Bearer``, ``X-API-Key``, or the
    seeds' legacy ``api_key`` query parameter."""
    bearer = None
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        bearer = value.strip()
    api_key = request.headers.get("x-api-key") or request.query_params.get("api_key")
    return bearer, api_key
