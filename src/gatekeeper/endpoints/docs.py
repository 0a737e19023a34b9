"""``/openapi.json``, ``/docs`` (Swagger UI) and ``/redoc``: the table describing itself.

The document is generated from the dispatcher's table on first request and again whenever
endpoints were added since (components register theirs at start-up).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from gatekeeper.endpoints.endpoint import Answer, Endpoint
from gatekeeper.endpoints.openapi import openapi_document
from gatekeeper.endpoints.reply import Reply, bytes_reply

if TYPE_CHECKING:
    from gatekeeper.endpoints.call import Call
    from gatekeeper.endpoints.dispatcher import Dispatcher

__all__ = ["docs_endpoints"]

_HTML = b"text/html; charset=utf-8"
_PAGE = Answer("An HTML page.", None, "text/html")


def docs_endpoints(
    dispatcher: Dispatcher, *, title: str = "Gatekeeper", version: str = "0.1.0"
) -> list[Endpoint]:
    """The three endpoints, reading ``dispatcher``'s table."""
    cache: dict[str, Any] = {}

    def openapi(call: Call) -> Reply:
        count = len(dispatcher.endpoints)
        if cache.get("count") != count:
            document = openapi_document(dispatcher.endpoints, title=title, version=version)
            cache["body"] = json.dumps(document, separators=(",", ":")).encode()
            cache["count"] = count
        return bytes_reply(cache["body"], b"application/json")

    def page(kind: str) -> bytes:
        html = cache.get(kind)
        if html is None:
            # FastAPI's page templates (the pages only; nothing of FastAPI serves requests).
            from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html

            make = get_swagger_ui_html if kind == "docs" else get_redoc_html
            html = cache[kind] = bytes(make(openapi_url="/openapi.json", title=title).body)
        return bytes(html)

    def swagger(call: Call) -> Reply:
        return bytes_reply(page("docs"), _HTML)

    def redoc(call: Call) -> Reply:
        return bytes_reply(page("redoc"), _HTML)

    return [
        Endpoint(
            "GET",
            "/openapi.json",
            openapi,
            summary="This document",
            tags=("docs",),
            responses={200: Answer("The OpenAPI 3.1 document.", {"type": "object"})},
            include_in_schema=False,
        ),
        Endpoint("GET", "/docs", swagger, responses={200: _PAGE}, include_in_schema=False),
        Endpoint("GET", "/redoc", redoc, responses={200: _PAGE}, include_in_schema=False),
    ]
