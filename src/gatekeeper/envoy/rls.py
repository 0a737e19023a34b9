"""``envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit``: Envoy asks, the limiter
decides.

One call, step by step:

1. the domain's compiled tree (:mod:`.descriptors`) gives each descriptor its limit and subject;
   an unknown domain, or a descriptor no limit matches, is answered OK without a limit, as
   envoyproxy/ratelimit does; a malformed request (no domain, no descriptors, an entry without
   a key, too many of them) is refused with ``INVALID_ARGUMENT``;
2. each limited descriptor becomes a check of cost ``hits_addend`` (the descriptor's own, else
   the request's, else 1); the same limit and subject twice add up into one check;
3. ALL the checks are decided in ONE limiter call, all or nothing: when one descriptor is over
   its limit, nothing is debited from the others. Concurrent calls are batched by the limiter
   into one store round trip per event-loop turn;
4. the answer: ``OVER_LIMIT`` when an enforced limit denies (a shadow limit only reports), each
   descriptor's status with its limit, remaining quota and ``duration_until_reset``, and
   ``response_headers_to_add`` carrying ``RateLimit``/``RateLimit-Policy`` and, when refused,
   ``Retry-After`` (:func:`gatekeeper.limits.headers.rate_limit_headers`, the gateway's own);
   a refusal also carries the gateway's 429 problem document as ``raw_body``, which Envoy
   sends as the body of its 429.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc

from gatekeeper.envoy.descriptors import Limit, RateLimits
from gatekeeper.envoy.h2 import GrpcError
from gatekeeper.errors import ConfigurationError
from gatekeeper.limits.decision import Decision, PolicyResult
from gatekeeper.limits.headers import PROBLEM_CONTENT_TYPE, problem_body, rate_limit_headers
from gatekeeper.limits.policy import Check

__all__ = ["MAX_DESCRIPTORS", "MAX_ENTRIES", "InvalidRequest", "RateLimitService", "plan"]

MAX_DESCRIPTORS = 64
MAX_ENTRIES = 16
MAX_HITS = 2**32 - 1

_Response = rls_pb2.RateLimitResponse
_Request = rls_pb2.RateLimitRequest
_INVALID_ARGUMENT = 3
_OK = _Response.OK
_OVER_LIMIT = _Response.OVER_LIMIT


class InvalidRequest(ValueError):
    """A request no limit can be decided for (answered with ``INVALID_ARGUMENT``)."""


# Each descriptor's place in the answer: None (no limit), or its Limit and check index.
Slot = tuple[Limit, int] | None


def plan(limits: RateLimits, request: Any) -> tuple[list[Check], list[Slot]] | None:
    """The checks of ``request`` and each descriptor's slot; None for an unknown domain."""
    domain_name = request.domain
    if not domain_name:
        raise InvalidRequest("the rate limit domain is empty")
    descriptors = request.descriptors
    count = len(descriptors)
    if count == 0:
        raise InvalidRequest("the request has no descriptors")
    if count > MAX_DESCRIPTORS:
        raise InvalidRequest(f"{count} descriptors; at most {MAX_DESCRIPTORS} are accepted")
    domain = limits.domains.get(domain_name)
    if domain is None:
        _validate(descriptors)
        return None
    hits = request.hits_addend or 1
    checks: list[Check] = []
    slots: list[Slot] = []
    seen: dict[tuple[str, str], int] | None = None
    for descriptor in descriptors:
        entries = descriptor.entries
        if not entries:
            raise InvalidRequest("a descriptor has no entries")
        if len(entries) > MAX_ENTRIES:
            raise InvalidRequest(f"a descriptor has {len(entries)} entries; at most {MAX_ENTRIES}")
        pairs = [(entry.key, entry.value) for entry in entries]
        for key, _ in pairs:
            if not key:
                raise InvalidRequest("a descriptor entry has an empty key")
        limit, subject = domain.match(pairs)
        policy = limit.policy if limit is not None else None
        if policy is None:
            slots.append(None)
            continue
        cost = descriptor.hits_addend.value if descriptor.HasField("hits_addend") else hits
        if cost > MAX_HITS:
            raise InvalidRequest(f"hits_addend {cost} is larger than {MAX_HITS}")
        assert limit is not None
        if checks:
            # The same limit and subject twice in one request: one check of both costs (a
            # group may not name them twice: its all-or-nothing debit would be ambiguous).
            if seen is None:
                seen = {(c.policy.name, c.key): i for i, c in enumerate(checks)}
            index = seen.get((policy.name, subject))
            if index is not None:
                checks[index] = policy.check(subject, checks[index].cost + cost)
                slots.append((limit, index))
                continue
            seen[(policy.name, subject)] = len(checks)
        slots.append((limit, len(checks)))
        checks.append(policy.check(subject, cost))
    return checks, slots


def _validate(descriptors: Sequence[Any]) -> None:
    for descriptor in descriptors:
        if not descriptor.entries:
            raise InvalidRequest("a descriptor has no entries")
        for entry in descriptor.entries:
            if not entry.key:
                raise InvalidRequest("a descriptor entry has an empty key")


