"""One close per channel: the trust model of issue 8 as a hypothesis state machine.

ONE honest node, run exactly as the node shell runs it (node/channels.py): it applies a batch
of proofs and answers with ``ActionAcknowledge``; on ``NotifyCloseRequested`` it does
``ActionClose``; on ``NotifyDispute`` it does ``ActionSubmitEvidence``. What it hands the
arbiter in answer to a dispute arrives at once (the delivery layer's bound, the precondition of
the invariant); its other submissions (a close, a force-close) may arrive late, in any order, or
never. It learns of a dispute by a push that may be lost, or by watching the arbiter, which it
does before any deadline passes. ONE adversary that holds only its own key and what it has
received (it reads the channel's state only as information it could rebuild from its own and
the honest node's messages): it pays valid next proofs (after closes too), sends close
requests with any amounts and nonces, co-signs any close body the honest node ever sent it and
hands it to the arbiter whenever it likes (or never), force-closes with any proof it holds or
none, hands in evidence, and replays any old message. And the arbiter machine, whose timer
runs as time passes. Every message crosses a wire (encode, decode) as between processes. The
honest node is the payee in one machine and the payer in the other, opener or peer, with
payments in both directions.

Invariants (specs/0003 §7.3, DESIGN §1), checked after every step:

- the honest node signs at most one close body, and never receipts past it;
- the body it signed, whenever the adversary hands it in, pays it at least its due;
- once it knows of an open dispute, the arbiter holds its evidence;
- once the arbiter decides, the honest node is paid at least what the payout rule gives with
  the counterparty's flow at the highest amount it receipted and its own at the highest amount
  it signed: the arbiter never pays a payee less than it receipted, nor takes from a payer
  more than it signed;
- money is conserved: payouts sum to what escrow holds.

Below the machines, the attacks of issue 8 that concern closes run as fixed scenarios through
the same harness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ErrorCode, LocalProtocolError, ProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BalanceProof,
    CooperativeClose,
    DisputeEvidence,
    DisputeNotice,
    PayoutNotice,
    Receipt,
    UnilateralClose,
)
from protocol.payout import cumulative_shares
from protocol.simulation import Simulation
from protocol.types import MAX_AMOUNT, U64_MAX, Amount, Nonce, Quantity

from .conftest import KM

WINDOW_MS = 3_600_000
"""The dispute window: the smallest a default node policy accepts (1 h)."""
EXPONENT, SCALE = 2, 6
TARIFF = (KM,)
W = TypeVar("W")

kilometres = st.one_of(st.just(0), st.integers(1, 200_000))  # up to 200 km (2.46 EUR)
directs = st.one_of(
    st.just(0),
    st.integers(1, 3_000_000),  # up to 3 EUR, often not a whole cent
    st.integers(20_000_000, 120_000_000),  # often above what the sender may send
)
picks = st.integers(0, 2**16)
deltas = st.sampled_from([0, -1, 1, -10_000, 10_000])
"""A nudge: a channel unit, or a cent at scale 6 (so it shows in minor units)."""
SWARM = (
    "honest_pays", "honest_closes", "honest_force_closes", "push_arrives", "outbox_delivers",
    "adversary_receipts", "adversary_requests_a_close", "adversary_cosigns_at_the_arbiter",
    "adversary_force_closes", "adversary_hands_in_evidence", "adversary_replays",
)
"""The rules a run may go without (the rest are always on)."""
CLOSE_FIELDS = ("opener_nonce", "opener_amount", "peer_nonce", "peer_amount")
PROBES = (
    None,
    ("adversary", "amount", -10_000), ("adversary", "amount", -1), ("adversary", "nonce", -1),
    ("honest", "amount", 10_000), ("honest", "amount", 1), ("honest", "nonce", 1),
    ("adversary", "amount", 10_000), ("adversary", "nonce", 1),
    ("honest", "amount", -10_000), ("honest", "nonce", -1),
)
"""How a close request may differ from the channel as it is (or from a body the node signed):
not at all; in one field, against the honest node (it would pay it less than it holds, or
charge it more than it signed: a cent, or a channel unit that shows only in the receipts), or
in its favour."""


def note(label: str) -> None:
    """Count a path taken (``--hypothesis-show-statistics``); the scenarios below drive the
    machine by hand, outside any hypothesis test."""
    if currently_in_test_context():
        event(label)


def wire(message: W) -> W:
    """The message as the other side decodes it (DecodeError for what no wire carries)."""
    decoded: W = type(message).decode(message.encode())  # type: ignore[attr-defined]
    return decoded


def swarm(name: str) -> Callable[[Any], Any]:
    """A rule each run switches on or off (swarm testing, Groce et al. 2012): a run without,
    say, the operator's close or the adversary's force-close goes deeper down the other paths
    than one where every rule competes for every step."""
    return precondition(lambda self: name in self.enabled)


def field_values(truth: CooperativeClose, body: CooperativeClose, name: str
                 ) -> st.SearchStrategy[int]:
    """Any value for one field of a crafted close: the channel's, a signed body's, 0, 2⁶³−1,
    2⁶³ (refused at decode) or anything, give or take a nudge."""
    base = st.sampled_from([getattr(truth, name), getattr(body, name), 0, MAX_AMOUNT,
                            MAX_AMOUNT + 1]) | st.integers(0, 10**9)
    return st.builds(lambda v, d: min(U64_MAX, max(0, v + d)), base, deltas)


def refusal(attempt: Callable[[], object]) -> ProtocolError | None:
    """Run `attempt`; the protocol error it raised (a refusal changes no state), or None."""
    try:
        attempt()
    except ProtocolError as exc:
        return exc
    return None


def pick(items: list[W], index: int) -> W | None:
    return items[index % len(items)] if items else None


@dataclass
class Adversary:
    """What the counterparty has: its key, its own messages, and what it was sent."""

    signer: Signer
    template: ch.ChannelState
    """Its own view of the channel just after opening: used only to build its proofs."""
    head: ch.Flow
    """The flow its next proof builds on."""
    queued: list[BalanceProof] = field(default_factory=list)
    """Proofs built and not yet sent."""
    own_proofs: list[BalanceProof] = field(default_factory=list)
    requests: list[CooperativeClose] = field(default_factory=list)
    to_arbiter: list[arb.Input] = field(default_factory=list)
    proofs: list[BalanceProof] = field(default_factory=list)
    """Every proof the honest node sent it."""
    receipts: list[Receipt] = field(default_factory=list)
    closes: list[CooperativeClose] = field(default_factory=list)
    """Every close the honest node sent it, with the honest node's signature."""
    notices: list[DisputeNotice | PayoutNotice] = field(default_factory=list)


