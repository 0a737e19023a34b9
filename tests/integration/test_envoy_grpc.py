"""Envoy's gRPC services of one replica, called directly: ShouldRateLimit (limits, hits_addend,
shadow mode, all-or-nothing descriptors, batching, bad input), Check (API keys, JWTs, deny
lists) and health. The real Envoy in front is tests/integration/test_envoy_proxy.py's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import address_pb2
from envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatekeeper.app import Gateway
from tests.integration.envoy_support import (
    descriptor,
    grpc_port,
    rl_request,
    rls_stub,
    start_replica,
)

pytestmark = pytest.mark.redis

OK = rls_pb2.RateLimitResponse.OK
OVER = rls_pb2.RateLimitResponse.OVER_LIMIT


@pytest.fixture(params=["native", "grpcio"])
async def replica(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: Path, redis_prefix: str
) -> AsyncIterator[Gateway]:
    """A replica with either gRPC server (the same servicers behind both)."""
    gateway = await start_replica(
        redis_url, f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}", redis_prefix, server=request.param
    )
    try:
        yield gateway
    finally:
        await gateway.stop()


@pytest.fixture
async def rls(replica: Gateway) -> AsyncIterator[Any]:
    channel, stub = rls_stub(grpc_port(replica))
    async with channel:
        yield stub


def headers_of(response: Any) -> dict[str, str]:
    return {h.key: h.value for h in response.response_headers_to_add}


async def test_limit_is_enforced_with_statuses_and_headers(rls: Any, redis_prefix: str) -> None:
    """5 per minute per address: five OKs counting down, then OVER_LIMIT with Retry-After."""
    request = rl_request(redis_prefix, descriptor(("remote_address", "10.0.0.1")))
    answers = [await rls.ShouldRateLimit(request) for _ in range(7)]
    assert [a.overall_code for a in answers] == [OK] * 5 + [OVER] * 2
    first = answers[0].statuses[0]
    assert first.current_limit.requests_per_unit == 5
    assert first.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.MINUTE
    assert first.current_limit.name == "per-address"
    assert [a.statuses[0].limit_remaining for a in answers[:5]] == [4, 3, 2, 1, 0]
    assert 0 < first.duration_until_reset.seconds <= 60
    ok_headers = headers_of(answers[0])
    assert ok_headers["ratelimit-policy"] == '"per-address";q=5;w=60'
    assert ok_headers["ratelimit"].startswith('"per-address";r=4;t=')
    assert "retry-after" not in ok_headers
    denied = answers[-1]
    assert denied.statuses[0].code == OVER
    assert 0 < denied.statuses[0].duration_until_reset.seconds <= 60
    retry = int(headers_of(denied)["retry-after"])
    assert 1 <= retry <= 60
    # Another address has its own counter.
    other = await rls.ShouldRateLimit(
        rl_request(redis_prefix, descriptor(("remote_address", "10.0.0.2")))
    )
    assert other.overall_code == OK


async def test_unknown_domain_and_unmatched_descriptors_are_not_limited(
    rls: Any, redis_prefix: str
) -> None:
    """Like envoyproxy/ratelimit: no limit configured means OK, with a status per descriptor."""
    unknown = await rls.ShouldRateLimit(
        rl_request(f"{redis_prefix}-nope", descriptor(("remote_address", "1.2.3.4")))
    )
    assert unknown.overall_code == OK
    assert [s.code for s in unknown.statuses] == [OK]
    mixed = rl_request(
        redis_prefix,
        descriptor(("generic_key", "unknown")),
        descriptor(("generic_key", "free")),
        descriptor(("remote_address", "1.2.3.4"), ("extra", "x")),  # entries past a leaf
        descriptor(("header_match", "api")),  # a node without a limit of its own
    )
    for _ in range(20):
        answer = await rls.ShouldRateLimit(mixed)
        assert answer.overall_code == OK
        assert [s.code for s in answer.statuses] == [OK] * 4
        assert not answer.statuses[0].HasField("current_limit")


@pytest.mark.parametrize(
    ("request_", "why"),
    [
        (rl_request("", descriptor(("remote_address", "1"))), "domain is empty"),
        (rls_pb2.RateLimitRequest(domain="d"), "no descriptors"),
        (rl_request("d", descriptor()), "no entries"),
        (rl_request("d", descriptor(("", "v"))), "empty key"),
        (rl_request("d", *[descriptor(("k", "v"))] * 65), "at most 64"),
    ],
)
async def test_malformed_requests_are_invalid_argument(rls: Any, request_: Any, why: str) -> None:
    """A request nothing can be decided for is refused, naming the problem."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rls.ShouldRateLimit(request_)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert why in (caught.value.details() or "")


