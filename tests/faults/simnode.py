"""A simulated node: the channel machine inside a shell that keeps the daemon's delivery rules.

The shell decides nothing the machine decides; what it keeps from `node/` is how the daemon
stores and sends (specs/0005 §2, ADR 0002):

- *Persist, then act.* An input changes the in-memory state; a group commit a few milliseconds
  later makes it durable, and only then do its effects leave: proofs are written before they are
  streamed, receipts are signed only for committed proofs, a transport "200" only after commit.
- *The outbox.* Every control message (proposal, acceptance, registration, close, claim,
  evidence) is a durable row, retried until its recipient answers (an answer, or its refusal,
  ends the row); a newer row for the same purpose replaces the older one.
- *The stream.* Proofs stay stored until a receipt covers them. When nothing moved since the
  last retry, the sender asks the receiver for its latest receipt and resends what is newer.
- *Pull.* While the channel is not settled the node asks the arbiter for its signed status and
  feeds what it says to the machine, as a push would be.
- *Crash.* In-memory state, uncommitted inputs and unsent answers are lost; the durable state,
  the stored proofs and the outbox are kept; a restart resumes from them.

The operator's policy (co-sign an acceptable close, hand in evidence, force-close a close that
does not converge or a channel that never opened) and the workload (pay at random, close at the
time the episode's script says) are the only decisions made here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ProtocolError
from protocol.messages import (
    BalanceProof,
    ChannelAcceptance,
    ChannelProposal,
    ChannelRegistration,
    ChannelTerms,
    CooperativeClose,
    DisputeNotice,
    EscrowStatus,
    FundingConfirmation,
    PayoutNotice,
    Receipt,
)
from protocol.records import Message
from protocol.references import Purpose, idempotency_key
from protocol.types import Quantity
from tests.faults.simbank import Instruction
from tests.faults.simnet import Envelope
from tests.faults.simparty import RETRY_MS, Row, SimParty

if TYPE_CHECKING:
    from tests.faults.simulator import World

COMMIT_MS = 4
WATCH_MS = 1_500
CLOSE_TIMEOUT_MS = 5_000
FUND_TIMEOUT_MS = 12_000
NAMES = ("opener", "peer")


class SimNode(SimParty):
    def __init__(self, world: World, index: int, signer: Signer) -> None:
        super().__init__(world)
        self.index = index
        self.name = NAMES[index]
        self.signer = signer
        # durable (and the outbox)
        self.durable: ch.ChannelState | None = None
        self.outgoing: dict[int, bytes] = {}
        self.deposit_answer: str | None = None
        # in memory
        self.memory: ch.ChannelState | None = None
        self.staged: list[tuple[int, bytes]] = []
        self.staged_rows: dict[str, Row] = {}
        self.pending_acks: list[Envelope] = []
        self.commit_due = False
        self.progress = 0
        self.last_progress = -1
        self.phase_since: tuple[ch.Phase | None, int] = (None, 0)
        self.closed_by_script = False
        self.acknowledged = 0
        self.challenge = b""

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._timer(RETRY_MS, "_retry")
        self._timer(WATCH_MS + self.index * 97, "_watch")
        self._timer(self.world.wrng.randint(5, 60), "_app")

    def crash(self) -> None:
        super().crash()
        self.memory = None
        self.staged, self.staged_rows, self.pending_acks = [], {}, []
        self.commit_due = False

    def restart(self) -> None:
        super().restart()
        self.memory = self.durable
        self.last_progress = -1
        self.acknowledged = 0
        self.start()
        for row in self.outbox.values():
            self._send_row(row)
        self._ask_receipt()

    # -- persistence -------------------------------------------------------------------------

    def _dirty(self) -> None:
        if not self.commit_due:
            self.commit_due = True
            self._timer(COMMIT_MS, "commit")

    def commit(self) -> None:
        self.commit_due = False
        self.durable = self.memory
        proofs, self.staged = self.staged, []
        self.outgoing.update(proofs)
        rows, self.staged_rows = self.staged_rows, {}
        self.outbox.update(rows)
        acks, self.pending_acks = self.pending_acks, []
        self.world.on_commit(self, proofs, rows)
        for ack in acks:
            self.world.network.send(ack)
        self._acknowledge()
        self._prune()
        if proofs:
            self._stream([body for _, body in proofs])
        for row in rows.values():
            self._send_row(row)

    def _prune(self) -> None:
        assert self.durable is not None
        acked = self.durable.sent.acked_nonce
        for nonce in [n for n in self.outgoing if n <= acked]:
            del self.outgoing[nonce]

    # -- the machine -------------------------------------------------------------------------

    def apply(self, event: ch.Input) -> bool:
        """Step the machine in memory; False (and nothing changed) when it refuses."""
        assert self.memory is not None
        try:
            result = ch.step(self.memory, event, now_ms=self.world.scheduler.now_ms)
        except ProtocolError as exc:
            self.world.refused(self.name, type(event).__name__, exc)
            return False
        self.memory = result.state
        self.progress += 1
        self._dirty()
        self._effects(result.effects)
        return True

    def _effects(self, effects: tuple[ch.Effect, ...]) -> None:
        assert self.memory is not None
        for effect in effects:
            if isinstance(effect, ch.SendProposal):
                self._row("proposal", "peer", effect.proposal)
            elif isinstance(effect, ch.SendAcceptance):
                self._row("acceptance", "opener", effect.acceptance)
            elif isinstance(effect, ch.RegisterWithArbiter):
                self._row("register", "arbiter",
                          ChannelRegistration(effect.proposal, effect.acceptance))
            elif isinstance(effect, ch.SendProof):
                self.world.say(f"{self.name} pays: #{effect.proof.nonce} for "
                               f"{effect.proof.amount} cumulative")
                self.staged.append((effect.proof.nonce, effect.proof.encode()))
            elif isinstance(effect, ch.SendReceipt):
                self.world.signed_receipt(self, effect.receipt)
                self._send("peer_of", "msg", (effect.receipt.encode(),))
            elif isinstance(effect, ch.SendClose):
                self._row("close-peer", NAMES[1 - self.index], effect.close)
            elif isinstance(effect, ch.SubmitClose):
                self._row("close-arbiter", "arbiter", effect.close)
            elif isinstance(effect, ch.SubmitUnilateralClose):
                self._row("claim", "arbiter", effect.claim)
            elif isinstance(effect, ch.SubmitEvidence):
                self._row("evidence", "arbiter", effect.evidence)
            elif isinstance(effect, ch.NotifyCloseRequested):
                self.apply(ch.ActionClose(self.signer))  # policy: co-sign when acceptable
            elif isinstance(effect, ch.NotifyDispute):
                self.apply(ch.ActionSubmitEvidence(self.signer))  # policy: at once
            elif isinstance(effect, ch.NotifyOpened | ch.NotifySettled):
                self.world.say(f"{self.name}: {type(effect).__name__}")
            else:  # pragma: no cover - a new effect the shell does not carry out yet
                raise AssertionError(f"unhandled effect {effect!r}")

    def _acknowledge(self) -> None:
        """Receipts only for what is committed (0003 §5.3), once per new committed proof."""
        state = self.durable
        if state is None or state.phase not in (ch.Phase.OPEN, ch.Phase.CLOSING):
            return
        if state.received.nonce <= self.acknowledged:
            return
        self.acknowledged = state.received.nonce
        result = ch.step(state, ch.ActionAcknowledge(self.signer),
                         now_ms=self.world.scheduler.now_ms)
        self.memory = self.durable = result.state  # a receipt is a function of committed state
        self._effects(result.effects)

    # -- sending -----------------------------------------------------------------------------

    def _send(self, dst: str, kind: str, body: tuple[bytes, ...], ref: int = 0) -> None:
        super()._send(NAMES[1 - self.index] if dst == "peer_of" else dst, kind, body, ref)

    def _row(self, purpose: str, dst: str, message: Message) -> None:
        self.staged_rows[purpose] = self._new_row(dst, message.encode())

    def _stream(self, bodies: list[bytes]) -> None:
        self._send("peer_of", "stream", tuple(bodies))

    def _ask_receipt(self) -> None:
        state = self.durable
        if state is not None and state.phase in (ch.Phase.OPEN, ch.Phase.CLOSING) and (
                self.outgoing):
            self._send("peer_of", "receipt?", ())

    def _retry(self) -> None:
        self._timer(RETRY_MS, "_retry")
        for row in self.outbox.values():
            self._send_row(row)
        if self.progress == self.last_progress:
            self._ask_receipt()
        self.last_progress = self.progress

    def _watch(self) -> None:
        self._timer(WATCH_MS, "_watch")
        state = self.durable
        if state is None or state.phase not in (ch.Phase.ACCEPTED, ch.Phase.OPEN,
                                                ch.Phase.CLOSING, ch.Phase.CLOSED,
                                                ch.Phase.DISPUTED):
            return
        self.challenge = self.world.plan.rng.randbytes(16)
        self._send("arbiter", "status?", (self.challenge,))

    # -- receiving ---------------------------------------------------------------------------

    def on_envelope(self, env: Envelope) -> None:
        if env.kind == "ack":
            self._answered(env)
            return
        if env.kind == "receipt?":
            held = self.durable.received.receipt if self.durable is not None else None
            self._send(env.src, "receipt", (held.encode(),) if held else ())
            return
        if self.memory is None and env.kind != "msg":
            return
        if env.kind == "stream":
            for body in env.body:
                proof = self.world.decode(body, BalanceProof)
                if proof is None or not self.apply(ch.ReceiveProof(proof)):
                    # the stream closes at the first refused proof; the sender reconnects
                    self._send(env.src, "reset", ())
                    break
            return
        if env.kind == "reset":
            self._ask_receipt()
            return
        if env.kind == "receipt":
            if env.body:
                receipt = self.world.decode(env.body[0], Receipt)
                if receipt is not None:
                    self.apply(ch.ReceiveReceipt(receipt))
            self._resend()
            return
        if env.kind == "status":
            self._on_status(env)
            return
        message = self.world.decode(env.body[0], None)
        accepted = message is not None and self._on_message(message)
        ack = Envelope(self.name, env.src, "ack", (), env.ref)
        if accepted and env.ref:
            self.pending_acks.append(ack)  # "200" only after the commit
            self._dirty()
        elif env.ref:
            self.world.network.send(ack)  # a refusal ends the row at once

    def _resend(self) -> None:
        state = self.memory
        if state is None or state.phase not in (ch.Phase.OPEN, ch.Phase.CLOSING):
            return
        acked = state.sent.acked_nonce
        batch = [self.outgoing[n] for n in sorted(self.outgoing) if n > acked]
        if batch:
            self._stream(batch)

    def _on_message(self, message: Message) -> bool:
        if isinstance(message, ChannelProposal):
            return self._on_proposal(message)
        if self.memory is None:
            return False
        event: ch.Input
        if isinstance(message, ChannelAcceptance):
            event = ch.ReceiveAcceptance(message)
        elif isinstance(message, FundingConfirmation):
            event = ch.ReceiveFunding(message)
        elif isinstance(message, Receipt):
            event = ch.ReceiveReceipt(message)
        elif isinstance(message, CooperativeClose):
            event = ch.ReceiveClose(message)
        elif isinstance(message, DisputeNotice):
            event = ch.ReceiveDisputeNotice(message)
        elif isinstance(message, PayoutNotice):
            event = ch.ReceivePayout(message)
        else:
            self.world.refused(self.name, type(message).__name__, None)
            return False
        return self.apply(event)

    def _on_proposal(self, proposal: ChannelProposal) -> bool:
        if self.memory is not None:
            return proposal.terms == self.memory.terms  # a repeat: answered, nothing new
        try:
            result = ch.accept(proposal, self.signer, now_ms=self.world.scheduler.now_ms)
        except ProtocolError as exc:
            self.world.refused(self.name, "accept", exc)
            return False
        self.memory = result.state
        self._dirty()
        self._effects(result.effects)
        return True

    def _on_status(self, env: Envelope) -> None:
        status = self.world.decode(env.body[0], EscrowStatus) if env.body else None
        state = self.memory
        if status is None or state is None:
            return
        try:
            status.verify_signature(state.terms.arbiter)
        except ProtocolError as exc:
            self.world.refused(self.name, "status", exc)
            return
        if status.challenge != self.challenge or status.channel_id != state.channel_id:
            return  # an old answer (the network duplicated or delayed it)
        if state.phase in (ch.Phase.ACCEPTED, ch.Phase.OPEN):
            for conf in status.funding:
                self.apply(ch.ReceiveFunding(conf))
        if status.dispute is not None:
            self.apply(ch.ReceiveDisputeNotice(status.dispute))
        if status.payout is not None:
            self.apply(ch.ReceivePayout(status.payout))

    def open(self, terms: ChannelTerms) -> None:
        """The opener proposes the episode's channel."""
        result = ch.propose(terms, self.signer, now_ms=self.world.scheduler.now_ms)
        self.memory = result.state
        self._dirty()
        self._effects(result.effects)

    # -- the operator and the workload -------------------------------------------------------

    def _app(self) -> None:
        world = self.world
        self._timer(world.wrng.randint(10, world.script.pay_gap_ms), "_app")
        state = self.memory
        if state is None:
            return
        now = world.scheduler.now_ms
        if self.phase_since[0] is not state.phase:
            self.phase_since = (state.phase, now)
        since = now - self.phase_since[1]
        if state.phase is ch.Phase.ACCEPTED:
            self._deposit(state)
            if since > FUND_TIMEOUT_MS:
                self.apply(ch.ActionForceClose(self.signer))
            return
        if state.phase is ch.Phase.CLOSING and since > CLOSE_TIMEOUT_MS:
            self.apply(ch.ActionForceClose(self.signer))
            return
        if state.phase is not ch.Phase.OPEN:
            return
        if now >= world.script.close_at_ms and self.index in world.script.closers:
            if not self.closed_by_script:
                self.closed_by_script = True
                action: ch.Input = (ch.ActionForceClose(self.signer)
                                    if world.script.force else ch.ActionClose(self.signer))
                self.apply(action)
            return
        if now < world.script.close_at_ms and world.wrng.random() < world.script.pay_odds[
                self.index]:
            lines = len(state.terms.tariff)
            quantities = tuple(Quantity(world.wrng.randint(0, 4)) for _ in range(lines))
            if not any(quantities):
                quantities = (Quantity(1), *quantities[1:])
            self.apply_pay(ch.ActionPay(self.signer, quantities, reference="u"))

    def apply_pay(self, event: ch.ActionPay) -> None:
        if not self.apply(event):
            self.world.counts["payments_refused"] += 1
        else:
            self.world.counts["payments"] += 1

    def _deposit(self, state: ch.ChannelState) -> None:
        amount = state.terms.deposits()[self.index]
        if not amount or self.deposit_answer in ("accepted", "booked", "rejected"):
            return
        accounts = state.terms.accounts()
        key = idempotency_key(state.channel_id, Purpose.DEPOSIT, self.index)
        instruction = Instruction(accounts[self.index].identification,
                                  state.terms.escrow_account.identification, amount,
                                  self.world.deposit_reference(self.index))
        epoch = self.epoch

        def answer(status: str) -> None:
            if self.up and self.epoch == epoch and status != "unavailable":
                self.deposit_answer = status

        self.world.bank.submit(key, instruction, answer, purpose="deposit")
