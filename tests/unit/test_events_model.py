"""The event model: the CloudEvents envelope, type filters, and the public surface."""

from __future__ import annotations

import json
import types

import pytest

import gatekeeper.events as events
from gatekeeper.errors import InvalidInput
from gatekeeper.events.model import EVENT_TYPES, Event, check_patterns, matches

ISSUE_TYPES = {
    "tier.changed", "key.blocked", "key.unblocked", "key.banned", "key.unbanned", "ip.banned",
    "ip.unbanned", "abuse.detected", "ratelimit.spike", "upstream.down", "upstream.up",
    "breaker.opened", "breaker.closed", "waitingroom.queueing", "waitingroom.drained",
    "limiter.degraded", "limiter.recovered",
}  # fmt: skip


def test_every_type_the_issue_names_is_in_the_catalogue() -> None:
    """The catalogue holds each event type of issue 18 (plus the admin's test event)."""
    assert set(EVENT_TYPES) >= ISSUE_TYPES
    assert set(EVENT_TYPES) - ISSUE_TYPES == {"test"}


def test_the_envelope_is_cloudevents_1_0_and_round_trips() -> None:
    """specversion, id, source, prefixed type, RFC 3339 time, subject, dataschema with a
    version; from_json gives the same event back (same id)."""
    event = Event(
        "ip.banned", {"ip": "10.0.0.1", "seconds": 300}, 1_700_000_000.25, "gk/a/1", "ip:10.0.0.1"
    )
    body = json.loads(event.to_json())
    assert body["specversion"] == "1.0"
    assert body["type"] == "gatekeeper.ip.banned"
    assert body["time"] == "2023-11-14T22:13:20.250000Z"
    assert body["subject"] == "ip:10.0.0.1"
    assert body["datacontenttype"] == "application/json"
    assert body["dataschema"] == "urn:gatekeeper:event:ip.banned:v1"
    assert body["data"] == {"ip": "10.0.0.1", "seconds": 300}
    assert len(body["id"]) == 36
    again = Event.from_json(event.to_json())
    assert again == event


def test_two_events_never_share_an_id() -> None:
    """The idempotency id is unique per event."""
    ids = {Event("test", {}, 0.0, "s").id for _ in range(1000)}
    assert len(ids) == 1000


def test_filters_match_exact_types_families_and_everything() -> None:
    """``*`` matches all, ``key.*`` the key family only, an exact name itself only."""
    assert matches(("*",), "key.banned")
    assert matches(("key.*",), "key.banned")
    assert not matches(("key.*",), "ip.banned")
    assert matches(("ip.banned",), "ip.banned")
    assert not matches(("ip.banned",), "ip.unbanned")
    assert not matches((), "key.banned")


@pytest.mark.parametrize("bad", ["nope", "key.nope", "nothing.*", "key*", ""])
def test_unknown_filters_are_refused_naming_the_pattern(bad: str) -> None:
    """A filter that can never match is refused (422 in the admin API), naming it."""
    with pytest.raises(InvalidInput, match="unknown event type"):
        check_patterns(["key.banned", bad])


def test_the_public_surface_is_sorted_and_complete() -> None:
    """gatekeeper.events.__all__ is sorted and names every public attribute."""
    public = sorted(
        name
        for name, value in vars(events).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType)
        and name != "annotations"
    )
    assert events.__all__ == sorted(events.__all__) == public
