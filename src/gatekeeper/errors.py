"""Every error Gatekeeper raises, under one root.

Third-party exceptions (redis, SQLAlchemy, sockets, JWT) are translated at the edge with
``raise X(...) from exc``: code inside Gatekeeper never sees them.

    GatekeeperError
    ├── ConfigurationError      bad settings, rate strings, URLs, policies, YAML files
    ├── StorageError            the shared store (Redis, memory) failed or timed out
    │   └── StorageTimeout      ... it did not answer within its deadline
    ├── RateLimitExceeded       a limit denied a request (carries the Decision)
    ├── UpstreamError           forwarding to a backend failed
    │   ├── UpstreamTimeout     ... the backend did not answer in time       (-> 504)
    │   ├── UpstreamConnectError ... the backend refused or reset the connection (-> 502)
    │   └── NoHealthyUpstream   ... every backend of the pool is ejected or broken (-> 503)
    ├── QueueFull               the admission queue is full or the wait timed out (-> 503)
    ├── BodyTooLarge            a request body is larger than its route accepts (-> 413)
    ├── TokenError              a JWT or ticket is malformed, forged or expired
    ├── AuthenticationError     no or wrong credentials                      (-> 401)
    ├── PermissionDenied        authenticated, but not allowed               (-> 403)
    ├── NotFound                the named thing does not exist               (-> 404)
    ├── Conflict                the thing already exists                     (-> 409)
    ├── InvalidInput            a request's input breaks a rule              (-> 422)
    │   └── BadRequest          ... it is malformed: a header missing, a body not JSON (-> 400)
    └── PersistenceError        the SQL database failed or is not migrated
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from gatekeeper.limits.decision import Decision

__all__ = [
    "AuthenticationError",
    "BadRequest",
    "BodyTooLarge",
    "ConfigurationError",
    "Conflict",
    "GatekeeperError",
    "InvalidInput",
    "NoHealthyUpstream",
    "NotFound",
    "PermissionDenied",
    "PersistenceError",
    "QueueFull",
    "RateLimitExceeded",
    "StorageError",
    "StorageTimeout",
    "TokenError",
    "UpstreamConnectError",
    "UpstreamError",
    "UpstreamTimeout",
]


class GatekeeperError(Exception):
    """The root of every error Gatekeeper raises."""

    # Members the problem document answering this error adds (``gatekeeper.problem``): what a
    # client can act on, e.g. which credential is needed.
    problem_members: ClassVar[Mapping[str, Any]] = {}


class ConfigurationError(GatekeeperError, ValueError):
    """A setting, rate string, URL, policy or configuration file is invalid.

    The message names the offending field and value, e.g.
    ``rate '5/fortnight': unknown period 'fortnight' (use second, minute, hour, day)``.
    """


class StorageError(GatekeeperError):
    """The shared store failed. ``__cause__`` holds the backend's own exception."""


class StorageTimeout(StorageError):
    """The shared store did not answer within the configured deadline."""


class RateLimitExceeded(GatekeeperError):
    """A request was denied by a limit. ``decision`` explains which and until when."""

    def __init__(self, decision: Decision) -> None:
        super().__init__(f"rate limit exceeded: {decision.policy}")
        self.decision = decision


class UpstreamError(GatekeeperError):
    """Forwarding a request to a backend failed."""


class UpstreamTimeout(UpstreamError):
    """The backend did not answer within the route's timeout."""


class UpstreamConnectError(UpstreamError):
    """The backend refused, reset or dropped the connection."""


class NoHealthyUpstream(UpstreamError):
    """No endpoint of the pool is healthy and closed-circuit."""


class BodyTooLarge(GatekeeperError):
    """A request body is larger than its route's ``max_body_bytes``."""


class QueueFull(GatekeeperError):
    """The admission queue is full, or a request waited past its timeout."""

    def __init__(self, message: str, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TokenError(GatekeeperError):
    """A token is malformed, forged, expired, revoked or meant for someone else."""


class AuthenticationError(GatekeeperError):
    """Credentials are missing or wrong."""


class PermissionDenied(GatekeeperError):
    """The caller is known but may not do this."""


class NotFound(GatekeeperError):
    """The named resource does not exist."""


class Conflict(GatekeeperError):
    """The resource already exists or the change conflicts with its state."""


class InvalidInput(GatekeeperError, ValueError):
    """A request's input is well-formed but breaks a rule (weak password, unknown field value).

    The message names the field and the rule; HTTP APIs answer 422 with it. ``problems``
    optionally lists every field at fault as ``{"field": ..., "problem": ...}``.
    """

    def __init__(self, message: str, problems: list[dict[str, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = problems


class BadRequest(InvalidInput):
    """A request is malformed: a required header is missing, a body is not JSON (400)."""


class PersistenceError(GatekeeperError):
    """The SQL database failed, or its schema is not at the expected revision."""

    def __init__(self, message: str, *args: Any) -> None:
        super().__init__(message, *args)
