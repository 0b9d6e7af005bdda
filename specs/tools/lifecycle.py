"""The JSON form of a scripted lifecycle (``specs/vectors/lifecycles.json``) and its replay.

A script names a machine (``channel`` or ``arbiter``), the key it runs with, how it starts
(``propose``, ``accept`` or ``register``, with the message bytes), and a list of steps. A step
is one input with its clock value; it expects either the effects and the state summary that
``step()`` gives, or the error code it must fail with (the state then stays as it was). Every
message, in or out, is its canonical encoding in hex, so a second implementation that replays a
script must produce the very same bytes (Ed25519 signatures are deterministic, RFC 8032).

The generator (``specs/tools/make_lifecycles.py``) writes scripts *through* this module — it
builds each input from its JSON form before running it — so every script it writes is
replayable from the JSON alone; ``tests/protocol/test_lifecycle_vectors.py`` replays them.
The field-by-field description is ``specs/vectors/README.md``.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from typing import Any

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ProtocolError
from protocol.messages import (
    BankAccount,
    ChannelAcceptance,
    ChannelProposal,
    ChannelTerms,
)
from protocol.records import Message

State = ch.ChannelState | arb.ArbiterState
MACHINES: dict[str, dict[str, type]] = {
    "channel": {t.__name__: t for t in typing.get_args(ch.Input)},
    "arbiter": {t.__name__: t for t in typing.get_args(arb.Input)},
}
"""The inputs of each machine, by the name a step gives in ``input``."""


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(ch) | vars(arb))


def input_from_json(machine: str, step: dict[str, Any], signer: Signer) -> object:
    """The input a step describes: a message field from its hex bytes, a ``signer`` is the
    script's own key, integers from decimal strings (tuples of them from lists)."""
    cls = MACHINES[machine][step["input"]]
    args: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        kind = _hints(cls)[f.name]
        if f.name == "signer":
            args[f.name] = signer
        elif isinstance(kind, type) and issubclass(kind, Message):
            args[f.name] = kind.decode(bytes.fromhex(step["message"]))
        elif f.name in step:
            value = step[f.name]
            args[f.name] = (tuple(int(v) for v in value) if isinstance(value, list)
                            else value if isinstance(value, str) and kind is str
                            else int(value))
    return cls(**args)


def _value_json(value: object) -> object:
    if isinstance(value, Message):
        return value.encode().hex()
    if isinstance(value, BankAccount):
        return {"scheme": value.scheme, "identification": value.identification,
                "name": value.name}
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def effect_json(effect: object) -> dict[str, Any]:
    """``{"effect": type, field: value…}``: messages as hex, integers as decimal strings
    (``to`` and ``party``, a party index, as numbers)."""
    out: dict[str, Any] = {"effect": type(effect).__name__}
    for f in dataclasses.fields(effect):  # type: ignore[arg-type]
        value = getattr(effect, f.name)
        out[f.name] = value if f.name in ("to", "party") else _value_json(value)
    return out


def state_json(state: State) -> dict[str, Any]:
    """What a step must leave behind, in the terms of the specs (not of one implementation)."""
    if isinstance(state, ch.ChannelState):
        return {
            "phase": state.phase.value,
            "funded": [str(v) for v in state.funded],
            "flows": [{"nonce": str(f.nonce), "amount": str(f.amount),
                       "acked_nonce": str(f.acked_nonce)} for f in state.flows],
            "dispute_deadline_ms": _value_json(state.dispute_deadline_ms),
        }
    return {
        "phase": state.phase.value,
        "deposited": [str(v) for v in state.deposited],
        "evidence_nonces": [None if p is None else str(p.nonce) for p in state.evidence],
        "deadline_ms": _value_json(state.deadline_ms),
    }


def outcome(run: Callable[[], Any]) -> tuple[Any, dict[str, Any]]:
    """Run a start or a step; (its transition or None, what the script records for it)."""
    try:
        t = run()
    except ProtocolError as exc:
        return None, {"error": exc.code.name, "code": int(exc.code)}
    return t, {"effects": [effect_json(e) for e in t.effects], "state": state_json(t.state)}


def start(script: dict[str, Any], signer: Signer) -> Callable[[], Any]:
    """The call that creates the script's first state."""
    begin = script["start"]
    now = int(begin["now_ms"])
    if begin["call"] == "propose":
        terms = ChannelTerms.decode(bytes.fromhex(begin["terms"]))
        return lambda: ch.propose(terms, signer, now_ms=now)
    proposal = ChannelProposal.decode(bytes.fromhex(begin["proposal"]))
    if begin["call"] == "accept":
        return lambda: ch.accept(proposal, signer, now_ms=now)
    acceptance = ChannelAcceptance.decode(bytes.fromhex(begin["acceptance"]))
    return lambda: arb.Transition(arb.register(proposal, acceptance, signer.node_id, now_ms=now))


def run_step(script: dict[str, Any], state: State, step: dict[str, Any],
             signer: Signer) -> tuple[State, dict[str, Any]]:
    """One step: (the state after it — the same state when it failed, what it gave)."""
    machine = script["machine"]
    event = input_from_json(machine, step, signer)
    stepper = ch.step if machine == "channel" else arb.step
    t, got = outcome(lambda: stepper(state, event, now_ms=int(step["now_ms"])))  # type: ignore[arg-type]
    return (state if t is None else t.state), got
