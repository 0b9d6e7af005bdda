"""The invariants of the simulation (tests/faults/simulator.py lists them), as a part of the
`World` that remembers what every party signed, receipted and streamed, and checks each step,
each decision of the arbiter and the end of each episode against it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol import arbiter as arb
from protocol.messages import BalanceProof, CooperativeClose, Receipt
from protocol.money import compute_payouts, currency_exponent
from protocol.references import Purpose, bank_reference, idempotency_key
from protocol.types import Amount
from tests.faults.simbank import Violation
from tests.faults.simparty import Row

if TYPE_CHECKING:
    from collections import Counter

    from protocol.messages import ChannelTerms
    from tests.faults.simarbiter import SimArbiter
    from tests.faults.simbank import SimBank
    from tests.faults.simnode import SimNode


class Invariants:
    """Mixed into `World`: the invariants' memory and checks."""

    terms: ChannelTerms
    bank: SimBank
    nodes: tuple[SimNode, SimNode]
    arbiter: SimArbiter
    initial: dict[str, int]
    initial_total: int
    counts: Counter[str]

    def _remember(self) -> None:
        self.proofs: dict[tuple[int, int], bytes] = {}
        self.signed: list[int] = [0, 0]
        """Per direction (by sender): the highest cumulative amount its sender signed."""
        self.receipted: list[tuple[int, int]] = [(0, 0), (0, 0)]
        """Per direction: the highest (nonce, amount) its receiver signed a receipt for."""
        self.streamed: list[int] = [0, 0]
        self.close_bodies: dict[int, bytes] = {}
        self.decided = False

    def signed_proof(self, node: SimNode, proof: BalanceProof) -> None:
        key = (node.index, proof.nonce)
        body = proof.encode()
        if self.proofs.setdefault(key, body) != body:
            raise Violation(f"{node.name} signed nonce {proof.nonce} twice with different content")
        self.signed[node.index] = max(self.signed[node.index], proof.amount)

    def signed_receipt(self, node: SimNode, receipt: Receipt) -> None:
        direction = 1 - node.index
        nonce, _amount = self.receipted[direction]
        key = (direction, receipt.nonce)
        held = self.proofs.get(key)
        if receipt.nonce == 0:
            if receipt.amount:
                raise Violation(f"{node.name} receipted nonce 0 for {receipt.amount}")
            return  # capped by a close that carries none of the peer's proofs: says nothing
        if held is None:
            raise Violation(f"{node.name} receipted nonce {receipt.nonce} nobody signed")
        if BalanceProof.decode(held).amount != receipt.amount:
            raise Violation(f"{node.name} receipted nonce {receipt.nonce} for another amount")
        if receipt.nonce > nonce:
            self.receipted[direction] = (receipt.nonce, receipt.amount)

    def signed_close(self, node: SimNode, close: CooperativeClose) -> None:
        if not getattr(close, close.signature_field(node.index)):
            return
        body = close.body()
        if self.close_bodies.setdefault(node.index, body) != body:
            raise Violation(f"{node.name} signed a second close body (0003 §7.3)")

    def on_commit(self, node: SimNode, proofs: list[tuple[int, bytes]],
                  rows: dict[str, Row]) -> None:
        """What leaves the node from this commit on is what the invariants hold it to."""
        for _, body in proofs:
            self.signed_proof(node, BalanceProof.decode(body))
        if proofs:
            self.streamed[node.index] = max(self.streamed[node.index], proofs[-1][0])
        for purpose in ("close-peer", "close-arbiter"):
            if purpose in rows:
                self.signed_close(node, CooperativeClose.decode(rows[purpose].body))

    def on_arbiter_commit(self, arbiter: SimArbiter) -> None:
        state = arbiter.state
        if state is not None and not self.decided and state.payouts is not None:
            self.decided = True
            self._check_decision(state)

    def _check_decision(self, state: arb.ArbiterState) -> None:
        payouts = state.payouts
        assert payouts is not None
        if payouts.opener + payouts.peer != state.held():
            raise Violation(f"payouts {payouts} do not sum to the {state.held()} held")
        if not state.opened:
            if (payouts.opener, payouts.peer) != state.deposited:
                raise Violation("a channel that never opened must refund each deposit")
            return
        if state.close is not None:
            sent = (state.close.opener_amount, state.close.peer_amount)
        else:
            sent = tuple(p.amount if p is not None else 0 for p in state.evidence)  # type: ignore[assignment]
        for direction in (0, 1):
            if sent[direction] < self.receipted[direction][1]:
                raise Violation(
                    f"the payee of direction {direction} is paid for {sent[direction]} but "
                    f"receipted {self.receipted[direction][1]}")
            if sent[direction] > self.signed[direction]:
                raise Violation(
                    f"the payer of direction {direction} is charged {sent[direction]} but "
                    f"signed at most {self.signed[direction]}")
        terms = self.terms
        factor = 10 ** (terms.scale - currency_exponent(terms.currency))
        for party, paid in enumerate((payouts.opener, payouts.peer)):
            # in money: at least deposit − the most it signed + the most it receipted, less
            # the payee's rounding down to the rail's unit (DESIGN §3)
            owed = terms.deposits()[party] * factor - self.signed[party] + self.receipted[
                1 - party][1]
            if paid * factor < owed - (factor - 1):
                raise Violation(f"party {party} is paid {paid} minor units; it is owed at "
                                f"least {owed} at scale {terms.scale}")
        base = compute_payouts(
            opener_deposit=terms.opener_deposit, peer_deposit=terms.peer_deposit,
            opener_sent=Amount(sent[0]), peer_sent=Amount(sent[1]), scale=terms.scale,
            exponent=currency_exponent(terms.currency))
        extra = [state.deposited[i] - terms.deposits()[i] for i in (0, 1)]
        if (payouts.opener, payouts.peer) != (base.opener + extra[0], base.peer + extra[1]):
            raise Violation(f"payouts {payouts} are not the formula's {base} on {sent}")

    def check(self) -> None:
        """The per-step invariants."""
        if self.bank.total() != self.initial_total:
            raise Violation("the bank's total changed: money was created or destroyed")
        for node in self.nodes:
            state = node.durable
            if state is None:
                continue
            received = state.received.nonce
            if received < self.receipted[1 - node.index][0]:
                raise Violation(f"{node.name} receipted nonce {self.receipted[1 - node.index][0]}"
                                f" but its committed state holds only {received}")
            if state.sent.nonce < self.streamed[node.index]:
                raise Violation(f"{node.name} streamed nonce {self.streamed[node.index]} but "
                                f"its committed state is at {state.sent.nonce}")

    def final_checks(self) -> None:
        a = self.arbiter.state
        assert a is not None
        assert a.notice is not None
        assert a.payouts is not None
        for node in self.nodes:
            assert node.durable is not None
            if node.durable.payout != a.notice:
                raise Violation(f"{node.name} settled on another payout notice")
        cid = self.terms.channel_id
        accounts = self.terms.accounts()
        escrow = self.terms.escrow_account.identification
        returned = 0
        for party, amount in enumerate((a.payouts.opener, a.payouts.peer)):
            key = idempotency_key(cid, Purpose.PAYOUT, party)
            reference = bank_reference(cid, Purpose.PAYOUT, party)
            booked = [e for e in self.bank.entries
                      if e.instruction.reference == reference and e.kind == "transfer"]
            if amount == 0:
                if booked:
                    raise Violation(f"a zero payout to party {party} was booked")
                continue
            if len(booked) != 1 or booked[0].instruction.amount != amount:
                raise Violation(f"payout to party {party}: bookings {booked}, decided {amount}")
            if self.bank.status(key) == "returned":
                returned += amount
                self.counts["payouts returned"] += 1
            paid_in = sum(e.instruction.amount for e in self.bank.entries
                          if e.instruction.debtor == accounts[party].identification
                          and e.kind == "transfer")
            back = amount if self.bank.status(key) == "returned" else 0
            expected = self.initial[accounts[party].identification] - paid_in + amount - back
            if self.bank.balances[accounts[party].identification] != expected:
                raise Violation(f"party {party}'s account does not show its payout")
        if self.bank.balances[escrow] != returned:
            raise Violation(
                f"escrow holds {self.bank.balances[escrow]} after settlement, of which only "
                f"{returned} was returned by the bank (unobserved deposits: "
                f"{self.arbiter.unobserved})")
