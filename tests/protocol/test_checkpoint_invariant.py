"""Checkpoints and top-ups against an adversary, as a hypothesis state machine (issue 9).

ONE honest node, run as the shell runs it: it acknowledges what it receives, proposes
checkpoints, co-signs the peer's when they meet the rules, and hands every fully signed one to
the arbiter (a hand-in may be lost). ONE adversary holding only its own key: it pays valid
proofs, receipts when it likes, crafts checkpoints with any number and any totals and signs
them, co-signs any body the honest node ever signed and hands it to the arbiter whenever it
likes, and replays every old checkpoint, top-up confirmation and payout account. The arbiter
machine, with a bank that books, rejects and returns payouts in any order, and top-ups that
arrive and are confirmed (to the honest node late, or never). Every message crosses a wire.

Invariants, after every step:
- the arbiter never pays out more than escrow holds: deposits plus confirmed top-ups;
- the arbiter's checkpoint number and totals never fall: a stale checkpoint never wins;
- the honest node counts at least what the arbiter paid out at checkpoints (its capacity is
  never more generous than escrow backs);
- at most one attempt of each payout is live, and it is the only one counted;
- once the close is decided and every payout booked: the payouts sum to what escrow held, and
  the honest node got at least the payout rule's share on its own flow at the highest it signed
  and the adversary's at the highest it receipted (the trust model of issue 8, with checkpoints).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from hypothesis import HealthCheck, currently_in_test_context, given, settings
from hypothesis import event as hypothesis_event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.checkpoint import remaining_payouts
from protocol.errors import ProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    BankAccount,
    Checkpoint,
    CooperativeClose,
    DisputeEvidence,
    PayoutAccount,
    Receipt,
    TopUpConfirmation,
)
from protocol.payout import cumulative_shares
from protocol.references import Purpose, bank_reference
from protocol.simulation import Simulation
from protocol.transfers import TransferStatus
from protocol.types import Amount, MinorUnits, Quantity

from .conftest import KM

F = 10**4
M = TypeVar("M", BalanceProof, Receipt, Checkpoint, TopUpConfirmation, PayoutAccount,
            CooperativeClose)
picks = st.integers(0, 2**16)
directs = st.one_of(st.integers(1, 3_000_000), st.integers(20_000_000, 90_000_000))
nudges = st.sampled_from([0, 0, -1, 1, -F, F, 10 * F])
REASONS = st.sampled_from(["AC04", "AM04", "R03", "MS03"])


def event(text: str) -> None:
    """Count what the runs reach (hypothesis --hypothesis-show-statistics), in a test only."""
    if currently_in_test_context():
        hypothesis_event(text)


def wire(message: M) -> M:
    return type(message).decode(message.encode())


class CheckpointInvariant(RuleBasedStateMachine):
    HONEST = 0
    DEPOSITS = (10_000, 2_000)

    def __init__(self) -> None:
        super().__init__()
        self.sim = Simulation.create(tariff=(KM,), opener_deposit=self.DEPOSITS[0],
                                     peer_deposit=self.DEPOSITS[1])
        self.sim.open()
        self.h, self.a = self.HONEST, 1 - self.HONEST
        self.to_h: list[BalanceProof | Receipt] = []
        self.to_a: list[BalanceProof | Receipt] = []
        self.signed_by_h: list[Checkpoint] = []
        self.full: list[Checkpoint] = []
        self.topups: list[TopUpConfirmation] = []
        self.accounts: list[PayoutAccount] = []
        self.last_taken: Checkpoint | None = None
        self.entries = 0
        self.closed = False

    # helpers ------------------------------------------------------------------------------

    @property
    def honest(self) -> ch.ChannelState:
        return self.sim.states[self.h]

    @property
    def escrow(self) -> arb.ArbiterState:
        assert self.sim.escrow is not None
        return self.sim.escrow

    def now(self) -> int:
        return self.sim.tick(7)

    def h_step(self, event_: Any) -> ch.Transition | None:
        try:
            result = ch.step(self.honest, event_, now_ms=self.now())
        except ProtocolError:
            event(f"honest refused {type(event_).__name__}")
            return None
        self.sim.states[self.h] = result.state
        for effect in result.effects:
            if isinstance(effect, ch.SendCheckpoint):
                body = wire(effect.checkpoint)
                if body not in self.signed_by_h:
                    self.signed_by_h.append(body)
            elif isinstance(effect, ch.SubmitCheckpoint):
                self.full.append(effect.checkpoint)
                self.to_arbiter(arb.ReceiveCheckpoint(wire(effect.checkpoint)))
            elif isinstance(effect, ch.SendReceipt):
                self.to_a.append(wire(effect.receipt))
            elif isinstance(effect, ch.SendProof):
                self.to_a.append(wire(effect.proof))
        return result

    def a_step(self, event_: Any) -> ch.Transition | None:
        """The adversary's own bookkeeping (its machine only builds valid proofs for it)."""
        try:
            result = ch.step(self.sim.states[self.a], event_, now_ms=self.now())
        except ProtocolError:
            return None
        self.sim.states[self.a] = result.state
        for effect in result.effects:
            if isinstance(effect, ch.SendProof):
                self.to_h.append(wire(effect.proof))
            elif isinstance(effect, ch.SendReceipt):
                self.to_h.append(wire(effect.receipt))
        return result

    def to_arbiter(self, event_: Any) -> arb.Transition | None:
        try:
            result = arb.step(self.escrow, event_, now_ms=self.now())
        except ProtocolError:
            event(f"arbiter refused {type(event_).__name__}")
            return None
        self.sim.escrow = result.state
        for effect in result.effects:
            if isinstance(effect, arb.SendTopUpConfirmation):
                self.topups.append(wire(effect.confirmation))
            elif isinstance(effect, arb.SubmitPayout) and effect.attempt:
                event("a returned payout paid again")
            elif isinstance(effect, arb.SubmitPayout) and effect.checkpoint:
                event("a checkpoint paid out")
        return result

    def signer(self, party: int) -> Any:
        return self.sim.signer(party)

    # payments -----------------------------------------------------------------------------

    @precondition(lambda self: not self.closed)
    @rule(km=st.integers(0, 150_000), direct=directs, sender=st.sampled_from(["h", "a"]))
    def pay(self, km: int, direct: int, sender: str) -> None:
        pay = ch.ActionPay(self.signer(self.h if sender == "h" else self.a), (Quantity(km),),
                           Amount(direct))
        (self.h_step if sender == "h" else self.a_step)(pay)

    @precondition(lambda self: bool(self.to_h))
    @rule(pick=picks)
    def deliver_to_honest(self, pick: int) -> None:
        message = self.to_h.pop(0 if pick % 3 else len(self.to_h) - 1)  # mostly in order
        if isinstance(message, BalanceProof):
            if self.h_step(ch.ReceiveProof(message)) is not None:
                self.h_step(ch.ActionAcknowledge(self.signer(self.h)))
        else:
            self.h_step(ch.ReceiveReceipt(message))

    @precondition(lambda self: bool(self.to_a))
    @rule(ack=st.booleans())
    def deliver_to_adversary(self, ack: bool) -> None:
        message = self.to_a.pop(0)
        if isinstance(message, BalanceProof):
            if self.a_step(ch.ReceiveProof(message)) is not None and ack:
                self.a_step(ch.ActionAcknowledge(self.signer(self.a)))
        else:
            self.a_step(ch.ReceiveReceipt(message))

    @rule()
    def exchange(self) -> None:
        """Everything in flight arrives, both ways, and is receipted."""
        for _ in range(4):
            while self.to_a:
                self.deliver_to_adversary(ack=True)
            while self.to_h:
                self.deliver_to_honest(0)

    # checkpoints --------------------------------------------------------------------------

    @precondition(lambda self: not self.closed)
    @rule()
    def honest_checkpoint(self) -> None:
        """Propose, or co-sign the adversary's pending proposal."""
        self.h_step(ch.ActionCheckpoint(self.signer(self.h)))

    @precondition(lambda self: not self.closed)
    @rule(tell=st.booleans())
    def checkpoint_round(self, tell: bool) -> None:
        """The common case, in one step: all arrives, the honest node proposes, the adversary
        co-signs the body at once and hands it in."""
        self.exchange()
        before = len(self.signed_by_h)
        self.honest_checkpoint()
        if len(self.signed_by_h) > before:
            self.adversary_completes(len(self.signed_by_h) - 1, tell)

    @precondition(lambda self: bool(self.signed_by_h))
    @rule(pick=picks, tell=st.booleans())
    def adversary_completes(self, pick: int, tell: bool) -> None:
        """Co-sign any body the honest node ever signed; hand it in; maybe tell the node."""
        body = self.signed_by_h[pick % len(self.signed_by_h)]
        field = body.signature_field(self.a)
        full = wire(body.signed_by(self.signer(self.a), field))
        self.full.append(full)
        self.to_arbiter(arb.ReceiveCheckpoint(full))
        if tell:
            self.h_step(ch.ReceiveCheckpoint(full))

    @precondition(lambda self: not self.closed)
    @rule(seq_nudge=st.sampled_from([-1, 0, 1, 1, 2]), nudge=nudges, which=st.sampled_from([0, 1]),
          from_receipts=st.booleans())
    def adversary_proposes(self, seq_nudge: int, nudge: int, which: int,
                           from_receipts: bool) -> None:
        """Any number and any totals near the real ones, signed by the adversary."""
        state = self.sim.states[self.a]
        body = ch.checkpoint_body(state) if from_receipts else replace(
            ch.checkpoint_body(state), opener_nonce=state.flows[0].nonce,
            opener_amount=state.flows[0].amount, peer_nonce=state.flows[1].nonce,
            peer_amount=state.flows[1].amount)
        seq = max(1, body.seq + seq_nudge)
        if which == 0:
            body = replace(body, opener_amount=Amount(max(0, body.opener_amount + nudge)))
        else:
            body = replace(body, peer_amount=Amount(max(0, body.peer_amount + nudge)))
        body = replace(body, seq=min(seq, 2**32 - 1))
        self.h_step(ch.ReceiveCheckpoint(wire(body.signed_by(
            self.signer(self.a), body.signature_field(self.a)))))

    @precondition(lambda self: bool(self.full))
    @rule(pick=picks)
    def replay_old_checkpoint(self, pick: int) -> None:
        old = self.full[pick % len(self.full)]
        self.to_arbiter(arb.ReceiveCheckpoint(old))
        self.h_step(ch.ReceiveCheckpoint(old))

    # top-ups ------------------------------------------------------------------------------

    @precondition(lambda self: not self.closed)
    @rule(party=st.sampled_from([0, 1]), amount=st.integers(1, 3_000), again=st.booleans())
    def topup(self, party: int, amount: int, again: bool) -> None:
        reference = bank_reference(self.sim.terms.channel_id, Purpose.TOPUP, party)
        self.entries += 0 if again and self.entries else 1
        entry = f"top-{self.entries}"  # `again`: the same bank entry read twice
        self.to_arbiter(arb.ObserveTopUp(self.sim.arbiter, party, MinorUnits(amount), entry,
                                         reference, self.sim.now_ms))

    @precondition(lambda self: bool(self.topups))
    @rule(pick=picks, forge=st.booleans())
    def confirmation_reaches_honest(self, pick: int, forge: bool) -> None:
        confirmation = self.topups[pick % len(self.topups)]
        if forge:  # the adversary signs a bigger one itself
            confirmation = replace(confirmation, amount=MinorUnits(confirmation.amount + 5_000)
                                   ).signed_by(self.signer(self.a))
        self.h_step(ch.ReceiveTopUp(confirmation))

    # the bank -----------------------------------------------------------------------------

    def submitted(self, pick: int, *statuses: TransferStatus) -> Any:
        choices = [t for t in self.escrow.transfers if t.status in statuses]
        return choices[pick % len(choices)] if choices else None

    @rule(pick=picks)
    def bank_books(self, pick: int) -> None:
        transfer = self.submitted(pick, TransferStatus.SUBMITTED, TransferStatus.RETURNED)
        if transfer is not None:
            self.to_arbiter(arb.ObserveTransferBooked(self.sim.arbiter, transfer.reference,
                                                      self.sim.now_ms))

    @rule(pick=picks, reason=REASONS)
    def bank_returns(self, pick: int, reason: str) -> None:
        transfer = self.submitted(pick, TransferStatus.SUBMITTED, TransferStatus.BOOKED)
        if transfer is not None:
            self.to_arbiter(arb.ObservePayoutReturned(transfer.reference, reason,
                                                      self.sim.now_ms))

    @rule(party=st.sampled_from([0, 1]), replay=st.booleans())
    def payee_names_an_account(self, party: int, replay: bool) -> None:
        if replay and self.accounts:
            self.to_arbiter(arb.ReceivePayoutAccount(self.accounts[0]))
            return
        account = PayoutAccount(
            self.sim.terms.channel_id, self.sim.terms.parties()[party],
            BankAccount("IBAN", f"DE{len(self.accounts):020d}", "Corrected"), self.now(),
            EMPTY_SIGNATURE).signed_by(self.signer(party))
        self.accounts.append(account)
        self.to_arbiter(arb.ReceivePayoutAccount(wire(account)))

    # the close ----------------------------------------------------------------------------

    @precondition(lambda self: not self.closed and (bool(self.full) or len(self.signed_by_h) > 2))
    @rule(cooperative=st.booleans(), evidence=st.booleans())
    def close(self, cooperative: bool, evidence: bool) -> None:
        self.closed = True
        if cooperative:  # the honest node signs its one close body; the adversary co-signs it
            asked = self.h_step(ch.ActionClose(self.signer(self.h)))
            assert asked is not None
            body = next(e.close for e in asked.effects if isinstance(e, ch.SendClose))
            full = wire(body.signed_by(self.signer(self.a), body.signature_field(self.a)))
            self.to_arbiter(arb.ReceiveCooperativeClose(full))
            self.h_step(ch.ReceiveClose(full))
            return
        forced = self.h_step(ch.ActionForceClose(self.signer(self.h)))
        assert forced is not None
        claim = next(e.claim for e in forced.effects if isinstance(e, ch.SubmitUnilateralClose))
        self.to_arbiter(arb.ReceiveUnilateralClose(wire(claim)))
        if evidence:  # the adversary hands in the honest node's proof it holds (maybe none)
            adversary = self.sim.states[self.a]
            evidence = DisputeEvidence(self.sim.terms.channel_id, self.sim.terms.parties()[self.a],
                                       adversary.received.proof, EMPTY_SIGNATURE)
            self.to_arbiter(arb.ReceiveEvidence(wire(evidence.signed_by(self.signer(self.a)))))
        deadline = self.escrow.deadline_ms
        assert deadline is not None
        self.sim.now_ms = deadline
        self.to_arbiter(arb.Tick())

    # invariants ---------------------------------------------------------------------------

    def held(self) -> int:
        return sum(self.escrow.deposited) + sum(self.escrow.topped_up)

    def counted(self) -> list[Any]:
        return [t for t in self.escrow.transfers if t.status is not TransferStatus.RETURNED]

    @invariant()
    def never_pays_more_than_escrow_holds(self) -> None:
        assert sum(t.amount for t in self.counted()) <= self.held()
        assert sum(self.escrow.withdrawn) <= self.held()

    @invariant()
    def a_stale_checkpoint_never_wins(self) -> None:
        taken = self.escrow.checkpoint
        if taken is None:
            return
        last = self.last_taken
        if last is not None:
            assert taken.seq >= last.seq
            for sender in (0, 1):
                assert taken.point(sender)[0] >= last.point(sender)[0]
                assert taken.point(sender)[1] >= last.point(sender)[1]
        self.last_taken = taken
        assert getattr(taken, taken.signature_field(self.h))  # only bodies the honest node signed

    @invariant()
    def a_checkpoint_held_signed_is_never_pending(self) -> None:
        """What the honest node still offers as its pending proposal is above what it holds
        fully signed (found between real daemons: a proposer kept resending a signed body)."""
        held, mine = self.honest.checkpoint, self.honest.checkpoint_signed
        if held is not None and mine is not None and not mine.fully_signed():
            assert mine.seq > held.seq

    @invariant()
    def the_honest_node_is_the_careful_one(self) -> None:
        for party in (0, 1):
            assert self.honest.withdrawn[party] >= self.escrow.withdrawn[party]
            assert self.honest.topped_up[party] <= self.escrow.topped_up[party]

    @invariant()
    def one_live_attempt_per_payout(self) -> None:
        live: dict[tuple[int, int], int] = {}
        for transfer in self.counted():
            live[transfer.payout] = live.get(transfer.payout, 0) + 1
        assert all(n == 1 for n in live.values())
        # Each party was paid at checkpoints exactly what the arbiter counts as withdrawn.
        for party in (0, 1):
            paid = sum(t.amount for t in self.escrow.transfers
                       if t.party == party and t.checkpoint and t.attempt == max(
                           u.attempt for u in self.escrow.transfers if u.payout == t.payout))
            assert paid == self.escrow.withdrawn[party]

    @invariant()
    def the_close_pays_the_rule(self) -> None:
        payouts = self.escrow.payouts
        if payouts is None:
            return
        by_party = [0, 0]
        for transfer in self.escrow.transfers:
            latest = max(u.attempt for u in self.escrow.transfers if u.payout == transfer.payout)
            if transfer.attempt == latest:
                by_party[transfer.party] += transfer.amount
        assert sum(by_party) == self.held()  # every unit of escrow, once
        honest = self.honest
        acked = honest.received.receipt
        due = cumulative_shares(
            opener_deposit=MinorUnits(self.escrow.deposited[0] + self.escrow.topped_up[0]),
            peer_deposit=MinorUnits(self.escrow.deposited[1] + self.escrow.topped_up[1]),
            opener_sent=Amount(honest.sent.amount if self.h == 0 else (
                acked.amount if acked else 0)),
            peer_sent=Amount(honest.sent.amount if self.h == 1 else (
                acked.amount if acked else 0)),
            scale=6, exponent=2)
        share = due.opener if self.h == 0 else due.peer
        assert by_party[self.h] >= share
        event("closed with checkpoints" if self.escrow.withdrawn != (0, 0) else "closed plain")


