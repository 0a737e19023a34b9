"""One dispatcher for every built-in endpoint: (method, path) -> guard -> parameters -> handler.

Step by step, for one :class:`~gatekeeper.endpoints.call.Call`:

1. find the endpoint: exact paths in a dict, templated ones after, in the order declared
   (404 when no path matches, 405 with ``Allow`` when the path does but not the method; HEAD is
   served by the GET endpoint);
2. the guard: who may call (401/403);
3. the declared parameters, converted and bounded, then the body validated in strict mode
   (400/422, naming every parameter and field at fault);
4. the handler.

When the guard and the handler are plain functions, :meth:`Dispatcher.dispatch` returns the
:class:`Reply` itself, at once: the gateway writes it on its callback path (``/health`` costs
no task, no future). Otherwise it returns an awaitable of the reply. Exceptions become problem
answers through :func:`gatekeeper.problem.problem_of`; an unexpected one costs one JSON 500
and one log line (:func:`gatekeeper.observability.unexpected.report_unexpected`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Iterable
from typing import Any

import structlog

from gatekeeper.endpoints.call import Call
from gatekeeper.endpoints.endpoint import Endpoint
from gatekeeper.endpoints.params import parse_params
from gatekeeper.endpoints.reply import Reply, StreamReply, problem_reply, reply_of
from gatekeeper.observability.logging import REQUEST_ID_VAR
from gatekeeper.observability.unexpected import report_unexpected
from gatekeeper.problem import problem_of

__all__ = ["MAX_BODY", "Dispatcher", "Result"]

Result = Reply | StreamReply
_log = structlog.get_logger("gatekeeper.endpoints")
_REQUEST_ID = b"x-request-id"
# The largest request body a built-in endpoint accepts (the caller answers 413 beyond it).
MAX_BODY = 1024 * 1024


class Dispatcher:
    """The table of built-in endpoints and the one way they are served."""

    def __init__(self, endpoints: Iterable[Endpoint] = (), *, max_body: int = MAX_BODY) -> None:
        self.max_body = max_body
        self._all: list[Endpoint] = []
        self._exact: dict[str, dict[str, Endpoint]] = {}
        self._templated: list[tuple[re.Pattern[str], dict[str, Endpoint]]] = []
        self._templates: dict[str, dict[str, Endpoint]] = {}
        self.add(*endpoints)

    @property
    def endpoints(self) -> list[Endpoint]:
        """Every endpoint, in the order added."""
        return list(self._all)

    def add(self, *endpoints: Endpoint) -> None:
        """Register endpoints; a second one for the same method and path is a bug (ValueError)."""
        for endpoint in endpoints:
            if endpoint.templated:
                methods = self._templates.get(endpoint.path)
                if methods is None:
                    methods = self._templates[endpoint.path] = {}
                    self._templated.append((endpoint.pattern(), methods))
            else:
                methods = self._exact.setdefault(endpoint.path, {})
            if endpoint.method in methods:
                raise ValueError(f"{endpoint.method} {endpoint.path} is registered twice")
            methods[endpoint.method] = endpoint
            self._all.append(endpoint)

    def extend(self, endpoints: Iterable[Endpoint]) -> None:
        """Register every endpoint of ``endpoints``."""
        self.add(*endpoints)

    def prefixes(self) -> list[str]:
        """The static beginnings of every path (for the router's reserved list). The bare
        ``/`` is left out: reserving it would reserve everything, and a route that takes
        ``/`` should win over the built-in summary there."""
        return sorted({e.path.split("{", 1)[0] for e in self._all} - {"/"})

    def find(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]] | Reply:
        """The endpoint for ``method`` and ``path`` with its path parameters, or the 404/405."""
        methods = self._exact.get(path)
        params: dict[str, str] = {}
        if methods is None:
            for pattern, candidates in self._templated:
                found = pattern.match(path)
                if found is not None:
                    methods, params = candidates, found.groupdict()
                    break
            else:
                return problem_reply(404, "not_found", f"no endpoint at {path}")
        endpoint = methods.get(method)
        if endpoint is None and method == "HEAD":
            endpoint = methods.get("GET")
        if endpoint is None:
            allowed = sorted(methods) + (["HEAD"] if "GET" in methods else [])
            allow = ", ".join(sorted(set(allowed))).encode()
            detail = f"{method} is not allowed here (allowed: {allow.decode()})"
            return problem_reply(405, "method_not_allowed", detail, [(b"allow", allow)])
        return endpoint, params

    def answers_now(self, method: str, path: str) -> bool:
        """Whether :meth:`dispatch` answers ``method path`` at once (its endpoint's guard and
        handler are plain functions, or no endpoint matches)."""
        found = self.find(method, path)
        if isinstance(found, Reply):
            return True
        return found[0].answers_now

    def dispatch(self, call: Call) -> Result | Awaitable[Result]:
        """Serve ``call``: the reply now when the endpoint is synchronous, else an awaitable."""
        found = self.find(call.method, call.path)
        if isinstance(found, Reply):
            return _finish(call, found)
        endpoint, call.path_params = found
        if not endpoint.answers_now:
            return self._serve(endpoint, call)
        token = REQUEST_ID_VAR.set(call.request_id) if call.request_id else None
        try:
            guard = endpoint.guard.check
            if guard is not None:
                call.principal = guard(call)
            _prepare(endpoint, call)
            result: Any = endpoint.handler(call)
        except Exception as exc:
            result = _problem(exc, call)
        finally:
            if token is not None:
                REQUEST_ID_VAR.reset(token)
        return _finish(call, result)

    async def _serve(self, endpoint: Endpoint, call: Call) -> Result:
        if call.request_id:
            REQUEST_ID_VAR.set(call.request_id)  # (a task of its own: no reset needed)
        try:
            guard = endpoint.guard.check
            if guard is not None:
                principal = guard(call)
                call.principal = await principal if endpoint.guard.is_async else principal
            _prepare(endpoint, call)
            result: Any = endpoint.handler(call)
            if endpoint.is_async:
                result = await result
        except Exception as exc:
            result = _problem(exc, call)
        return _finish(call, result)


def _prepare(endpoint: Endpoint, call: Call) -> None:
    """Parameters and body, checked (raises InvalidInput/BadRequest)."""
    if endpoint.params:
        call.params = parse_params(endpoint.params, call)
    model = endpoint.body
    if model is not None and (call.body or endpoint.body_required):
        call.data = call.json(model)


def _problem(exc: Exception, call: Call) -> Reply:
    problem = problem_of(exc)
    if problem.status == 500:
        report_unexpected(exc, request_id=call.request_id, where=f"{call.method} {call.path}")
    elif problem.status >= 500:
        # A back end failed (its text is not shown to the caller): one line for the operator.
        _log.warning(
            "backend_unavailable",
            request_id=call.request_id,
            path=call.path,
            error=f"{type(exc).__name__}: {exc}"[:500],
        )
    return reply_of(problem)


def _finish(call: Call, result: Any) -> Result:
    """The request id goes back on every answer (on a copy: handlers may share replies)."""
    kind = type(result)
    if kind is not Reply and kind is not StreamReply:
        error = TypeError(f"the handler answered {kind.__name__}, not a Reply")
        result = _problem(error, call)
    checked: Result = result
    rid = call.request_id
    if not rid:
        return checked
    headers = [h for h in checked.headers if h[0] != _REQUEST_ID]
    headers.append((_REQUEST_ID, rid.encode("latin-1")))
    if type(checked) is Reply:
        return Reply(checked.status, headers, checked.body)
    assert isinstance(checked, StreamReply)
    return StreamReply(checked.status, headers, checked.chunks)
