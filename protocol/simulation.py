"""Two in-memory peers and an in-memory arbiter wired together (h11's ``ConnectionPair``).

Pure and synchronous: effects are routed straight into the other machines' ``step``; the "bank"
is a ledger that books deposits and payouts at once. Tests use it to run whole lifecycles; until
the daemons exist it also backs ``meterline demo``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from protocol import arbiter as arb
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.messages import BankAccount, ChannelTerms
from protocol.references import Purpose, bank_reference
from protocol.tariff import TariffLine
from protocol.types import MinorUnits, Quantity

Trace = Callable[[str], None]


def default_accounts() -> tuple[BankAccount, BankAccount, BankAccount]:
    return (
        BankAccount("IBAN", "DE89370400440532013000", "Opener GmbH"),
        BankAccount("IBAN", "FR1420041010050500013M02606", "Peer SA"),
        BankAccount("IBAN", "NL91ABNA0417164300", "Escrow Agent BV"),
    )


@dataclass
class Ledger:
    """The bank: balances by account identification, in minor units."""

    balances: dict[str, int] = field(default_factory=dict)
    transfers: list[tuple[str, str, int, str]] = field(default_factory=list)

    def move(self, debtor: str, creditor: str, amount: int, reference: str) -> None:
        self.balances[debtor] = self.balances.get(debtor, 0) - amount
        self.balances[creditor] = self.balances.get(creditor, 0) + amount
        self.transfers.append((debtor, creditor, amount, reference))


@dataclass
class Simulation:
    opener: Signer
    peer: Signer
    arbiter: Signer
    terms: ChannelTerms
    now_ms: int = 1_700_000_000_000
    trace: Trace | None = None
    ledger: Ledger = field(default_factory=Ledger)
    states: list[ch.ChannelState] = field(default_factory=list)
    escrow: arb.ArbiterState | None = None
    entry_ids: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def create(
        cls,
        *,
        tariff: tuple[TariffLine, ...],
        opener_deposit: int,
        peer_deposit: int = 0,
        currency: str = "EUR",
        scale: int = 6,
        dispute_window_ms: int = 86_400_000,
        labels: tuple[str, str, str] = ("opener", "peer", "arbiter"),
        salt: bytes = bytes(16),
        trace: Trace | None = None,
    ) -> Simulation:
        opener, peer, arbiter = (Signer.from_label(label) for label in labels)
        accounts = default_accounts()
        terms = ChannelTerms(
            opener.node_id,
            peer.node_id,
            arbiter.node_id,
            currency,
            scale,
            MinorUnits(opener_deposit),
            MinorUnits(peer_deposit),
            tariff,
            dispute_window_ms,
            accounts[0],
            accounts[1],
            accounts[2],
            salt,
        )
        sim = cls(opener, peer, arbiter, terms, trace=trace)
        sim.ledger.balances = {
            accounts[0].identification: opener_deposit,
            accounts[1].identification: peer_deposit,
        }
        return sim

    def say(self, text: str) -> None:
        if self.trace is not None:
            self.trace(text)

    def tick(self, ms: int = 1) -> int:
        self.now_ms += ms
        return self.now_ms

    def signer(self, index: int) -> Signer:
        return (self.opener, self.peer)[index]

    # lifecycle ------------------------------------------------------------------------------

    def open(self) -> None:
        """Propose, accept, register with the arbiter, deposit, confirm: both sides OPEN."""
        proposed = ch.propose(self.terms, self.opener, now_ms=self.tick())
        proposal = next(e.proposal for e in proposed.effects if isinstance(e, ch.SendProposal))
        self.say(f"proposed channel {proposed.state.channel_id.hex()[:16]}…")
        accepted = ch.accept(proposal, self.peer, now_ms=self.tick())
        acceptance = next(
            e.acceptance for e in accepted.effects if isinstance(e, ch.SendAcceptance)
        )
        opener_state = ch.step(
            proposed.state, ch.ReceiveAcceptance(acceptance), now_ms=self.tick()
        ).state
        self.states = [opener_state, accepted.state]
        self.say("peer accepted the terms; both signatures registered with the arbiter")
        self.escrow = arb.register(proposal, acceptance, self.arbiter.node_id, now_ms=self.tick())
        for party in (0, 1):
            amount = self.terms.deposits()[party]
            if amount:
                self.deposit(party, amount)
        self.say(f"channel open: opener {self.states[0].phase}, peer {self.states[1].phase}")

    def deposit(self, party: int, amount: int) -> None:
        reference = bank_reference(self.terms.channel_id, Purpose.DEPOSIT, party)
        self.ledger.move(
            self.terms.accounts()[party].identification,
            self.terms.escrow_account.identification,
            amount,
            reference,
        )
        self.say(f"party {party} deposited {amount} minor units into escrow ({reference})")
        assert self.escrow is not None
        result = arb.step(
            self.escrow,
            arb.ObserveDeposit(
                self.arbiter,
                party,
                MinorUnits(amount),
                f"entry-{next(self.entry_ids)}",
                reference,
                self.now_ms,
            ),
            now_ms=self.tick(),
        )
        self.escrow = result.state
        for effect in result.effects:
            if isinstance(effect, arb.SendFundingConfirmation):
                for i in (0, 1):
                    self.states[i] = ch.step(
                        self.states[i], ch.ReceiveFunding(effect.confirmation), now_ms=self.now_ms
                    ).state

    def pay(
        self,
        sender: int,
        quantities: tuple[int, ...],
        *,
        direct: int = 0,
        reference: str = "",
        acknowledge: bool = True,
    ) -> None:
        """One update from `sender`, delivered, stored and (optionally) receipted."""
        receiver = 1 - sender
        result = ch.step(
            self.states[sender],
            ch.ActionPay(
                self.signer(sender),
                tuple(Quantity(q) for q in quantities),
                direct,  # type: ignore[arg-type]
                reference,
            ),
            now_ms=self.tick(),
        )
        self.states[sender] = result.state
        (send,) = result.effects
        assert isinstance(send, ch.SendProof)
        self.states[receiver] = ch.step(
            self.states[receiver], ch.ReceiveProof(send.proof), now_ms=self.now_ms
        ).state
        if acknowledge:
            self.acknowledge(receiver)

    def acknowledge(self, receiver: int) -> None:
        ack = ch.step(
            self.states[receiver], ch.ActionAcknowledge(self.signer(receiver)), now_ms=self.now_ms
        )
        self.states[receiver] = ack.state
        (receipt,) = ack.effects
        assert isinstance(receipt, ch.SendReceipt)
        sender = 1 - receiver
        self.states[sender] = ch.step(
            self.states[sender], ch.ReceiveReceipt(receipt.receipt), now_ms=self.now_ms
        ).state

    def close(self, initiator: int = 0) -> arb.Transition:
        """Cooperative close started by `initiator`; returns the arbiter's payout transition."""
        other = 1 - initiator
        first = ch.step(
            self.states[initiator], ch.ActionClose(self.signer(initiator)), now_ms=self.tick()
        )
        self.states[initiator] = first.state
        (request,) = [e for e in first.effects if isinstance(e, ch.SendClose)]
        received = ch.step(self.states[other], ch.ReceiveClose(request.close), now_ms=self.now_ms)
        self.states[other] = received.state
        cosigned = ch.step(
            self.states[other], ch.ActionClose(self.signer(other)), now_ms=self.now_ms
        )
        self.states[other] = cosigned.state
        full = next(e.close for e in cosigned.effects if isinstance(e, ch.SubmitClose))
        self.states[initiator] = ch.step(
            self.states[initiator], ch.ReceiveClose(full), now_ms=self.now_ms
        ).state
        self.say("both parties signed the final state")
        assert self.escrow is not None
        result = arb.step(self.escrow, arb.ReceiveCooperativeClose(full), now_ms=self.tick())
        self.escrow = result.state
        return result

    def settle(self, decided: arb.Transition) -> None:
        """Book every payout the arbiter submitted, then deliver its payout notice."""
        for effect in decided.effects:
            if isinstance(effect, arb.SubmitPayout):
                self.ledger.move(
                    self.terms.escrow_account.identification,
                    effect.account.identification,
                    effect.amount,
                    effect.reference,
                )
                self.say(f"arbiter paid party {effect.party} {effect.amount} ({effect.reference})")
        assert self.escrow is not None
        notices = []
        for party in (0, 1):
            result = arb.step(
                self.escrow,
                arb.ObservePayoutBooked(self.arbiter, party, self.now_ms),
                now_ms=self.tick(),
            )
            self.escrow = result.state
            notices += [e.notice for e in result.effects if isinstance(e, arb.SendPayoutNotice)]
        for notice in notices:
            for i in (0, 1):
                self.states[i] = ch.step(
                    self.states[i], ch.ReceivePayout(notice), now_ms=self.now_ms
                ).state
        self.say(f"settled: opener {self.states[0].phase}, peer {self.states[1].phase}")

    # checkpoints and top-ups (specs/0003 §9) -----------------------------------------------------

    def checkpoint(self, initiator: int = 0) -> arb.Transition:
        """`initiator` proposes a checkpoint, the other co-signs it, both hold it, the arbiter
        takes it; returns the arbiter's transition (its checkpoint payouts, not yet booked)."""
        other = 1 - initiator
        first = ch.step(self.states[initiator], ch.ActionCheckpoint(self.signer(initiator)),
                        now_ms=self.tick())
        self.states[initiator] = first.state
        (proposal,) = [e.checkpoint for e in first.effects if isinstance(e, ch.SendCheckpoint)]
        self.states[other] = ch.step(self.states[other], ch.ReceiveCheckpoint(proposal),
                                     now_ms=self.now_ms).state
        cosigned = ch.step(self.states[other], ch.ActionCheckpoint(self.signer(other)),
                           now_ms=self.now_ms)
        self.states[other] = cosigned.state
        full = next(e.checkpoint for e in cosigned.effects if isinstance(e, ch.SubmitCheckpoint))
        self.states[initiator] = ch.step(self.states[initiator], ch.ReceiveCheckpoint(full),
                                         now_ms=self.now_ms).state
        self.say(f"checkpoint {full.seq} signed by both")
        assert self.escrow is not None
        result = arb.step(self.escrow, arb.ReceiveCheckpoint(full), now_ms=self.tick())
        self.escrow = result.state
        return result

    def book(self, decided: arb.Transition) -> None:
        """Book every payout `decided` submitted at the bank and tell the arbiter, by reference."""
        for effect in decided.effects:
            if isinstance(effect, arb.SubmitPayout):
                self.ledger.move(self.terms.escrow_account.identification,
                                 effect.account.identification, effect.amount, effect.reference)
                assert self.escrow is not None
                self.escrow = arb.step(
                    self.escrow,
                    arb.ObserveTransferBooked(self.arbiter, effect.reference, self.now_ms),
                    now_ms=self.tick(),
                ).state

    def topup(self, party: int, amount: int) -> arb.Transition:
        """`party` pays a top-up into escrow; the arbiter's confirmation reaches both sides."""
        reference = bank_reference(self.terms.channel_id, Purpose.TOPUP, party)
        self.ledger.move(self.terms.accounts()[party].identification,
                         self.terms.escrow_account.identification, amount, reference)
        assert self.escrow is not None
        result = arb.step(
            self.escrow,
            arb.ObserveTopUp(self.arbiter, party, MinorUnits(amount),
                             f"entry-{next(self.entry_ids)}", reference, self.now_ms),
            now_ms=self.tick(),
        )
        self.escrow = result.state
        for effect in result.effects:
            if isinstance(effect, arb.SendTopUpConfirmation):
                for i in (0, 1):
                    self.states[i] = ch.step(self.states[i],
                                             ch.ReceiveTopUp(effect.confirmation),
                                             now_ms=self.now_ms).state
        return result
