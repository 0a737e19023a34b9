"""The built-in HTTP API as one table: endpoints declared once, served by one dispatcher.

Components contribute :class:`Endpoint` values (directly, or with :class:`Routes`'
decorators); the composition root puts them in one :class:`Dispatcher`, which the gateway
serves on its listener (synchronously when it can) and :func:`asgi_app` serves over ASGI. The
OpenAPI document (:func:`openapi_document`, served by :func:`docs_endpoints`) is generated from
the same table. This package imports no component: components import it.
"""

from __future__ import annotations

from gatekeeper.endpoints.asgi import ASGIApp, asgi_app
from gatekeeper.endpoints.call import Call, validation_problems
from gatekeeper.endpoints.dispatcher import MAX_BODY, Dispatcher, Result
from gatekeeper.endpoints.docs import docs_endpoints
from gatekeeper.endpoints.endpoint import PROBLEM, Answer, Endpoint, Handler, Routes, problem
from gatekeeper.endpoints.guards import (
    ADMIN_SCHEME,
    PUBLIC,
    Guard,
    Networks,
    admin_token,
    bearer_of,
    operator,
)
from gatekeeper.endpoints.openapi import PROBLEM_SCHEMA, openapi_document
from gatekeeper.endpoints.params import Param, header, path, query
from gatekeeper.endpoints.reply import (
    JSON,
    Headers,
    Reply,
    StreamReply,
    bytes_reply,
    json_reply,
    problem_reply,
    reply_of,
)

__all__ = [
    "ADMIN_SCHEME",
    "JSON",
    "MAX_BODY",
    "PROBLEM",
    "PROBLEM_SCHEMA",
    "PUBLIC",
    "ASGIApp",
    "Answer",
    "Call",
    "Dispatcher",
    "Endpoint",
    "Guard",
    "Handler",
    "Headers",
    "Networks",
    "Param",
    "Reply",
    "Result",
    "Routes",
    "StreamReply",
    "admin_token",
    "asgi_app",
    "bearer_of",
    "bytes_reply",
    "docs_endpoints",
    "header",
    "json_reply",
    "openapi_document",
    "operator",
    "path",
    "problem",
    "problem_reply",
    "query",
    "reply_of",
    "validation_problems",
]
