"""Route matching: host, segment-aware path prefix, method, specificity, reserved paths."""

from __future__ import annotations

from gatekeeper.gateway.flow.routing import Route, Router


def _router() -> Router:
    return Router(
        [
            Route("catch-all", "a", "/"),
            Route("api", "b", "/api"),
            Route("api-v2", "c", "/api/v2/"),
            Route("api-host", "d", "/api", host="api.example.com"),
            Route("wild", "e", "/w", host="*.example.org"),
            Route("posts", "f", "/posts", methods=frozenset({"POST"})),
        ],
        reserved=("/health", "/admin"),
    )


def test_longest_prefix_wins_and_prefixes_respect_segments() -> None:
    """/api/v2/x goes to the /api/v2/ route, /api/x to /api, /apix to the catch-all."""
    router = _router()
    assert router.match("h", "/api/v2/x", "GET").name == "api-v2"  # type: ignore[union-attr]
    assert router.match("h", "/api/x", "GET").name == "api"  # type: ignore[union-attr]
    assert router.match("h", "/api", "GET").name == "api"  # type: ignore[union-attr]
    assert router.match("h", "/apix", "GET").name == "catch-all"  # type: ignore[union-attr]


def test_host_bound_route_beats_hostless_one_and_ignores_port_and_case() -> None:
    """A route bound to the request's host wins over an equal prefix without a host."""
    router = _router()
    assert router.match("API.example.com:8443", "/api/x", "GET").name == "api-host"  # type: ignore[union-attr]
    assert router.match("other", "/api/x", "GET").name == "api"  # type: ignore[union-attr]


def test_wildcard_host() -> None:
    """``*.example.org`` matches subdomains, not the bare or another domain."""
    router = _router()
    assert router.match("a.example.org", "/w", "GET").name == "wild"  # type: ignore[union-attr]
    assert router.match("example.org", "/w", "GET").name == "catch-all"  # type: ignore[union-attr]


def test_method_filter() -> None:
    """A route limited to POST lets other methods fall through."""
    router = _router()
    assert router.match("h", "/posts", "POST").name == "posts"  # type: ignore[union-attr]
    assert router.match("h", "/posts", "GET").name == "catch-all"  # type: ignore[union-attr]


def test_reserved_paths_never_route() -> None:
    """Built-in paths are not hidden by a catch-all route."""
    router = _router()
    assert router.match("h", "/health", "GET") is None
    assert router.match("h", "/admin/reload", "POST") is None
    assert router.match("h", "/healthz", "GET").name == "catch-all"  # type: ignore[union-attr]


def test_no_route() -> None:
    """Without a catch-all an unknown path matches nothing."""
    assert Router([Route("api", "b", "/api")]).match("h", "/other", "GET") is None
