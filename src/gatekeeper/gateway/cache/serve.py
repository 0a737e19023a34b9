"""Building client responses from stored entries, and answering clients' conditional requests."""

from __future__ import annotations

from gatekeeper.gateway.cache.control import parse_http_date
from gatekeeper.gateway.cache.entry import CacheEntry
from gatekeeper.gateway.cache.exchange import (
    CacheRequest,
    CacheResponse,
    Headers,
    iterate_once,
    without_headers,
)

__all__ = [
    "HOP_BY_HOP",
    "add_cache_status",
    "client_conditional_matches",
    "conditional_headers",
    "response_from_entry",
    "storable_headers",
]

# Fields that describe one connection or one transfer, never the stored representation.
HOP_BY_HOP = frozenset({
    "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
    "upgrade", "proxy-authenticate", "proxy-authorization",
})  # fmt: skip
# RFC 9110 15.4.5: what a 304 carries of the selected representation's fields.
_NOT_MODIFIED_FIELDS = frozenset(
    {"cache-control", "content-location", "date", "etag", "expires", "vary", "last-modified"}
)
_CONDITIONALS = ("if-none-match", "if-modified-since")


def storable_headers(headers: Headers) -> Headers:
    """The response fields worth storing: without hop-by-hop fields, framing and ``Age``.

    ``Connection: x`` also names fields that are hop-by-hop for this message only.
    """
    named = {
        token.strip().lower()
        for key, value in headers
        if key.lower() == "connection"
        for token in value.split(",")
    }
    return without_headers(headers, HOP_BY_HOP | named | {"content-length"})


def add_cache_status(headers: Headers, value: str) -> Headers:
    """``headers`` with our Cache-Status member appended after any the upstream chain set."""
    return [*headers, ("cache-status", value)]


def _etag_matches(if_none_match: str, etag: str | None) -> bool:
    """Weak comparison (RFC 9110 13.1.2): ``W/`` prefixes are ignored."""
    if if_none_match.strip() == "*":
        return etag is not None
    if etag is None:
        return False
    ours = etag.strip().removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == ours for tag in if_none_match.split(","))


def client_conditional_matches(request: CacheRequest, entry: CacheEntry) -> bool:
    """Whether the client's own If-None-Match / If-Modified-Since make a 304 the answer."""
    if entry.status != 200:
        return False
    if_none_match = request.header("if-none-match")
    if if_none_match is not None:  # when present, If-Modified-Since is ignored (RFC 9110 13.2.2)
        return _etag_matches(if_none_match, entry.etag)
    since = parse_http_date(request.header("if-modified-since"))
    modified = parse_http_date(entry.last_modified)
    return since is not None and modified is not None and modified <= since


def conditional_headers(request: CacheRequest, entry: CacheEntry) -> Headers:
    """The request's fields with the client's validators replaced by the stored entry's."""
    headers = without_headers(request.headers, _CONDITIONALS)
    if entry.etag is not None:
        headers.append(("if-none-match", entry.etag))
    if entry.last_modified is not None:
        headers.append(("if-modified-since", entry.last_modified))
    return headers


def response_from_entry(
    entry: CacheEntry, request: CacheRequest, now: float, cache_status: str
) -> CacheResponse:
    """The client's response from a stored entry: ``Age`` set, 304 or body as appropriate."""
    age = str(int(entry.age(now)))
    base = entry.serve_headers
    if (
        request.header("if-none-match") is not None
        or request.header("if-modified-since") is not None
    ) and client_conditional_matches(request, entry):
        fields = [(k, v) for k, v in base if k.lower() in _NOT_MODIFIED_FIELDS]
        headers = add_cache_status([*fields, ("age", age)], cache_status)
        return CacheResponse(304, headers, iterate_once(b""), b"")
    headers = [*base, ("content-length", str(len(entry.body))), ("age", age)]
    body = b"" if request.method.upper() == "HEAD" else entry.body
    headers = add_cache_status(headers, cache_status)
    return CacheResponse(entry.status, headers, iterate_once(body), body)
