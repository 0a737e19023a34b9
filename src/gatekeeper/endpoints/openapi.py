"""The OpenAPI 3.1 document of the endpoint table: generated from the same declarations the
dispatcher serves, so that what is documented is what is answered.

Pydantic writes the JSON schemas of the bodies and answers (``models_json_schema``); problem
answers share one ``Problem`` schema; every guard's security schemes are collected in
``components.securitySchemes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from gatekeeper.endpoints.endpoint import Answer, Endpoint

__all__ = ["PROBLEM_SCHEMA", "SSE_EVENT_SCHEMA", "openapi_document"]

_REF = "#/components/schemas/{model}"

PROBLEM_SCHEMA: dict[str, Any] = {
    "title": "Problem",
    "description": "An error answer (RFC 9457), the same shape on every endpoint.",
    "type": "object",
    "required": ["type", "title", "status", "error", "detail"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string", "description": "The HTTP reason phrase."},
        "status": {"type": "integer"},
        "error": {"type": "string", "description": "A machine code, snake_case."},
        "detail": {"type": "string", "description": "What went wrong, for people."},
        "problems": {
            "type": "array",
            "description": "Invalid input: every parameter or field at fault.",
            "items": {
                "type": "object",
                "required": ["field", "problem"],
                "properties": {
                    "field": {"type": "string"},
                    "problem": {"type": "string"},
                    "in": {"type": "string"},
                },
            },
        },
    },
    "additionalProperties": True,
}
_TEXT_SCHEMA: dict[str, Any] = {"type": "string"}
# A Server-Sent Events stream is described event by event.
SSE_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "One Server-Sent Event.",
    "properties": {
        "event": {"type": "string"},
        "data": {"type": "string"},
        "id": {"type": "string"},
        "retry": {"type": "integer"},
    },
}


def _models(endpoints: list[Endpoint]) -> list[tuple[type[BaseModel], JsonSchemaMode]]:
    found: dict[tuple[type[BaseModel], JsonSchemaMode], None] = {}
    for endpoint in endpoints:
        if endpoint.body is not None:
            found[(endpoint.body, "validation")] = None
        for answer in endpoint.all_responses().values():
            schema = answer.schema
            if isinstance(schema, type) and issubclass(schema, BaseModel):
                found[(schema, "serialization")] = None
    return list(found)


def _schema(answer: Answer, refs: Mapping[Any, Any]) -> dict[str, Any]:
    schema = answer.schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return dict(refs[(schema, "serialization")])
    if schema is None:
        if answer.content_type.startswith("text/event-stream"):
            return dict(SSE_EVENT_SCHEMA)
        return dict(_TEXT_SCHEMA) if not answer.content_type.endswith("json") else {}
    return dict(schema)


def _response(answer: Answer, refs: Mapping[Any, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"description": answer.description}
    schema = _schema(answer, refs)
    doc["content"] = {answer.content_type: {"schema": schema}}
    if answer.headers:
        doc["headers"] = {
            name: {"description": why, "schema": {"type": "string"}}
            for name, why in answer.headers.items()
        }
    return doc


def _operation(endpoint: Endpoint, refs: Mapping[Any, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {"operationId": endpoint.operation_id}
    if endpoint.tags:
        op["tags"] = list(endpoint.tags)
    if endpoint.summary:
        op["summary"] = endpoint.summary
    description = "\n\n".join(d for d in (endpoint.description, endpoint.guard.description) if d)
    if description:
        op["description"] = description
    if endpoint.params:
        op["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.required,
                "schema": p.schema(),
                **({"description": p.description} if p.description else {}),
            }
            for p in endpoint.params
        ]
    if endpoint.body is not None:
        op["requestBody"] = {
            "required": endpoint.body_required,
            "content": {"application/json": {"schema": dict(refs[(endpoint.body, "validation")])}},
        }
    op["responses"] = {
        str(status): _response(answer, refs) for status, answer in endpoint.all_responses().items()
    }
    if endpoint.guard.security:
        op["security"] = [{k: list(v) for k, v in req.items()} for req in endpoint.guard.security]
    return op


def openapi_document(
    endpoints: Iterable[Endpoint],
    *,
    title: str = "Gatekeeper",
    version: str = "0.1.0",
    description: str = "",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of ``endpoints`` (those with ``include_in_schema``)."""
    shown = [e for e in endpoints if e.include_in_schema]
    models = _models(shown)
    refs: Mapping[Any, Any] = {}
    definitions: dict[str, Any] = {}
    if models:
        refs, defs = models_json_schema(models, ref_template=_REF)
        definitions = dict(defs.get("$defs", {}))
    definitions["Problem"] = PROBLEM_SCHEMA
    paths: dict[str, dict[str, Any]] = {}
    schemes: dict[str, Any] = {}
    for endpoint in shown:
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = _operation(endpoint, refs)
        schemes.update({k: dict(v) for k, v in endpoint.guard.schemes.items()})
    info: dict[str, Any] = {"title": title, "version": version}
    if description:
        info["description"] = description
    components: dict[str, Any] = {"schemas": dict(sorted(definitions.items()))}
    if schemes:
        components["securitySchemes"] = dict(sorted(schemes.items()))
    return {"openapi": "3.1.0", "info": info, "paths": paths, "components": components}
