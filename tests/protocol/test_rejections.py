"""Every rejection path: the typed error, its ErrorCode, and the state left exactly as it was.

A rejected input must change nothing (specs/0002-wire.md §6, DESIGN §9): each case snapshots
the state, feeds the bad input, and compares; most then show the state still takes the next
valid input.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    ChannelAcceptance,
    ChannelProposal,
    DisputeEvidence,
    FundingConfirmation,
    PayoutNotice,
    Receipt,
    UnilateralClose,
    next_usage_digest,
)
from protocol.simulation import Simulation
from protocol.tariff import tariff_amount
from protocol.types import Amount, ChannelId, MinorUnits, NodeId, Nonce, Quantity, Signature

NOW = 1_800_000_000_000


def rejects(
    state: Any,
    event: Any,
    error: type[ProtocolError],
    code: ErrorCode,
    *,
    machine: Any = ch,
) -> None:
    """`event` raises exactly `error` with `code`, and `state` is unchanged."""
    before = copy.deepcopy(state)
    with pytest.raises(ProtocolError) as info:
        machine.step(state, event, now_ms=NOW)
    assert type(info.value) is error, info.value
    assert info.value.code is code, info.value
    assert state == before


def forge(
    s: Simulation,
    party: int,
    delta: tuple[int, ...] = (1_000,),
    *,
    signer: Signer | None = None,
    direct: int = 0,
    **overrides: Any,
) -> BalanceProof:
    """The next proof from `party` as the receiver sees that flow, with fields overridden.

    The usage digest is chained over the final fields unless `usage_digest` is overridden; the
    signature is `signer`'s (default: the sender's) over the final body.
    """
    flow = s.states[1 - party].received
    quantities = tuple(Quantity(a + b) for a, b in zip(flow.quantities, delta, strict=True))
    direct_total = flow.direct_amount + direct
    fields: dict[str, Any] = {
        "channel_id": s.terms.channel_id,
        "sender": s.terms.parties()[party],
        "nonce": Nonce(flow.nonce + 1),
        "amount": Amount(tariff_amount(s.terms.tariff, quantities) + direct_total),
        "direct_amount": Amount(direct_total),
        "quantities": quantities,
        "reference": "",
        "time_ms": NOW,
    }
    fields.update(overrides)
    if "usage_digest" not in fields:
        fields["usage_digest"] = next_usage_digest(
            flow.usage_digest,
            nonce=fields["nonce"],
            amount=fields["amount"],
            direct_amount=fields["direct_amount"],
            quantities=fields["quantities"],
            reference=fields["reference"],
            time_ms=fields["time_ms"],
        )
    proof = BalanceProof(**fields, signature=EMPTY_SIGNATURE)
    return proof.signed_by(signer or s.signer(party))


def receive(s: Simulation, receiver: int, proof: BalanceProof) -> None:
    s.states[receiver] = ch.step(s.states[receiver], ch.ReceiveProof(proof), now_ms=NOW).state


def accepts_next(s: Simulation, sender: int) -> None:
    """The receiver still takes the next valid proof after a rejection."""
    proof = forge(s, sender)
    receive(s, 1 - sender, proof)
    assert s.states[1 - sender].received.proof == proof


# -- authentication ---------------------------------------------------------------------------


def test_bit_flipped_signature(sim: Simulation) -> None:
    proof = forge(sim, 0)
    for i in (0, 31, 63):
        sig = bytearray(proof.signature)
        sig[i] ^= 0x01
        bad = replace(proof, signature=Signature(bytes(sig)))
        rejects(sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.BAD_SIGNATURE)
    accepts_next(sim, 0)


def test_a_tampered_field_breaks_the_signature(sim: Simulation) -> None:
    proof = forge(sim, 0)
    bad = replace(proof, reference="SHIPMENT-9")  # digest then also fails; signature first
    rejects(sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.BAD_SIGNATURE)


def test_signed_by_a_third_key(sim: Simulation, third: Signer) -> None:
    proof = forge(sim, 0, signer=third)  # claims to be the opener's
    rejects(sim.states[1], ch.ReceiveProof(proof), RemoteProtocolError, ErrorCode.BAD_SIGNATURE)
    impostor = forge(sim, 0, signer=third, sender=third.node_id)  # says who it is
    rejects(sim.states[1], ch.ReceiveProof(impostor), RemoteProtocolError, ErrorCode.NOT_A_PARTY)
    accepts_next(sim, 0)


def test_our_own_proof_is_not_the_peers(sim: Simulation) -> None:
    mine = forge(sim, 1)  # a proof from the peer, handed back to the peer
    rejects(sim.states[1], ch.ReceiveProof(mine), RemoteProtocolError, ErrorCode.NOT_A_PARTY)


def test_other_channels_proof(sim: Simulation, make_sim: Callable[..., Simulation]) -> None:
    other = make_sim(salt=b"\x01" * 16)  # same parties, same terms, another channel
    other.open()
    assert other.terms.channel_id != sim.terms.channel_id
    proof = forge(other, 0)
    rejects(sim.states[1], ch.ReceiveProof(proof), RemoteProtocolError, ErrorCode.WRONG_CHANNEL)
    accepts_next(sim, 0)


def test_pay_with_a_key_that_is_not_ours(sim: Simulation, third: Signer) -> None:
    event = ch.ActionPay(third, (Quantity(1),))
    rejects(sim.states[0], event, LocalProtocolError, ErrorCode.NOT_A_PARTY)
    event = ch.ActionPay(sim.peer, (Quantity(1),))
    rejects(sim.states[0], event, LocalProtocolError, ErrorCode.NOT_A_PARTY)


# -- nonces -----------------------------------------------------------------------------------


def test_nonce_replay_and_regression(sim: Simulation) -> None:
    first = forge(sim, 0)
    receive(sim, 1, first)
    second = forge(sim, 0)
    receive(sim, 1, second)
    # the very same latest proof again is idempotent, not an error
    again = ch.step(sim.states[1], ch.ReceiveProof(second), now_ms=NOW)
    assert again.state.received == sim.states[1].received
    assert again.effects == ()
    # an older proof: replay
    rejects(sim.states[1], ch.ReceiveProof(first), RemoteProtocolError, ErrorCode.NONCE_REPLAY)
    # a freshly signed proof that reuses a nonce with other contents: regression
    for nonce in (0, 1, 2):
        bad = forge(sim, 0, (5_000,), nonce=Nonce(nonce))
        rejects(sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.NONCE_REPLAY)
    accepts_next(sim, 0)


def test_nonce_gap(sim: Simulation) -> None:
    receive(sim, 1, forge(sim, 0))
    for skip in (2, 3, 2**63):
        bad = forge(sim, 0, nonce=Nonce(1 + skip))
        rejects(sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.NONCE_GAP)
    accepts_next(sim, 0)


def test_a_lost_proof_is_a_gap(sim: Simulation) -> None:
    """Built on the sender, delivered out of order: the receiver refuses the later one."""
    lost = ch.step(sim.states[0], ch.ActionPay(sim.opener, (Quantity(1),)), now_ms=NOW)
    later = ch.step(lost.state, ch.ActionPay(sim.opener, (Quantity(1),)), now_ms=NOW)
    (send,) = later.effects
    assert isinstance(send, ch.SendProof)
    rejects(sim.states[1], ch.ReceiveProof(send.proof), RemoteProtocolError, ErrorCode.NONCE_GAP)


# -- amounts ----------------------------------------------------------------------------------


def test_amount_that_disagrees_with_the_tariff(sim: Simulation) -> None:
    proof = forge(sim, 0)
    for amount in (proof.amount + 1, proof.amount - 1):
        bad = forge(sim, 0, amount=Amount(amount))
        rejects(sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.TARIFF_MISMATCH)
    # the direct part must be counted exactly once
    bad = forge(sim, 0, direct=500, amount=Amount(proof.amount))
    rejects(sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.TARIFF_MISMATCH)
    # one quantity per tariff line
    bad = forge(sim, 0, quantities=(Quantity(1_000), Quantity(0)), amount=Amount(12_300))
    rejects(sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.TARIFF_MISMATCH)
    accepts_next(sim, 0)


def test_capacity_overflow_as_our_own_action(sim: Simulation) -> None:
    # the peer deposited 50.00 EUR and has received nothing: 50_000_000 at scale 6
    cap = sim.states[1].capacity(1)
    assert cap == 50_000_000
    over = ch.ActionPay(sim.peer, (Quantity(0),), Amount(cap + 1))
    rejects(sim.states[1], over, LocalProtocolError, ErrorCode.CAPACITY_EXCEEDED)
    metered = ch.ActionPay(sim.peer, (Quantity(4_065_041),))  # 4065.041 km = 50.0000043 EUR
    rejects(sim.states[1], metered, LocalProtocolError, ErrorCode.CAPACITY_EXCEEDED)
    exact = ch.step(sim.states[1], ch.ActionPay(sim.peer, (Quantity(0),), Amount(cap)), now_ms=NOW)
    assert exact.state.sent.amount == cap
    # what it received raises its capacity
    sim.pay(0, (1_000,))
    assert sim.states[1].capacity(1) == cap + 12_300
    over = ch.ActionPay(sim.peer, (Quantity(0),), Amount(cap + 12_301))
    rejects(sim.states[1], over, LocalProtocolError, ErrorCode.CAPACITY_EXCEEDED)


def test_capacity_overflow_as_a_received_proof(sim: Simulation) -> None:
    cap = sim.states[0].capacity(1)
    bad = forge(sim, 1, (0,), direct=cap + 1)
    rejects(sim.states[0], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.CAPACITY_EXCEEDED)
    receive(sim, 0, forge(sim, 1, (0,), direct=cap))
    assert sim.states[0].received.amount == cap


def test_amount_regression(sim: Simulation) -> None:
    receive(sim, 1, forge(sim, 0, (2_000,), direct=1_000))
    held = sim.states[1].received
    # a lower quantity, even with a higher amount overall
    bad = forge(
        sim,
        0,
        quantities=(Quantity(1_000),),
        direct_amount=Amount(500_000),
        amount=Amount(12_300 + 500_000),
    )
    assert bad.amount > held.amount
    rejects(sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.AMOUNT_REGRESSION)
    # a lower direct amount
    bad = forge(
        sim,
        0,
        (10_000,),
        direct_amount=Amount(0),
        amount=Amount(tariff_amount(sim.terms.tariff, (Quantity(12_000),))),
    )
    rejects(sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.AMOUNT_REGRESSION)
    # a lower amount
    bad = forge(sim, 0, amount=Amount(held.amount - 1))
    rejects(sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.AMOUNT_REGRESSION)
    accepts_next(sim, 0)


def test_usage_digest_mismatch(sim: Simulation) -> None:
    receive(sim, 1, forge(sim, 0))
    bad = forge(sim, 0, usage_digest=bytes(32))
    rejects(
        sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.USAGE_DIGEST_MISMATCH
    )
    # a digest that does not chain from the previous one
    unchained = forge(
        sim,
        0,
        usage_digest=next_usage_digest(
            sim.terms.channel_id,
            nonce=2,
            amount=24_600,
            direct_amount=0,
            quantities=(2_000,),
            reference="",
            time_ms=NOW,
        ),
    )
    rejects(
        sim.states[1],
        ch.ReceiveProof(unchained),
        RemoteProtocolError,
        ErrorCode.USAGE_DIGEST_MISMATCH,
    )
    # a digest over another reference than the proof carries
    flow = sim.states[1].received
    digest = next_usage_digest(
        flow.usage_digest,
        nonce=2,
        amount=24_600,
        direct_amount=0,
        quantities=(2_000,),
        reference="A",
        time_ms=NOW,
    )
    bad = forge(sim, 0, reference="B", usage_digest=digest)
    rejects(
        sim.states[1], ch.ReceiveProof(bad), RemoteProtocolError, ErrorCode.USAGE_DIGEST_MISMATCH
    )
    accepts_next(sim, 0)


# -- receipts ---------------------------------------------------------------------------------


def test_bad_receipts(sim: Simulation, third: Signer) -> None:
    sim.pay(0, (1_000,), acknowledge=False)
    state = sim.states[0]
    cid = sim.terms.channel_id

    def receipt(signer: Signer, nonce: int, amount: int, **kw: Any) -> ch.ReceiveReceipt:
        r = Receipt(
            kw.get("cid", cid),
            kw.get("receiver", signer.node_id),
            Nonce(nonce),
            Amount(amount),
            EMPTY_SIGNATURE,
        )
        return ch.ReceiveReceipt(r.signed_by(signer))

    rejects(state, receipt(sim.peer, 2, 12_300), RemoteProtocolError, ErrorCode.NONCE_GAP)
    rejects(state, receipt(sim.peer, 1, 12_301), RemoteProtocolError, ErrorCode.CLOSE_MISMATCH)
    rejects(state, receipt(third, 1, 12_300), RemoteProtocolError, ErrorCode.NOT_A_PARTY)
    forged = receipt(third, 1, 12_300, receiver=sim.peer.node_id)
    rejects(state, forged, RemoteProtocolError, ErrorCode.BAD_SIGNATURE)
    other = receipt(sim.peer, 1, 12_300, cid=ChannelId(bytes(32)))
    rejects(state, other, RemoteProtocolError, ErrorCode.WRONG_CHANNEL)
    ok = ch.step(state, receipt(sim.peer, 1, 12_300), now_ms=NOW)
    assert ok.state.sent.acked_nonce == 1


def test_acknowledge_with_nothing_received(sim: Simulation) -> None:
    rejects(
        sim.states[0], ch.ActionAcknowledge(sim.opener), LocalProtocolError, ErrorCode.INVALID_STATE
    )


# -- phases -----------------------------------------------------------------------------------


def _accepted(make_sim: Callable[..., Simulation]) -> Simulation:
    s = make_sim()
    proposal = ch.propose(s.terms, s.opener, now_ms=1)
    (send,) = proposal.effects
    assert isinstance(send, ch.SendProposal)
    accepted = ch.accept(send.proposal, s.peer, now_ms=2)
    acceptance = accepted.effects[0]
    assert isinstance(acceptance, ch.SendAcceptance)
    opener = ch.step(proposal.state, ch.ReceiveAcceptance(acceptance.acceptance), now_ms=3).state
    s.states = [opener, accepted.state]
    s.escrow = arb.register(send.proposal, acceptance.acceptance, s.arbiter.node_id, now_ms=4)
    return s


def test_wrong_phase_inputs(make_sim: Callable[..., Simulation], sim: Simulation) -> None:
    early = _accepted(make_sim)
    assert early.states[0].phase is ch.Phase.ACCEPTED
    pay = ch.ActionPay(early.opener, (Quantity(1),))
    rejects(early.states[0], pay, LocalProtocolError, ErrorCode.INVALID_STATE)
    proof = forge(sim, 0)  # a proof for an open channel, shown to one not yet funded
    rejects(early.states[1], ch.ReceiveProof(proof), RemoteProtocolError, ErrorCode.INVALID_STATE)
    rejects(
        early.states[0], ch.ActionClose(early.opener), LocalProtocolError, ErrorCode.INVALID_STATE
    )
    rejects(
        early.states[1],
        ch.ActionSubmitEvidence(early.peer),
        LocalProtocolError,
        ErrorCode.INVALID_STATE,
    )
    # the open channel: evidence and payouts have no place yet
    rejects(
        sim.states[0],
        ch.ActionSubmitEvidence(sim.opener),
        LocalProtocolError,
        ErrorCode.INVALID_STATE,
    )
    # the arbiter: evidence without a dispute, a payout booked before any was decided
    assert sim.escrow is not None
    evidence = DisputeEvidence(
        sim.terms.channel_id, sim.peer.node_id, None, EMPTY_SIGNATURE
    ).signed_by(sim.peer)
    rejects(
        sim.escrow,
        arb.ReceiveEvidence(evidence),
        RemoteProtocolError,
        ErrorCode.INVALID_STATE,
        machine=arb,
    )
    booked = arb.ObservePayoutBooked(sim.arbiter, 0, NOW)
    rejects(sim.escrow, booked, LocalProtocolError, ErrorCode.INVALID_STATE, machine=arb)
    # a closed channel takes no payments; a settled escrow takes no deposits
    decided = sim.close(0)
    rejects(
        sim.states[0],
        ch.ActionPay(sim.opener, (Quantity(1),)),
        LocalProtocolError,
        ErrorCode.INVALID_STATE,
    )
    rejects(
        sim.states[1], ch.ReceiveProof(forge(sim, 0)), RemoteProtocolError, ErrorCode.INVALID_STATE
    )
    rejects(
        sim.states[1], ch.ActionForceClose(sim.peer), LocalProtocolError, ErrorCode.INVALID_STATE
    )
    sim.settle(decided)
    # (a deposit after the close is no longer refused: it is held for refund, specs/0004 §10)
    claim = UnilateralClose(
        sim.terms.channel_id, sim.peer.node_id, None, EMPTY_SIGNATURE
    ).signed_by(sim.peer)
    rejects(
        sim.escrow,
        arb.ReceiveUnilateralClose(claim),
        RemoteProtocolError,
        ErrorCode.INVALID_STATE,
        machine=arb,
    )


# -- arbiter and payout authority -------------------------------------------------------------


def test_payout_notice_not_from_the_arbiter(sim: Simulation, third: Signer) -> None:
    decided = sim.close(0)
    state = sim.states[1]
    assert state.phase is ch.Phase.CLOSED
    assert decided.state.payouts is not None
    notice = PayoutNotice(
        sim.terms.channel_id,
        decided.state.payouts.opener,
        decided.state.payouts.peer,
        "ML0",
        "ML1",
        NOW,
        EMPTY_SIGNATURE,
    )
    for signer in (sim.opener, sim.peer, third):
        rejects(
            state,
            ch.ReceivePayout(notice.signed_by(signer)),
            RemoteProtocolError,
            ErrorCode.BAD_SIGNATURE,
        )
    skewed = replace(notice, opener_payout=MinorUnits(notice.opener_payout + 1)).signed_by(
        sim.arbiter
    )
    rejects(state, ch.ReceivePayout(skewed), RemoteProtocolError, ErrorCode.DEPOSIT_MISMATCH)
    other = replace(notice, channel_id=ChannelId(bytes(32))).signed_by(sim.arbiter)
    rejects(state, ch.ReceivePayout(other), RemoteProtocolError, ErrorCode.WRONG_CHANNEL)
    ok = ch.step(state, ch.ReceivePayout(notice.signed_by(sim.arbiter)), now_ms=NOW)
    assert ok.state.phase is ch.Phase.SETTLED


def test_funding_confirmation_not_from_the_arbiter(
    make_sim: Callable[..., Simulation], third: Signer
) -> None:
    s = _accepted(make_sim)
    conf = FundingConfirmation(
        s.terms.channel_id, s.opener.node_id, MinorUnits(10_000), "ML", NOW, EMPTY_SIGNATURE
    )
    rejects(
        s.states[1],
        ch.ReceiveFunding(conf.signed_by(s.opener)),
        RemoteProtocolError,
        ErrorCode.BAD_SIGNATURE,
    )
    other = replace(conf, channel_id=ChannelId(bytes(32))).signed_by(s.arbiter)
    rejects(s.states[1], ch.ReceiveFunding(other), RemoteProtocolError, ErrorCode.WRONG_CHANNEL)
    stranger = replace(conf, depositor=third.node_id).signed_by(s.arbiter)
    rejects(s.states[1], ch.ReceiveFunding(stranger), RemoteProtocolError, ErrorCode.NOT_A_PARTY)


def test_cooperative_close_with_one_signature_at_the_arbiter(
    sim: Simulation, third: Signer
) -> None:
    first = ch.step(sim.states[0], ch.ActionClose(sim.opener), now_ms=NOW)
    half = first.state.close
    assert half is not None
    assert half.opener_signature
    assert not half.peer_signature
    assert sim.escrow is not None
    rejects(
        sim.escrow,
        arb.ReceiveCooperativeClose(half),
        RemoteProtocolError,
        ErrorCode.BAD_SIGNATURE,
        machine=arb,
    )
    forged = half.signed_by(third, "peer_signature")
    rejects(
        sim.escrow,
        arb.ReceiveCooperativeClose(forged),
        RemoteProtocolError,
        ErrorCode.BAD_SIGNATURE,
        machine=arb,
    )
    swapped = half.signed_by(sim.opener, "peer_signature")
    rejects(
        sim.escrow,
        arb.ReceiveCooperativeClose(swapped),
        RemoteProtocolError,
        ErrorCode.BAD_SIGNATURE,
        machine=arb,
    )
    full = half.signed_by(sim.peer, "peer_signature")
    other = replace(full, channel_id=ChannelId(bytes(32)))
    rejects(
        sim.escrow,
        arb.ReceiveCooperativeClose(other),
        RemoteProtocolError,
        ErrorCode.WRONG_CHANNEL,
        machine=arb,
    )
    decided = arb.step(sim.escrow, arb.ReceiveCooperativeClose(full), now_ms=NOW)
    assert decided.state.phase is arb.ArbiterPhase.PAYING
    # a second, different close after payouts were decided
    richer = replace(
        full,
        peer_amount=Amount(1_000_000),
        opener_signature=EMPTY_SIGNATURE,
        peer_signature=EMPTY_SIGNATURE,
    )
    richer = richer.signed_by(sim.opener, "opener_signature").signed_by(sim.peer, "peer_signature")
    rejects(
        decided.state,
        arb.ReceiveCooperativeClose(richer),
        RemoteProtocolError,
        ErrorCode.CLOSE_MISMATCH,
        machine=arb,
    )


def test_channel_rejects_bad_close_messages(sim: Simulation, third: Signer) -> None:
    body = ch.close_body(sim.states[0])
    forged = body.signed_by(third, "opener_signature")
    rejects(sim.states[1], ch.ReceiveClose(forged), RemoteProtocolError, ErrorCode.BAD_SIGNATURE)
    other = replace(body, channel_id=ChannelId(bytes(32))).signed_by(sim.opener, "opener_signature")
    rejects(sim.states[1], ch.ReceiveClose(other), RemoteProtocolError, ErrorCode.WRONG_CHANNEL)
    sim.close(0)
    different = replace(body, opener_amount=Amount(5)).signed_by(sim.opener, "opener_signature")
    rejects(
        sim.states[1], ch.ReceiveClose(different), RemoteProtocolError, ErrorCode.CLOSE_MISMATCH
    )


def _dispute(sim: Simulation) -> arb.ArbiterState:
    sim.pay(0, (2_000,))
    sim.pay(1, (1_000,))
    claim = UnilateralClose(
        sim.terms.channel_id, sim.opener.node_id, sim.states[0].received.proof, EMPTY_SIGNATURE
    ).signed_by(sim.opener)
    assert sim.escrow is not None
    return arb.step(sim.escrow, arb.ReceiveUnilateralClose(claim), now_ms=NOW).state


def test_evidence_from_a_non_party(sim: Simulation, third: Signer) -> None:
    escrow = _dispute(sim)
    proof = sim.states[1].received.proof
    cid = sim.terms.channel_id
    stranger = DisputeEvidence(cid, third.node_id, proof, EMPTY_SIGNATURE).signed_by(third)
    rejects(
        escrow,
        arb.ReceiveEvidence(stranger),
        RemoteProtocolError,
        ErrorCode.NOT_A_PARTY,
        machine=arb,
    )
    # a party's name, a stranger's signature
    posing = DisputeEvidence(cid, sim.peer.node_id, proof, EMPTY_SIGNATURE).signed_by(third)
    rejects(
        escrow,
        arb.ReceiveEvidence(posing),
        RemoteProtocolError,
        ErrorCode.BAD_SIGNATURE,
        machine=arb,
    )
    # the opener hands in its own proof as "evidence"
    own = DisputeEvidence(cid, sim.opener.node_id, proof, EMPTY_SIGNATURE).signed_by(sim.opener)
    rejects(
        escrow, arb.ReceiveEvidence(own), RemoteProtocolError, ErrorCode.NOT_A_PARTY, machine=arb
    )
    # a proof a stranger signed in the opener's name
    assert proof is not None
    fake = replace(proof, amount=Amount(0)).signed_by(third)
    forged = DisputeEvidence(cid, sim.peer.node_id, fake, EMPTY_SIGNATURE).signed_by(sim.peer)
    rejects(
        escrow,
        arb.ReceiveEvidence(forged),
        RemoteProtocolError,
        ErrorCode.BAD_SIGNATURE,
        machine=arb,
    )
    other = DisputeEvidence(
        ChannelId(bytes(32)), sim.peer.node_id, proof, EMPTY_SIGNATURE
    ).signed_by(sim.peer)
    rejects(
        escrow,
        arb.ReceiveEvidence(other),
        RemoteProtocolError,
        ErrorCode.WRONG_CHANNEL,
        machine=arb,
    )
    # a claim from a stranger
    claim = UnilateralClose(cid, third.node_id, None, EMPTY_SIGNATURE).signed_by(third)
    assert sim.escrow is not None
    rejects(
        sim.escrow,
        arb.ReceiveUnilateralClose(claim),
        RemoteProtocolError,
        ErrorCode.NOT_A_PARTY,
        machine=arb,
    )
    ok = DisputeEvidence(cid, sim.peer.node_id, proof, EMPTY_SIGNATURE).signed_by(sim.peer)
    taken = arb.step(escrow, arb.ReceiveEvidence(ok), now_ms=NOW + 1).state
    assert taken.evidence[0] == proof


def test_evidence_whose_amount_disagrees_with_the_tariff(sim: Simulation) -> None:
    escrow = _dispute(sim)
    proof = sim.states[1].received.proof
    assert proof is not None
    inflated = replace(proof, amount=Amount(proof.amount + 1)).signed_by(sim.opener)
    evidence = DisputeEvidence(
        sim.terms.channel_id, sim.peer.node_id, inflated, EMPTY_SIGNATURE
    ).signed_by(sim.peer)
    rejects(
        escrow,
        arb.ReceiveEvidence(evidence),
        RemoteProtocolError,
        ErrorCode.TARIFF_MISMATCH,
        machine=arb,
    )


def test_arbiter_local_errors(sim: Simulation) -> None:
    assert sim.escrow is not None
    for depositor, amount in ((2, 1), (0, 0)):
        deposit = arb.ObserveDeposit(sim.arbiter, depositor, MinorUnits(amount), "x", "ML", NOW)
        rejects(sim.escrow, deposit, LocalProtocolError, ErrorCode.INVALID_AMOUNT, machine=arb)
    decided = sim.close(0)
    booked = arb.ObservePayoutBooked(sim.arbiter, 2, NOW)
    rejects(decided.state, booked, LocalProtocolError, ErrorCode.INVALID_FIELD, machine=arb)


# -- creating a channel -----------------------------------------------------------------------


def test_bad_proposals_and_acceptances(make_sim: Callable[..., Simulation], third: Signer) -> None:
    s = make_sim()
    with pytest.raises(LocalProtocolError) as local:
        ch.propose(s.terms, s.peer, now_ms=NOW)
    assert local.value.code is ErrorCode.NOT_A_PARTY
    bad_terms = [
        (replace(s.terms, dispute_window_ms=999), ErrorCode.INVALID_TERMS),
        (
            replace(s.terms, opener_deposit=MinorUnits(0), peer_deposit=MinorUnits(0)),
            ErrorCode.INVALID_TERMS,
        ),
        (replace(s.terms, peer=s.terms.opener), ErrorCode.INVALID_TERMS),
        (replace(s.terms, arbiter=s.terms.peer), ErrorCode.INVALID_TERMS),
        (replace(s.terms, currency="XAU"), ErrorCode.UNKNOWN_CURRENCY),
        (replace(s.terms, scale=1), ErrorCode.INVALID_TERMS),
        (replace(s.terms, tariff=()), ErrorCode.INVALID_TARIFF),
        (replace(s.terms, opener_deposit=MinorUnits(2**64 // 10**4)), ErrorCode.INVALID_TERMS),
    ]
    for terms, code in bad_terms:
        with pytest.raises(LocalProtocolError) as local:
            ch.propose(terms, s.opener, now_ms=NOW)
        assert local.value.code is code, terms
        if terms.peer != s.peer.node_id:
            continue
        unsigned = ChannelProposal(terms, EMPTY_SIGNATURE).signed_by(s.opener)
        with pytest.raises(RemoteProtocolError) as remote:
            ch.accept(unsigned, s.peer, now_ms=NOW)
        assert remote.value.code is code

    proposal = ch.propose(s.terms, s.opener, now_ms=NOW).effects[0]
    assert isinstance(proposal, ch.SendProposal)
    with pytest.raises(RemoteProtocolError) as remote:
        ch.accept(proposal.proposal, third, now_ms=NOW)
    assert remote.value.code is ErrorCode.NOT_A_PARTY
    forged = ChannelProposal(s.terms, EMPTY_SIGNATURE).signed_by(third)
    with pytest.raises(RemoteProtocolError) as remote:
        ch.accept(forged, s.peer, now_ms=NOW)
    assert remote.value.code is ErrorCode.BAD_SIGNATURE

    opener_state = ch.propose(s.terms, s.opener, now_ms=NOW).state
    fake = ChannelAcceptance(s.terms.channel_id, third.sign("terms", s.terms.encode()))
    rejects(opener_state, ch.ReceiveAcceptance(fake), RemoteProtocolError, ErrorCode.BAD_SIGNATURE)
    elsewhere = ChannelAcceptance(ChannelId(bytes(32)), s.peer.sign("terms", s.terms.encode()))
    rejects(
        opener_state, ch.ReceiveAcceptance(elsewhere), RemoteProtocolError, ErrorCode.WRONG_CHANNEL
    )
    # the acceptance signs the terms under the terms domain, not anything else
    wrong_domain = ChannelAcceptance(s.terms.channel_id, s.peer.sign("receipt", s.terms.encode()))
    rejects(
        opener_state,
        ch.ReceiveAcceptance(wrong_domain),
        RemoteProtocolError,
        ErrorCode.BAD_SIGNATURE,
    )

    good = ChannelAcceptance.for_terms(s.terms, s.peer)
    with pytest.raises(RemoteProtocolError) as remote:
        arb.register(proposal.proposal, good, third.node_id, now_ms=NOW)
    assert remote.value.code is ErrorCode.NOT_A_PARTY
    with pytest.raises(RemoteProtocolError) as remote:
        arb.register(proposal.proposal, fake, s.arbiter.node_id, now_ms=NOW)
    assert remote.value.code is ErrorCode.BAD_SIGNATURE


def test_protocol_error_base_is_abstract() -> None:
    with pytest.raises(TypeError):
        ProtocolError(ErrorCode.INTERNAL, "x")
    assert NodeId(b"x") == b"x"


def test_actions_sign_with_our_key_only(sim: Simulation, third: Signer) -> None:
    """Found while testing: acknowledge, close, force-close and evidence took any key; a
    force-close signed by a stranger left the channel DISPUTED with a claim the arbiter refuses."""
    sim.pay(1, (1_000,), acknowledge=False)
    state = sim.states[0]
    for action in (ch.ActionAcknowledge, ch.ActionClose, ch.ActionForceClose):
        for signer in (third, sim.peer):
            rejects(state, action(signer), LocalProtocolError, ErrorCode.NOT_A_PARTY)
    disputed = ch.step(state, ch.ActionForceClose(sim.opener), now_ms=NOW).state
    rejects(disputed, ch.ActionSubmitEvidence(third), LocalProtocolError, ErrorCode.NOT_A_PARTY)