class HonestOpener(CheckpointInvariant):
    HONEST = 0


class HonestPeer(CheckpointInvariant):
    HONEST = 1
    DEPOSITS = (3_000, 8_000)


SETTINGS = settings(
    max_examples=300,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
HonestOpener.TestCase.settings = SETTINGS
HonestPeer.TestCase.settings = SETTINGS
TestCheckpointHonestOpener = HonestOpener.TestCase
TestCheckpointHonestPeer = HonestPeer.TestCase


def test_checkpoint_invariant_sees_a_checkpoint_paid_and_a_return() -> None:
    """The machine's rules reach what they claim to test (a plain run, not hypothesis)."""
    m = HonestOpener()
    for _ in range(30):
        m.pay(100_000, 1, "h")
        m.deliver_to_adversary(ack=True)
        m.deliver_to_honest(0)
    m.honest_checkpoint()
    m.adversary_completes(pick=len(m.signed_by_h) - 1, tell=True)
    assert m.escrow.withdrawn[1] > 0
    m.bank_returns(0, "AC04")
    m.payee_names_an_account(1, replay=False)
    assert any(t.attempt == 1 for t in m.escrow.transfers)
    m.never_pays_more_than_escrow_holds()
    m.one_live_attempt_per_payout()
    m.close(cooperative=True, evidence=False)
    for pick in range(4):
        m.bank_books(pick)
    m.the_close_pays_the_rule()
    assert m.escrow.payouts is not None



# ---------------------------------------------------------------------------------------------
# The money rule alone: checkpoints never change what the parties end up with


@settings(max_examples=200, deadline=None)
@given(
    deposits=st.tuples(st.integers(0, 20_000), st.integers(0, 20_000)).filter(lambda d: any(d)),
    topups=st.tuples(st.integers(0, 5_000), st.integers(0, 5_000)),
    withdrawn=st.tuples(st.just(0), st.just(0)),
    sent=st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)),
)
def test_checkpoint_free_close_is_the_one_payout_rule(
    deposits: tuple[int, int], topups: tuple[int, int], withdrawn: tuple[int, int],
    sent: tuple[int, int],
) -> None:
    """With nothing withdrawn, the close after checkpoints is compute_payouts on what escrow
    holds — including every clamp of a one-sided unilateral close."""
    terms = replace(Simulation.create(tariff=(KM,), opener_deposit=1).terms,
                    opener_deposit=MinorUnits(deposits[0]), peer_deposit=MinorUnits(deposits[1]))
    rule = remaining_payouts(terms, (MinorUnits(topups[0]), MinorUnits(topups[1])),
                             (MinorUnits(withdrawn[0]), MinorUnits(withdrawn[1])), *sent)
    plain = cumulative_shares(opener_deposit=MinorUnits(deposits[0] + topups[0]),
                            peer_deposit=MinorUnits(deposits[1] + topups[1]),
                            opener_sent=Amount(sent[0]), peer_sent=Amount(sent[1]), scale=6,
                            exponent=2)
    assert rule == plain


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["o", "p", "checkpoint", "topup-o", "topup-p"]),
                          st.integers(1, 40_000_000)), max_size=30))
