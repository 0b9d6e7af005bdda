"""Whole channel lifecycles over two in-memory peers, an in-memory arbiter and a ledger.

DESIGN §2: propose, accept, fund, update, close (cooperative or unilateral with a dispute
window), pay out; DESIGN §3: the payee's share is rounded down to the rail unit and the payer
gets the rest, so payouts always add up to the deposits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.channel import Flow, Phase
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.messages import EMPTY_SIGNATURE, BalanceProof, DisputeEvidence
from protocol.simulation import Simulation
from protocol.tariff import tariff_amount
from protocol.types import Amount, Quantity

from .conftest import KM, KM_GRADUATED

EUR_FACTOR = 10**4
"""Channel scale 6 over the EUR exponent 2: one cent is 10⁴ channel units."""


def expected_payouts(dep0: int, dep1: int, sent0: int, sent1: int) -> tuple[int, int]:
    """DESIGN §3 by hand, in cents: payee rounded down, payer gets the rest."""
    owed0 = dep0 * EUR_FACTOR - sent0 + sent1
    owed1 = dep1 * EUR_FACTOR - sent1 + sent0
    if owed0 > dep0 * EUR_FACTOR:
        pay0 = owed0 // EUR_FACTOR
        return pay0, dep0 + dep1 - pay0
    pay1 = owed1 // EUR_FACTOR
    return dep0 + dep1 - pay1, pay1


def same_flow(a: Flow, b: Flow) -> bool:
    """Sender's and receiver's view of one direction agree (receipt bookkeeping aside)."""
    return replace(a, acked_nonce=0, receipt=None) == replace(b, acked_nonce=0, receipt=None)


def handshake(s: Simulation) -> tuple[list[Phase], list[Phase]]:
    """Propose, accept, register with the arbiter; no deposits yet. Returns phases seen."""
    proposed = ch.propose(s.terms, s.opener, now_ms=s.tick())
    assert proposed.state.phase is Phase.PROPOSED
    (send_proposal,) = proposed.effects
    assert isinstance(send_proposal, ch.SendProposal)
    accepted = ch.accept(send_proposal.proposal, s.peer, now_ms=s.tick())
    assert accepted.state.phase is Phase.ACCEPTED
    send_acceptance, register = accepted.effects
    assert isinstance(send_acceptance, ch.SendAcceptance)
    assert isinstance(register, ch.RegisterWithArbiter)
    opened = ch.step(
        proposed.state, ch.ReceiveAcceptance(send_acceptance.acceptance), now_ms=s.tick()
    )
    assert opened.state.phase is Phase.ACCEPTED
    assert opened.effects == (ch.RegisterWithArbiter(register.proposal, register.acceptance),)
    s.states = [opened.state, accepted.state]
    s.escrow = arb.register(register.proposal, register.acceptance, s.arbiter.node_id, now_ms=1)
    assert s.escrow.phase is arb.ArbiterPhase.FUNDING
    assert s.escrow.channel_id == s.terms.channel_id == opened.state.channel_id
    return [Phase.PROPOSED, Phase.ACCEPTED], [Phase.ACCEPTED]


def test_full_lifecycle_thousand_updates_each_way(make_sim: Callable[..., Simulation]) -> None:
    s = make_sim(tariff=(KM,), opener_deposit=10_000, peer_deposit=5_000)
    seen = handshake(s)
    arbiter_phases = [s.escrow.phase]  # type: ignore[union-attr]

    def note() -> None:
        for i in (0, 1):
            if seen[i][-1] is not s.states[i].phase:
                seen[i].append(s.states[i].phase)
        assert s.escrow is not None
        if arbiter_phases[-1] is not s.escrow.phase:
            arbiter_phases.append(s.escrow.phase)

    s.deposit(0, 10_000)
    note()
    assert [st.phase for st in s.states] == [Phase.ACCEPTED, Phase.ACCEPTED]
    s.deposit(1, 5_000)
    note()
    assert [st.phase for st in s.states] == [Phase.OPEN, Phase.OPEN]
    assert s.states[0].funded == s.states[1].funded == (10_000, 5_000)

    quantities = ([0], [0])
    direct = [0, 0]
    amounts_at: tuple[dict[int, int], dict[int, int]] = ({}, {})
    receipts: tuple[list[int], list[int]] = ([], [])
    for i in range(1000):
        for sender in (0, 1):
            q = 1 + (i * 37 + sender * 11) % 2000  # metres
            d = 1_234 if sender == 1 and i % 100 == 99 else 0
            ack = i % 7 == 6 or i == 999
            s.pay(sender, (q,), direct=d, reference=f"SHIPMENT-{i}", acknowledge=ack)
            quantities[sender][0] += q
            direct[sender] += d
            flow = s.states[sender].sent
            assert flow.nonce == i + 1
            amounts_at[sender][flow.nonce] = flow.amount
            assert same_flow(s.states[1 - sender].received, flow)
            if ack:
                receipt = s.states[sender].sent.receipt
                assert receipt is not None
                assert receipt.nonce == i + 1
                receipt.verify_signature(s.terms.parties()[1 - sender])
                assert receipt.amount == amounts_at[sender][receipt.nonce]
                receipts[sender].append(receipt.nonce)
        note()

    sent = [s.states[k].sent.amount for k in (0, 1)]
    for k in (0, 1):
        assert sent[k] == tariff_amount((KM,), (Quantity(quantities[k][0]),)) + direct[k]
        assert s.states[k].sent.direct_amount == direct[k]
        # receipts are cumulative: together they acknowledge every nonce 1..1000
        assert receipts[k] == sorted(set(receipts[k]))
        assert receipts[k][-1] == 1000
        assert s.states[k].sent.acked_nonce == 1000
        assert s.states[1 - k].received.acked_nonce == 1000
        covered = set().union(*(range(1, r + 1) for r in receipts[k]))
        assert covered == set(range(1, 1001))
    assert direct[1] == 10 * 1_234

    # cooperative close, step by step
    first = ch.step(s.states[0], ch.ActionClose(s.opener), now_ms=s.tick())
    s.states[0] = first.state
    note()
    (request,) = first.effects
    assert isinstance(request, ch.SendClose)
    got = ch.step(s.states[1], ch.ReceiveClose(request.close), now_ms=s.tick())
    assert got.effects == (ch.NotifyCloseRequested(),)
    s.states[1] = got.state
    note()
    cosigned = ch.step(s.states[1], ch.ActionClose(s.peer), now_ms=s.tick())
    s.states[1] = cosigned.state
    note()
    full = next(e.close for e in cosigned.effects if isinstance(e, ch.SubmitClose))
    assert full.fully_signed()
    assert (full.opener_nonce, full.peer_nonce) == (1000, 1000)
    assert (full.opener_amount, full.peer_amount) == tuple(sent)
    done = ch.step(s.states[0], ch.ReceiveClose(full), now_ms=s.tick())
    s.states[0] = done.state
    note()
    assert s.escrow is not None
    decided = arb.step(s.escrow, arb.ReceiveCooperativeClose(full), now_ms=s.tick())
    s.escrow = decided.state
    note()
    # the other party hands in the same close too: idempotent
    assert done.state.close is not None
    again = arb.step(s.escrow, arb.ReceiveCooperativeClose(done.state.close), now_ms=s.tick())
    assert replace(again.state, updated_ms=s.escrow.updated_ms) == s.escrow
    assert again.effects == ()
    s.settle(decided)
    note()

    pay0, pay1 = expected_payouts(10_000, 5_000, sent[0], sent[1])
    owed0 = 10_000 * EUR_FACTOR - sent[0] + sent[1]
    assert owed0 % EUR_FACTOR != 0, "the scenario must exercise rounding"
    assert s.escrow.payouts is not None
    assert (s.escrow.payouts.opener, s.escrow.payouts.peer) == (pay0, pay1)
    assert pay0 + pay1 == 15_000
    accounts = s.terms.accounts()
    assert s.ledger.balances[accounts[0].identification] == pay0
    assert s.ledger.balances[accounts[1].identification] == pay1
    assert s.ledger.balances[s.terms.escrow_account.identification] == 0
    assert s.states[0].balance() == owed0
    assert s.states[1].balance() == 15_000 * EUR_FACTOR - owed0

    assert seen[0] == [
        Phase.PROPOSED,
        Phase.ACCEPTED,
        Phase.OPEN,
        Phase.CLOSING,
        Phase.CLOSED,
        Phase.SETTLED,
    ]
    assert seen[1] == [Phase.ACCEPTED, Phase.OPEN, Phase.CLOSING, Phase.CLOSED, Phase.SETTLED]
    A = arb.ArbiterPhase
    assert arbiter_phases == [A.FUNDING, A.OPEN, A.PAYING, A.SETTLED]
    for st in s.states:
        assert st.payout is not None
        assert (st.payout.opener_payout, st.payout.peer_payout) == (pay0, pay1)


def _pay_some(s: Simulation) -> None:
    s.pay(0, (2_000_000,))  # 2000 km: 24.60 EUR
    s.pay(1, (500_500,))  # 500.5 km: 6.15615 EUR
    s.pay(0, (1_001,))
    s.pay(1, (333,))


def test_unilateral_close_pays_out_on_the_highest_proofs(sim: Simulation) -> None:
    s = sim
    _pay_some(s)
    older_opener_proof = s.states[1].received.proof
    s.pay(0, (10_000,))  # the opener's latest proof, held by the peer
    latest_opener_proof = s.states[1].received.proof
    assert older_opener_proof is not None
    assert latest_opener_proof is not None
    assert older_opener_proof.amount < latest_opener_proof.amount

    forced = ch.step(s.states[0], ch.ActionForceClose(s.opener), now_ms=s.tick())
    s.states[0] = forced.state
    assert forced.state.phase is Phase.DISPUTED
    (submit,) = forced.effects
    assert isinstance(submit, ch.SubmitUnilateralClose)
    assert submit.claim.proof == s.states[0].received.proof  # the peer's latest

    assert s.escrow is not None
    t0 = s.tick()
    opened = arb.step(s.escrow, arb.ReceiveUnilateralClose(submit.claim), now_ms=t0)
    s.escrow = opened.state
    deadline = t0 + s.terms.dispute_window_ms
    assert s.escrow.phase is arb.ArbiterPhase.DISPUTE
    assert s.escrow.deadline_ms == deadline
    assert opened.effects == (arb.ForwardDispute(1, submit.claim, deadline),)

    notified = ch.step(s.states[1], ch.ReceiveUnilateralClose(submit.claim), now_ms=t0)
    assert notified.state.phase is Phase.DISPUTED
    assert notified.effects == (ch.NotifyDispute(submit.claim),)
    s.states[1] = notified.state

    # the peer first hands in an older proof, then its latest, then the older one again
    stale = DisputeEvidence(
        s.terms.channel_id, s.peer.node_id, older_opener_proof, EMPTY_SIGNATURE
    ).signed_by(s.peer)
    s.escrow = arb.step(s.escrow, arb.ReceiveEvidence(stale), now_ms=t0 + 10).state
    assert s.escrow.evidence[0] == older_opener_proof
    answer = ch.step(s.states[1], ch.ActionSubmitEvidence(s.peer), now_ms=t0 + 20)
    assert replace(answer.state, updated_ms=0) == replace(s.states[1], updated_ms=0)
    (evidence,) = answer.effects
    assert isinstance(evidence, ch.SubmitEvidence)
    assert evidence.evidence.proof == latest_opener_proof
    s.escrow = arb.step(s.escrow, arb.ReceiveEvidence(evidence.evidence), now_ms=deadline - 1).state
    held = s.escrow
    s.escrow = arb.step(s.escrow, arb.ReceiveEvidence(stale), now_ms=deadline - 1).state
    assert s.escrow.evidence == held.evidence
    assert s.escrow.evidence == (latest_opener_proof, s.states[0].received.proof)

    early = arb.step(s.escrow, arb.Tick(), now_ms=deadline - 1)
    assert early.effects == ()
    assert early.state.phase is arb.ArbiterPhase.DISPUTE
    decided = arb.step(s.escrow, arb.Tick(), now_ms=deadline)
    s.escrow = decided.state
    assert s.escrow.phase is arb.ArbiterPhase.PAYING

    sent0 = latest_opener_proof.amount
    sent1 = s.states[0].received.amount
    pay0, pay1 = expected_payouts(10_000, 5_000, sent0, sent1)
    assert sent0 == s.states[0].sent.amount  # the peer's evidence was the opener's latest
    payouts = [e for e in decided.effects if isinstance(e, arb.SubmitPayout)]
    assert [(p.party, p.amount) for p in payouts] == [(0, pay0), (1, pay1)]
    assert pay0 + pay1 == 15_000
    s.now_ms = deadline
    s.settle(decided)
    assert [st.phase for st in s.states] == [Phase.SETTLED, Phase.SETTLED]
    assert s.escrow.phase is arb.ArbiterPhase.SETTLED
    accounts = s.terms.accounts()
    assert s.ledger.balances[accounts[0].identification] == pay0
    assert s.ledger.balances[accounts[1].identification] == pay1


def test_unilateral_close_without_evidence_ignores_the_claimants_own_payments(
    sim: Simulation,
) -> None:
    """The silent side loses what it could have proved: only the claimant's proof counts."""
    s = sim
    _pay_some(s)
    forced = ch.step(s.states[0], ch.ActionForceClose(s.opener), now_ms=s.tick())
    (submit,) = forced.effects
    assert isinstance(submit, ch.SubmitUnilateralClose)
    assert s.escrow is not None
    t0 = s.tick()
    escrow = arb.step(s.escrow, arb.ReceiveUnilateralClose(submit.claim), now_ms=t0).state
    decided = arb.step(escrow, arb.Tick(), now_ms=t0 + s.terms.dispute_window_ms)
    assert decided.state.payouts is not None
    pay0, pay1 = expected_payouts(10_000, 5_000, 0, s.states[0].received.amount)
    assert (decided.state.payouts.opener, decided.state.payouts.peer) == (pay0, pay1)


