"""specs/vectors/lifecycles.json replayed against protocol/: every step's effects byte for byte.

Each script starts a machine from the message bytes it names and feeds it its steps, with their
clock values; a step's effects (every message in them as its canonical bytes) and the state
summary must equal what the script recorded, and a step that must fail must fail with its code
and leave the state as it was. A second implementation replays the same file.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from protocol.crypto import Signer
from protocol.errors import ErrorCode
from protocol.messages import (
    ChannelAcceptance,
    ChannelProposal,
    CooperativeClose,
    DisputeNotice,
    FundingConfirmation,
    PayoutNotice,
    Signed,
    TransferNotice,
)
from protocol.records import Message, decode_message
from specs.tools.blocks import SPECS
from specs.tools.lifecycle import outcome, run_step, start, state_json

VECTORS = json.loads((SPECS / "vectors" / "lifecycles.json").read_text(encoding="utf-8"))
SCRIPTS = {s["name"]: s for s in VECTORS["scripts"]}
KEYS = {label: Signer.from_label(label).node_id for label in VECTORS["keys"]}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_script_replays_byte_for_byte(name: str) -> None:
    script = SCRIPTS[name]
    signer = Signer.from_label(script["us"])
    t, got = outcome(start(script, signer))
    assert got == script["start"]["expect"]
    if t is None:
        assert not script["steps"], "a script whose start fails has no steps"
        return
    state = t.state
    for i, step in enumerate(script["steps"]):
        before = state_json(state)
        state, got = run_step(script, state, step, signer)
        assert got == step["expect"], f"{name} step {i} ({step['input']})"
        if "error" in got:
            assert state_json(state) == before, f"{name} step {i}: a refusal changed the state"


def _messages(expect: dict[str, Any]) -> list[str]:
    return [v for e in expect.get("effects", []) for k, v in e.items()
            if isinstance(v, str) and k in ("proposal", "acceptance", "proof", "receipt",
                                            "close", "claim", "evidence", "confirmation",
                                            "notice")]


def _verify(message: Message) -> None:
    """Each signature in an output verifies for the labelled key its layout names."""
    if isinstance(message, CooperativeClose):
        for field, who in (("opener_signature", "opener"), ("peer_signature", "peer")):
            if getattr(message, field):
                message.verify_signature(KEYS[who], field)
    elif isinstance(message, FundingConfirmation | PayoutNotice | DisputeNotice | TransferNotice):
        message.verify_signature(KEYS["arbiter"])
    elif isinstance(message, ChannelProposal):
        message.verify_signature(message.terms.opener)
    elif isinstance(message, Signed) and not isinstance(message, ChannelAcceptance):
        message.verify_signature(getattr(message, message.FIELDS[1][0]))
    assert isinstance(message, Signed)


def test_every_output_message_is_canonical_and_signed_by_a_party() -> None:
    """The bytes a script expects out decode canonically and re-encode to themselves, and every
    signature in them is by one of the labelled keys (nothing is an arbitrary blob)."""
    seen = 0
    for script in VECTORS["scripts"]:
        expects = [script["start"]["expect"], *(s["expect"] for s in script["steps"])]
        for hexed in (h for e in expects for h in _messages(e)):
            message = decode_message(bytes.fromhex(hexed))
            assert message.encode().hex() == hexed
            _verify(message)
            seen += 1
    assert seen > 20


def test_scripts_cover_the_lifecycle_and_each_rejection() -> None:
    """The issue's list: accept, fund, stream with receipts, each rejection path, cooperative
    close, unilateral close with evidence, payout."""
    inputs = {s["input"] for script in VECTORS["scripts"] for s in script["steps"]}
    assert {"ReceiveFunding", "ReceiveProof", "ActionAcknowledge", "ReceiveReceipt",
            "ReceiveClose", "ActionClose", "ReceiveUnilateralClose", "ReceiveEvidence",
            "ReceiveDisputeNotice", "ActionSubmitEvidence", "ReceivePayout",
            "ReceiveCooperativeClose", "ObservePayoutBooked", "Tick"} <= inputs
    codes = {s["expect"]["error"] for script in VECTORS["scripts"] for s in script["steps"]
             if "error" in s["expect"]}
    codes |= {s["start"]["expect"]["error"] for s in VECTORS["scripts"]
              if "error" in s["start"]["expect"]}
    assert {"BAD_SIGNATURE", "NONCE_GAP", "NONCE_REPLAY", "CAPACITY_EXCEEDED",
            "TARIFF_MISMATCH", "INVALID_TARIFF", "INVALID_TERMS", "NOT_A_PARTY",
            "WRONG_CHANNEL", "INVALID_STATE", "AMOUNT_REGRESSION", "USAGE_DIGEST_MISMATCH",
            "DISPUTE_WINDOW_CLOSED", "DEPOSIT_MISMATCH", "CLOSE_MISMATCH"} <= codes
    assert all(ErrorCode[c] for c in codes)
    phases = {s["expect"]["state"]["phase"] for script in VECTORS["scripts"]
              for s in script["steps"] if "state" in s["expect"]}
    assert {"accepted", "open", "closing", "closed", "disputed", "settled", "funding",
            "dispute", "paying"} <= phases


def test_the_precedence_script_orders_the_layers() -> None:
    """specs/0002 §6.3, as the vectors pin it: phase, then addressing, then the signature,
    then the channel rules; the signature before the terms of a proposal."""
    codes = [s["expect"].get("error") for s in SCRIPTS["peer-error-precedence"]["steps"]]
    assert [c for c in codes if c] == ["INVALID_STATE", "WRONG_CHANNEL", "NOT_A_PARTY",
                                       "WRONG_CHANNEL", "BAD_SIGNATURE", "NONCE_GAP"]
    both = SCRIPTS["accept-refuses-bad-signature-before-terms"]["start"]["expect"]
    assert both["error"] == "BAD_SIGNATURE"


def test_keys_are_the_labelled_keys() -> None:
    proposal = SCRIPTS["peer-accept-fund-stream-close-payout"]["start"]["proposal"]
    terms = decode_message(bytes.fromhex(proposal)).terms  # type: ignore[attr-defined]
    assert (terms.opener, terms.peer, terms.arbiter) == (KEYS["opener"], KEYS["peer"],
                                                          KEYS["arbiter"])
