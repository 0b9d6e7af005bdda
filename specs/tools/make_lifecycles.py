"""Scripted lifecycles (``specs/vectors/lifecycles.json``): the state machines, step by step.

Each script runs one machine of ``protocol/`` from fixed keys (``Signer.from_label``) and fixed
clocks (T0 + a few ms) through one part of a channel's life, and records for every input the
effects and the state it gives, or the error it fails with. Written by
``python -m specs.tools.make_vectors`` with the other vector files; the format is
:mod:`specs.tools.lifecycle` and ``specs/vectors/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    ChannelAcceptance,
    ChannelProposal,
    ChannelTerms,
    CooperativeClose,
    DisputeEvidence,
    DisputeNotice,
    FundingConfirmation,
    PayoutNotice,
    Receipt,
    UnilateralClose,
)
from protocol.references import Purpose, bank_reference
from protocol.tariff import TariffLine
from protocol.types import Amount, ChannelId, MinorUnits, Nonce, Quantity, Signature
from specs.tools.lifecycle import outcome, run_step, start, state_json
from specs.tools.make_vectors import T0, example_terms

OPENER, PEER, ARBITER, MALLORY = (Signer.from_label(x)
                                  for x in ("opener", "peer", "arbiter", "mallory"))


def only(effects: tuple[Any, ...], kind: type) -> Any:
    (found,) = [e for e in effects if isinstance(e, kind)]
    return found


def resigned(message: Any, signer: Signer, **changes: Any) -> Any:
    """`message` with `changes`, signed again by `signer` (a validly signed bad message)."""
    return replace(message, **changes, signature=EMPTY_SIGNATURE).signed_by(signer)


@dataclass
class World:
    """One channel's messages as the reference machines of all three parties produce them."""

    terms: ChannelTerms
    proposal: ChannelProposal
    acceptance: ChannelAcceptance
    funding: tuple[FundingConfirmation, ...]
    """The arbiter's confirmation of each non-zero deposit."""
    opener: ch.ChannelState
    """The opener's state once open."""
    proofs: list[BalanceProof]
    """The opener's proofs 1–3."""
    peer_proof: BalanceProof
    peer_receipt: Receipt
    """The peer's receipt for the opener's proofs."""
    opener_close: CooperativeClose
    """The opener's signed close request on the final state."""
    payout: PayoutNotice
    escrow: arb.ArbiterState
    """The arbiter's state once both deposits are in."""


def world(terms: ChannelTerms | None = None) -> World:
    """The life of a channel on `terms` (the example terms by default)."""
    terms = terms or example_terms()
    cid = terms.channel_id
    proposed = ch.propose(terms, OPENER, now_ms=T0)
    proposal = only(proposed.effects, ch.SendProposal).proposal
    accepted = ch.accept(proposal, PEER, now_ms=T0 + 1)
    acceptance = only(accepted.effects, ch.SendAcceptance).acceptance
    escrow = arb.register(proposal, acceptance, ARBITER.node_id, now_ms=T0 + 2)
    confs = []
    for party in (p for p in (0, 1) if terms.deposits()[p]):
        deposited = arb.step(escrow, arb.ObserveDeposit(
            ARBITER, party, terms.deposits()[party], f"E-000{party + 1}",
            bank_reference(cid, Purpose.DEPOSIT, party), T0 + 10 + party), now_ms=T0 + 20 + party)
        escrow = deposited.state
        confs.append(only(deposited.effects, arb.SendFundingConfirmation).confirmation)
    states = [ch.step(proposed.state, ch.ReceiveAcceptance(acceptance), now_ms=T0 + 2).state,
              accepted.state]
    for conf in confs:
        states = [ch.step(s, ch.ReceiveFunding(conf), now_ms=T0 + 30).state for s in states]
    opened = states[0]
    proofs = []
    for i, (quantities, ref) in enumerate((((12_500, 3), "SHIPMENT-4711"),
                                           ((1_000_000, 0), "SHIPMENT-4712"),
                                           ((250, 40), "SHIPMENT-4713"))):
        t = ch.step(states[0], ch.ActionPay(OPENER, tuple(Quantity(q) for q in quantities),
                                            Amount(0), ref), now_ms=T0 + 100 * (i + 1))
        states[0] = t.state
        proofs.append(only(t.effects, ch.SendProof).proof)
        states[1] = ch.step(states[1], ch.ReceiveProof(proofs[-1]), now_ms=T0 + 100 * (i + 1)).state
    t = ch.step(states[1], ch.ActionPay(PEER, (Quantity(0), Quantity(0)), Amount(2_500_000),
                                        "CREDIT-NOTE-17"), now_ms=T0 + 400)
    states[1] = t.state
    peer_proof = only(t.effects, ch.SendProof).proof
    states[0] = ch.step(states[0], ch.ReceiveProof(peer_proof), now_ms=T0 + 400).state
    t = ch.step(states[1], ch.ActionAcknowledge(PEER), now_ms=T0 + 410)
    peer_receipt = only(t.effects, ch.SendReceipt).receipt
    t = ch.step(states[0], ch.ActionClose(OPENER), now_ms=T0 + 500)
    opener_close = only(t.effects, ch.SendClose).close
    full = opener_close.signed_by(PEER, "peer_signature")
    paying = arb.step(escrow, arb.ReceiveCooperativeClose(full), now_ms=T0 + 600).state
    booked = arb.step(paying, arb.ObservePayoutBooked(ARBITER, 0, T0 + 700), now_ms=T0 + 701)
    booked = arb.step(booked.state, arb.ObservePayoutBooked(ARBITER, 1, T0 + 700), now_ms=T0 + 702)
    payout = only(booked.effects, arb.SendPayoutNotice).notice
    return World(terms, proposal, acceptance, tuple(confs), opened, proofs, peer_proof,
                 peer_receipt, opener_close, payout, escrow)


