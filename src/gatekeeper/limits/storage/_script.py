"""What the Redis stores share: the Lua scripts, the wire encoding, error translation.

A batch travels as one ``EVALSHA``: one key per check in ``KEYS``; in ``ARGV`` the time (or
"" for Redis ``TIME``), the batch's distinct policies packed in one string (algorithm code,
limit, period or lease TTL in microseconds, capacity), the groups packed in another (per check:
policy index, cost, flags), then the lease ids of concurrency checks. The layout is documented
at the top of ``lua/decide.lua``. The answer is ``[now, allowed, remaining, reset_us,
retry_us, ...]``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis import exceptions as redis_errors

from gatekeeper.errors import StorageError, StorageTimeout
from gatekeeper.limits.algorithms import ALGORITHM_CODES
from gatekeeper.limits.decision import PolicyResult, policy_result
from gatekeeper.limits.policy import Algorithm, Check, Policy
from gatekeeper.limits.storage.memory import validate_group

__all__ = ["PEEK", "SHADOW", "Encoder", "Script", "decode", "load_script", "translate_errors"]

PEEK = 1
SHADOW = 2


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script shipped with the package, called by its SHA1."""

    name: str
    text: str
    sha: str


def load_script(name: str) -> Script:
    """Read ``limits/storage/lua/<name>.lua`` from the installed package."""
    text = resources.files("gatekeeper.limits.storage").joinpath(f"lua/{name}.lua").read_text()
    return Script(name, text, hashlib.sha1(text.encode()).hexdigest())


class Encoder:
    """Turns groups of checks into ``KEYS`` and ``ARGV``; caches each policy's fields."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._fields: dict[int, tuple[Policy, tuple[int, int, int, int]]] = {}

    def fields(self, policy: Policy) -> tuple[int, int, int, int]:
        """``(algorithm code, limit, period_us or lease ttl_us, capacity)`` of a policy."""
        cached = self._fields.get(id(policy))
        if cached is None or cached[0] is not policy:
            if policy.algorithm is Algorithm.CONCURRENCY:
                period = round(policy.lease_ttl * 1_000_000)
            else:
                period = policy.rate.period_us
            fields = (ALGORITHM_CODES[policy.algorithm], policy.rate.limit, period, policy.capacity)
            cached = (policy, fields)
            self._fields[id(policy)] = cached
        return cached[1]

    def key(self, check: Check) -> str:
        """The check's key under this store's prefix."""
        return check.storage_key_in(self.prefix)

    def encode(
        self,
        groups: Sequence[Sequence[Check]],
        now_us: int | None,
        *,
        peek_all: bool = False,
        keys_in_argv: bool = False,
    ) -> tuple[list[str], list[Any]]:
        """``KEYS`` and ``ARGV`` for a batch (``peek_all`` turns every check into a peek).

        ``keys_in_argv`` (Redis Cluster) passes one routing key as ``KEYS`` and every key in
        ``ARGV``: a node refuses declared keys of several slots.
        """
        keys: list[str] = []
        leases: list[str] = []
        index: dict[int, int] = {}
        policies: list[int] = []
        numbers: list[int] = [len(groups)]
        prefix = self.prefix
        concurrency = Algorithm.CONCURRENCY
        append = numbers.append
        for group in groups:
            if len(group) != 1:
                validate_group(group)
            append(len(group))
            for check in group:
                policy = check.policy
                at = index.get(id(policy))
                if at is None:
                    at = index[id(policy)] = len(index)
                    policies.extend(self.fields(policy))
                if policy.algorithm is concurrency:
                    if not check.lease_id:
                        validate_group(group)  # raises, naming the policy
                    leases.append(check.lease_id or "")
                subject = check.key
                if "{" in subject or "}" in subject:
                    keys.append(check.storage_key_in(prefix))
                else:
                    keys.append(f"{prefix}:{{{subject}}}:{policy.name}")
                append(at)
                append(check.cost)
                if check.peek or peek_all:
                    append(PEEK | SHADOW if policy.shadow else PEEK)
                else:
                    append(SHADOW if policy.shadow else 0)
        head = [
            "" if now_us is None else now_us,
            struct.pack(f"<{len(policies)}d", *policies),
            struct.pack(f"<{len(numbers)}d", *numbers),
        ]
        if keys_in_argv and keys:
            return keys[:1], [*head, len(keys), *keys, *leases]
        return keys, [*head, 0, *leases]


def decode(groups: Sequence[Sequence[Check]], flat: Sequence[Any]) -> list[list[PolicyResult]]:
    """Results per group from the script's flat answer (``flat[0]`` is the time used)."""
    out: list[list[PolicyResult]] = []
    i = 1
    build = policy_result
    for group in groups:
        if len(group) == 1:
            policy = group[0].policy
            out.append(
                [
                    build(
                        policy.name,
                        flat[i] == 1,
                        policy.capacity,
                        flat[i + 1],
                        flat[i + 2] / 1_000_000,
                        flat[i + 3] / 1_000_000,
                        policy.shadow,
                    )
                ]
            )
            i += 4
            continue
        results = []
        for check in group:
            policy = check.policy
            results.append(
                build(
                    policy.name,
                    flat[i] == 1,
                    policy.capacity,
                    flat[i + 1],
                    flat[i + 2] / 1_000_000,
                    flat[i + 3] / 1_000_000,
                    policy.shadow,
                )
            )
            i += 4
        out.append(results)
    return out


@contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn redis-py's and the socket's exceptions into :class:`StorageError` (or
    :class:`StorageTimeout`), keeping the original as ``__cause__``."""
    try:
        yield
    except (redis_errors.TimeoutError, TimeoutError) as exc:
        raise StorageTimeout(f"{what}: Redis did not answer in time") from exc
    except (redis_errors.RedisError, OSError) as exc:
        raise StorageError(f"{what}: {type(exc).__name__}: {exc}") from exc
