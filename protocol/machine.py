"""What both state machines do around their handlers: look the input up in the transition table,
refuse what is not there with a typed error, and check the handler landed where the table says."""

from __future__ import annotations

import enum
from collections.abc import Mapping

from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError


def allowed_phases(
    table: Mapping[tuple[enum.Enum, type], frozenset[enum.Enum]],
    phase: enum.Enum,
    event: object,
    *,
    local: bool,
    noun: str,
) -> frozenset[enum.Enum]:
    """The phases `event` may lead to from `phase`; INVALID_STATE when it is not in the table
    (a LocalProtocolError for our own actions, a RemoteProtocolError for the peer's input)."""
    allowed = table.get((phase, type(event)))
    if allowed is None:
        err = LocalProtocolError if local else RemoteProtocolError
        raise err(
            ErrorCode.INVALID_STATE,
            f"{type(event).__name__} is not allowed when the {noun} is {phase.value}",
        )
    return allowed


def check_landed(
    allowed: frozenset[enum.Enum], before: enum.Enum, after: enum.Enum, event: object
) -> None:
    """A handler that leaves the table is a bug in the handler, never the peer's doing."""
    if after not in allowed:
        raise AssertionError(f"{type(event).__name__}: {before} → {after}")
