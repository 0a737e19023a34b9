"""A load generator for ShouldRateLimit: ``python -m bench.rls_client PORT DOMAIN CONNECTIONS
CONCURRENCY SECONDS`` prints ``{"calls", "seconds", "errors", "over_limit"}`` as JSON.

CONNECTIONS channels (each its own HTTP/2 connection, as several Envoys or Envoy workers
would hold), CONCURRENCY calls in flight in all, each a request like Envoy's
``remote_address`` action sends (one descriptor, 1,000 client addresses in turn).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc


def _requests(domain: str) -> list[rls_pb2.RateLimitRequest]:
    out = []
    for i in range(1000):
        entry = ratelimit_pb2.RateLimitDescriptor.Entry(
            key="remote_address", value=f"10.{i // 250}.{i % 250}.1"
        )
        out.append(
            rls_pb2.RateLimitRequest(
                domain=domain, descriptors=[ratelimit_pb2.RateLimitDescriptor(entries=[entry])]
            )
        )
    return out


async def main(port: int, domain: str, connections: int, concurrency: int, seconds: float) -> None:
    requests = _requests(domain)
    channels = [
        grpc.aio.insecure_channel(
            f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)]
        )
        for _ in range(connections)
    ]
    stubs = [rls_pb2_grpc.RateLimitServiceStub(c) for c in channels]
    for stub in stubs:  # connect every channel before the clock starts
        await stub.ShouldRateLimit(requests[0])
    calls = errors = over = 0
    deadline = time.monotonic() + seconds

    async def worker(n: int) -> None:
        nonlocal calls, errors, over
        call = stubs[n % len(stubs)].ShouldRateLimit
        i = n
        while time.monotonic() < deadline:
            try:
                answer = await call(requests[i % 1000])
            except grpc.aio.AioRpcError:
                errors += 1
                continue
            calls += 1
            over += answer.overall_code != rls_pb2.RateLimitResponse.OK
            i += 7

    started = time.monotonic()
    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    elapsed = time.monotonic() - started
    for channel in channels:
        await channel.close()
    print(json.dumps({"calls": calls, "seconds": elapsed, "errors": errors, "over_limit": over}))


if __name__ == "__main__":
    port, domain, connections, concurrency, seconds = sys.argv[1:6]
    asyncio.run(main(int(port), domain, int(connections), int(concurrency), float(seconds)))
