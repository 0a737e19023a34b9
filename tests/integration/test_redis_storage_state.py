"""How the Redis store keeps string states: packed doubles, and text from earlier versions."""

from __future__ import annotations

import struct

import pytest
import redis.asyncio as aioredis

from gatekeeper.limits.policy import Algorithm, Check, Policy
from gatekeeper.limits.storage import storage_from_url
from tests import services

pytestmark = pytest.mark.redis

NOW = 1_700_000_000_000_000
STRING_STATES = [
    Algorithm.TOKEN_BUCKET,
    Algorithm.GCRA,
    Algorithm.FIXED_WINDOW,
    Algorithm.SLIDING_WINDOW,
]


@pytest.mark.parametrize("algorithm", STRING_STATES)
async def test_a_text_state_reads_like_the_packed_one(
    algorithm: Algorithm, redis_prefix: str
) -> None:
    """A state rewritten as decimal text (the earlier format) gives the same decisions as the
    packed state it came from."""
    store = storage_from_url(services.redis_url(), prefix=redis_prefix)
    client = aioredis.Redis.from_url(services.redis_url())
    policy = Policy.parse("fmt", "5/second", algorithm=algorithm)
    packed, text = Check(policy, "packed"), Check(policy, "text")
    try:
        for check in (packed, text):
            for step in range(3):
                await store.decide([[check]], NOW + step * 10_000)
        blob = await client.get(text.storage_key_in(redis_prefix))
        assert blob[:1] == b"\0"
        numbers = struct.unpack(f"<{(len(blob) - 1) // 8}d", blob[1:])
        await client.set(
            text.storage_key_in(redis_prefix), " ".join(str(int(n)) for n in numbers), keepttl=True
        )
        for step in range(3, 9):
            at = NOW + step * 70_000
            a = (await store.decide([[packed]], at))[0][0]
            b = (await store.decide([[text]], at))[0][0]
            assert a == b, step
        assert (await client.get(text.storage_key_in(redis_prefix)))[:1] == b"\0"
    finally:
        await client.aclose()
        await store.aclose()
