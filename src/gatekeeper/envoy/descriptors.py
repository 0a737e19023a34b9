"""A domain's descriptor tree, compiled: which limit a request descriptor falls under.

Matching follows envoyproxy/ratelimit, so its configuration files mean the same here: the
descriptor's entries are walked down the tree, each entry finding the node for its key and
value, else the node for its key alone (no ``value``: every value of the key matches, each
counted apart). The descriptor is limited when its LAST entry lands on a node with a limit; an
entry that finds no node, or entries left over past a leaf, mean no limit.

Each limited node is one Gatekeeper :class:`~gatekeeper.limits.policy.Policy`; the subject key
of a descriptor is its domain and entries as sent (``edge|remote_address=10.0.0.1``), so every
distinct value combination has its own counter, as in envoyproxy/ratelimit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gatekeeper.envoy.config import UNIT_SECONDS, DescriptorConfig, EnvoyConfig
from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.policy import Policy, Rate

__all__ = ["UNITS", "Domain", "Limit", "RateLimits", "compile_limits"]

# envoy.service.ratelimit.v3.RateLimitResponse.RateLimit.Unit, by name (kept here so that
# validating a file does not need the protobuf stubs).
UNITS: dict[str, int] = {
    "second": 1,
    "minute": 2,
    "hour": 3,
    "day": 4,
    "month": 5,
    "year": 6,
    "week": 7,
}


@dataclass(frozen=True, slots=True)
class Limit:
    """A limited node: its policy (None: ``unlimited``) and the rate as Envoy states it."""

    policy: Policy | None
    unit: int = 0
    requests_per_unit: int = 0


@dataclass(slots=True)
class _Node:
    limit: Limit | None = None
    # "key\0value" for a node with a value, "key" for one matching any value.
    children: dict[str, _Node] = field(default_factory=dict)


class Domain:
    """One domain's compiled tree."""

    __slots__ = ("_root", "name")

    def __init__(self, name: str, root: dict[str, _Node]) -> None:
        self.name = name
        self._root = root

    def match(self, entries: Iterable[tuple[str, str]]) -> tuple[Limit | None, str]:
        """The limit of a descriptor given as ``(key, value)`` entries, and its subject key."""
        level: dict[str, _Node] | None = self._root
        node: _Node | None = None
        parts = [self.name]
        for key, value in entries:
            parts.append(f"{key}={value}")
            if level is None:  # entries left past a leaf: no limit (envoyproxy/ratelimit)
                return None, ""
            node = level.get(f"{key}\0{value}") or level.get(key)
            if node is None:
                return None, ""
            level = node.children or None
        if node is None or node.limit is None:
            return None, ""
        return node.limit, "|".join(parts)


@dataclass(frozen=True, slots=True)
class RateLimits:
    """Every domain of the ``envoy:`` section, and its policies by name (for the headers)."""

    domains: Mapping[str, Domain]
    policies: Mapping[str, Policy]
    shadow: bool = False


def compile_limits(config: EnvoyConfig) -> RateLimits:
    """The compiled trees of ``config`` (ConfigurationError: two limits of one name)."""
    policies: dict[str, Policy] = {}
    domains: dict[str, Domain] = {}
    for domain in config.domains:
        root: dict[str, _Node] = {}
        for descriptor in domain.descriptors:
            _add(root, descriptor, [domain.domain], policies, config.shadow_mode)
        domains[domain.domain] = Domain(domain.domain, root)
    return RateLimits(domains, policies, config.shadow_mode)


def _add(
    level: dict[str, _Node],
    config: DescriptorConfig,
    path: list[str],
    policies: dict[str, Policy],
    shadow: bool,
) -> None:
    step = config.key if config.value is None else f"{config.key}_{config.value}"
    here = [*path, step]
    node = _Node()
    if config.unlimited:
        node.limit = Limit(None)
    elif config.rate_limit is not None:
        name = config.name or _derived_name(here)
        if name in policies:
            raise ConfigurationError(f"envoy: two descriptors are named {name!r}")
        rate = config.rate_limit
        policy = Policy(
            name,
            Rate(rate.requests_per_unit, float(UNIT_SECONDS[rate.unit])),
            algorithm=config.algorithm,
            burst=config.burst,
            failure=config.failure,
            shadow=shadow or config.shadow_mode,
        )
        policies[name] = policy
        node.limit = Limit(policy, UNITS[rate.unit], rate.requests_per_unit)
    for child in config.descriptors:
        _add(node.children, child, here, policies, shadow)
    level[config.key if config.value is None else f"{config.key}\0{config.value}"] = node


def _derived_name(path: list[str]) -> str:
    """``domain.key_value.key`` as envoyproxy/ratelimit names its limits, shortened with a
    hash past the 128 characters a policy name may have."""
    name = ".".join(path).replace("{", "(").replace("}", ")")
    if len(name) <= 128:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    return f"{name[:100]}~{digest}"
