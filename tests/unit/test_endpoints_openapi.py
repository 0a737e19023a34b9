"""The OpenAPI document is generated from the endpoint table: every answer documented, one
problem schema, security from the guards, content types as served."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from pydantic import BaseModel, Field

from gatekeeper.endpoints import (
    Answer,
    Call,
    Dispatcher,
    Endpoint,
    Reply,
    StreamReply,
    admin_token,
    asgi_app,
    docs_endpoints,
    json_reply,
    openapi_document,
    path,
    query,
)


class Item(BaseModel):
    name: str = Field(max_length=10)
    count: int = Field(ge=0, le=5)


def _ok(call: Call) -> Reply:
    return json_reply({"name": "x", "count": 1})


def _table() -> list[Endpoint]:
    def events(call: Call) -> StreamReply:
        async def chunks() -> AsyncIterator[bytes]:
            yield b"event: a\ndata: 1\n\n"

        return StreamReply(200, [(b"content-type", b"text/event-stream")], chunks())

    return [
        Endpoint(
            "PUT",
            "/items/{item_id}",
            _ok,
            guard=admin_token(lambda: "t"),
            params=(path("item_id", int, ge=1, le=99), query("dry", bool, default=False)),
            body=Item,
            responses={200: Answer("The item.", Item)},
        ),
        Endpoint(
            "GET",
            "/metrics",
            _ok,
            responses={200: Answer("Text.", {"type": "string"}, "text/plain; version=0.0.4")},
        ),
        Endpoint(
            "GET", "/events", events, responses={200: Answer("Events.", None, "text/event-stream")}
        ),
        Endpoint("GET", "/hidden", _ok, include_in_schema=False),
    ]


def test_every_answer_of_an_endpoint_is_documented() -> None:
    """The handler's answers, the guard's 401/403 and validation's 400/413/422, each a
    problem document except the handler's own; bounds and security come from declarations."""
    doc = openapi_document(_table())
    op = doc["paths"]["/items/{item_id}"]["put"]
    assert sorted(op["responses"]) == ["200", "400", "401", "403", "413", "422"]
    for status in ("400", "401", "403", "413", "422"):
        content = op["responses"][status]["content"]
        assert content == {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        }
    assert "WWW-Authenticate" in op["responses"]["401"]["headers"]
    assert op["security"] == [{"adminToken": []}]
    assert doc["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"
    params = {p["name"]: p for p in op["parameters"]}
    assert params["item_id"]["required"] is True
    assert params["item_id"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 99}
    assert params["dry"]["schema"] == {"type": "boolean", "default": False}
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/Item"}
    assert doc["components"]["schemas"]["Item"]["properties"]["count"]["maximum"] == 5
    assert "Problem" in doc["components"]["schemas"]
    assert "/hidden" not in doc["paths"]
    assert doc["openapi"] == "3.1.0"


def test_content_types_are_declared_as_served() -> None:
    """Prometheus text and Server-Sent Events are declared with their own content types."""
    doc = openapi_document(_table())
    metrics = doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(metrics) == ["text/plain; version=0.0.4"]
    events = doc["paths"]["/events"]["get"]["responses"]["200"]["content"]
    assert events["text/event-stream"]["schema"]["type"] == "object"


async def test_the_asgi_adapter_serves_the_table_and_its_documents() -> None:
    """Over ASGI: the document, the pages, a stream, a 413 for a body past the bound."""
    table = Dispatcher(_table(), max_body=64)
    table.extend(docs_endpoints(table))
    transport = httpx.ASGITransport(app=asgi_app(table), client=("127.0.0.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        spec = (await http.get("/openapi.json")).json()
        assert "/items/{item_id}" in spec["paths"]
        assert "/openapi.json" not in spec["paths"]
        docs = await http.get("/docs")
        assert docs.headers["content-type"].startswith("text/html")
        assert "/openapi.json" in docs.text
        assert (await http.get("/redoc")).status_code == 200
        stream = await http.get("/events")
        assert stream.text == "event: a\ndata: 1\n\n"
        big = await http.put("/items/1", content=b"x" * 65, headers={"authorization": "Bearer t"})
        assert big.status_code == 413
        assert big.json()["error"] == "payload_too_large"
        ok = await http.put(
            "/items/1?dry=true",
            json={"name": "a", "count": 2},
            headers={"authorization": "Bearer t"},
        )
        assert ok.status_code == 200
        assert len(ok.headers["x-request-id"]) == 32
