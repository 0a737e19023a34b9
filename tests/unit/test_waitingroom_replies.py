"""The hand-formatted enqueue and status answers are byte for byte what json.dumps writes."""

from __future__ import annotations

import itertools
import json
from typing import Any

from gatekeeper.endpoints import Reply
from gatekeeper.waitingroom.replies import _enqueue_ok, _status_ok
from gatekeeper.waitingroom.service import EnqueueAnswer, Eta, StatusAnswer

TEXTS = [
    "",
    "eyJhbGciOi.x-y_z.AB",
    'say "hi"',
    "back\\slash",
    "caf\u00e9",
    "tab\there",
    "\U0001f600",
]
POSITIONS: list[Any] = [None, 1, 12_345]
ETAS: list[Any] = [None, Eta(7, 5, 9, 1.5), Eta(0, 0, 0, 2.0), Eta(3, 2, 4, 0.1)]


def dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def ok(body: dict[str, Any]) -> Reply:
    """A 200 JSON reply of exactly ``json.dumps``'s bytes."""
    return Reply(200, [(b"content-type", b"application/json")], dumps(body))


def eta_fields(eta: Eta | None) -> dict[str, Any]:
    if eta is None:
        return {}
    return {
        "eta_seconds": eta.seconds,
        "eta_range_seconds": [eta.low, eta.high],
        "poll_after_seconds": eta.poll_after,
    }


def test_enqueue_answers() -> None:
    """Every enqueue answer, plain or not, is a 200 JSON reply of json.dumps's bytes."""
    for jwt, position, message, ready, eta in itertools.product(
        TEXTS, POSITIONS, TEXTS[:4], (False, True), ETAS
    ):
        answer = EnqueueAnswer(jwt, position, message, ready, eta)
        body: dict[str, Any] = {"jwt": jwt, "position": position, "message": message}
        if ready:
            body["ready"] = True
        body.update(eta_fields(eta))
        assert _enqueue_ok(answer) == ok(body), answer


def test_status_answers() -> None:
    """Every status answer, plain or not, is a 200 JSON reply of json.dumps's bytes."""
    for warning, token, position, ready, eta in itertools.product(
        [None, *TEXTS], TEXTS, POSITIONS, (False, True), ETAS
    ):
        answer = StatusAnswer(warning, token, position, ready, eta)
        body = {"warning_msg": warning, "jwt_token": token, "position": position, "ready": ready}
        body.update(eta_fields(eta))
        assert _status_ok(answer) == ok(body), answer


def test_unusual_numbers_take_the_general_encoder() -> None:
    """Numbers of other types (a float position, an int poll interval) are still exact."""
    odd = Eta(7, 5, 9, 2)  # type: ignore[arg-type]
    answer = StatusAnswer(None, "t", 3.0, False, odd)  # type: ignore[arg-type]
    expected = {"warning_msg": None, "jwt_token": "t", "position": 3.0, "ready": False}
    assert _status_ok(answer).body == dumps({**expected, **eta_fields(odd)})
