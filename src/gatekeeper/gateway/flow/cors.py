"""Cross-origin resource sharing (the Fetch standard's CORS protocol), per route and for the
built-in endpoints.

A :class:`Cors` policy is compiled once per configuration. For a request with an ``Origin``:

- a preflight (``OPTIONS`` with ``Access-Control-Request-Method``) is answered by the gateway
  itself: 204 with the ``Access-Control-Allow-*`` fields when the origin, the method and the
  requested headers are allowed, else a 403 problem naming what is not; it is never forwarded
  and never counted against limits;
- any other request goes on as usual, and its answer (whatever it is: a proxied response, a
  429, an error) carries ``Access-Control-Allow-Origin`` and friends when the origin is
  allowed. Without them the browser hides the answer from the page, which is the point.

Origins are matched exactly (``https://app.example.com``), by a wildcard of subdomains
(``https://*.example.com``), by a regular expression (``regex:^https://.*\\.example\\.org$``), or
``*`` (any origin; with credentials the origin is echoed, as the standard requires).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from gatekeeper.errors import ConfigurationError

__all__ = ["DEFAULT_EXPOSED", "Cors", "cors_policy"]

Headers = list[tuple[bytes, bytes]]

# What a page may read of an answer besides the CORS-safelisted fields: the limits' fields (the
# point of a rate-limited API) and the request id.
DEFAULT_EXPOSED = (
    "ratelimit",
    "ratelimit-policy",
    "retry-after",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-request-id",
)
_DEFAULT_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


@dataclass(frozen=True, eq=False)
class Cors:
    """A compiled CORS policy (see the module docstring)."""

    any_origin: bool
    origins: frozenset[str]
    patterns: tuple[re.Pattern[str], ...]
    methods: frozenset[str]
    headers: frozenset[str] | None  # None: any requested header is allowed
    credentials: bool
    max_age: int
    exposed: bytes  # the Access-Control-Expose-Headers value
    _preflight_base: Headers = field(default_factory=list)
    _answer_base: Headers = field(default_factory=list)
    _allowed: dict[str, bool] = field(default_factory=dict)

    def __post_init__(self) -> None:
        allow_methods = ", ".join(sorted(self.methods)).encode()
        self._preflight_base.append((b"access-control-allow-methods", allow_methods))
        if self.max_age:
            self._preflight_base.append((b"access-control-max-age", str(self.max_age).encode()))

    def allows(self, origin: str) -> bool:
        """Whether pages of ``origin`` may read answers (remembered per origin, bounded)."""
        known = self._allowed.get(origin)
        if known is not None:
            return known
        allowed = (
            self.any_origin
            or origin in self.origins
            or any(pattern.fullmatch(origin) for pattern in self.patterns)
        )
        if len(self._allowed) >= 4096:
            self._allowed.clear()
        self._allowed[origin] = allowed
        return allowed

    def answer_fields(self, origin: bytes) -> Headers:
        """The fields an answer to a request from the allowed ``origin`` carries."""
        fields = self._origin_fields(origin)
        fields.append((b"access-control-expose-headers", self.exposed))
        return fields

    def _origin_fields(self, origin: bytes) -> Headers:
        if self.any_origin and not self.credentials:
            return [(b"access-control-allow-origin", b"*")]
        fields = [(b"access-control-allow-origin", origin), (b"vary", b"Origin")]
        if self.credentials:
            fields.append((b"access-control-allow-credentials", b"true"))
        return fields

    def preflight(
        self, origin: bytes, method: bytes, requested: bytes | None
    ) -> tuple[int, Headers, str]:
        """The answer to a preflight: status, fields, and (for a refusal) why."""
        text = origin.decode("latin-1")
        if not self.allows(text):
            return 403, [], f"origin {text} may not call this API"
        wanted = method.decode("latin-1").strip().upper()
        if wanted not in self.methods:
            allowed = ", ".join(sorted(self.methods))
            return 403, [], f"method {wanted} is not allowed cross-origin (allowed: {allowed})"
        names = [n.strip().lower() for n in (requested or b"").decode("latin-1").split(",")]
        names = [n for n in names if n]
        if self.headers is not None:
            refused = [n for n in names if n not in self.headers]
            if refused:
                return 403, [], f"header(s) {', '.join(refused)} may not be sent cross-origin"
        fields = self._origin_fields(origin)
        fields += self._preflight_base
        if names:
            fields.append((b"access-control-allow-headers", ", ".join(names).encode()))
        fields.append(
            (b"vary", b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers")
        )
        return 204, fields, ""


def cors_policy(
    *,
    allow_origins: Sequence[str] = ("*",),
    allow_methods: Sequence[str] = _DEFAULT_METHODS,
    allow_headers: Sequence[str] = ("*",),
    expose_headers: Sequence[str] = DEFAULT_EXPOSED,
    allow_credentials: bool = False,
    max_age: int = 600,
) -> Cors:
    """Compile a CORS policy; raises ConfigurationError naming a bad origin or pattern."""
    origins: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    any_origin = False
    for origin in allow_origins:
        if origin == "*":
            any_origin = True
        elif origin.startswith("regex:"):
            try:
                patterns.append(re.compile(origin[len("regex:") :]))
            except re.error as exc:
                raise ConfigurationError(
                    f"cors.allow_origins: bad regex {origin!r}: {exc}"
                ) from exc
        elif "*" in origin:
            scheme, sep, host = origin.partition("://")
            if not sep or not host.startswith("*.") or "*" in host[2:]:
                raise ConfigurationError(
                    f"cors.allow_origins: {origin!r}: a wildcard must be the first label "
                    "(https://*.example.com)"
                )
            patterns.append(
                re.compile(re.escape(f"{scheme}://") + r"[^/]+\." + re.escape(host[2:]))
            )
        else:
            if "://" not in origin:
                raise ConfigurationError(
                    f"cors.allow_origins: {origin!r} is not an origin (scheme://host[:port])"
                )
            origins.add(origin.rstrip("/"))
    headers = None if "*" in allow_headers else frozenset(h.lower() for h in allow_headers)
    return Cors(
        any_origin=any_origin,
        origins=frozenset(origins),
        patterns=tuple(patterns),
        methods=frozenset(m.upper() for m in allow_methods),
        headers=headers,
        credentials=allow_credentials,
        max_age=max_age,
        exposed=", ".join(h.lower() for h in expose_headers).encode(),
    )