class Script:
    """A script being written: every step is built from its JSON form, then run."""

    def __init__(self, name: str, description: str, machine: str, us: str,
                 begin: dict[str, Any]) -> None:
        self.signer = Signer.from_label(us)
        self.data: dict[str, Any] = {"name": name, "description": description,
                                     "machine": machine, "us": us, "start": begin, "steps": []}
        t, got = outcome(start(self.data, self.signer))
        begin["expect"] = got
        self.state = None if t is None else t.state

    def step(self, name: str, now: int, message: Any = None, **fields: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"input": name, "now_ms": str(now)}
        if message is not None:
            entry["message"] = message.encode().hex()
        entry.update({k: ([str(x) for x in v] if isinstance(v, tuple)
                          else v if isinstance(v, str) else str(v)) for k, v in fields.items()})
        assert self.state is not None
        self.state, got = run_step(self.data, self.state, entry, self.signer)
        entry["expect"] = got
        self.data["steps"].append(entry)
        return got


def _accepting(w: World, name: str, description: str) -> Script:
    return Script(name, description, "channel", "peer",
                  {"call": "accept", "proposal": w.proposal.encode().hex(), "now_ms": str(T0 + 1)})


def _open_peer(w: World, name: str, description: str) -> Script:
    s = _accepting(w, name, description)
    for conf in w.funding:
        s.step("ReceiveFunding", T0 + 30, conf)
    return s


def peer_lifecycle(w: World) -> Script:
    s = _accepting(w, "peer-accept-fund-stream-close-payout",
                   "The peer accepts, is funded, takes three proofs, acknowledges them, pays once "
                   "itself, co-signs the opener's close at once (0003 §7) and settles.")
    s.step("ReceiveFunding", T0 + 30, w.funding[0])
    s.step("ReceiveFunding", T0 + 30, w.funding[0])  # a repeat changes nothing
    s.step("ReceiveFunding", T0 + 31, w.funding[1])
    for i, proof in enumerate(w.proofs):
        s.step("ReceiveProof", T0 + 100 * (i + 1), proof)
    s.step("ReceiveProof", T0 + 301, w.proofs[-1])  # the same proof again: idempotent
    s.step("ActionAcknowledge", T0 + 302)
    s.step("ActionPay", T0 + 400, quantities=(0, 0), direct_amount=2_500_000,
           reference="CREDIT-NOTE-17")
    s.step("ReceiveClose", T0 + 500, w.opener_close)
    s.step("ActionClose", T0 + 501)
    s.step("ReceivePayout", T0 + 800, w.payout)
    s.step("ReceivePayout", T0 + 801, w.payout)
    return s


