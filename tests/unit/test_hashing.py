"""Consistent hashing: stable keys, minimal movement when an endpoint leaves, weights."""

from __future__ import annotations

from collections import Counter

import pytest

from gatekeeper.errors import ConfigurationError
from gatekeeper.gateway.upstream.balancing import RequestContext
from gatekeeper.gateway.upstream.endpoint import Endpoint
from gatekeeper.gateway.upstream.hashing import (
    ConsistentHashBalancer,
    HashRing,
    MaglevTable,
    hash64,
    parse_hash_on,
    request_key,
)

KINDS = ["ring_hash", "maglev"]
KEYS = [f"10.{i // 65536}.{i // 256 % 256}.{i % 256}" for i in range(4000)]


def _endpoints(n: int = 5, weights: list[int] | None = None) -> list[Endpoint]:
    weights = weights or [1] * n
    return [Endpoint("10.1.0.1", 8000 + i, w) for i, w in enumerate(weights)]


def _assign(balancer: ConsistentHashBalancer) -> dict[str, Endpoint | None]:
    return {k: balancer.pick(RequestContext(k), 0.0, frozenset()) for k in KEYS}


def test_hash_is_stable_across_processes() -> None:
    """hash64 is a fixed function (not Python's salted hash())."""
    assert hash64("10.0.0.1") == 0x538EF646E14D03E6 == hash64(b"10.0.0.1")
    assert hash64("a") != hash64("b")


@pytest.mark.parametrize("kind", KINDS)
def test_same_key_same_endpoint(kind: str) -> None:
    """A key always maps to the same endpoint, and a rebuilt balancer agrees."""
    first = _assign(ConsistentHashBalancer(_endpoints(), kind=kind))
    second = _assign(ConsistentHashBalancer(_endpoints(), kind=kind))
    assert {k: e.address for k, e in first.items() if e} == {
        k: e.address for k, e in second.items() if e
    }


@pytest.mark.parametrize("kind", KINDS)
def test_only_the_leaving_endpoints_keys_move(kind: str) -> None:
    """When an endpoint becomes unavailable, exactly its keys move; all others stay."""
    eps = _endpoints(5)
    balancer = ConsistentHashBalancer(eps, kind=kind)
    before = _assign(balancer)
    eps[2].healthy = False
    after = _assign(balancer)
    moved = [k for k in KEYS if before[k] is not after[k]]
    assert moved, "the unavailable endpoint owned no key"
    assert all(before[k] is eps[2] for k in moved)
    assert all(after[k] is not eps[2] for k in KEYS)
    # its keys spread over the survivors rather than piling onto one
    assert len({after[k] for k in moved}) >= 3
    eps[2].healthy = True
    assert _assign(balancer) == before


@pytest.mark.parametrize("kind", KINDS)
def test_spread_is_even_and_weighted(kind: str) -> None:
    """Keys spread by weight: 3:1:1:1 gives the first endpoint about half."""
    eps = _endpoints(weights=[3, 1, 1, 1])
    counts = Counter(e.address for e in _assign(ConsistentHashBalancer(eps, kind=kind)).values())
    share = counts[eps[0].address] / len(KEYS)
    assert 0.42 < share < 0.58, counts
    for ep in eps[1:]:
        assert 0.12 < counts[ep.address] / len(KEYS) < 0.22, counts


def test_maglev_rebuild_moves_few_keys_when_a_member_is_removed() -> None:
    """Removing a member from the Maglev table moves its keys and only a few others."""
    names = [f"10.1.0.1:{8000 + i}" for i in range(5)]
    full = MaglevTable(names, [1] * 5)
    less = MaglevTable(names[:4], [1] * 4)
    hashes = [hash64(k) for k in KEYS]
    others = [h for h in hashes if full.lookup(h) != 4]
    disrupted = sum(1 for h in others if full.lookup(h) != less.lookup(h))
    assert disrupted / len(others) < 0.05


def test_ring_removal_moves_only_the_removed_members_keys() -> None:
    """A ring rebuilt without a member keeps every other key's owner."""
    names = [f"10.1.0.1:{8000 + i}" for i in range(5)]
    full = HashRing(names, [1] * 5)
    less = HashRing(names[:4], [1] * 4)
    for key in KEYS:
        h = hash64(key)
        if full.lookup(h) != 4:
            assert less.lookup(h) == full.lookup(h)


def test_hash_on_header_and_cookie_fall_back_to_ip() -> None:
    """Keys come from the named header or cookie, or the client IP when absent."""
    ctx = RequestContext(
        "1.2.3.4", [("X-User", "alice"), ("Cookie", "theme=dark; session=s123; x=1")]
    )
    assert request_key(ctx, *parse_hash_on("header:X-User")) == "alice"
    assert request_key(ctx, *parse_hash_on("cookie:session")) == "s123"
    assert request_key(ctx, *parse_hash_on("cookie:missing")) == "1.2.3.4"
    assert request_key(ctx, *parse_hash_on("ip")) == "1.2.3.4"
    assert request_key(RequestContext("9.9.9.9"), "header", "x-user") == "9.9.9.9"


@pytest.mark.parametrize("kind", KINDS)
def test_header_hashing_pins_a_user(kind: str) -> None:
    """Requests with the same header value reach one endpoint whatever their IP."""
    balancer = ConsistentHashBalancer(_endpoints(), kind=kind, hash_on="header:x-user")
    picks = {
        balancer.pick(RequestContext(f"10.0.0.{i}", [("x-user", "bob")]), 0.0, frozenset())
        for i in range(50)
    }
    assert len(picks) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_everything_unavailable_gives_none(kind: str) -> None:
    """With no endpoint available the balancer returns None."""
    eps = _endpoints(3)
    for ep in eps:
        ep.healthy = False
    assert ConsistentHashBalancer(eps, kind=kind).pick(RequestContext("1.1.1.1"), 0.0, ()) is None


@pytest.mark.parametrize("spec", ["query:x", "header:", "cookie", "ipv6"])
def test_bad_hash_on_is_refused(spec: str) -> None:
    """An unknown hash_on is a configuration error naming the choices."""
    with pytest.raises(ConfigurationError, match="hash_on"):
        parse_hash_on(spec)
