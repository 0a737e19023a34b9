"""A small Python client for the decision service (``POST /sdk/check`` and ``/sdk/track``).

Standard library only (``http.client``), so that a backend can ask Gatekeeper without adding
an HTTP dependency. The async methods run the blocking call in a worker thread.

    client = DecisionClient("http://127.0.0.1:8080", api_key="gk_...")
    verdict = client.check(endpoint="/orders")
    if not verdict.allowed:
        ...  # answer 429 with verdict.retry_after
"""

from __future__ import annotations

import asyncio
import http.client
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from gatekeeper.errors import AuthenticationError, ConfigurationError, GatekeeperError

__all__ = ["CheckResult", "DecisionClient"]


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The decision service's answer. ``status`` is the HTTP status (200, 429, 403, ...)."""

    allowed: bool
    status: int
    reason: str
    retry_after: int = 0
    limit: int | None = None
    remaining: int | None = None
    tier: str | None = None
    body: dict[str, Any] = field(default_factory=dict)


class DecisionClient:
    """Asks a Gatekeeper deployment whether calls may proceed."""

    def __init__(self, base_url: str, *, api_key: str | None = None, timeout: float = 2.0) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigurationError(f"base_url {base_url!r} must be an http(s) URL")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    def _post(self, path: str, payload: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        kind = http.client.HTTPSConnection if self.scheme == "https" else http.client.HTTPConnection
        conn = kind(self.host, self.port, timeout=self.timeout)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        try:
            conn.request("POST", self.base_path + path, json.dumps(payload), headers)
            response = conn.getresponse()
            raw = response.read()
        except OSError as exc:
            raise GatekeeperError(f"decision service unreachable: {exc}") from exc
        finally:
            conn.close()
        try:
            body = json.loads(raw) if raw else {}
        except ValueError as exc:
            raise GatekeeperError(
                f"decision service answered {response.status} without JSON"
            ) from exc
        return response.status, body if isinstance(body, dict) else {}

    def check(self, *, cost: int = 1, endpoint: str = "") -> CheckResult:
        """Decide one call of ``cost``; a 401 (bad key) raises :class:`AuthenticationError`."""
        status, body = self._post("/sdk/check", {"cost": cost, "endpoint": endpoint})
        if status == 401:
            raise AuthenticationError(str(body.get("detail") or "API key rejected"))
        if status in (400, 422):
            raise ConfigurationError(str(body.get("detail") or "invalid check"))
        return CheckResult(
            allowed=bool(body.get("allowed", False)),
            status=status,
            reason=str(body.get("reason", "")),
            retry_after=int(body.get("retry_after", 0) or 0),
            limit=body.get("limit"),
            remaining=body.get("remaining"),
            tier=body.get("tier"),
            body=body,
        )

    def track(self, *, endpoint: str, method: str = "GET", status: int = 200) -> bool:
        """Record a call in the deployment's request log."""
        code, _ = self._post(
            "/sdk/track", {"endpoint": endpoint, "method": method, "status": status}
        )
        return code == 200

    async def acheck(self, *, cost: int = 1, endpoint: str = "") -> CheckResult:
        """:meth:`check` without blocking the event loop."""
        return await asyncio.to_thread(self.check, cost=cost, endpoint=endpoint)

    async def atrack(self, *, endpoint: str, method: str = "GET", status: int = 200) -> bool:
        return await asyncio.to_thread(self.track, endpoint=endpoint, method=method, status=status)
