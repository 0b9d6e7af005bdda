"""The deterministic simulation of specs/0003 and 0004 under faults (issue 14).

One *episode* is one channel's life: the opener proposes, the peer accepts, both register with
the arbiter and pay their deposits into escrow at the simulated bank, the arbiter confirms them,
both pay each other at random, one or both close (cooperatively or unilaterally, by the
episode's script), the network heals, and the channel must reach `settled` at both nodes and the
arbiter with the payouts booked. Throughout, the network drops, delays, duplicates and reorders
messages and partitions parties, the bank answers 5xx, times out, books late, rejects deposits
and returns payouts, and every party crashes (loses what it had not committed) and restarts.

Everything is driven by one seed: an episode's seed gives its terms, its script, its workload
and every fault. A run is a sequence of episodes whose seeds come from the run's seed; a failure
names the episode seed, which replays it alone (`World(seed).run()`), and `shrink` reduces the
faults it needed to a short trace.

The invariants (checked after every step, `World.check`, and when the channel settles,
`World.final_checks`):

1. money is conserved: the bank's total never changes and no account goes below zero;
2. no acknowledged update is lost: a node's committed state holds every proof it receipted,
   and its committed sent state covers every proof it streamed;
3. no nonce is signed twice with different content, no receipt contradicts another, and no node
   signs two close bodies (0003 §7.3);
4. the arbiter never decides that a payee is paid for less than it receipted, or a payer is
   charged more than it signed, and its payouts sum to what escrow holds;
5. once the network heals, the channel settles: both nodes and the arbiter in `settled`, with
   the same payout notice, each payout booked exactly once at the bank with the decided amount,
   and escrow empty except for what the bank returned.
"""

from __future__ import annotations

import random
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import protocol.messages  # noqa: F401  (registers every message type)
from protocol import arbiter as arb
from protocol import channel as ch
from protocol.crypto import Signer
from protocol.errors import ProtocolError
from protocol.messages import BalanceProof, ChannelTerms, CooperativeClose, Receipt
from protocol.money import compute_payouts, currency_exponent
from protocol.records import Message, decode_message
from protocol.references import Purpose, bank_reference, idempotency_key
from protocol.simulation import default_accounts
from protocol.tariff import TariffLine, TariffTier
from protocol.types import Amount, MinorUnits
from tests.faults.faultplan import FaultPlan
from tests.faults.simarbiter import SimArbiter
from tests.faults.simbank import SimBank, Violation
from tests.faults.simnet import Envelope, Network, Scheduler
from tests.faults.simnode import Row, SimNode

START_MS = 1_700_000_000_000
DISPUTE_WINDOW_MS = 20_000
WEATHER_MS = 400
MAX_DOWN_MS = 2_500
MAX_PARTITION_MS = 2_500
SETTLE_BUDGET_MS = 4 * DISPUTE_WINDOW_MS
"""After the network heals, the channel must settle within this much simulated time."""
SIGNERS = tuple(Signer.from_label(f"sim-{name}") for name in ("opener", "peer", "arbiter"))
PARTIES = ("opener", "peer", "arbiter")


@dataclass(frozen=True, slots=True)
class Script:
    """What the operators and the workload of one episode do (from the episode's seed)."""

    close_at_ms: int
    closers: tuple[int, ...]
    force: bool
    pay_gap_ms: int
    pay_odds: tuple[float, float]
    heal_at_ms: int
    crash_odds: float
    partition_odds: float


KNOWN_GAPS = {
    "refund-of-nothing": (
        "protocol/arbiter.py: a channel closed unilaterally before any deposit was booked "
        "decides payouts of 0 and 0, submits nothing, and stays `paying` for ever (only "
        "ObservePayoutBooked leads to `settled`); tests/faults/test_known_gaps.py"),
    "payout-before-funding": (
        "protocol/channel.py: a node that learns of the unilateral close before it learned of "
        "every deposit refuses the funding confirmations in `disputed` (INVALID_STATE) and "
        "then the payout notice for ever (DEPOSIT_MISMATCH: it checks the payouts against "
        "the deposits it was told of); tests/faults/test_known_gaps.py"),
}
"""Failures the simulation finds whose fix lies outside this suite's files, each with where
it is demonstrated on its own (a strict xfail): reported by every run, never silently."""


@dataclass
class Outcome:
    seed: int
    steps: int
    faults: Counter[str]
    counts: Counter[str]
    failure: str | None
    trace: list[str]
    fired: list[tuple[int, str]]
    ending: str
    """How the arbiter decided: "cooperative", "unilateral", "refund" (or "-" if never)."""
    known: str | None = None
    """The `KNOWN_GAPS` entry the failure is, if it is one."""