class CloseInvariant(RuleBasedStateMachine):
    """The honest node, the adversary and the arbiter; subclasses choose the money's flow."""

    HONEST_DEPOSITS: tuple[int, ...] = ()
    ADVERSARY_DEPOSITS: tuple[int, ...] = ()

    h: int
    a: int
    sim: Simulation
    honest: ch.ChannelState
    escrow: arb.ArbiterState
    adv: Adversary
    now: int

    def __init__(self) -> None:
        super().__init__()
        self.enabled: frozenset[str] = frozenset(SWARM)
        self.signed_closes: list[CooperativeClose] = []
        """Every close the honest node emitted with its signature."""
        self.highest_signed = 0
        """The highest cumulative amount in a proof the honest node signed."""
        self.highest_receipted = 0
        """The highest cumulative amount the honest node receipted."""
        self.outbox: list[arb.Input] = []
        """What the honest node handed the arbiter that has not arrived yet."""
        self.push: list[DisputeNotice | PayoutNotice] = []
        """The arbiter's pushes to the honest node, not yet delivered (they may never be)."""
        self.payouts_submitted: list[arb.SubmitPayout] = []
        self.seen_deadline: int | None = None
        """The deadline of the last dispute notice the honest node took in."""

    def open(self, honest: int, honest_deposit: int, adversary_deposit: int) -> None:
        """An open channel; the honest node is party `honest` (0: it opened the channel)."""
        self.h, self.a = honest, 1 - honest
        deposits = [0, 0]
        deposits[self.h], deposits[self.a] = honest_deposit, adversary_deposit
        self.sim = Simulation.create(tariff=TARIFF, opener_deposit=deposits[0],
                                     peer_deposit=deposits[1], dispute_window_ms=WINDOW_MS)
        self.sim.open()
        assert self.sim.escrow is not None
        self.honest, self.escrow = self.sim.states[self.h], self.sim.escrow
        self.now = self.sim.now_ms
        template = self.sim.states[self.a]
        self.adv = Adversary(self.sim.signer(self.a), template, template.sent)
        note(f"honest is {'opener' if self.h == 0 else 'peer'}, deposits {deposits}")

    @initialize(data=st.data())
    def open_channel(self, data: st.DataObject) -> None:
        self.enabled = frozenset(name for name in SWARM
                                 if data.draw(st.booleans(), label=f"rule {name}"))
        self.open(data.draw(st.sampled_from([0, 1]), label="honest party"),
                  data.draw(st.sampled_from(self.HONEST_DEPOSITS), label="honest deposit"),
                  data.draw(st.sampled_from(self.ADVERSARY_DEPOSITS), label="its deposit"))
        # some history first, so that short runs close on something
        for honest_pays in data.draw(st.lists(st.booleans(), max_size=4), label="warm-up"):
            if honest_pays:
                self.honest_pays(data.draw(kilometres), data.draw(directs))
            else:
                self.adversary_pays(data.draw(kilometres), data.draw(directs), hold=False)

    # -- the honest node: node/channels.py around ch.step ---------------------------------------

    def _step(self, event_: ch.Input) -> ch.Transition:
        return ch.step(self.honest, event_, now_ms=self.now)

    def _commit(self, t: ch.Transition, *, answering_a_dispute: bool = False) -> None:
        """The node persists the new state, then carries out the effects (its outbox).

        What it hands the arbiter in answer to a dispute arrives at once: the delivery layer's
        bound (specs/0005 §2), the precondition of the invariant. Anything else it submits may
        wait, arrive in any order, or never arrive.
        """
        self.honest = t.state
        submit = self._honest_submits if answering_a_dispute else self.outbox.append
        for effect in t.effects:
            if isinstance(effect, ch.SendProof):
                self.highest_signed = max(self.highest_signed, effect.proof.amount)
                self.adv.proofs.append(wire(effect.proof))
            elif isinstance(effect, ch.SendReceipt):
                self.highest_receipted = max(self.highest_receipted, effect.receipt.amount)
                self.adv.receipts.append(wire(effect.receipt))
            elif isinstance(effect, ch.SendClose):
                self._signed(effect.close)
                self.adv.closes.append(wire(effect.close))
            elif isinstance(effect, ch.SubmitClose):
                self._signed(effect.close)
                submit(arb.ReceiveCooperativeClose(wire(effect.close)))
            elif isinstance(effect, ch.SubmitUnilateralClose):
                submit(arb.ReceiveUnilateralClose(wire(effect.claim)))
            elif isinstance(effect, ch.SubmitEvidence):
                assert answering_a_dispute
                self._honest_submits(arb.ReceiveEvidence(wire(effect.evidence)))
            elif not isinstance(effect, ch.NotifySettled):
                raise AssertionError(f"the shell does not expect {effect!r} here")

    def _signed(self, close: CooperativeClose) -> None:
        field_ = close.signature_field(self.h)
        assert getattr(close, field_), "the honest node sends only closes it signed"
        close.verify_signature(self.sim.signer(self.h).node_id, field_)
        self.signed_closes.append(close)

    def _deliver(self, handle: Any, message: Any) -> None:
        """A message off the wire into one of the node's handlers; a refusal changes nothing."""
        before = self.honest
        refused = refusal(lambda: handle(wire(message)))
        if refused is not None:
            assert self.honest == before
            note(f"honest refused {type(message).__name__}: {refused.code.name}")

    def on_proofs(self, proofs: list[BalanceProof]) -> None:
        """ChannelService.on_proofs: apply each proof, then sign one cumulative receipt."""
        state = self.honest
        for proof in proofs:
            try:
                state = ch.step(state, ch.ReceiveProof(wire(proof)), now_ms=self.now).state
            except ProtocolError as exc:
                note(f"honest refused a proof: {exc.code.name}")
        self.honest = state
        if state.received.nonce == 0 or state.phase not in (ch.Phase.OPEN, ch.Phase.CLOSING):
            return
        signed = ch.signed_close(state)
        if signed is not None and state.received.nonce > (signed.opener_nonce, signed.peer_nonce)[
                self.a]:
            note("proofs landed past the close the node signed")
        self._commit(self._step(ch.ActionAcknowledge(self.sim.signer(self.h))))

    def on_close(self, close: CooperativeClose) -> None:
        """ChannelService.on_close: co-sign or answer with our own body (the protocol decides);
        the answer is the close we hold, which the requester sees."""
        t = self._step(ch.ReceiveClose(close))
        if any(isinstance(e, ch.NotifyCloseRequested) for e in t.effects):
            t = ch.step(t.state, ch.ActionClose(self.sim.signer(self.h)), now_ms=self.now)
            note("node co-signed the request" if t.state.phase is ch.Phase.CLOSED
                 else "node signed its own view instead")
        self._commit(t)
        answer = self.honest.close
        if answer is not None and getattr(answer, answer.signature_field(self.h)):
            self._signed(answer)
            self.adv.closes.append(wire(answer))

    def on_dispute(self, notice: DisputeNotice) -> None:
        if self.honest.phase is ch.Phase.CLOSED:
            note("a closed node saw a dispute" if self.escrow.close is not None
                 else "a closed node saw a dispute before the arbiter had its close")
        t = self._step(ch.ReceiveDisputeNotice(notice))
        if any(isinstance(e, ch.NotifyDispute) for e in t.effects):
            t = ch.step(t.state, ch.ActionSubmitEvidence(self.sim.signer(self.h)),
                        now_ms=self.now)
        self._commit(t, answering_a_dispute=True)
        self.seen_deadline = notice.deadline_ms

    def on_payout(self, notice: PayoutNotice) -> None:
        self._commit(self._step(ch.ReceivePayout(notice)))

    def on_receipt(self, receipt: Receipt) -> None:
        self._commit(self._step(ch.ReceiveReceipt(receipt)))

    def _notified(self, notice: DisputeNotice | PayoutNotice) -> None:
        if isinstance(notice, DisputeNotice):
            self._deliver(self.on_dispute, notice)
        else:
            self._deliver(self.on_payout, notice)

    def _honest_action(self, action: ch.Input, *allowed: ErrorCode) -> None:
        refused = refusal(lambda: self._commit(self._step(action)))
        if refused is not None:
            assert isinstance(refused, LocalProtocolError)
            assert refused.code in allowed, refused
            note(f"honest {type(action).__name__} refused: {refused.code.name}")

    # -- the arbiter -----------------------------------------------------------------------------

    def _arbiter(self, event_: arb.Input) -> None:
        t = arb.step(self.escrow, event_, now_ms=self.now)
        if t.state.payouts is not None and self.escrow.payouts is None:
            how = "a dispute" if isinstance(event_, arb.Tick) else f"a close in {self.escrow.phase}"
            note(f"payouts decided by {how}")
        self.escrow = t.state
        signer = self.sim.arbiter
        for effect in t.effects:
            if isinstance(effect, arb.ForwardDispute):
                notice = DisputeNotice(self.escrow.channel_id, effect.claim, effect.deadline_ms,
                                       EMPTY_SIGNATURE).signed_by(signer)
                self.push.append(notice)  # node/escrow.py sends it to both parties
                self.adv.notices.append(notice)
            elif isinstance(effect, arb.SubmitPayout):
                self.payouts_submitted.append(effect)
            elif isinstance(effect, arb.SendPayoutNotice):
                self.push.append(effect.notice)
                self.adv.notices.append(effect.notice)
            elif isinstance(effect, arb.SendTransferNotice):
                assert effect.notice.status == "booked"  # what the nodes show; decides nothing
            else:
                raise AssertionError(f"unexpected arbiter effect {effect!r}")

    def _honest_submits(self, event_: arb.Input) -> None:
        """An answer to a dispute, delivered at once. The arbiter may refuse it only once it has
        decided the payouts (a close or evidence after a decision changes nothing)."""
        refused = refusal(lambda: self._arbiter(event_))
        if refused is not None:
            assert self.escrow.payouts is not None, f"the arbiter refused the node: {refused}"
            note(f"arbiter refused the honest {type(event_).__name__} after deciding")

    def _adversary_submits(self, event_: arb.Input) -> None:
        self.adv.to_arbiter.append(event_)
        refused = refusal(lambda: self._arbiter(event_))
        if refused is not None:
            note(f"arbiter refused the adversary's {type(event_).__name__}: "
                 f"{refused.code.name}")

    # -- rules: the honest node ------------------------------------------------------------------

    @swarm("honest_pays")
    @rule(km=kilometres, direct=directs)
    def honest_pays(self, km: int, direct: int) -> None:
        if not km and not direct:
            direct = 1
        self._honest_action(
            ch.ActionPay(self.sim.signer(self.h), (Quantity(km),), Amount(direct)),
            ErrorCode.CAPACITY_EXCEEDED, ErrorCode.INVALID_STATE)

    @swarm("honest_closes")
    @rule()
    def honest_closes(self) -> None:
        """The operator closes (``meterline channel close``): the shell allows it open or
        closing."""
        if self.honest.phase in (ch.Phase.OPEN, ch.Phase.CLOSING):
            self._commit(self._step(ch.ActionClose(self.sim.signer(self.h))))

    @swarm("honest_force_closes")
    @rule()
    def honest_force_closes(self) -> None:
        self._honest_action(ch.ActionForceClose(self.sim.signer(self.h)), ErrorCode.INVALID_STATE)

    def honest_watches(self) -> None:
        """The pull: the arbiter's signed status (specs/0005 §4) names the open dispute and the
        payouts, whether or not any push reached the node."""
        status = wire(arb.status(self.escrow, self.sim.arbiter, bytes(16), now_ms=self.now))
        status.verify_signature(self.sim.arbiter.node_id)
        if status.dispute is not None:
            self._notified(status.dispute)
        if status.payout is not None:
            self._notified(status.payout)

    @swarm("push_arrives")
    @precondition(lambda self: self.push)
    @rule(index=picks, drop=st.booleans())
    def push_arrives(self, index: int, drop: bool) -> None:
        """A push from the arbiter arrives (in any order) or is lost."""
        notice = self.push.pop(index % len(self.push))
        if not drop:
            self._notified(notice)

    @swarm("outbox_delivers")
    @precondition(lambda self: self.outbox)
    @rule(index=picks, lost=st.booleans())
    def outbox_delivers(self, index: int, lost: bool) -> None:
        """A close or claim the honest node submitted reaches the arbiter late, in any order,
        or never (only its answers to a dispute are bound to arrive in time)."""
        event_ = self.outbox.pop(index % len(self.outbox))
        if lost:
            return
        refused = refusal(lambda: self._arbiter(event_))
        if refused is not None:
            note(f"arbiter refused the node's late {type(event_).__name__}: "
                 f"{refused.code.name}")

    # -- rules: the adversary --------------------------------------------------------------------

    @rule(km=kilometres, direct=directs, hold=st.booleans())
    def adversary_pays(self, km: int, direct: int, hold: bool) -> None:
        """A valid next proof on the adversary's own chain; held back or sent with any held."""
        if not km and not direct:
            direct = 1
        view = replace(self.adv.template,
                       flows=(self.adv.head, self.adv.template.flows[1]) if self.a == 0
                       else (self.adv.template.flows[0], self.adv.head))
        proof = ch.build_proof(view, ch.ActionPay(self.adv.signer, (Quantity(km),),
                                                  Amount(direct)), now_ms=self.now)
        self.adv.head = replace(self.adv.head, nonce=proof.nonce, amount=proof.amount,
                                direct_amount=proof.direct_amount, quantities=proof.quantities,
                                usage_digest=proof.usage_digest, proof=proof)
        self.adv.own_proofs.append(proof)
        self.adv.queued.append(proof)
        if not hold:
            self.adversary_sends_queued()

    @precondition(lambda self: self.adv.queued)
    @rule()
    def adversary_sends_queued(self) -> None:
        batch, self.adv.queued = self.adv.queued, []
        self.on_proofs(batch)
        self._resync()

    def _resync(self) -> None:
        """The node's answer says which of its own proofs it holds: build on from there."""
        self.adv.head = replace(self.honest.received, acked_nonce=Nonce(0), receipt=None)

    @swarm("adversary_receipts")
    @precondition(lambda self: self.adv.proofs)
    @rule(index=picks, beyond=st.booleans(),
          amount=st.one_of(st.none(), st.integers(0, U64_MAX)))
    def adversary_receipts(self, index: int, beyond: bool, amount: int | None) -> None:
        """A receipt for a proof it got (with its amount or any), or for one never sent."""
        got = pick(self.adv.proofs, index)
        assert got is not None
        n = len(self.adv.proofs) + 1 if beyond else got.nonce
        value = got.amount if amount is None else amount
        receipt = Receipt(self.escrow.channel_id, self.adv.signer.node_id, Nonce(n),
                          Amount(value), EMPTY_SIGNATURE).signed_by(self.adv.signer)
        self._deliver(self.on_receipt, receipt)

    @swarm("adversary_requests_a_close")
    @rule(data=st.data())
    def adversary_requests_a_close(self, data: st.DataObject) -> None:
        """A close request with any nonces and amounts, signed with the adversary's key: the
        channel as it is or a body the node signed, probed (PROBES); or anything at all."""
        truth = ch.close_body(self.honest)
        body = pick(self.signed_closes, data.draw(picks, label="signed body")) or truth
        mode = data.draw(st.sampled_from(["probe the channel"] * 3 + ["probe a signed body",
                                                                     "anything"]))
        if mode == "anything":
            values = [data.draw(field_values(truth, body, name), label=name)
                      for name in CLOSE_FIELDS]
        else:
            base = truth if mode == "probe the channel" else body
            values = [getattr(base, name) for name in CLOSE_FIELDS]
            probe = data.draw(st.sampled_from(PROBES), label="probe")
            if probe is not None:
                whose, what, by = probe
                party = self.a if whose == "adversary" else self.h
                i = CLOSE_FIELDS.index(f"{('opener', 'peer')[party]}_{what}")
                values[i] = max(0, values[i] + by)
        self.request_close(*values)

    def request_close(self, opener_nonce: int, opener_amount: int, peer_nonce: int,
                      peer_amount: int) -> None:
        request = CooperativeClose(self.escrow.channel_id, Nonce(opener_nonce),
                                   Amount(opener_amount), Nonce(peer_nonce), Amount(peer_amount),
                                   EMPTY_SIGNATURE, EMPTY_SIGNATURE)
        request = request.signed_by(self.adv.signer, request.signature_field(self.a))
        self.adv.requests.append(request)
        self._deliver(self.on_close, request)

    @swarm("adversary_cosigns_at_the_arbiter")
    @precondition(lambda self: self.adv.closes)
    @rule(index=picks)
    def adversary_cosigns_at_the_arbiter(self, index: int) -> None:
        """Any close body the honest node ever sent, co-signed, handed in whenever it likes."""
        close = pick(self.adv.closes, index)
        assert close is not None
        full = close.signed_by(self.adv.signer, close.signature_field(self.a))
        self._adversary_submits(arb.ReceiveCooperativeClose(wire(full)))

    @swarm("adversary_force_closes")
    @rule(index=picks, with_proof=st.booleans())
    def adversary_force_closes(self, index: int, with_proof: bool) -> None:
        proof = pick(self.adv.proofs, index) if with_proof else None
        claim = UnilateralClose(self.escrow.channel_id, self.adv.signer.node_id, proof,
                                EMPTY_SIGNATURE).signed_by(self.adv.signer)
        self._adversary_submits(arb.ReceiveUnilateralClose(wire(claim)))

    @swarm("adversary_hands_in_evidence")
    @rule(index=picks, with_proof=st.booleans(), own=st.booleans())
    def adversary_hands_in_evidence(self, index: int, with_proof: bool, own: bool) -> None:
        """The latest, an older or no proof from the honest node — or one of its own."""
        held = self.adv.own_proofs if own else self.adv.proofs
        proof = pick(held, index) if with_proof else None
        evidence = DisputeEvidence(self.escrow.channel_id, self.adv.signer.node_id, proof,
                                   EMPTY_SIGNATURE).signed_by(self.adv.signer)
        self._adversary_submits(arb.ReceiveEvidence(wire(evidence)))

    @swarm("adversary_replays")
    @rule(what=st.sampled_from(["proof", "request", "to the arbiter", "notice"]), index=picks)
    def adversary_replays(self, what: str, index: int) -> None:
        """Any old message again: one of its proofs (an old fork of its chain, too), a close
        request, anything it handed the arbiter, or a notice the arbiter sent it."""
        if what == "proof" and (proof := pick(self.adv.own_proofs, index)) is not None:
            held = self.honest.received.proof
            self.on_proofs([proof])
            if self.honest.received.proof != held:  # the node took an old fork of its chain
                self.adv.queued = []
                self._resync()
        elif what == "request" and (request := pick(self.adv.requests, index)) is not None:
            self._deliver(self.on_close, request)
        elif what == "to the arbiter" and (sent := pick(self.adv.to_arbiter, index)) is not None:
            self._adversary_submits(sent)
        elif what == "notice" and (notice := pick(self.adv.notices, index)) is not None:
            self._notified(notice)

    # -- rules: time and the bank ---------------------------------------------------------------

    @rule(ms=st.one_of(st.integers(1, 600_000), st.just(WINDOW_MS)), watch=st.booleans())
    def time_passes(self, ms: int, watch: bool) -> None:
        """The node watches its channel many times a window (specs/0005 §4): maybe now, and
        surely before an open dispute's deadline passes. Then the arbiter's timer runs."""
        deadline = self.escrow.deadline_ms
        if watch or (deadline is not None and self.now < deadline <= self.now + ms):
            self.honest_watches()
        self.now += ms
        self._arbiter(arb.Tick())

    @precondition(lambda self: self.escrow.phase is arb.ArbiterPhase.PAYING)
    @rule(party=st.sampled_from([0, 1]))
    def bank_books_a_payout(self, party: int) -> None:
        self._arbiter(arb.ObservePayoutBooked(self.sim.arbiter, party, self.now))

    # -- invariants ------------------------------------------------------------------------------

    @invariant()
    def one_close_body(self) -> None:
        bodies = {close.body() for close in self.signed_closes}
        assert len(bodies) <= 1, f"the honest node signed {len(bodies)} close bodies"

    @invariant()
    def receipts_stay_within_the_signed_close(self) -> None:
        signed = ch.signed_close(self.honest)
        if signed is not None:
            their = signed.opener_amount if self.a == 0 else signed.peer_amount
            assert self.highest_receipted <= their

    def due(self) -> int:
        """What the payout rule gives the honest node (minor units) with the counterparty's
        flow at the highest amount it receipted and its own at the highest amount it signed."""
        sent = [0, 0]
        sent[self.h] = self.highest_signed
        sent[self.a] = self.highest_receipted
        return self._payout(sent[0], sent[1])

    def _payout(self, opener_sent: int, peer_sent: int) -> int:
        terms = self.escrow.terms
        payouts = cumulative_shares(
            opener_deposit=terms.opener_deposit, peer_deposit=terms.peer_deposit,
            opener_sent=Amount(opener_sent), peer_sent=Amount(peer_sent), scale=SCALE,
            exponent=EXPONENT)
        return (payouts.opener, payouts.peer)[self.h]

    @invariant()
    def the_close_it_signed_pays_it_its_due(self) -> None:
        """The adversary may hand the body in at any moment, so it never shortchanges the node:
        it carries at least what the node receipted and at most what it signed (channel units,
        specs/0003 §7.3), and so pays it at least its due."""
        for close in self.signed_closes:
            amounts = (close.opener_amount, close.peer_amount)
            assert amounts[self.a] >= self.highest_receipted
            assert amounts[self.h] <= self.highest_signed
            paid = self._payout(*amounts)
            assert paid >= self.due(), f"the signed close would pay {paid}, due {self.due()}"

    @invariant()
    def a_node_that_knows_of_a_dispute_has_answered_it(self) -> None:
        escrow, state = self.escrow, self.honest
        if escrow.phase is not arb.ArbiterPhase.DISPUTE:
            return
        if self.seen_deadline != escrow.deadline_ms or not state.received.nonce:
            return  # it has not seen this dispute yet, or holds nothing to hand in
        evidence = escrow.evidence[self.a]
        assert evidence is not None, "the node saw the dispute; its evidence is not in"
        assert evidence.nonce >= state.received.nonce

    @invariant()
    def paid_at_least_what_it_receipted_and_charged_at_most_what_it_signed(self) -> None:
        payouts = self.escrow.payouts
        if payouts is None:
            return
        paid = (payouts.opener, payouts.peer)[self.h]
        assert paid >= self.due(), (
            f"honest paid {paid} minor units; it signed {self.highest_signed} and receipted "
            f"{self.highest_receipted}, which give it {self.due()}")

    @invariant()
    def money_is_conserved(self) -> None:
        payouts = self.escrow.payouts
        if payouts is None:
            assert not self.payouts_submitted
            return
        held = self.escrow.held()
        assert payouts.opener + payouts.peer == held
        assert sum(p.amount for p in self.payouts_submitted) == held
        assert len({p.party for p in self.payouts_submitted}) == len(self.payouts_submitted)
        notice = self.escrow.notice
        if notice is not None:
            assert (notice.opener_payout, notice.peer_payout) == (payouts.opener, payouts.peer)
        if self.honest.payout is not None:
            assert self.honest.payout == notice


