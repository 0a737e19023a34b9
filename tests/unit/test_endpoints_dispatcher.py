"""The endpoint table's dispatcher: matching, guards, bounded parameters, strict bodies,
synchronous answers and the one problem shape."""

from __future__ import annotations

import ipaddress
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel, Field

from gatekeeper.endpoints import (
    Call,
    Dispatcher,
    Endpoint,
    Reply,
    Routes,
    StreamReply,
    admin_token,
    json_reply,
    operator,
    path,
    query,
)
from gatekeeper.errors import NotFound

TOKEN = "admin-secret-token-0123456789"


class Limits(BaseModel):
    admission_limit: int = Field(ge=1, le=100_000)
    ratio: float = Field(default=0.5, ge=0, le=1)
    enabled: bool = True


def _table() -> Dispatcher:
    routes = Routes(tags=("test",))

    @routes.get("/health")
    def health(call: Call) -> Reply:
        """Alive."""
        return json_reply({"status": "healthy"})

    @routes.get("/items", params=(query("offset", int, default=0, ge=0, le=2**31 - 1),))
    def items(call: Call) -> Reply:
        return json_reply({"offset": call.params["offset"]})

    @routes.get("/items/{item_id}", params=(path("item_id", str, max_length=8),))
    async def item(call: Call) -> Reply:
        if call.params["item_id"] == "nope":
            raise NotFound("item 'nope' does not exist")
        return json_reply({"id": call.params["item_id"]})

    @routes.post("/limits", body=Limits, guard=admin_token(lambda: TOKEN))
    def limits(call: Call) -> Reply:
        return json_reply(call.data.model_dump())

    @routes.get("/boom")
    def boom(call: Call) -> Reply:
        raise KeyError("hunter2")

    loopback = [ipaddress.ip_network("127.0.0.0/8")]

    @routes.get("/stats", guard=operator(lambda: TOKEN, lambda: loopback))
    def stats(call: Call) -> Reply:
        return json_reply({"by": call.principal})

    return Dispatcher(routes)


def _call(method: str, target: str, body: Any = None, **kw: Any) -> Call:
    path_, _, query_string = target.partition("?")
    data = b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
    kw.setdefault("client_ip", "127.0.0.1")
    return Call(method, path_, query_string=query_string.encode(), body=data, **kw)


def _sync(table: Dispatcher, call: Call) -> Reply:
    result = table.dispatch(call)
    assert isinstance(result, Reply), "a synchronous endpoint answers at once"
    return result


async def _any(table: Dispatcher, call: Call) -> Reply:
    result: Any = table.dispatch(call)
    if not isinstance(result, Reply):
        result = await result
    assert isinstance(result, Reply)
    return result


def _body(reply: Reply) -> Any:
    return json.loads(reply.body)


def test_a_plain_function_endpoint_answers_synchronously_with_the_request_id() -> None:
    """/health is answered by dispatch() itself (no awaitable), its id echoed."""
    reply = _sync(_table(), _call("GET", "/health", request_id="rid-1"))
    assert reply.status == 200
    assert _body(reply) == {"status": "healthy"}
    assert (b"x-request-id", b"rid-1") in reply.headers
    assert (b"content-type", b"application/json") in reply.headers


async def test_an_async_endpoint_returns_an_awaitable_and_maps_errors() -> None:
    """A coroutine handler answers later; NotFound becomes a 404 problem."""
    table = _table()
    pending: Any = table.dispatch(_call("GET", "/items/abc"))
    assert not isinstance(pending, Reply)
    ok = await pending
    assert _body(ok) == {"id": "abc"}
    missing = await _any(table, _call("GET", "/items/nope"))
    assert missing.status == 404
    assert _body(missing)["error"] == "not_found"
    assert (b"content-type", b"application/problem+json") in missing.headers


def test_unknown_paths_and_methods_are_404_and_405_with_allow() -> None:
    """No endpoint: 404; the path but not the method: 405 naming the allowed ones."""
    table = _table()
    assert _sync(table, _call("GET", "/nowhere")).status == 404
    refused = _sync(table, _call("DELETE", "/health"))
    assert refused.status == 405
    assert (b"allow", b"GET, HEAD") in refused.headers
    assert _body(refused)["error"] == "method_not_allowed"
    assert _sync(table, _call("HEAD", "/health")).status == 200


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("/items?offset=36893488147419103232", "must be at most 2147483647"),
        ("/items?offset=-1", "must be at least 0"),
        ("/items?offset=1.5", "must be an integer"),
        ("/items?offset=true", "must be an integer"),
    ],
)
def test_parameters_out_of_bounds_are_422_naming_the_parameter(target: str, problem: str) -> None:
    """A huge, negative, fractional or boolean offset is a 422 that names ``offset``."""
    reply = _sync(_table(), _call("GET", target))
    assert reply.status == 422
    body = _body(reply)
    assert body["error"] == "invalid_input"
    assert body["problems"] == [{"field": "offset", "in": "query", "problem": problem}]
    assert "offset" in body["detail"]