def opener_lifecycle(w: World) -> Script:
    s = Script("opener-propose-fund-pay-close", "The opener proposes, takes the acceptance and "
               "both confirmations, pays three times, takes a receipt and the peer's proof, and "
               "closes: its close request, then the peer's co-signed close.", "channel", "opener",
               {"call": "propose", "terms": w.terms.encode().hex(), "now_ms": str(T0)})
    s.step("ReceiveAcceptance", T0 + 2, w.acceptance)
    for conf in w.funding:
        s.step("ReceiveFunding", T0 + 30, conf)
    for i, (quantities, ref) in enumerate((((12_500, 3), "SHIPMENT-4711"),
                                           ((1_000_000, 0), "SHIPMENT-4712"),
                                           ((250, 40), "SHIPMENT-4713"))):
        s.step("ActionPay", T0 + 100 * (i + 1), quantities=quantities, direct_amount=0,
               reference=ref)
    s.step("ReceiveProof", T0 + 400, w.peer_proof)
    s.step("ActionAcknowledge", T0 + 405)
    s.step("ReceiveReceipt", T0 + 410, w.peer_receipt)
    s.step("ActionClose", T0 + 500)
    s.step("ReceiveClose", T0 + 502, w.opener_close.signed_by(PEER, "peer_signature"))
    return s


def proof_rejections(w: World) -> Script:
    """Each way a proof (and a receipt, a funding confirmation, a payout) is refused."""
    s = _accepting(w, "peer-refusals", "Every refusal of the channel rules, each leaving the "
                   "state as it was (0003 §5), on the peer's side of an open channel.")
    p1, p2 = w.proofs[0], w.proofs[1]
    s.step("ReceiveProof", T0 + 20, p1)  # INVALID_STATE: not funded yet
    s.step("ReceiveFunding", T0 + 30, resigned(w.funding[0], MALLORY))  # BAD_SIGNATURE
    for conf in w.funding:
        s.step("ReceiveFunding", T0 + 30, conf)
    bad_sig = replace(p1, signature=Signature(p1.signature[:-1] + bytes([p1.signature[-1] ^ 1])))
    s.step("ReceiveProof", T0 + 100, bad_sig)  # BAD_SIGNATURE
    s.step("ReceiveProof", T0 + 100, p2)  # NONCE_GAP: nonce 2 before 1
    s.step("ReceiveProof", T0 + 100, resigned(p1, MALLORY, sender=MALLORY.node_id))  # NOT_A_PARTY
    s.step("ReceiveProof", T0 + 100, resigned(p1, OPENER, channel_id=bytes(32)))  # WRONG_CHANNEL
    s.step("ReceiveProof", T0 + 100, resigned(p1, OPENER, amount=p1.amount + 1))  # TARIFF
    s.step("ReceiveProof", T0 + 100, resigned(p1, OPENER, quantities=p1.quantities[:1]))  # TARIFF
    s.step("ReceiveProof", T0 + 100, resigned(p1, OPENER, usage_digest=bytes(32)))  # DIGEST
    s.step("ReceiveProof", T0 + 100, p1)
    s.step("ReceiveProof", T0 + 101, resigned(p1, OPENER, nonce=1, reference="OTHER"))  # REPLAY
    regress = ch.build_proof(w.opener, ch.ActionPay(OPENER, (Quantity(1), Quantity(0))),
                             now_ms=T0 + 150)
    s.step("ReceiveProof", T0 + 150, resigned(regress, OPENER, nonce=2))  # AMOUNT_REGRESSION
    over = ch.build_proof(replace(w.opener, flows=(s.state.flows[0], w.opener.flows[1])),  # type: ignore[union-attr]
                          ch.ActionPay(OPENER, (Quantity(0), Quantity(0)),
                                       Amount(w.opener.capacity(0) + 1)), now_ms=T0 + 160)
    s.step("ReceiveProof", T0 + 160, over)  # CAPACITY_EXCEEDED
    s.step("ReceiveProof", T0 + 200, p2)
    receipt = Receipt(w.terms.channel_id, OPENER.node_id, Nonce(5), Amount(0),
                      EMPTY_SIGNATURE).signed_by(OPENER)
    s.step("ReceiveReceipt", T0 + 210, receipt)  # NONCE_GAP: we never sent a proof
    s.step("ReceivePayout", T0 + 220, resigned(w.payout, ARBITER, peer_payout=1))  # DEPOSIT
    return s