class HonestPayee(CloseInvariant):
    """The adversary deposited; the honest node is paid (and may pay back what it got)."""

    HONEST_DEPOSITS = (0, 1_000)
    ADVERSARY_DEPOSITS = (10_000,)


class HonestPayer(CloseInvariant):
    """The honest node deposited and pays; the adversary may pay back what it got."""

    HONEST_DEPOSITS = (10_000,)
    ADVERSARY_DEPOSITS = (0, 1_000)


SETTINGS = settings(
    max_examples=500,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
HonestPayee.TestCase.settings = SETTINGS
HonestPayer.TestCase.settings = SETTINGS
TestHonestPayee = HonestPayee.TestCase
TestHonestPayer = HonestPayer.TestCase


# ---------------------------------------------------------------------------------------------
# The attacks of issue 8 on closes, as fixed scenarios through the same harness


def holds(m: CloseInvariant) -> None:
    """Every invariant of the machines, now."""
    m.one_close_body()
    m.receipts_stay_within_the_signed_close()
    m.the_close_it_signed_pays_it_its_due()
    m.a_node_that_knows_of_a_dispute_has_answered_it()
    m.paid_at_least_what_it_receipted_and_charged_at_most_what_it_signed()
    m.money_is_conserved()


def opened(machine: type[CloseInvariant], *, honest: int, honest_deposit: int,
           adversary_deposit: int) -> CloseInvariant:
    m = machine()
    m.open(honest, honest_deposit, adversary_deposit)
    return m


def fields_of(close: CooperativeClose) -> tuple[int, int, int, int]:
    return close.opener_nonce, close.opener_amount, close.peer_nonce, close.peer_amount


def test_second_close_bypass() -> None:
    """Attack 2: pay nonce 1, get the payee's close C1, pay 2-101, ask again, co-sign C1."""
    m = opened(HonestPayee, honest=1, honest_deposit=0, adversary_deposit=10_000)
    m.adversary_pays(0, 10_000, hold=False)
    m.honest_closes()  # the payee signs C1 at nonce 1
    (c1,) = m.signed_closes
    for _ in range(100):
        m.adversary_pays(0, 10_000, hold=False)
        holds(m)
    assert m.honest.received.nonce == 101
    assert m.highest_receipted == c1.opener_amount  # receipts never went past C1
    m.request_close(*fields_of(ch.close_body(m.honest)))  # a second close request, at 101
    m.honest_closes()  # and the operator closes again
    assert {close.body() for close in m.signed_closes} == {c1.body()}  # both answered with C1
    m.adversary_cosigns_at_the_arbiter(0)
    assert m.escrow.close is not None
    assert m.escrow.close.same_state(c1)
    holds(m)


def test_a_closed_node_hands_in_its_close_when_it_sees_a_dispute() -> None:
    """Attack 6: the node co-signed, its close never reached the arbiter, and the adversary
    force-closes with no proof (which would pay it back everything)."""
    m = opened(HonestPayee, honest=0, honest_deposit=0, adversary_deposit=10_000)
    m.adversary_pays(50_000, 0, hold=False)
    m.request_close(*fields_of(ch.close_body(m.honest)))
    assert m.honest.phase is ch.Phase.CLOSED
    (close,) = {c.body(): c for c in m.signed_closes}.values()
    m.outbox.clear()  # lost
    m.adversary_force_closes(0, with_proof=False)
    m.push.clear()  # so is the arbiter's push
    m.time_passes(WINDOW_MS, watch=False)  # the node watches before the deadline
    assert m.escrow.close is not None
    assert m.escrow.close.same_state(close)
    holds(m)
    assert m.escrow.payouts is not None
    assert (m.escrow.payouts.opener, m.escrow.payouts.peer)[m.h] == m.due() > 0


NUDGES = [("theirs", "amount", -10_000), ("theirs", "amount", -1), ("theirs", "nonce", -1),
          ("ours", "amount", 10_000), ("ours", "amount", 1), ("ours", "nonce", 1)]


@pytest.mark.parametrize(("whose", "what", "by"), NUDGES,
                         ids=[f"{w}-{f}-{d:+}" for w, f, d in NUDGES])
def test_a_close_request_that_shortchanges_is_not_cosigned(whose: str, what: str,
                                                           by: int) -> None:
    """The node signs its own view instead, once; the adversary may hand that in."""
    m = opened(HonestPayee, honest=1, honest_deposit=1_000, adversary_deposit=10_000)
    m.adversary_pays(10_000, 7, hold=False)
    m.honest_pays(1_000, 3)
    view = ch.close_body(m.honest)
    party = m.a if whose == "theirs" else m.h
    name = f"{('opener', 'peer')[party]}_{what}"
    request = replace(view, **{name: getattr(view, name) + by})
    m.request_close(*fields_of(request))
    assert m.honest.phase is ch.Phase.CLOSING
    assert {c.body() for c in m.signed_closes} == {view.body()}
    m.adversary_cosigns_at_the_arbiter(0)
    assert m.escrow.close is not None
    assert m.escrow.close.same_state(view)
    holds(m)


def test_a_force_close_on_an_old_proof_of_the_payer() -> None:
    """The payer's older proof, claimed and handed in again, never charges it more."""
    m = opened(HonestPayer, honest=0, honest_deposit=10_000, adversary_deposit=0)
    for km in (10_000, 20_000, 30_000):
        m.honest_pays(km, 0)
    m.adversary_force_closes(0, with_proof=True)  # its first proof
    m.adversary_hands_in_evidence(1, with_proof=True, own=False)
    m.time_passes(WINDOW_MS, watch=True)
    assert m.escrow.payouts is not None
    holds(m)
