"""Bring stored payloads of older schema versions up to the current shape, on read.

The log is never rewritten (it is append-only by construction), so an event type that
changes shape gets a new ``VERSION`` and an upcaster from each older version here.
Readers call :func:`decode`; nothing else needs to know old shapes existed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from events.errors import InvalidCommand
from events.model import EVENT_TYPES, Event

Payload = dict[str, Any]


def _reputation_v1_to_v2(p: Payload) -> Payload:
    # v1 kept the score as a float in 0..1, which does not round-trip byte-identically
    # through every JSON encoder; v2 keeps integer milli-points.
    out = dict(p)
    out["score"] = round(float(p["score"]) * 1000)
    out.setdefault("delta", 0)
    out.setdefault("cause", "legacy")
    return out


def _configured_v1_to_v2(p: Payload) -> Payload:
    # v1 was written under R9's first reading: no recovery, a floor ban at the first breach.
    return {**p, "participation_reward": 0, "floor_ban_after": 1}


UPCASTERS: dict[tuple[str, int], Callable[[Payload], Payload]] = {
    ("ReputationChanged", 1): _reputation_v1_to_v2,
    ("ClusterConfigured", 1): _configured_v1_to_v2,
}


def upcast(event_type: str, version: int, payload: Payload) -> Payload:
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise InvalidCommand(f"unknown event type {event_type!r}")
    if version > cls.VERSION:
        raise InvalidCommand(f"{event_type} v{version} is newer than this code (v{cls.VERSION})")
    while version < cls.VERSION:
        step = UPCASTERS.get((event_type, version))
        if step is None:
            raise InvalidCommand(f"no upcaster for {event_type} v{version}")
        payload = step(payload)
        version += 1
    return payload


def decode(event_type: str, version: int, payload: Payload) -> Event:
    """A stored (type, version, payload) as the current event class; bad payloads raise InvalidCommand."""
    if not isinstance(event_type, str) or isinstance(version, bool) or not isinstance(version, int):
        raise InvalidCommand("event type must be a string and schema version an integer")
    if not isinstance(payload, dict):
        raise InvalidCommand(f"{event_type} payload must be a JSON object")
    try:
        return EVENT_TYPES[event_type].from_payload(upcast(event_type, version, payload))
    except InvalidCommand:
        raise
    except (KeyError, TypeError, ValueError, OverflowError, AttributeError) as e:
        raise InvalidCommand(f"malformed {event_type} v{version} payload: {type(e).__name__}: {e}"[:300]) from None