class World:
    node_class: type[SimNode] = SimNode
    """The node shell; a test may put a broken one here to see the simulation catch it."""

    def __init__(self, seed: int, *, mask: frozenset[int] | None = None,
                 keep_trace: int = 0) -> None:
        self.seed = seed
        self.plan = FaultPlan(seed, mask)
        self.wrng = random.Random(seed ^ 0x5EED)
        self.scheduler = Scheduler(START_MS)
        self.counts: Counter[str] = Counter()
        self.trace: deque[str] | None = deque(maxlen=keep_trace) if keep_trace else None
        self.terms = self._terms()
        self.script = self._script()
        accounts = self.terms.accounts()
        self.bank = SimBank(self.scheduler, self.plan, {
            accounts[0].identification: self.terms.opener_deposit + 1_000,
            accounts[1].identification: self.terms.peer_deposit + 1_000,
            self.terms.escrow_account.identification: 0,
        })
        self.initial = dict(self.bank.balances)
        self.initial_total = self.bank.total()
        self.nodes = (self.node_class(self, 0, SIGNERS[0]), self.node_class(self, 1, SIGNERS[1]))
        self.arbiter = SimArbiter(self, SIGNERS[2])
        self.network = Network(self.scheduler, self.plan, self._deliver, self._is_up)
        self.steps = 0
        # what the invariants remember
        self.proofs: dict[tuple[int, int], bytes] = {}
        self.signed: list[int] = [0, 0]
        """Per direction (by sender): the highest cumulative amount its sender signed."""
        self.receipted: list[tuple[int, int]] = [(0, 0), (0, 0)]
        """Per direction: the highest (nonce, amount) its receiver signed a receipt for."""
        self.streamed: list[int] = [0, 0]
        self.close_bodies: dict[int, bytes] = {}
        self.decided = False

    # -- set-up ------------------------------------------------------------------------------

    def _terms(self) -> ChannelTerms:
        r = self.wrng
        lines = tuple(
            TariffLine(unit, 0, (TariffTier(None, Amount(r.choice((1, 7, 5_000, 40_000)))),))
            for unit in ("km", "msg")[: r.randint(1, 2)]
        )
        accounts = default_accounts()
        return ChannelTerms(
            SIGNERS[0].node_id, SIGNERS[1].node_id, SIGNERS[2].node_id, "EUR", 6,
            MinorUnits(r.randint(1, 400)), MinorUnits(r.choice((0, 0, r.randint(1, 300)))),
            lines, DISPUTE_WINDOW_MS, accounts[0], accounts[1], accounts[2],
            self.seed.to_bytes(16, "big"),
        )

    def _script(self) -> Script:
        r = self.wrng
        close_at = START_MS + r.randint(1_000, 15_000)
        closers = r.choice(((0,), (1,), (0, 1)))
        return Script(
            close_at_ms=close_at,
            closers=closers,
            force=r.random() < 0.35,
            pay_gap_ms=r.choice((40, 120, 400)),
            pay_odds=(r.uniform(0.2, 0.9), r.uniform(0.0, 0.6)),
            heal_at_ms=close_at + r.randint(0, 12_000),
            crash_odds=r.choice((0.0, 0.05, 0.15)),
            partition_odds=r.choice((0.0, 0.05, 0.15)),
        )

    def deposit_reference(self, party: int) -> str:
        return bank_reference(self.terms.channel_id, Purpose.DEPOSIT, party)

    # -- plumbing the parties use ------------------------------------------------------------

    def say(self, text: str) -> None:
        if self.trace is not None:
            self.trace.append(f"{self.scheduler.now_ms - START_MS:>7} ms  {text}")

    def refused(self, who: str, what: str, exc: ProtocolError | None) -> None:
        code = exc.code.name if exc is not None else "UNEXPECTED_MESSAGE"
        self.counts[f"refused {code}"] += 1
        self.say(f"{who} refuses {what}: {code}")

    def decode(self, body: bytes, expected: type[Message] | None) -> Any:
        try:
            message = decode_message(body)
        except ProtocolError as exc:
            raise Violation(f"a party sent bytes that do not decode: {exc}") from exc
        if expected is not None and not isinstance(message, expected):
            self.refused("?", type(message).__name__, None)
            return None
        return message

    def _party(self, name: str) -> SimNode | SimArbiter:
        return self.arbiter if name == "arbiter" else self.nodes[PARTIES.index(name)]

    def _is_up(self, name: str) -> bool:
        return self._party(name).up

    def _deliver(self, env: Envelope) -> None:
        if self.trace is not None and env.kind != "ack":
            self.say(f"{env.src} → {env.dst}: {env.kind} {self._describe(env)}")
        self._party(env.dst).on_envelope(env)

    def _describe(self, env: Envelope) -> str:
        if env.kind not in ("msg", "stream") or not env.body:
            return ""
        names = []
        for body in env.body:
            message = decode_message(body)
            nonce = getattr(message, "nonce", None)
            names.append(type(message).__name__ + (f"#{nonce}" if nonce is not None else ""))
        return ", ".join(names)

    # -- the invariants, as the parties act --------------------------------------------------

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

    # -- running -----------------------------------------------------------------------------

    def _weather(self) -> None:
        if self.plan.enabled and self.scheduler.now_ms >= self.script.heal_at_ms:
            self._heal()
            return
        if not self.plan.enabled:
            return
        self.scheduler.after(WEATHER_MS, self._weather)
        if self.plan.fault("crash", self.script.crash_odds):
            party = self._party(PARTIES[self.plan.uniform(0, 2)])
            if party.up:
                party.crash()
                down = self.plan.uniform(50, MAX_DOWN_MS)
                self.scheduler.after(down, lambda: party.up or party.restart())
        if self.plan.fault("partition", self.script.partition_odds):
            a, b = self.plan.rng.sample(PARTIES, 2)
            self.network.partition(a, b, self.scheduler.now_ms
                                   + self.plan.uniform(50, MAX_PARTITION_MS))

    def _heal(self) -> None:
        self.say("the network heals")
        self.plan.enabled = False
        self.network.heal()
        for party in (*self.nodes, self.arbiter):
            if not party.up:
                party.restart()

    def settled(self) -> bool:
        a = self.arbiter.state
        return (a is not None and a.phase is arb.ArbiterPhase.SETTLED
                and all(n.durable is not None and n.durable.phase is ch.Phase.SETTLED
                        for n in self.nodes))

    def run(self, max_steps: int = 1_000_000) -> Outcome:
        failure = None
        try:
            self._run(max_steps)
            self.final_checks()
        except Violation as exc:
            failure = str(exc)
        except Exception as exc:  # a crash of a machine or of the shell is a failure too
            failure = f"{type(exc).__name__}: {exc}"
        trace = list(self.trace) if self.trace is not None else []
        known = self.known_gap() if failure is not None else None
        return Outcome(self.seed, self.steps, self.plan.counts, self.counts, failure, trace,
                       list(self.plan.fired), self.ending(), known)

    def ending(self) -> str:
        a = self.arbiter.state
        if a is None or a.payouts is None:
            return "-"
        if not a.opened:
            return "refund"
        return "cooperative" if a.close is not None else "unilateral"

    def known_gap(self) -> str | None:
        """Which of `KNOWN_GAPS` this (failed) world shows, judged from its final state."""
        a = self.arbiter.state
        if (a is not None and a.phase is arb.ArbiterPhase.PAYING and a.payouts is not None
                and a.payouts.opener == a.payouts.peer == 0 and not self.arbiter.payouts):
            return "refund-of-nothing"
        if a is not None and a.phase is arb.ArbiterPhase.SETTLED and a.notice is not None:
            for node in self.nodes:
                state = node.durable
                if (state is not None and state.phase is ch.Phase.DISPUTED
                        and sum(state.funded) != a.notice.opener_payout + a.notice.peer_payout
                        and sum(state.funded) < a.held()):
                    return "payout-before-funding"
        return None

    def _run(self, max_steps: int) -> None:
        for party in (*self.nodes, self.arbiter):
            party.start()
        self.nodes[0].open(self.terms)
        self.scheduler.after(WEATHER_MS, self._weather)
        deadline = self.script.heal_at_ms + SETTLE_BUDGET_MS
        while not (self.settled() and self.scheduler.now_ms >= self.script.heal_at_ms):
            if self.steps >= max_steps:
                raise Violation(f"not settled after {max_steps} steps")
            if self.scheduler.now_ms > deadline:
                raise Violation(self._stuck())
            if not self.scheduler.step():
                raise Violation("nothing left to do and not settled")
            self.steps += 1
            self.check()

    def _stuck(self) -> str:
        phases = [n.durable.phase.value if n.durable else "-" for n in self.nodes]
        a = self.arbiter.state
        return (f"not settled {SETTLE_BUDGET_MS} ms after the network healed: nodes {phases}, "
                f"arbiter {a.phase.value if a else '-'}")

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


@dataclass
class RunReport:
    episodes: int
    steps: int
    faults: Counter[str]
    counts: Counter[str]
    failures: list[Outcome]
    endings: Counter[str] = field(default_factory=Counter)

    def unknown(self) -> list[Outcome]:
        return [f for f in self.failures if f.known is None]


def episode_seeds(seed: int) -> random.Random:
    return random.Random(seed)


def run(seed: int, steps: int, *, world: type[World] = World) -> RunReport:
    """Episodes from `seed` until at least `steps` steps have run or one fails in a way that
    is not a known gap (known gaps are counted and the run goes on)."""
    seeds = episode_seeds(seed)
    report = RunReport(0, 0, Counter(), Counter(), [])
    while report.steps < steps:
        outcome = world(seeds.getrandbits(63)).run()
        report.episodes += 1
        report.steps += outcome.steps
        report.faults.update(outcome.faults)
        report.counts.update(outcome.counts)
        report.endings[outcome.ending] += 1
        if outcome.failure is not None:
            report.failures.append(outcome)
            if outcome.known is None:
                break
    return report


__all__ = ["Outcome", "RunReport", "Script", "World", "run"]