async def test_a_path_parameter_longer_than_its_bound_is_422() -> None:
    """Path parameters are bounded too."""
    reply = await _any(_table(), _call("GET", "/items/" + "x" * 9))
    assert reply.status == 422
    assert _body(reply)["problems"][0]["field"] == "item_id"


def test_booleans_are_not_numbers_in_a_body() -> None:
    """``{"admission_limit": true}`` is a 422 naming the field, not the number 1."""
    auth = [(b"authorization", f"Bearer {TOKEN}".encode())]
    table = _table()
    refused = _sync(table, _call("POST", "/limits", {"admission_limit": True}, headers=auth))
    assert refused.status == 422
    assert [p["field"] for p in _body(refused)["problems"]] == ["admission_limit"]
    also = _sync(
        table, _call("POST", "/limits", {"admission_limit": 2, "ratio": True}, headers=auth)
    )
    assert [p["field"] for p in _body(also)["problems"]] == ["ratio"]
    text = _sync(table, _call("POST", "/limits", {"admission_limit": "2"}, headers=auth))
    assert text.status == 422
    ok = _sync(table, _call("POST", "/limits", {"admission_limit": 2, "ratio": 1}, headers=auth))
    assert _body(ok) == {"admission_limit": 2, "ratio": 1.0, "enabled": True}


def test_a_body_that_is_not_json_is_400_and_a_missing_one_422() -> None:
    """Malformed JSON: 400; no body where one is required: 422."""
    auth = [(b"authorization", f"Bearer {TOKEN}".encode())]
    table = _table()
    assert _sync(table, _call("POST", "/limits", b"{nope", headers=auth)).status == 400
    assert _sync(table, _call("POST", "/limits", headers=auth)).status == 422


def test_the_admin_token_guard_says_401_then_403() -> None:
    """No credentials: 401 with WWW-Authenticate; wrong ones: 403 (before the body is read)."""
    table = _table()
    anonymous = _sync(table, _call("POST", "/limits", {"admission_limit": True}))
    assert anonymous.status == 401
    assert any(name == b"www-authenticate" for name, _ in anonymous.headers)
    wrong = [(b"authorization", b"Bearer nope")]
    assert _sync(table, _call("POST", "/limits", {}, headers=wrong)).status == 403


def test_the_operator_guard_opens_to_allowed_networks_or_the_token() -> None:
    """Loopback passes; another address needs the admin token (401 without, 403 wrong)."""
    table = _table()
    local = _sync(table, _call("GET", "/stats", client_ip="127.0.0.1"))
    assert _body(local) == {"by": "operator_network"}
    assert _sync(table, _call("GET", "/stats", client_ip="203.0.113.9")).status == 401
    wrong = [(b"authorization", b"Bearer nope")]
    assert (
        _sync(table, _call("GET", "/stats", client_ip="203.0.113.9", headers=wrong)).status == 403
    )
    auth = [(b"authorization", f"Bearer {TOKEN}".encode())]
    remote = _sync(table, _call("GET", "/stats", client_ip="203.0.113.9", headers=auth))
    assert _body(remote) == {"by": "admin_token"}


def test_an_unexpected_error_is_one_json_500_without_its_text() -> None:
    """A bug answers the problem shape's 500, never the exception's text."""
    reply = _sync(_table(), _call("GET", "/boom", request_id="r-500"))
    assert reply.status == 500
    assert _body(reply)["error"] == "internal_error"
    assert b"hunter2" not in reply.body
    assert (b"x-request-id", b"r-500") in reply.headers


def test_declarations_that_cannot_be_served_are_refused() -> None:
    """Unbounded parameters, undeclared path parameters and duplicates are bugs at start-up."""
    with pytest.raises(TypeError):
        query("offset", int)
    with pytest.raises(TypeError):
        query("name", str)

    def handler(call: Call) -> Reply:
        return Reply(204)

    with pytest.raises(ValueError, match="path parameters"):
        Endpoint("GET", "/users/{user_id}", handler)
    table = Dispatcher([Endpoint("GET", "/x", handler)])
    with pytest.raises(ValueError, match="twice"):
        table.add(Endpoint("GET", "/x", handler))


async def test_a_stream_reply_keeps_its_chunks_and_gets_the_request_id() -> None:
    """A streaming handler's reply passes through with its iterator untouched."""

    async def chunks() -> AsyncIterator[bytes]:
        yield b"data: 1\n\n"

    def events(call: Call) -> StreamReply:
        return StreamReply(200, [(b"content-type", b"text/event-stream")], chunks())

    table = Dispatcher([Endpoint("GET", "/events", events)])
    reply = table.dispatch(_call("GET", "/events", request_id="s1"))
    assert isinstance(reply, StreamReply)
    assert (b"x-request-id", b"s1") in reply.headers
    assert [c async for c in reply.chunks] == [b"data: 1\n\n"]
