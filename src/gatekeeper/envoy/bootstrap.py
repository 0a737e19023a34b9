"""An Envoy bootstrap with Gatekeeper as its rate limit and authorization services.

What ``deploy/envoy/envoy.yaml`` spells out for people, built as data for the programs that
start an Envoy of their own (``gatekeeper demo --envoy``, the tests, the benchmark): one HTTP
listener in front of a pool of backends, with

- ``envoy.filters.http.ext_authz`` asking ``Authorization/Check`` on the routes under
  ``auth_prefixes`` (disabled on the others);
- ``envoy.filters.http.ratelimit`` asking ``ShouldRateLimit`` for ``domain`` with a
  ``remote_address`` descriptor on every route (and ``generic_key: <route>`` where a route
  asks for it);
- the ``gatekeeper`` cluster: HTTP/2 to every replica, gRPC health checks, retries of calls a
  dying replica drops on another replica.

Plain dictionaries in, a dictionary out (JSON is YAML): no Envoy types needed to build it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["Route", "bootstrap"]

Address = tuple[str, int]
Route = tuple[str, bool]  # (path prefix, needs authorization)

_HCM = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3."
    "HttpConnectionManager"
)
_AUTHZ = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz"
_AUTHZ_ROUTE = "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute"
_RATELIMIT = "type.googleapis.com/envoy.extensions.filters.http.ratelimit.v3.RateLimit"
_ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
_PREVIOUS_HOSTS = (
    "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
)
_HTTP_OPTIONS = "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions"


def _endpoints(addresses: Sequence[Address]) -> list[dict[str, Any]]:
    return [
        {
            "lb_endpoints": [
                {"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}}
                for host, port in addresses
            ]
        }
    ]


def _grpc_service(timeout: str) -> dict[str, Any]:
    return {
        "envoy_grpc": {"cluster_name": "gatekeeper"},
        "timeout": timeout,
        # A call a dying replica drops (or a connection it refuses before the health checks
        # notice) is asked again of another replica.
        "retry_policy": {
            "retry_on": "connect-failure,refused-stream,reset,unavailable",
            "num_retries": 2,
            "retry_back_off": {"base_interval": "0.005s", "max_interval": "0.05s"},
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {"@type": _PREVIOUS_HOSTS},
                }
            ],
            "host_selection_retry_max_attempts": 3,
        },
    }


def bootstrap(
    *,
    listen: Address,
    backends: Sequence[Address],
    gatekeepers: Sequence[Address],
    domain: str,
    routes: Sequence[Route] = (("/", False),),
    failure_mode_deny: bool = False,
    authz: bool = True,
    ratelimit: bool = True,
    admin: Address | None = None,
    timeout: str = "0.5s",
) -> dict[str, Any]:
    """The bootstrap: Envoy on ``listen`` in front of ``backends``; ``gatekeepers`` (their
    gRPC ports) decide. ``failure_mode_deny``: with every Gatekeeper down, refuse (the rate
    limit filter's 500, ext_authz's 403) rather than let requests through."""
    http_filters: list[dict[str, Any]] = []
    if authz:
        http_filters.append(
            {
                "name": "envoy.filters.http.ext_authz",
                "typed_config": {
                    "@type": _AUTHZ,
                    "transport_api_version": "V3",
                    "grpc_service": _grpc_service(timeout),
                    "failure_mode_allow": not failure_mode_deny,
                },
            }
        )
    if ratelimit:
        http_filters.append(
            {
                "name": "envoy.filters.http.ratelimit",
                "typed_config": {
                    "@type": _RATELIMIT,
                    "domain": domain,
                    "request_type": "external",
                    "failure_mode_deny": failure_mode_deny,
                    "timeout": timeout,
                    "rate_limit_service": {
                        "transport_api_version": "V3",
                        "grpc_service": _grpc_service(timeout),
                    },
                },
            }
        )
    http_filters.append({"name": "envoy.filters.http.router", "typed_config": {"@type": _ROUTER}})
    virtual_routes = []
    for prefix, needs_auth in routes:
        route: dict[str, Any] = {
            "match": {"prefix": prefix},
            "route": {
                "cluster": "backends",
                "rate_limits": [{"actions": [{"remote_address": {}}]}],
            },
        }
        if authz and not needs_auth:
            route["typed_per_filter_config"] = {
                "envoy.filters.http.ext_authz": {"@type": _AUTHZ_ROUTE, "disabled": True}
            }
        virtual_routes.append(route)
    config: dict[str, Any] = {
        "static_resources": {
            "listeners": [
                {
                    "name": "ingress",
                    "address": {"socket_address": {"address": listen[0], "port_value": listen[1]}},
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": {
                                        "@type": _HCM,
                                        "stat_prefix": "ingress",
                                        # remote_address is the peer, not X-Forwarded-For.
                                        "use_remote_address": True,
                                        "route_config": {
                                            "name": "local",
                                            "virtual_hosts": [
                                                {
                                                    "name": "all",
                                                    "domains": ["*"],
                                                    "routes": virtual_routes,
                                                }
                                            ],
                                        },
                                        "http_filters": http_filters,
                                    },
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": [
                {
                    "name": "backends",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "lb_policy": "ROUND_ROBIN",
                    "load_assignment": {
                        "cluster_name": "backends",
                        "endpoints": _endpoints(backends),
                    },
                },
                {
                    "name": "gatekeeper",
                    "type": "STATIC",
                    "connect_timeout": "0.25s",
                    "lb_policy": "ROUND_ROBIN",
                    "typed_extension_protocol_options": {
                        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                            "@type": _HTTP_OPTIONS,
                            "explicit_http_config": {"http2_protocol_options": {}},
                        }
                    },
                    # Retries of every call a dying replica dropped may be many at once.
                    "circuit_breakers": {
                        "thresholds": [
                            {
                                "max_connections": 1024,
                                "max_pending_requests": 4096,
                                "max_requests": 4096,
                                "max_retries": 1024,
                            }
                        ]
                    },
                    # A replica that refuses connections is out at once, before health checks.
                    "outlier_detection": {
                        "split_external_local_origin_errors": True,
                        "consecutive_local_origin_failure": 1,
                        "interval": "1s",
                        "base_ejection_time": "5s",
                        "max_ejection_percent": 100,
                    },
                    "health_checks": [
                        {
                            "timeout": "0.5s",
                            "interval": "1s",
                            "unhealthy_threshold": 1,
                            "healthy_threshold": 1,
                            "grpc_health_check": {},
                        }
                    ],
                    "load_assignment": {
                        "cluster_name": "gatekeeper",
                        "endpoints": _endpoints(gatekeepers),
                    },
                },
            ],
        }
    }
    if admin is not None:
        config["admin"] = {
            "address": {"socket_address": {"address": admin[0], "port_value": admin[1]}}
        }
    return config
