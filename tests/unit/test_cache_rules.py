"""Pure cache rules: Cache-Control parsing, freshness, storability, keys, entries, Cache-Status."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.gateway.cache.control import parse_cache_control, parse_http_date
from gatekeeper.gateway.cache.entry import CacheEntry
from gatekeeper.gateway.cache.exchange import CacheRequest, Headers
from gatekeeper.gateway.cache.keys import (
    normalize_value,
    primary_key,
    secondary_key,
    vary_names,
    vary_values,
)
from gatekeeper.gateway.cache.policy import (
    bypass_reason,
    freshness,
    freshness_lifetime,
    not_storable_reason,
    serve_stale_on_error,
    serve_while_revalidating,
    store_ttl,
)
from gatekeeper.gateway.cache.status import CacheStatus

NOW = 1_700_000_000.0


def entry(headers: Headers, *, at: float = NOW, body: bytes = b"x") -> CacheEntry:
    return CacheEntry(200, headers, body, request_time=at, response_time=at)


def test_cache_control_parses_directives_and_quoted_commas() -> None:
    """Deltas, flags and quoted arguments containing commas parse; unknown ones are ignored."""
    cc = parse_cache_control('Max-Age=60, no-cache="set-cookie, x", s-maxage=10, foo, public')
    assert (cc.max_age, cc.s_maxage, cc.no_cache, cc.public) == (60, 10, True, True)
    assert "foo" in cc.directives


def test_cache_control_malformed_delta_is_absent_and_first_wins() -> None:
    """A non-numeric delta is ignored; of duplicated deltas the first one counts."""
    assert parse_cache_control("max-age=abc").max_age is None
    assert parse_cache_control("max-age=5, max-age=50").max_age == 5
    assert parse_cache_control("max-age=99999999999").max_age == 2**31


def test_max_stale_without_value_accepts_any_staleness() -> None:
    """A bare max-stale means any staleness is acceptable."""
    cc = parse_cache_control("max-stale")
    assert cc.max_stale_any
    assert cc.max_stale is None


@pytest.mark.parametrize(
    "text",
    ["Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994"],
)
def test_http_dates_in_all_three_formats(text: str) -> None:
    """IMF-fixdate and both obsolete HTTP date formats parse to the same instant."""
    assert parse_http_date(text) == 784111777.0


def test_bad_http_date_is_none() -> None:
    """Garbage is not a date."""
    assert parse_http_date("yesterday") is None
    assert parse_http_date(None) is None


def test_freshness_lifetime_precedence() -> None:
    """s-maxage beats max-age beats Expires - Date; a bad Expires means already expired."""
    date = formatdate(NOW, usegmt=True)
    expires = formatdate(NOW + 120, usegmt=True)
    base: Headers = [("date", date), ("expires", expires)]
    assert freshness_lifetime(base, NOW) == 120
    assert freshness_lifetime([*base, ("cache-control", "max-age=30")], NOW) == 30
    cc = ("cache-control", "max-age=30, s-maxage=7")
    assert freshness_lifetime([*base, cc], NOW) == 7
    assert freshness_lifetime([("expires", "0")], NOW) == 0
    assert freshness_lifetime([], NOW) is None


def test_age_counts_age_header_date_and_residence() -> None:
    """Current age = max(apparent age, Age + response delay) + time resident in the cache."""
    headers: Headers = [("date", formatdate(NOW - 5, usegmt=True)), ("age", "3")]
    stored = CacheEntry(200, headers, b"", request_time=NOW - 1, response_time=NOW)
    # apparent age 5 > age 3 + delay 1; then 10 s in the cache
    assert stored.age(NOW + 10) == pytest.approx(15)


def test_entry_serialization_round_trips() -> None:
    """An entry survives to_bytes/from_bytes, binary body included; garbage is refused."""
    original = CacheEntry(
        203, [("etag", '"a"'), ("x", "é")], bytes(range(256)), 1.5, 2.5, {"accept": None}
    )
    assert CacheEntry.from_bytes(original.to_bytes()) == original
    with pytest.raises(ValueError):
        CacheEntry.from_bytes(b"\x00\x00\x00\x05{bad")


def test_304_update_replaces_fields_but_keeps_framing() -> None:
    """Fields of a 304 replace the stored ones; its Content-Length does not."""
    stored = entry([("cache-control", "max-age=1"), ("etag", '"a"'), ("x-keep", "1")])
    updated = stored.with_update(
        [("cache-control", "max-age=9"), ("content-length", "0")], NOW + 5, NOW + 6
    )
    assert updated.header("cache-control") == "max-age=9"
    assert updated.header("x-keep") == "1"
    assert updated.header("content-length") is None
    assert updated.response_time == NOW + 6


def request(method: str = "GET", **fields: str) -> CacheRequest:
    return CacheRequest(method, "h", "/", [(k.replace("_", "-"), v) for k, v in fields.items()])


@pytest.mark.parametrize(
    ("status", "headers", "fields", "reason"),
    [
        (200, [("cache-control", "max-age=1")], {}, None),
        (200, [("etag", '"a"')], {}, None),  # no freshness but revalidatable
        (404, [("cache-control", "max-age=1")], {}, None),
        (206, [("cache-control", "max-age=1")], {}, "status"),
        (500, [("cache-control", "max-age=1")], {}, "status"),
        (200, [("cache-control", "max-age=1, private")], {}, "private"),
        (200, [("cache-control", "max-age=1")], {"authorization": "x"}, "authorization"),
        (200, [("cache-control", "s-maxage=1")], {"authorization": "x"}, None),
        (200, [("cache-control", "max-age=1, must-revalidate")], {"authorization": "x"}, None),
        (200, [("cache-control", "max-age=1"), ("vary", "Accept, *")], {}, "vary-star"),
    ],
)
def test_storability(
    status: int, headers: Headers, fields: dict[str, str], reason: str | None
) -> None:
    """Shared-cache storage rules of RFC 9111 section 3 plus the documented choices."""
    assert not_storable_reason(request(**fields), status, headers) == reason


def test_head_responses_are_not_stored_and_others_bypass() -> None:
    """Only GET responses are stored; non-GET/HEAD and Range requests bypass the cache."""
    assert not_storable_reason(request("HEAD"), 200, [("cache-control", "max-age=1")]) == "method"
    assert bypass_reason(request("POST")) == "method"
    assert bypass_reason(request(range="bytes=0-1")) == "bypass"
    assert bypass_reason(request("HEAD")) is None


def test_request_directives_limit_freshness() -> None:
    """Request no-cache/max-age/min-fresh refuse a fresh entry; max-stale accepts a stale one."""
    stored = entry([("cache-control", "max-age=100")])
    at = NOW + 50
    assert freshness(stored, parse_cache_control(None), at).usable
    assert not freshness(stored, parse_cache_control("no-cache"), at).usable
    assert not freshness(stored, parse_cache_control("max-age=10"), at).usable
    assert not freshness(stored, parse_cache_control("min-fresh=60"), at).usable
    assert freshness(stored, parse_cache_control("no-cache"), at, honor_request=False).usable
    late = NOW + 110
    assert not freshness(stored, parse_cache_control(None), late).usable
    assert freshness(stored, parse_cache_control("max-stale=20"), late).usable
    assert not freshness(stored, parse_cache_control("max-stale=5"), late).usable


def test_stale_windows_and_must_revalidate() -> None:
    """swr/sie windows allow stale use until they end; must-revalidate forbids both."""
    none = parse_cache_control(None)
    stored = entry([("cache-control", "max-age=10, stale-while-revalidate=5, stale-if-error=20")])
    state = freshness(stored, none, NOW + 14)
    assert serve_while_revalidating(stored, state)
    assert serve_stale_on_error(stored, state, none)
    later = freshness(stored, none, NOW + 16)
    assert not serve_while_revalidating(stored, later)
    assert serve_stale_on_error(stored, later, none)
    assert not serve_stale_on_error(stored, freshness(stored, none, NOW + 31), none)
    # a client may ask for stale-if-error itself
    bare = entry([("cache-control", "max-age=10")])
    assert serve_stale_on_error(
        bare, freshness(bare, none, NOW + 15), parse_cache_control("stale-if-error=60")
    )
    strict = entry([("cache-control", "max-age=10, must-revalidate, stale-if-error=20")])
    assert not serve_stale_on_error(strict, freshness(strict, none, NOW + 11), none)


def test_store_ttl_covers_freshness_stale_windows_and_grace() -> None:
    """The store keeps an entry for its freshness, its stale windows, and the validator grace."""
    plain = entry([("cache-control", "max-age=60")])
    assert store_ttl(plain, NOW + 10, validator_grace=300) == 50
    windows = entry([("cache-control", "max-age=60, stale-if-error=600")])
    assert store_ttl(windows, NOW, validator_grace=300) == 660
    validated = entry([("cache-control", "max-age=60"), ("etag", '"a"')])
    assert store_ttl(validated, NOW, validator_grace=300) == 360
    assert store_ttl(plain, NOW + 1000, validator_grace=0) == 1.0


def test_primary_key_shares_get_and_head_and_ignores_host_case() -> None:
    """GET and HEAD of one URI share a key; host case does not matter; query and namespace do."""
    get = CacheRequest("GET", "API.test", "/a?x=1", [])
    head = CacheRequest("HEAD", "api.test", "/a?x=1", [])
    assert primary_key(get) == primary_key(head)
    assert primary_key(get) != primary_key(CacheRequest("GET", "api.test", "/a?x=2", []))
    assert primary_key(get, "r1") != primary_key(get, "r2")


def test_vary_values_are_normalized() -> None:
    """Case of token lists, whitespace around commas and repeated fields do not split variants."""
    assert vary_names("Accept-Encoding, accept-language,") == ("accept-encoding", "accept-language")
    a = vary_values([("Accept-Encoding", "GZIP,  br")], ["accept-encoding"])
    b = vary_values([("accept-encoding", "gzip"), ("accept-encoding", "br")], ["accept-encoding"])
    assert a == b == {"accept-encoding": "gzip,br"}
    assert secondary_key(a) == secondary_key(b)
    absent = vary_values([], ["accept-encoding"])
    empty = vary_values([("accept-encoding", "")], ["accept-encoding"])
    assert secondary_key(absent) != secondary_key(empty)
    assert normalize_value("x-token", ["AbC"]) == "AbC"  # other fields keep their case
    assert secondary_key({}) == ""


@pytest.mark.parametrize(
    ("status", "text"),
    [
        (CacheStatus(hit=True, ttl=41.7), "gk; hit; ttl=41"),
        (CacheStatus(fwd="uri-miss", stored=True, ttl=60), "gk; fwd=uri-miss; stored; ttl=60"),
        (CacheStatus(fwd="stale", fwd_status=304), "gk; fwd=stale; fwd-status=304"),
        (CacheStatus(fwd="miss", collapsed=True), "gk; fwd=miss; collapsed"),
        (CacheStatus(fwd="uri-miss", detail="no store"), 'gk; fwd=uri-miss; detail="no store"'),
    ],
)
def test_cache_status_rendering(status: CacheStatus, text: str) -> None:
    """Cache-Status members render as RFC 9211 structured-field parameters."""
    assert status.render("gk") == text


def test_public_surface_is_sorted_and_complete() -> None:
    """gatekeeper.gateway.cache.__all__ is sorted and names every public attribute."""
    import types

    import gatekeeper.gateway.cache as cache

    public = sorted(
        name
        for name, value in vars(cache).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    )
    assert cache.__all__ == sorted(cache.__all__)
    assert cache.__all__ == public


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_cache_control_parsing_never_fails(value: str) -> None:
    """Any Cache-Control text parses (unknown or malformed parts are ignored), deltas stay >= 0."""
    control = parse_cache_control(value)
    for delta in (control.max_age, control.s_maxage, control.stale_if_error):
        assert delta is None or 0 <= delta <= 2**31


@settings(max_examples=200, deadline=None)
@given(
    status=st.integers(100, 599),
    headers=st.lists(st.tuples(st.text(min_size=1, max_size=10), st.text(max_size=20)), max_size=5),
    body=st.binary(max_size=200),
    times=st.tuples(st.floats(0, 2e9), st.floats(0, 2e9)),
)
def test_entry_serialization_round_trips_anything(
    status: int, headers: list[tuple[str, str]], body: bytes, times: tuple[float, float]
) -> None:
    """Any entry survives serialization for the Redis store unchanged."""
    original = CacheEntry(status, headers, body, times[0], times[1], {"accept": "x", "b": None})
    assert CacheEntry.from_bytes(original.to_bytes()) == original