def precedence(w: World) -> Script:
    """An input with several faults fails with the code of the earliest layer (0002 §6.3)."""
    s = _accepting(w, "peer-error-precedence", "Inputs with two faults each: the code is the "
                   "one of the earlier check (phase, addressing, signature, then the rules).")
    twice_bad = replace(w.proofs[1], signature=Signature(bytes(64)))
    s.step("ReceiveProof", T0 + 20, twice_bad)  # INVALID_STATE before BAD_SIGNATURE
    for conf in w.funding:
        s.step("ReceiveFunding", T0 + 30, conf)
    elsewhere = ChannelId(bytes(32))
    s.step("ReceiveProof", T0 + 100, replace(twice_bad, channel_id=elsewhere))  # WRONG_CHANNEL
    s.step("ReceiveProof", T0 + 100, replace(twice_bad, sender=MALLORY.node_id))  # NOT_A_PARTY
    s.step("ReceiveProof", T0 + 100, replace(twice_bad, channel_id=elsewhere,
                                             sender=MALLORY.node_id))  # WRONG_CHANNEL first
    s.step("ReceiveProof", T0 + 100, twice_bad)  # BAD_SIGNATURE before NONCE_GAP
    over = resigned(w.proofs[1], OPENER, amount=w.opener.capacity(0) + 1)
    s.step("ReceiveProof", T0 + 100, over)  # NONCE_GAP before TARIFF_MISMATCH / capacity
    return s


def _terms_start(w: World, name: str, description: str, terms: ChannelTerms,
                 signer: Signer = OPENER) -> Script:
    proposal = ChannelProposal(terms, EMPTY_SIGNATURE).signed_by(signer)
    return Script(name, description, "channel", "peer",
                  {"call": "accept", "proposal": proposal.encode().hex(), "now_ms": str(T0)})


def proposal_rejections(w: World) -> list[Script]:
    t = w.terms
    km = t.tariff[0]
    return [
        _terms_start(w, "accept-refuses-bad-signature", "A proposal not signed by its opener.",
                     t, MALLORY),
        _terms_start(w, "accept-refuses-other-peer", "A proposal addressed to another node.",
                     replace(t, peer=MALLORY.node_id)),
        _terms_start(w, "accept-refuses-invalid-terms-parties",
                     "INVALID_TERMS: the arbiter is also the opener (0001 §6).",
                     replace(t, arbiter=t.opener)),
        _terms_start(w, "accept-refuses-invalid-terms-no-deposit",
                     "INVALID_TERMS: neither side deposits anything.",
                     replace(t, opener_deposit=MinorUnits(0), peer_deposit=MinorUnits(0))),
        _terms_start(w, "accept-refuses-invalid-terms-window",
                     "INVALID_TERMS: a dispute window under 1 s.",
                     replace(t, dispute_window_ms=999)),
        _terms_start(w, "accept-refuses-invalid-tariff",
                     "INVALID_TARIFF: the same unit on two lines (0003 §5.1).",
                     replace(t, tariff=(km, TariffLine(km.unit, 0, t.tariff[1].tiers)))),
        _terms_start(w, "accept-refuses-bad-signature-before-terms",
                     "Two faults: invalid terms and a bad signature; BAD_SIGNATURE comes first.",
                     replace(t, arbiter=t.opener), MALLORY),
    ]


def _registered(w: World, name: str, description: str) -> Script:
    s = Script(name, description, "arbiter", "arbiter",
               {"call": "register", "proposal": w.proposal.encode().hex(),
                "acceptance": w.acceptance.encode().hex(), "now_ms": str(T0 + 2)})
    for party in (0, 1):
        s.step("ObserveDeposit", T0 + 20 + party, depositor=party,
               amount=w.terms.deposits()[party], entry_id=f"E-000{party + 1}",
               bank_reference=bank_reference(w.terms.channel_id, Purpose.DEPOSIT, party),
               booked_ms=T0 + 10 + party)
    return s


def arbiter_cooperative(w: World) -> Script:
    s = _registered(w, "arbiter-fund-cooperative-close-payout", "The arbiter confirms both "
                    "deposits, takes the co-signed close (twice, from each party), refuses a "
                    "half-signed and a different one, pays out and notifies on the bookings.")
    full = w.opener_close.signed_by(PEER, "peer_signature")
    s.step("ObserveDeposit", T0 + 25, depositor=0, amount=w.terms.opener_deposit,
           entry_id="E-0001", bank_reference="same entry again", booked_ms=T0 + 10)
    s.step("ReceiveCooperativeClose", T0 + 600, w.opener_close)  # BAD_SIGNATURE: one signature
    s.step("ReceiveCooperativeClose", T0 + 600, full)
    s.step("ReceiveCooperativeClose", T0 + 601, full)
    other = replace(w.opener_close, opener_amount=Amount(0)).signed_by(OPENER, "opener_signature")
    s.step("ReceiveCooperativeClose", T0 + 602, other.signed_by(PEER, "peer_signature"))
    s.step("ObservePayoutBooked", T0 + 701, party=0, booked_ms=T0 + 700)
    s.step("ObservePayoutBooked", T0 + 702, party=1, booked_ms=T0 + 700)
    return s