def test_evidence_after_the_deadline_is_rejected(sim: Simulation) -> None:
    s = sim
    _pay_some(s)
    forced = ch.step(s.states[0], ch.ActionForceClose(s.opener), now_ms=s.tick())
    (submit,) = forced.effects
    assert isinstance(submit, ch.SubmitUnilateralClose)
    assert s.escrow is not None
    t0 = s.tick()
    escrow = arb.step(s.escrow, arb.ReceiveUnilateralClose(submit.claim), now_ms=t0).state
    deadline = t0 + s.terms.dispute_window_ms
    peer_state = ch.step(s.states[1], ch.ReceiveUnilateralClose(submit.claim), now_ms=t0).state
    (evidence,) = ch.step(peer_state, ch.ActionSubmitEvidence(s.peer), now_ms=deadline).effects
    assert isinstance(evidence, ch.SubmitEvidence)

    with pytest.raises(RemoteProtocolError) as info:
        arb.step(escrow, arb.ReceiveEvidence(evidence.evidence), now_ms=deadline)
    assert info.value.code is ErrorCode.DISPUTE_WINDOW_CLOSED
    # the other side closing too, after the deadline, is no way around it
    with pytest.raises(LocalProtocolError) as local:
        ch.step(peer_state, ch.ActionForceClose(s.peer), now_ms=deadline)
    assert local.value.code is ErrorCode.INVALID_STATE
    assert escrow.evidence[0] is None

    decided = arb.step(escrow, arb.Tick(), now_ms=deadline)
    assert decided.state.phase is arb.ArbiterPhase.PAYING
    with pytest.raises(RemoteProtocolError) as info:
        arb.step(decided.state, arb.ReceiveEvidence(evidence.evidence), now_ms=deadline + 1)
    assert info.value.code is ErrorCode.INVALID_STATE
    pay0, pay1 = expected_payouts(10_000, 5_000, 0, s.states[0].received.amount)
    assert decided.state.payouts is not None
    assert (decided.state.payouts.opener, decided.state.payouts.peer) == (pay0, pay1)