def _results_by_check(checks: list[Check], decision: Decision) -> Sequence[PolicyResult | None]:
    """Each check's result. A denial answered from the over-limit cache carries only the
    cached denials (nothing else was asked of the store): the others are unknown."""
    results = decision.results
    if len(results) == len(checks):
        return results
    by_policy = {r.policy: r for r in results}
    return [by_policy.get(c.policy.name) for c in checks]


def _duration(status: Any, seconds: float) -> None:
    if seconds > 0:
        whole = math.floor(seconds)
        status.duration_until_reset.seconds = whole
        status.duration_until_reset.nanos = round((seconds - whole) * 1e9) % 1_000_000_000


def answer(limits: RateLimits, planned: tuple[list[Check], list[Slot]], decision: Decision) -> Any:
    """The ``RateLimitResponse`` for a decided request."""
    checks, slots = planned
    response = _Response()
    response.overall_code = _OK if decision.allowed else _OVER_LIMIT
    results = _results_by_check(checks, decision)
    statuses = response.statuses
    for slot in slots:
        status = statuses.add()
        if slot is None:
            status.code = _OK
            continue
        limit, index = slot
        current = status.current_limit
        current.requests_per_unit = limit.requests_per_unit
        current.unit = limit.unit
        assert limit.policy is not None
        current.name = limit.policy.name
        result = results[index]
        if result is None:  # (see _results_by_check)
            status.code = _OK
            continue
        if result.allowed or result.shadow:
            status.code = _OK
            _duration(status, result.reset_after)
        else:
            status.code = _OVER_LIMIT
            _duration(status, max(result.retry_after, 0.0))
        status.limit_remaining = max(0, result.remaining)
    headers = response.response_headers_to_add
    fields = rate_limit_headers(decision, policies=limits.policies)
    if not decision.allowed:
        # Envoy answers the 429 itself, with this body: the gateway's own 429 document.
        response.raw_body = problem_body(decision)
        fields.append((b"content-type", PROBLEM_CONTENT_TYPE))
    for name, value in fields:
        header = headers.add()
        header.key = name.decode("latin-1")
        header.value = value.decode("latin-1")
    return response


def _all_ok(count: int) -> Any:
    response = _Response(overall_code=_OK)
    for _ in range(count):
        response.statuses.add().code = _OK
    return response


class RateLimitService(rls_pb2_grpc.RateLimitServiceServicer):  # type: ignore[misc]
    """The service: ``limiter`` decides; ``limits()`` is the compiled ``envoy:`` section of the
    configuration in force (it follows reloads). :meth:`ShouldRateLimit` serves grpcio's
    server, :meth:`handle` the native one (:mod:`.h2`); both are :meth:`decide`."""

    def __init__(self, limiter: Any, limits: Callable[[], RateLimits]) -> None:
        self.limiter = limiter
        self.limits = limits
        self.calls = 0
        self.over_limit = 0

    def decide(self, request: Any) -> tuple[Any, Any]:
        """``(response, None)`` when answered at once, else ``(None, (decision_future,
        limits, planned))``; raises :class:`InvalidRequest`."""
        self.calls += 1
        limits = self.limits()
        planned = plan(limits, request)
        if planned is None or not planned[0]:
            return _all_ok(len(request.descriptors)), None
        return None, (self.limiter.decide(planned[0]), limits, planned)

    def conclude(self, limits: RateLimits, planned: Any, decision: Decision) -> Any:
        if not decision.allowed:
            self.over_limit += 1
        return answer(limits, planned, decision)

    async def ShouldRateLimit(self, request: Any, context: Any) -> Any:
        try:
            response, pending = self.decide(request)
            if response is not None:
                return response
            waiting, limits, planned = pending
            return self.conclude(limits, planned, await waiting)
        except (InvalidRequest, ConfigurationError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # (abort raises; this line is never reached)

    def handle(self, payload: bytes) -> bytes | asyncio.Future[bytes]:
        """The native server's handler: the request's bytes in, the answer's (or a future
        of them) out, without a task or a coroutine per call."""
        try:
            request = _Request.FromString(payload)
        except Exception as exc:  # protobuf's DecodeError
            raise GrpcError(_INVALID_ARGUMENT, f"malformed RateLimitRequest: {exc}") from None
        try:
            response, pending = self.decide(request)
        except InvalidRequest as exc:
            raise GrpcError(_INVALID_ARGUMENT, str(exc)) from None
        if response is not None:
            return response.SerializeToString()  # type: ignore[no-any-return]
        waiting, limits, planned = pending
        if not asyncio.isfuture(waiting):
            waiting = asyncio.ensure_future(waiting)
        if waiting.done():
            return self._finish(waiting, limits, planned)
        out: asyncio.Future[bytes] = waiting.get_loop().create_future()

        def landed(done: asyncio.Future[Decision]) -> None:
            if out.done():
                return
            try:
                out.set_result(self._finish(done, limits, planned))
            except BaseException as exc:
                out.set_exception(exc)

        waiting.add_done_callback(landed)
        return out

    def _finish(self, done: asyncio.Future[Decision], limits: RateLimits, planned: Any) -> bytes:
        try:
            decision = done.result()
        except ConfigurationError as exc:
            raise GrpcError(_INVALID_ARGUMENT, str(exc)) from None
        return self.conclude(limits, planned, decision).SerializeToString()  # type: ignore[no-any-return]
