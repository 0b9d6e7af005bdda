"""The simulated arbiter: the arbiter machine inside the daemon's storage and delivery rules.

Every input is committed with the effects it produced before anything leaves (the arbiter has
no group commit to lose: a crash loses only the answers in flight). Deposits and bookings are
read from the bank's statement of the escrow account, by entry, from a durable cursor; payouts
are submitted with their idempotency key until the bank answers; notices to the parties are
outbox rows retried until the party answers; a node's status request gets the signed status.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import arbiter as arb
from protocol.crypto import Signer
from protocol.errors import ProtocolError
from protocol.messages import (
    ChannelRegistration,
    CooperativeClose,
    DisputeEvidence,
    UnilateralClose,
)
from protocol.references import Purpose, bank_reference
from protocol.refunds import HoldCredit
from tests.faults.simbank import Instruction
from tests.faults.simnet import Envelope
from tests.faults.simnode import NAMES
from tests.faults.simparty import RETRY_MS, SimParty

if TYPE_CHECKING:
    from tests.faults.simulator import World

TICK_MS = 250
STATEMENT_MS = 600


class SimArbiter(SimParty):
    name = "arbiter"

    def __init__(self, world: World, signer: Signer) -> None:
        super().__init__(world)
        self.signer = signer
        self.state: arb.ArbiterState | None = None
        self.payouts: dict[str, tuple[Instruction, str | None]] = {}
        """Idempotency key → (instruction, the bank's answer once it came)."""
        self.cursor = 0
        self.unobserved: list[str] = []
        """Deposit entries the machine did not take (booked after the payouts were decided):
        refused, or held for the operator's refund (0004 §10)."""

    def start(self) -> None:
        self._timer(TICK_MS, "_tick")
        self._timer(STATEMENT_MS, "_statement")
        self._timer(RETRY_MS, "_retry")

    def restart(self) -> None:
        super().restart()
        self.start()
        self._retry_now()

    # -- the machine -------------------------------------------------------------------------

    def apply(self, event: arb.Input) -> bool:
        assert self.state is not None
        try:
            result = arb.step(self.state, event, now_ms=self.world.scheduler.now_ms)
        except ProtocolError as exc:
            self.world.refused(self.name, type(event).__name__, exc)
            return False
        self.state = result.state
        self.world.on_arbiter_commit(self)
        for effect in result.effects:
            self._effect(effect)
        return True

    def _effect(self, effect: arb.Effect) -> None:
        assert self.state is not None
        if isinstance(effect, arb.SendFundingConfirmation):
            party = self.state.terms.party_index(effect.confirmation.depositor)
            for to in (0, 1):
                self._row(f"funding-{party}-{to}", NAMES[to], effect.confirmation.encode())
        elif isinstance(effect, arb.ForwardDispute):
            notice = arb.dispute_notice(self.state, self.signer)
            assert notice is not None
            self._row(f"dispute-{effect.to}", NAMES[effect.to], notice.encode())
        elif isinstance(effect, arb.SubmitPayout):
            instruction = Instruction(self.state.terms.escrow_account.identification,
                                      effect.account.identification, effect.amount,
                                      effect.reference)
            self.payouts[effect.idempotency_key] = (instruction, None)
            self._submit(effect.idempotency_key)
        elif isinstance(effect, arb.SendPayoutNotice):
            for to in (0, 1):
                self._row(f"payout-{to}", NAMES[to], effect.notice.encode())
        elif isinstance(effect, arb.SendTransferNotice):
            # told to the nodes' shells, not to their channel machines (node/transfer_notices.py,
            # tested with real daemons): here it must speak of a payout this arbiter submitted,
            # for its amount, under its signature
            notice = effect.notice
            notice.verify_signature(self.signer.node_id)
            submitted = {i.reference: i.amount for i, _ in self.payouts.values()}
            assert submitted.get(notice.reference) == notice.amount, notice
            self.world.counts["transfer notices"] += 1
        elif isinstance(effect, HoldCredit):
            self.unobserved.append(effect.credit.credit_id)  # held for the operator's refund
        else:  # pragma: no cover - a checkpoint or top-up effect: the workload makes none yet
            raise AssertionError(f"unhandled effect {effect!r}")

    def _row(self, purpose: str, dst: str, body: bytes) -> None:
        row = self.outbox[purpose] = self._new_row(dst, body)
        self._send_row(row)

    def _submit(self, key: str) -> None:
        instruction, _ = self.payouts[key]
        epoch = self.epoch

        def answer(status: str) -> None:
            if self.up and self.epoch == epoch and status != "unavailable":
                self.payouts[key] = (instruction, status)

        self.world.bank.submit(key, instruction, answer, purpose="payout")

    # -- timers ------------------------------------------------------------------------------

    def _tick(self) -> None:
        self._timer(TICK_MS, "_tick")
        if self.state is not None and self.state.phase in (arb.ArbiterPhase.DISPUTE,
                                                           arb.ArbiterPhase.PAYING):
            self.apply(arb.Tick(self.signer))

    def _retry(self) -> None:
        self._timer(RETRY_MS, "_retry")
        self._retry_now()

    def _retry_now(self) -> None:
        for row in self.outbox.values():
            self._send_row(row)
        for key, (_, status) in self.payouts.items():
            if status is None:
                self._submit(key)

    def _statement(self) -> None:
        self._timer(STATEMENT_MS, "_statement")
        state = self.state
        if state is None:
            return
        escrow = state.terms.escrow_account.identification
        entries = self.world.bank.entries
        new, self.cursor = entries[self.cursor:], len(entries)
        cid = state.channel_id
        for entry in new:
            ins = entry.instruction
            for party in (0, 1):
                if (entry.kind == "transfer" and ins.creditor == escrow
                        and ins.reference == bank_reference(cid, Purpose.DEPOSIT, party)):
                    ok = self.apply(arb.ObserveDeposit(self.signer, party, ins.amount,  # type: ignore[arg-type]
                                                       entry.entry_id, ins.reference,
                                                       entry.booked_ms))
                    if not ok:
                        self.unobserved.append(entry.entry_id)
                if (entry.kind == "transfer" and ins.debtor == escrow
                        and ins.reference == bank_reference(cid, Purpose.PAYOUT, party)):
                    self.apply(arb.ObservePayoutBooked(self.signer, party, entry.booked_ms))

    # -- receiving ---------------------------------------------------------------------------

    def on_envelope(self, env: Envelope) -> None:
        if env.kind == "ack":
            self._answered(env)
            return
        if env.kind == "status?":
            if self.state is not None and env.body:
                status = arb.status(self.state, self.signer, env.body[0],
                                    now_ms=self.world.scheduler.now_ms)
                self._send(env.src, "status", (status.encode(),))
            return
        if env.kind != "msg":
            return
        message = self.world.decode(env.body[0], None)
        if isinstance(message, ChannelRegistration):
            self._register(message)
        elif self.state is None:
            self.world.refused(self.name, type(message).__name__, None)
        elif isinstance(message, CooperativeClose):
            self.apply(arb.ReceiveCooperativeClose(message))
        elif isinstance(message, UnilateralClose):
            self.apply(arb.ReceiveUnilateralClose(message))
        elif isinstance(message, DisputeEvidence):
            self.apply(arb.ReceiveEvidence(message))
        elif message is not None:
            self.world.refused(self.name, type(message).__name__, None)
        if env.ref:
            self._send(env.src, "ack", (), env.ref)  # committed already: answer (or refusal)

    def _register(self, message: ChannelRegistration) -> None:
        if self.state is not None:
            return  # each party registers; the second changes nothing
        try:
            self.state = arb.register(message.proposal, message.acceptance,
                                      self.signer.node_id, now_ms=self.world.scheduler.now_ms)
        except ProtocolError as exc:
            self.world.refused(self.name, "register", exc)