def test_a_channel_that_never_funded_refunds(make_sim: Callable[..., Simulation]) -> None:
    s = make_sim(opener_deposit=10_000, peer_deposit=5_000)
    handshake(s)
    s.deposit(0, 10_000)  # the peer never pays in
    assert [st.phase for st in s.states] == [Phase.ACCEPTED, Phase.ACCEPTED]
    assert s.escrow is not None
    assert s.escrow.phase is arb.ArbiterPhase.FUNDING
    with pytest.raises(LocalProtocolError) as info:
        ch.step(s.states[0], ch.ActionPay(s.opener, (Quantity(1),)), now_ms=s.tick())
    assert info.value.code is ErrorCode.INVALID_STATE

    forced = ch.step(s.states[0], ch.ActionForceClose(s.opener), now_ms=s.tick())
    s.states[0] = forced.state
    (submit,) = forced.effects
    assert isinstance(submit, ch.SubmitUnilateralClose)
    assert submit.claim.proof is None
    t0 = s.tick()
    opened = arb.step(s.escrow, arb.ReceiveUnilateralClose(submit.claim), now_ms=t0)
    s.escrow = opened.state
    (forward,) = opened.effects
    assert isinstance(forward, arb.ForwardDispute)
    assert forward.to == 1
    s.states[1] = ch.step(s.states[1], ch.ReceiveUnilateralClose(forward.claim), now_ms=t0).state
    s.now_ms = forward.deadline_ms
    decided = arb.step(s.escrow, arb.Tick(), now_ms=s.now_ms)
    s.escrow = decided.state
    assert s.escrow.payouts is not None
    assert (s.escrow.payouts.opener, s.escrow.payouts.peer) == (10_000, 0)
    assert [(e.party, e.amount) for e in decided.effects if isinstance(e, arb.SubmitPayout)] == [
        (0, 10_000)
    ]
    s.settle(decided)
    accounts = s.terms.accounts()
    assert s.ledger.balances[accounts[0].identification] == 10_000
    assert s.ledger.balances[accounts[1].identification] == 5_000
    assert s.ledger.balances[s.terms.escrow_account.identification] == 0
    assert s.escrow.phase is arb.ArbiterPhase.SETTLED
    assert [st.phase for st in s.states] == [Phase.SETTLED, Phase.SETTLED]


