"""A stored response and its serialized form.

An entry keeps what RFC 9111 section 4.2.3 needs to compute its age (the ``Date`` and ``Age``
fields, and when the request was sent and the response received on the cache's clock), the
request header values it was selected by (``Vary``), and the whole body.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field, replace

from gatekeeper.gateway.cache.control import (
    CacheControl,
    explicit_lifetime,
    parse_cache_control,
    parse_http_date,
)
from gatekeeper.gateway.cache.exchange import Headers

__all__ = ["CacheEntry"]

_META_LENGTH = struct.Struct("!I")
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One stored response: status, headers, body and the times its freshness depends on.

    What every hit needs (parsed Cache-Control, lifetime, initial age, validators, the fields
    to send) is computed once, when the entry is made, not on each use.
    """

    status: int
    headers: Headers
    body: bytes
    request_time: float
    response_time: float
    vary: dict[str, str | None] = field(default_factory=dict)
    # The route's lifetime for a response that gives none (see cache/policy.py), or None.
    default_lifetime: float | None = None
    cache_control: CacheControl = field(init=False, compare=False, repr=False)
    lifetime: float | None = field(init=False, compare=False, repr=False)
    """Explicit freshness lifetime, else the route's default (``None``: neither)."""
    etag: str | None = field(init=False, compare=False, repr=False)
    last_modified: str | None = field(init=False, compare=False, repr=False)
    serve_headers: Headers = field(init=False, compare=False, repr=False)
    """The fields sent to clients, before ``Content-Length``, ``Age`` and ``Cache-Status``."""
    serve_lines: bytes | None = field(init=False, compare=False, repr=False)
    """``serve_headers`` as the gateway writes them (``name: value\\r\\n``, lower-case names),
    encoded once for the express lane's hits; ``None`` if a field is not Latin-1."""
    _fields: dict[str, str] = field(init=False, compare=False, repr=False)
    _initial_age: float = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        fields: dict[str, str] = {}
        for key, value in self.headers:
            name = key.lower()
            fields[name] = f"{fields[name]}, {value}" if name in fields else value
        control = parse_cache_control(fields.get("cache-control"))
        date = parse_http_date(fields.get("date"))
        apparent_age = max(0.0, self.response_time - date) if date is not None else 0.0
        age_field = fields.get("age")
        try:
            age_value = float(int(age_field.split(",")[0].strip())) if age_field else 0.0
        except ValueError:
            age_value = 0.0
        response_delay = max(0.0, self.response_time - self.request_time)
        set_ = object.__setattr__
        set_(self, "_fields", fields)
        set_(self, "cache_control", control)
        set_(self, "_initial_age", max(apparent_age, age_value + response_delay))
        explicit = explicit_lifetime(
            control, fields.get("expires"), fields.get("date"), self.response_time
        )
        set_(self, "lifetime", explicit if explicit is not None else self.default_lifetime)
        set_(self, "etag", fields.get("etag"))
        set_(self, "last_modified", fields.get("last-modified"))
        serve = [(k, v) for k, v in self.headers if k.lower() not in {"age", "content-length"}]
        set_(self, "serve_headers", serve)
        try:
            lines: bytes | None = b"".join(
                b"%s: %s\r\n" % (k.lower().encode("latin-1"), v.encode("latin-1"))
                for k, v in serve
                if k.lower() != "transfer-encoding"
            )
        except UnicodeEncodeError:
            lines = None
        set_(self, "serve_lines", lines)

    def header(self, name: str) -> str | None:
        """The combined value of header ``name`` of the stored response."""
        return self._fields.get(name.lower())

    @property
    def has_validator(self) -> bool:
        """Whether the entry can be revalidated with a conditional request."""
        return self.etag is not None or self.last_modified is not None

    @property
    def size(self) -> int:
        """Approximate bytes held: the body plus the header fields."""
        return len(self.body) + sum(len(k) + len(v) + 4 for k, v in self.headers) + 64

    def age(self, now: float) -> float:
        """The current age per RFC 9111 4.2.3, on the cache's clock ``now``."""
        return self._initial_age + max(0.0, now - self.response_time)

    def with_update(
        self, headers: Headers, request_time: float, response_time: float
    ) -> CacheEntry:
        """The entry freshened by a 304: its fields replaced by those the 304 carries.

        RFC 9111 4.3.4: every field of the 304 replaces the stored one, except the framing
        fields, which describe the (absent) 304 body rather than the stored one.
        """
        keep_out = {"content-length", "transfer-encoding", "content-encoding", "content-range"}
        updates = [(k, v) for k, v in headers if k.lower() not in keep_out]
        names = {k.lower() for k, _ in updates}
        merged = [(k, v) for k, v in self.headers if k.lower() not in names] + updates
        return replace(self, headers=merged, request_time=request_time, response_time=response_time)

    def to_bytes(self) -> bytes:
        """A compact serialization: a length-prefixed JSON header, then the raw body."""
        meta = json.dumps(
            [_FORMAT, self.status, self.headers, self.request_time, self.response_time,
             self.vary, self.default_lifetime],
            separators=(",", ":"),
        ).encode()  # fmt: skip
        return _META_LENGTH.pack(len(meta)) + meta + self.body

    @classmethod
    def from_bytes(cls, data: bytes) -> CacheEntry:
        """The inverse of :meth:`to_bytes`. Raises ``ValueError`` on foreign or corrupt data."""
        if len(data) < _META_LENGTH.size:
            raise ValueError("cache entry too short")
        (length,) = _META_LENGTH.unpack_from(data)
        end = _META_LENGTH.size + length
        try:
            fields = json.loads(data[_META_LENGTH.size : end])
            fmt, status, headers, request_time, response_time, vary = fields[:6]
            # (Entries written before default lifetimes existed have six members.)
            default = fields[6] if len(fields) > 6 else None
        except (ValueError, TypeError) as exc:
            raise ValueError("corrupt cache entry") from exc
        if fmt != _FORMAT:
            raise ValueError(f"unknown cache entry format {fmt!r}")
        return cls(
            status=int(status),
            headers=[(str(k), str(v)) for k, v in headers],
            body=data[end:],
            request_time=float(request_time),
            response_time=float(response_time),
            vary=dict(vary),
            default_lifetime=None if default is None else float(default),
        )
