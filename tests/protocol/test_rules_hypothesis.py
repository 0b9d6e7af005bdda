"""The spec's rules as invariants of a hypothesis state machine over two peers and an arbiter.

Rules pay random quantities either way (over-capacity attempts included), deliver or withhold
proofs and receipts, replay old proofs, fork unilateral closes at the arbiter, and close.
Invariants: nonces rise by exactly 1 per direction; cumulative totals never fall; no side ever
sends more than its deposit plus what it received; payouts sum to the deposits; and handing the
arbiter an older proof never raises the submitter's payout.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.errors import ErrorCode, LocalProtocolError, RemoteProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    DisputeEvidence,
    Receipt,
    UnilateralClose,
)
from protocol.payout import Payouts, cumulative_shares
from protocol.simulation import Simulation
from protocol.tariff import tariff_amount
from protocol.types import Amount, MinorUnits, Quantity

from .conftest import KM_GRADUATED, MSG

DEPOSITS = (10_000, 5_000)  # cents: 100.00 and 50.00 EUR
F = 10**4  # channel units per cent
TARIFF = (KM_GRADUATED, MSG)
sides = st.sampled_from([0, 1])
directs = st.one_of(
    st.just(0),
    st.integers(0, 2_000_000),
    st.integers(40_000_000, 160_000_000),  # often over capacity
)


class ChannelRules(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.s = Simulation.create(
            tariff=TARIFF, opener_deposit=DEPOSITS[0], peer_deposit=DEPOSITS[1]
        )
        self.s.open()
        self.in_flight: tuple[list[BalanceProof], list[BalanceProof]] = ([], [])
        self.created: tuple[list[BalanceProof], list[BalanceProof]] = ([], [])
        self.delivered: tuple[list[BalanceProof], list[BalanceProof]] = ([], [])
        self.receipts: tuple[list[Receipt], list[Receipt]] = ([], [])  # by receiver
        self.closed = False
        self.last_seen = [st_.flows for st_ in self.s.states]

    @initialize(warm_up=st.lists(st.tuples(sides, st.integers(1, 50_000)), max_size=8))
    def opened(self, warm_up: list[tuple[int, int]]) -> None:
        """Start from an open channel with some history, so short runs reach the arbiter."""
        assert [x.phase for x in self.s.states] == [ch.Phase.OPEN, ch.Phase.OPEN]
        for sender, km in warm_up:
            self.pay(sender, km, 0, 0)
            self.deliver(sender)

    # -- rules ------------------------------------------------------------------------------

    @precondition(lambda self: not self.closed)
    @rule(
        sender=sides,
        km=st.integers(0, 3_000_000),
        messages=st.one_of(st.just(0), st.integers(0, 100_000)),
        direct=directs,
    )
    def pay(self, sender: int, km: int, messages: int, direct: int) -> None:
        state = self.s.states[sender]
        delta = (Quantity(km), Quantity(messages))
        quantities = tuple(q + d for q, d in zip(state.sent.quantities, delta, strict=True))
        amount = tariff_amount(TARIFF, quantities) + state.sent.direct_amount + direct
        event = ch.ActionPay(self.s.signer(sender), delta, Amount(direct), f"REF-{sender}")
        expected_error = None
        if not km and not messages and not direct:
            expected_error = ErrorCode.INVALID_AMOUNT
        elif amount > state.capacity(sender):
            expected_error = ErrorCode.CAPACITY_EXCEEDED
        if expected_error is not None:
            with pytest.raises(LocalProtocolError) as info:
                ch.step(state, event, now_ms=self.s.tick())
            assert info.value.code is expected_error
            assert self.s.states[sender] == state
            return
        result = ch.step(state, event, now_ms=self.s.tick())
        (send,) = result.effects
        assert isinstance(send, ch.SendProof)
        assert send.proof.nonce == len(self.created[sender]) + 1
        assert send.proof.amount == amount
        self.s.states[sender] = result.state
        self.created[sender].append(send.proof)
        self.in_flight[sender].append(send.proof)

    @precondition(lambda self: self.in_flight[0] or self.in_flight[1])
    @rule(sender=sides)
    def deliver(self, sender: int) -> None:
        if not self.in_flight[sender]:
            sender = 1 - sender
        proof = self.in_flight[sender].pop(0)
        receiver = 1 - sender
        result = ch.step(self.s.states[receiver], ch.ReceiveProof(proof), now_ms=self.s.tick())
        assert result.effects == ()
        self.s.states[receiver] = result.state
        self.delivered[sender].append(proof)

    @precondition(lambda self: not self.closed)
    @rule(receiver=sides)
    def acknowledge(self, receiver: int) -> None:
        state = self.s.states[receiver]
        event = ch.ActionAcknowledge(self.s.signer(receiver))
        if state.received.nonce == 0:
            with pytest.raises(LocalProtocolError) as info:
                ch.step(state, event, now_ms=self.s.tick())
            assert info.value.code is ErrorCode.INVALID_STATE
            return
        result = ch.step(state, event, now_ms=self.s.tick())
        (send,) = result.effects
        assert isinstance(send, ch.SendReceipt)
        assert send.receipt.nonce == state.received.nonce
        assert send.receipt.amount == state.received.amount
        self.s.states[receiver] = result.state
        self.receipts[receiver].append(send.receipt)

    @precondition(lambda self: self.receipts[0] or self.receipts[1])
    @rule(receiver=sides, withhold=st.booleans())
    def deliver_receipt(self, receiver: int, withhold: bool) -> None:
        if not self.receipts[receiver]:
            receiver = 1 - receiver
        receipt = self.receipts[receiver].pop(0)
        if withhold:
            return  # lost on the wire: a later receipt covers it
        sender = 1 - receiver
        if self.s.states[sender].phase is ch.Phase.SETTLED:  # too late to matter
            state = self.s.states[sender]
            with pytest.raises(RemoteProtocolError) as info:
                ch.step(state, ch.ReceiveReceipt(receipt), now_ms=self.s.tick())
            assert info.value.code is ErrorCode.INVALID_STATE
            return
        before = self.s.states[sender].sent.acked_nonce
        result = ch.step(self.s.states[sender], ch.ReceiveReceipt(receipt), now_ms=self.s.tick())
        self.s.states[sender] = result.state
        assert result.state.sent.acked_nonce == max(before, receipt.nonce)

    @precondition(lambda self: len(self.delivered[0]) + len(self.delivered[1]) >= 1)
    @rule(sender=sides, pick=st.integers(0, 10**6))
    def replay(self, sender: int, pick: int) -> None:
        if not self.delivered[sender]:
            sender = 1 - sender
        receiver = 1 - sender
        state = self.s.states[receiver]
        held = self.delivered[sender]
        proof = held[pick % len(held)]
        event = ch.ReceiveProof(proof)
        if self.closed:
            with pytest.raises(RemoteProtocolError) as info:
                ch.step(state, event, now_ms=self.s.tick())
            assert info.value.code is ErrorCode.INVALID_STATE
        elif proof is held[-1]:
            result = ch.step(state, event, now_ms=self.s.tick())  # idempotent
            assert replace(result.state, updated_ms=0) == replace(state, updated_ms=0)
            assert result.effects == ()
        else:
            with pytest.raises(RemoteProtocolError) as info:
                ch.step(state, event, now_ms=self.s.tick())
            assert info.value.code is ErrorCode.NONCE_REPLAY
        assert self.s.states[receiver] == state

    @precondition(lambda self: not self.closed)
    @rule(claimant=sides, older=st.integers(0, 10**6), evidence_older=st.integers(0, 10**6))
    def fork_unilateral_close(self, claimant: int, older: int, evidence_older: int) -> None:
        """On a copy of the escrow: an older proof never pays its submitter more."""
        other = 1 - claimant
        claimant_holds = [None, *self.delivered[other]]  # proofs *from* the other side
        other_holds = [None, *self.delivered[claimant]]
        latest_c, latest_o = claimant_holds[-1], other_holds[-1]
        # an older proof: a real one when there is one, else none at all
        stale_c = claimant_holds[older % max(1, len(claimant_holds) - 1)]
        stale_o = other_holds[evidence_older % max(1, len(other_holds) - 1)]
        event("fork with an older real proof", str(stale_c is not None or stale_o is not None))

        base = self.payouts_after_dispute(claimant, latest_c, latest_o)
        stale_claim = self.payouts_after_dispute(claimant, stale_c, latest_o)
        stale_evidence = self.payouts_after_dispute(claimant, latest_c, stale_o)
        # order does not matter: the arbiter keeps the highest proof per direction
        assert self.payouts_after_dispute(claimant, latest_c, stale_o, latest_o) == base
        assert self.payouts_after_dispute(claimant, latest_c, latest_o, stale_o) == base
        for p in (base, stale_claim, stale_evidence):
            assert p.opener + p.peer == sum(DEPOSITS)
        mine = (base.opener, base.peer)
        assert (stale_claim.opener, stale_claim.peer)[claimant] <= mine[claimant]
        assert (stale_evidence.opener, stale_evidence.peer)[other] <= mine[other]
        # with the latest proofs from both sides the arbiter pays what the nodes agree
        sent = [0, 0]
        sent[other] = latest_c.amount if latest_c else 0
        sent[claimant] = latest_o.amount if latest_o else 0
        assert base == cumulative_shares(
            opener_deposit=MinorUnits(DEPOSITS[0]),
            peer_deposit=MinorUnits(DEPOSITS[1]),
            opener_sent=Amount(sent[0]),
            peer_sent=Amount(sent[1]),
            scale=6,
            exponent=2,
        )

    def payouts_after_dispute(
        self, claimant: int, claim_proof: BalanceProof | None, *evidence: BalanceProof | None
    ) -> Payouts:
        s, other = self.s, 1 - claimant
        assert s.escrow is not None
        cid, now = s.terms.channel_id, s.now_ms
        claim = UnilateralClose(
            cid, s.signer(claimant).node_id, claim_proof, EMPTY_SIGNATURE
        ).signed_by(s.signer(claimant))
        escrow = arb.step(s.escrow, arb.ReceiveUnilateralClose(claim), now_ms=now).state
        for proof in evidence:  # handed in one after another: the highest nonce wins
            answer = DisputeEvidence(
                cid, s.signer(other).node_id, proof, EMPTY_SIGNATURE
            ).signed_by(s.signer(other))
            escrow = arb.step(escrow, arb.ReceiveEvidence(answer), now_ms=now + 1).state
        deadline = now + s.terms.dispute_window_ms
        decided = arb.step(escrow, arb.Tick(), now_ms=deadline)
        assert decided.state.phase is arb.ArbiterPhase.PAYING
        assert decided.state.payouts is not None
        paid = sum(e.amount for e in decided.effects if isinstance(e, arb.SubmitPayout))
        assert paid == sum(DEPOSITS)
        return decided.state.payouts

    @precondition(lambda self: not self.closed)
    @rule(initiator=sides)
    def close(self, initiator: int) -> None:
        while self.in_flight[0] or self.in_flight[1]:
            self.deliver(0)
        decided = self.s.close(initiator)
        self.closed = True
        full = self.s.states[0].close
        assert full is not None
        assert full == self.s.states[1].close
        sent = [self.s.states[0].flows[i].amount for i in (0, 1)]
        assert (full.opener_amount, full.peer_amount) == (sent[0], sent[1])
        self.s.settle(decided)
        assert self.s.escrow is not None
        assert self.s.escrow.phase is arb.ArbiterPhase.SETTLED
        payouts = self.s.escrow.payouts
        assert payouts is not None
        assert payouts.opener + payouts.peer == sum(DEPOSITS)
        owed0 = DEPOSITS[0] * F - sent[0] + sent[1]
        if owed0 > DEPOSITS[0] * F:
            assert payouts.opener == owed0 // F
        else:
            assert payouts.peer == (sum(DEPOSITS) * F - owed0) // F
        accounts = self.s.terms.accounts()
        assert self.s.ledger.balances[accounts[0].identification] == payouts.opener
        assert self.s.ledger.balances[accounts[1].identification] == payouts.peer
        assert [x.phase for x in self.s.states] == [ch.Phase.SETTLED, ch.Phase.SETTLED]

    @precondition(lambda self: self.closed)
    @rule(sender=sides)
    def pay_after_close(self, sender: int) -> None:
        state = self.s.states[sender]
        with pytest.raises(LocalProtocolError) as info:
            ch.step(
                state, ch.ActionPay(self.s.signer(sender), (Quantity(1), Quantity(0))), now_ms=1
            )
        assert info.value.code is ErrorCode.INVALID_STATE

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def nonces_rise_by_exactly_one(self) -> None:
        for i in (0, 1):
            assert [p.nonce for p in self.created[i]] == list(range(1, len(self.created[i]) + 1))
            assert self.s.states[i].sent.nonce == len(self.created[i])
            assert self.s.states[1 - i].received.nonce == len(self.delivered[i])
            assert self.delivered[i] + self.in_flight[i] == self.created[i]

    @invariant()
    def cumulative_totals_never_fall(self) -> None:
        for k in (0, 1):
            for old, new in zip(self.last_seen[k], self.s.states[k].flows, strict=True):
                assert new.nonce >= old.nonce
                assert new.amount >= old.amount
                assert new.direct_amount >= old.direct_amount
                assert all(n >= o for n, o in zip(new.quantities, old.quantities, strict=True))
                assert new.acked_nonce >= old.acked_nonce
            self.last_seen[k] = self.s.states[k].flows

    @invariant()
    def capacity_is_never_exceeded(self) -> None:
        for state in self.s.states:
            for i in (0, 1):
                flows = state.flows
                assert flows[i].amount <= DEPOSITS[i] * F + flows[1 - i].amount
                assert flows[i].amount == tariff_amount(TARIFF, flows[i].quantities) + (
                    flows[i].direct_amount
                )
                assert flows[i].acked_nonce <= flows[i].nonce

    @invariant()
    def views_agree(self) -> None:
        for i in (0, 1):
            received = self.s.states[1 - i].received
            if self.delivered[i]:
                assert received.proof == self.delivered[i][-1]
                assert received.amount == self.delivered[i][-1].amount
            else:
                assert received.amount == 0

    @invariant()
    def payouts_sum_to_deposits(self) -> None:
        for state in self.s.states:
            payouts = cumulative_shares(
                opener_deposit=MinorUnits(DEPOSITS[0]),
                peer_deposit=MinorUnits(DEPOSITS[1]),
                opener_sent=state.flows[0].amount,
                peer_sent=state.flows[1].amount,
                scale=6,
                exponent=2,
            )
            assert payouts.opener + payouts.peer == sum(DEPOSITS)
            assert payouts.opener >= 0
            assert payouts.peer >= 0
            # and no rounding from the clamps: every side's balance stays non-negative
            assert state.balance() >= 0


ChannelRules.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestChannelRules = ChannelRules.TestCase