def test_graduated_tariff(make_sim: Callable[..., Simulation]) -> None:
    s = make_sim(tariff=(KM_GRADUATED,))
    s.open()
    s.pay(0, (999_000,))  # 999 km at 0.015
    assert s.states[1].received.amount == 14_985_000
    s.pay(0, (2_000,))  # 1 km at 0.015, 1 km at 0.0123
    assert s.states[1].received.amount == 15_000_000 + 12_300
    s.pay(0, (500,))  # half a km at the second tier
    assert s.states[1].received.amount == 15_000_000 + 12_300 + 6_150
    assert same_flow(s.states[0].sent, s.states[1].received)
    assert s.states[0].sent.quantities == (1_001_500,)


def test_multi_line_tariff(sim2: Simulation) -> None:
    s = sim2
    s.pay(1, (1_500, 3))  # 1.5 km at 0.015 + 3 messages at 0.000007
    assert s.states[0].received.amount == 22_500 + 21
    assert s.states[0].received.quantities == (1_500, 3)
    s.pay(1, (0, 1_000_000))  # a million messages, no km
    assert s.states[0].received.amount == 22_500 + 7 * 1_000_003
    assert s.states[0].received.quantities == (1_500, 1_000_003)
    with pytest.raises(LocalProtocolError) as info:
        ch.step(s.states[1], ch.ActionPay(s.peer, (Quantity(1),)), now_ms=s.tick())
    assert info.value.code is ErrorCode.TARIFF_MISMATCH