def test_checkpoint_payouts_plus_close_equal_one_close(ops: list[tuple[str, int]]) -> None:
    """Whatever the checkpoints and top-ups along the way, each party ends up with exactly what
    one close on the final totals pays (the payee rounded down once, on the whole net)."""
    sim = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=4_000)
    sim.open()
    for op, amount in ops:
        try:
            if op in ("o", "p"):
                sim.pay(0 if op == "o" else 1, (0,), direct=amount)
            elif op == "checkpoint":
                sim.book(sim.checkpoint(amount % 2))
            else:
                sim.topup(0 if op == "topup-o" else 1, amount % 3_000 + 1)
        except ProtocolError:
            pass
    final = sim.close(0)
    sim.settle(final)
    escrow = sim.escrow
    assert escrow is not None
    totals = [0, 0]
    for debtor, creditor, moved, _ in sim.ledger.transfers:
        if debtor == sim.terms.escrow_account.identification:
            totals[[a.identification for a in sim.terms.accounts()].index(creditor)] += moved
    once = cumulative_shares(
        opener_deposit=MinorUnits(10_000 + escrow.topped_up[0]),
        peer_deposit=MinorUnits(4_000 + escrow.topped_up[1]),
        opener_sent=sim.states[0].flows[0].amount, peer_sent=sim.states[0].flows[1].amount,
        scale=6, exponent=2)
    assert (totals[0], totals[1]) == (once.opener, once.peer)
