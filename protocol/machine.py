"""What both state machines do around their handlers: look the input up in the transition table,
refuse what is not there with a typed error, and check the handler landed where the table says."""

from __future__ import annotations

import enum
import re
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
        raise err(ErrorCode.INVALID_STATE, not_allowed(event, phase, noun=noun))
    return allowed


def not_allowed(event: object, phase: enum.Enum, *, noun: str) -> str:
    """The refusal in words an operator reads, never a class name: ``ActionForceClose`` in
    phase settled is "cannot force close: the channel is settled"."""
    name = type(event).__name__
    for prefix, form in (("Action", "cannot {}"), ("Receive", "a {} is not expected"),
                         ("Observe", "a {} is not expected")):
        if name.startswith(prefix) and len(name) > len(prefix):
            words = re.sub(r"(?<!^)(?=[A-Z])", " ", name[len(prefix):]).lower()
            return f"{form.format(words)}: the {noun} is {phase.value}"
    words = re.sub(r"(?<!^)(?=[A-Z])", " ", name).lower()
    return f"a {words} is not expected: the {noun} is {phase.value}"


def check_landed(
    allowed: frozenset[enum.Enum], before: enum.Enum, after: enum.Enum, event: object
) -> None:
    """A handler that leaves the table is a bug in the handler, never the peer's doing."""
    if after not in allowed:
        raise AssertionError(f"{type(event).__name__}: {before} → {after}")