def arbiter_unilateral(w: World) -> Script:
    s = _registered(w, "arbiter-unilateral-close-evidence-payout", "The peer closes alone on the "
                    "opener's second proof; the opener hands in the peer's proof; the peer a "
                    "newer one of the opener's; late evidence is refused; the window ends and "
                    "the arbiter pays on the highest proofs (0004 §3).")
    cid = w.terms.channel_id
    claim = UnilateralClose(cid, PEER.node_id, w.proofs[1], EMPTY_SIGNATURE).signed_by(PEER)
    s.step("ReceiveUnilateralClose", T0 + 1000, claim)
    deadline = T0 + 1000 + w.terms.dispute_window_ms
    own = DisputeEvidence(cid, OPENER.node_id, w.proofs[2], EMPTY_SIGNATURE).signed_by(OPENER)
    s.step("ReceiveEvidence", T0 + 1100, own)  # NOT_A_PARTY: its own proof
    evidence = DisputeEvidence(cid, OPENER.node_id, w.peer_proof, EMPTY_SIGNATURE)
    s.step("ReceiveEvidence", T0 + 1100, evidence.signed_by(OPENER))
    newer = DisputeEvidence(cid, PEER.node_id, w.proofs[2], EMPTY_SIGNATURE).signed_by(PEER)
    s.step("ReceiveEvidence", T0 + 1200, newer)
    older = DisputeEvidence(cid, PEER.node_id, w.proofs[0], EMPTY_SIGNATURE).signed_by(PEER)
    s.step("ReceiveEvidence", T0 + 1300, older)  # highest nonce wins: nothing changes
    s.step("Tick", deadline - 1)
    s.step("ReceiveEvidence", deadline, newer)  # DISPUTE_WINDOW_CLOSED
    s.step("Tick", deadline)
    s.step("ObservePayoutBooked", deadline + 100, party=0, booked_ms=deadline + 90)
    s.step("ObservePayoutBooked", deadline + 101, party=1, booked_ms=deadline + 91)
    return s


def opener_dispute(w: World) -> Script:
    s = Script("opener-dispute-evidence-payout", "The opener learns of the peer's unilateral "
               "close from the arbiter's signed notice, hands in its evidence and settles.",
               "channel", "opener",
               {"call": "propose", "terms": w.terms.encode().hex(), "now_ms": str(T0)})
    s.step("ReceiveAcceptance", T0 + 2, w.acceptance)
    for conf in w.funding:
        s.step("ReceiveFunding", T0 + 30, conf)
    s.step("ActionPay", T0 + 100, quantities=(12_500, 3), direct_amount=0,
           reference="SHIPMENT-4711")
    s.step("ReceiveProof", T0 + 400, w.peer_proof)
    cid = w.terms.channel_id
    claim = UnilateralClose(cid, PEER.node_id, w.proofs[0], EMPTY_SIGNATURE).signed_by(PEER)
    deadline = T0 + 1000 + w.terms.dispute_window_ms
    forged = DisputeNotice(cid, claim, deadline, EMPTY_SIGNATURE).signed_by(MALLORY)
    s.step("ReceiveDisputeNotice", T0 + 1001, forged)  # BAD_SIGNATURE: not the arbiter
    notice = DisputeNotice(cid, claim, deadline, EMPTY_SIGNATURE).signed_by(ARBITER)
    s.step("ReceiveDisputeNotice", T0 + 1001, notice)
    s.step("ReceiveDisputeNotice", T0 + 1002, notice)  # pushed and asked for: once
    s.step("ActionSubmitEvidence", T0 + 1003)
    s.step("ActionPay", T0 + 1004, quantities=(1, 0), direct_amount=0, reference="")
    s.step("ReceivePayout", T0 + 2000 + w.terms.dispute_window_ms, w.payout)
    return s


def lifecycles_vectors() -> dict[str, Any]:
    w = world()
    scripts = [peer_lifecycle(w), opener_lifecycle(w), proof_rejections(w), precedence(w),
               *proposal_rejections(w), arbiter_cooperative(w), arbiter_unilateral(w),
               opener_dispute(w)]
    return {"t0": str(T0), "keys": ["opener", "peer", "arbiter", "mallory"],
            "scripts": [s.data for s in scripts]}


__all__ = ["World", "lifecycles_vectors", "state_json", "world"]