def test_direct_amount_payments(sim: Simulation) -> None:
    s = sim
    s.pay(0, (0,), direct=1_000_000, reference="INVOICE-1")  # 1.00 EUR, no units
    received = s.states[1].received
    assert (received.amount, received.direct_amount, received.quantities) == (
        1_000_000,
        1_000_000,
        (0,),
    )
    assert received.proof is not None
    assert received.proof.reference == "INVOICE-1"
    s.pay(0, (1_000,), direct=5)
    received = s.states[1].received
    assert (received.amount, received.direct_amount, received.quantities) == (
        1_000_000 + 12_300 + 5,
        1_000_005,
        (1_000,),
    )
    decided = s.close(0)
    s.settle(decided)
    assert s.escrow is not None
    assert s.escrow.payouts is not None
    # the peer is owed 1.012305 EUR: rounded down to 1.01 EUR, the opener keeps the rest
    assert (s.escrow.payouts.opener, s.escrow.payouts.peer) == (10_000 - 101, 5_000 + 101)
    assert s.escrow.payouts.residual == 2_305


def test_closing_converges_in_one_round_with_a_proof_in_flight(sim: Simulation) -> None:
    s = sim
    _pay_some(s)
    # the peer pays once more; the proof is still on the wire when the opener closes
    in_flight = ch.step(s.states[1], ch.ActionPay(s.peer, (Quantity(7_000),)), now_ms=s.tick())
    s.states[1] = in_flight.state
    (send,) = in_flight.effects
    assert isinstance(send, ch.SendProof)
    proof: BalanceProof = send.proof

    first = ch.step(s.states[0], ch.ActionClose(s.opener), now_ms=s.tick())
    s.states[0] = first.state
    (opener_request,) = first.effects
    assert isinstance(opener_request, ch.SendClose)
    assert opener_request.close.peer_nonce == proof.nonce - 1

    got = ch.step(s.states[1], ch.ReceiveClose(opener_request.close), now_ms=s.tick())
    s.states[1] = got.state
    assert got.state.phase is Phase.CLOSING
    with pytest.raises(LocalProtocolError) as info:
        ch.step(s.states[1], ch.ActionPay(s.peer, (Quantity(1),)), now_ms=s.tick())
    assert info.value.code is ErrorCode.INVALID_STATE
    # The peer co-signs the opener's body as it is: it pays the peer everything the peer holds
    # and charges it less than it signed (its in-flight proof was never receipted). One round.
    counter = ch.step(s.states[1], ch.ActionClose(s.peer), now_ms=s.tick())
    s.states[1] = counter.state
    assert counter.state.phase is Phase.CLOSED
    full = next(e.close for e in counter.effects if isinstance(e, ch.SubmitClose))
    assert full.same_state(opener_request.close)

    # the in-flight proof lands while the opener is closing: held, never receipted past its close
    s.states[0] = ch.step(s.states[0], ch.ReceiveProof(proof), now_ms=s.tick()).state
    acked = ch.step(s.states[0], ch.ActionAcknowledge(s.opener), now_ms=s.tick())
    (receipt,) = acked.effects
    assert isinstance(receipt, ch.SendReceipt)
    assert receipt.receipt.nonce == proof.nonce - 1
    s.states[0] = acked.state
    got = ch.step(s.states[0], ch.ReceiveClose(full), now_ms=s.tick())
    s.states[0] = got.state
    assert s.states[0].phase is Phase.CLOSED
    assert s.states[0].close == s.states[1].close == full
    assert full.peer_nonce == proof.nonce - 1
    assert full.peer_amount < proof.amount

    assert s.escrow is not None
    decided = arb.step(s.escrow, arb.ReceiveCooperativeClose(full), now_ms=s.tick())
    s.escrow = decided.state
    s.settle(decided)
    pay0, pay1 = expected_payouts(10_000, 5_000, s.states[0].sent.amount, full.peer_amount)
    assert s.escrow.payouts is not None
    assert (s.escrow.payouts.opener, s.escrow.payouts.peer) == (pay0, pay1)
    assert [st.phase for st in s.states] == [Phase.SETTLED, Phase.SETTLED]


def test_simulation_close_and_settle_round_trip(sim: Simulation) -> None:
    """The Simulation helpers themselves: zero-payment close refunds both deposits exactly."""
    decided = sim.close(1)
    sim.settle(decided)
    accounts = sim.terms.accounts()
    assert sim.ledger.balances[accounts[0].identification] == 10_000
    assert sim.ledger.balances[accounts[1].identification] == 5_000
    assert sim.escrow is not None
    assert sim.escrow.payouts is not None
    assert sim.escrow.payouts.residual == Amount(0)