async def test_malformed_descriptor_in_a_known_domain_is_invalid(
    rls: Any, redis_prefix: str
) -> None:
    """The same checks apply in a configured domain, and the bad request debits nothing."""
    bad = rl_request(redis_prefix, descriptor(("remote_address", "9.9.9.9")), descriptor(("", "x")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await rls.ShouldRateLimit(bad)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    good = await rls.ShouldRateLimit(
        rl_request(redis_prefix, descriptor(("remote_address", "9.9.9.9")))
    )
    assert good.statuses[0].limit_remaining == 4


async def test_hits_addend_per_request_and_per_descriptor(rls: Any, redis_prefix: str) -> None:
    """The request's hits_addend weighs every descriptor; a descriptor's own overrides it."""
    address = descriptor(("remote_address", "10.1.1.1"))
    first = await rls.ShouldRateLimit(rl_request(redis_prefix, address, hits=3))
    assert first.overall_code == OK
    assert first.statuses[0].limit_remaining == 2
    second = await rls.ShouldRateLimit(rl_request(redis_prefix, address, hits=3))
    assert second.overall_code == OVER  # 3 more do not fit in the 2 left; nothing is debited
    assert second.statuses[0].limit_remaining == 2
    own = descriptor(("remote_address", "10.1.1.1"), hits=2)
    third = await rls.ShouldRateLimit(rl_request(redis_prefix, own, hits=3))
    assert third.overall_code == OK
    assert third.statuses[0].limit_remaining == 0
    # Zero hits looks without taking.
    look = descriptor(("remote_address", "10.1.1.2"), hits=0)
    for _ in range(8):
        assert (await rls.ShouldRateLimit(rl_request(redis_prefix, look))).overall_code == OK


async def test_the_same_descriptor_twice_counts_twice(rls: Any, redis_prefix: str) -> None:
    """Two identical descriptors in one request are one check of both costs."""
    same = descriptor(("remote_address", "10.2.2.2"))
    answer = await rls.ShouldRateLimit(rl_request(redis_prefix, same, same))
    assert answer.overall_code == OK
    assert [s.limit_remaining for s in answer.statuses] == [3, 3]


async def test_shadow_mode_reports_but_never_refuses(rls: Any, redis_prefix: str) -> None:
    """A shadow limit past its quota keeps answering OK and advertises nothing."""
    request = rl_request(redis_prefix, descriptor(("generic_key", "shadow")))
    answers = [await rls.ShouldRateLimit(request) for _ in range(4)]
    assert [a.overall_code for a in answers] == [OK] * 4
    assert all(a.statuses[0].code == OK for a in answers)
    assert answers[-1].statuses[0].limit_remaining == 0
    assert "ratelimit" not in headers_of(answers[-1])
    assert "retry-after" not in headers_of(answers[-1])


async def test_descriptors_are_decided_all_or_nothing(rls: Any, redis_prefix: str) -> None:
    """One descriptor over its limit refuses the request and takes nothing from the others."""
    both = rl_request(
        redis_prefix, descriptor(("generic_key", "small")), descriptor(("generic_key", "large"))
    )
    assert [(await rls.ShouldRateLimit(both)).overall_code for _ in range(2)] == [OK, OK]
    for _ in range(3):
        refused = await rls.ShouldRateLimit(both)
        assert refused.overall_code == OVER
        assert [s.code for s in refused.statuses] == [OVER, OK]
        assert "retry-after" in headers_of(refused)
    large = await rls.ShouldRateLimit(
        rl_request(redis_prefix, descriptor(("generic_key", "large")))
    )
    assert large.overall_code == OK
    assert large.statuses[0].limit_remaining == 10 - 2 - 1  # the refused calls took nothing
    policy = headers_of(both_answer := await rls.ShouldRateLimit(both))["ratelimit-policy"]
    assert both_answer.overall_code == OVER
    assert '"small";q=2;w=60' in policy


async def test_nested_descriptors_count_each_value(rls: Any, redis_prefix: str) -> None:
    """header_match=api, then api_key=<any>: 3 per second per key, keys counted apart."""

    def request(key: str) -> Any:
        return rl_request(redis_prefix, descriptor(("header_match", "api"), ("api_key", key)))

    codes = [(await rls.ShouldRateLimit(request("a"))).overall_code for _ in range(4)]
    assert codes[:3] == [OK] * 3
    assert codes[3] == OVER
    assert (await rls.ShouldRateLimit(request("b"))).overall_code == OK


async def test_concurrent_calls_are_exact_and_batched(
    rls: Any, replica: Gateway, redis_prefix: str
) -> None:
    """60 calls at once against a limit of 10: exactly 10 admitted, in few store calls."""
    limiter = replica.runtime.limiter
    before = limiter.stats.batches
    request = rl_request(redis_prefix, descriptor(("generic_key", "large")))
    answers = await asyncio.gather(*(rls.ShouldRateLimit(request) for _ in range(60)))
    assert sum(a.overall_code == OK for a in answers) == 10
    assert limiter.stats.batches - before < 60


async def test_health_reports_serving(replica: Gateway) -> None:
    """grpc.health.v1: the server and both Envoy services are SERVING."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port(replica)}") as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in (
            "",
            "envoy.service.ratelimit.v3.RateLimitService",
            "envoy.service.auth.v3.Authorization",
        ):
            answer = await stub.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == health_pb2.HealthCheckResponse.SERVING


def check_request(
    headers: dict[str, str], *, peer: str = "203.0.113.9", path: str = "/api/x"
) -> Any:
    context = attribute_context_pb2.AttributeContext(
        source=attribute_context_pb2.AttributeContext.Peer(
            address=address_pb2.Address(
                socket_address=address_pb2.SocketAddress(address=peer, port_value=5555)
            )
        ),
        request=attribute_context_pb2.AttributeContext.Request(
            http=attribute_context_pb2.AttributeContext.HttpRequest(
                method="GET", path=path, headers=headers
            )
        ),
    )
    return external_auth_pb2.CheckRequest(attributes=context)


@pytest.fixture
async def authz(replica: Gateway) -> AsyncIterator[Any]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port(replica)}") as channel:
        yield external_auth_pb2_grpc.AuthorizationStub(channel)


async def new_api_key(replica: Gateway, email: str) -> tuple[str, str]:
    context = replica.runtime.context
    assert context is not None
    identity = context.identity
    user = await identity.users.register(email, "a long password 123")
    created = await identity.api_keys.create(user.id)
    return user.id, created.secret


def denied_body(answer: Any) -> dict[str, Any]:
    fields = {h.header.key: h.header.value for h in answer.denied_response.headers}
    assert fields["content-type"] == "application/problem+json"
    body = json.loads(answer.denied_response.body)
    assert body["status"] == answer.denied_response.status.code
    return body  # type: ignore[no-any-return]


async def test_check_allows_an_api_key_with_identity_headers(replica: Gateway, authz: Any) -> None:
    """A valid key: OK, its user and tier for the upstream, the client's forgeries removed."""
    user_id, secret = await new_api_key(replica, "key-owner@example.com")
    answer = await authz.Check(
        check_request({"x-api-key": secret, "x-gatekeeper-user-id": "forged"})
    )
    assert answer.status.code == 0
    ok = answer.ok_response
    upstream = {h.header.key: h.header.value for h in ok.headers}
    assert upstream == {"x-gatekeeper-user-id": user_id, "x-gatekeeper-tier": "free"}
    assert all(h.append_action == h.OVERWRITE_IF_EXISTS_OR_ADD for h in ok.headers)
    assert not ok.headers_to_remove  # (Envoy would remove what was just set)
    client = {h.header.key for h in ok.response_headers_to_add}
    assert {"ratelimit", "ratelimit-policy"} <= client


async def test_check_allows_a_jwt(replica: Gateway, authz: Any) -> None:
    """A Bearer access token is accepted like the gateway accepts it."""
    context = replica.runtime.context
    assert context is not None
    identity = context.identity
    user = await identity.users.register("jwt-user@example.com", "a long password 123")
    pair = await identity.sessions.start(user)
    answer = await authz.Check(check_request({"authorization": f"Bearer {pair.access_token}"}))
    assert answer.status.code == 0
    upstream = {h.header.key: h.header.value for h in answer.ok_response.headers}
    assert upstream["x-gatekeeper-user-id"] == user.id


async def test_check_denies_missing_and_wrong_credentials(authz: Any) -> None:
    """No credentials and an unknown key are 401s with a JSON problem body."""
    missing = await authz.Check(check_request({}))
    assert missing.status.code == grpc.StatusCode.UNAUTHENTICATED.value[0]
    assert missing.denied_response.status.code == 401
    assert denied_body(missing)["error"] == "unauthorized"
    wrong = await authz.Check(check_request({"x-api-key": "gk_not-a-key"}))
    assert wrong.denied_response.status.code == 401
    assert denied_body(wrong)["error"] == "unauthorized"


async def test_check_applies_the_deny_list(replica: Gateway, authz: Any) -> None:
    """A denied address is refused (403) even with a valid key; X-Forwarded-For counts from
    a trusted proxy only."""
    _, secret = await new_api_key(replica, "denied@example.com")
    context = replica.runtime.context
    assert context is not None
    await context.identity.ip_rules.add("198.51.100.0/24", "deny")
    direct = await authz.Check(check_request({"x-api-key": secret}, peer="198.51.100.7"))
    assert direct.denied_response.status.code == 403
    assert denied_body(direct)["error"] == "ip_denied"
    via_proxy = await authz.Check(
        check_request({"x-api-key": secret, "x-forwarded-for": "198.51.100.8"}, peer="127.0.0.1")
    )
    assert via_proxy.denied_response.status.code == 403
    untrusted = await authz.Check(
        check_request({"x-api-key": secret, "x-forwarded-for": "198.51.100.8"}, peer="192.0.2.1")
    )
    assert untrusted.status.code == 0


async def test_bad_bytes_and_unknown_methods_get_grpc_statuses(replica: Gateway) -> None:
    """Bytes that are no RateLimitRequest: INVALID_ARGUMENT (grpcio decodes before the
    servicer runs and says UNKNOWN); a method nobody serves: UNIMPLEMENTED; the connection
    keeps serving."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port(replica)}") as channel:
        raw = channel.unary_unary(
            "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await raw(b"\xff\xff\xff")
        native = replica.runtime.config.envoy.server == "native"
        expected = grpc.StatusCode.INVALID_ARGUMENT if native else grpc.StatusCode.UNKNOWN
        assert caught.value.code() is expected
        unknown = channel.unary_unary(
            "/envoy.service.ratelimit.v3.RateLimitService/Nope",
            request_serializer=None,
            response_deserializer=None,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await unknown(b"")
        assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
        health = health_pb2_grpc.HealthStub(channel)
        answer = await health.Check(health_pb2.HealthCheckRequest(service=""))
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


async def test_a_client_that_is_not_http2_is_closed(replica: Gateway) -> None:
    """HTTP/1.1 (or any garbage) on the gRPC port: the connection is closed, nothing hangs."""
    reader, writer = await asyncio.open_connection("127.0.0.1", grpc_port(replica))
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    received = await asyncio.wait_for(reader.read(), timeout=5)  # until the server closes
    writer.close()
    if received:  # the native server says why first (GOAWAY); grpcio may just close
        assert len(received) >= 9


async def test_optional_auth_admits_anonymous_callers_without_identity(
    redis_url: str, tmp_path: Path, redis_prefix: str
) -> None:
    """envoy.auth optional: no credentials is an anonymous allow; the client's forged
    x-gatekeeper-* fields are removed before the upstream sees them."""
    gateway = await start_replica(
        redis_url, f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}", redis_prefix, auth="optional"
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port(gateway)}") as channel:
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            answer = await stub.Check(check_request({"x-gatekeeper-user-id": "forged"}))
            assert answer.status.code == 0
            assert not answer.ok_response.headers
            assert set(answer.ok_response.headers_to_remove) == {
                "x-gatekeeper-user-id",
                "x-gatekeeper-tier",
            }
            wrong = await stub.Check(check_request({"x-api-key": "gk_wrong"}))
            assert wrong.denied_response.status.code == 401  # a bad key is still refused
    finally:
        await gateway.stop()
