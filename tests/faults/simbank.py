"""The simulated bank: accounts, idempotent submissions, late bookings, rejections and returns.

A submission carries an idempotency key (DESIGN §6). The bank remembers every key with the
instruction it came with: the same key again returns the answer it gave, whatever the network
did to the first answer, and books nothing twice; the same key with another instruction is a bug
of the submitter and stops the run. Its faults, each a decision point of the `FaultPlan`:

- *unavailable*: a 5xx, nothing recorded (the submitter retries with the same key);
- *timeout*: recorded and booked as usual, but the answer is lost (a retry must not pay twice);
- *late*: booked long after it was accepted;
- *rejected* (AC04, a closed account; deposits only): accepted, then never booked;
- *returned* (pacs.004, payouts only): booked, then sent back to the debtor later.

The protocol has no input for a payout the bank rejects or returns (specs/0004 has none yet), so
the simulation injects rejections only on deposits, returns only on payouts, and its invariants
account for what a return moved back (see `World.final_checks`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tests.faults.faultplan import FaultPlan
from tests.faults.simnet import Scheduler


class Violation(AssertionError):
    """An invariant of the simulation broke."""


@dataclass(frozen=True, slots=True)
class Instruction:
    debtor: str
    creditor: str
    amount: int
    reference: str


@dataclass(frozen=True, slots=True)
class Entry:
    """A booked movement on the bank's books."""

    entry_id: str
    instruction: Instruction
    booked_ms: int
    kind: str = "transfer"
    """"transfer", or "return" for the pacs.004 of an earlier transfer."""


@dataclass(frozen=True, slots=True)
class BankWeather:
    unavailable: float = 0.1
    timeout: float = 0.1
    late: float = 0.2
    rejected: float = 0.08
    returned: float = 0.06
    late_ms: tuple[int, int] = (500, 6_000)


@dataclass
class SimBank:
    scheduler: Scheduler
    plan: FaultPlan
    balances: dict[str, int]
    weather: BankWeather = field(default_factory=BankWeather)
    submissions: dict[str, tuple[Instruction, str]] = field(default_factory=dict)
    """Idempotency key → (instruction, status: accepted | booked | rejected | returned)."""
    entries: list[Entry] = field(default_factory=list)
    bookings: int = 0

    def total(self) -> int:
        return sum(self.balances.values())

    def submit(self, key: str, instruction: Instruction, reply: Callable[[str], None],
               *, purpose: str) -> None:
        """Take an instruction; `reply` gets the answer unless it is lost."""
        latency = self.plan.uniform(1, 20)
        if self.plan.fault("bank_unavailable", self.weather.unavailable):
            self.scheduler.after(latency, lambda: reply("unavailable"))
            return
        known = self.submissions.get(key)
        if known is not None:
            if known[0] != instruction:
                raise Violation(f"idempotency key {key} reused for {instruction} (was {known[0]})")
            status = known[1]
        else:
            status = "accepted"
            self.submissions[key] = (instruction, status)
            delay = self.plan.uniform(1, 50)
            if self.plan.fault("bank_late", self.weather.late):
                delay = self.plan.uniform(*self.weather.late_ms)
            rejected = purpose == "deposit" and self.plan.fault(
                "bank_rejected", self.weather.rejected)
            self.scheduler.after(delay, lambda: self._book(key, rejected=rejected,
                                                           purpose=purpose))
        if self.plan.fault("bank_timeout", self.weather.timeout):
            return
        self.scheduler.after(latency, lambda: reply(status))

    def status(self, key: str) -> str | None:
        known = self.submissions.get(key)
        return None if known is None else known[1]

    def _book(self, key: str, *, rejected: bool, purpose: str) -> None:
        instruction, status = self.submissions[key]
        if status != "accepted":
            raise Violation(f"{key} booked twice")
        if rejected or self.balances.get(instruction.debtor, 0) < instruction.amount:
            self.submissions[key] = (instruction, "rejected")
            return
        self._move(instruction, "transfer")
        self.submissions[key] = (instruction, "booked")
        if purpose == "payout" and self.plan.fault("bank_returned", self.weather.returned):
            self.scheduler.after(self.plan.uniform(*self.weather.late_ms),
                                 lambda: self._return(key))

    def _return(self, key: str) -> None:
        instruction, _ = self.submissions[key]
        back = Instruction(instruction.creditor, instruction.debtor, instruction.amount,
                           instruction.reference)
        self._move(back, "return")
        self.submissions[key] = (instruction, "returned")

    def _move(self, instruction: Instruction, kind: str) -> None:
        if self.balances.get(instruction.debtor, 0) < instruction.amount:
            raise Violation(f"{instruction.debtor} would go below zero")
        self.balances[instruction.debtor] -= instruction.amount
        self.balances[instruction.creditor] = (
            self.balances.get(instruction.creditor, 0) + instruction.amount)
        self.bookings += 1
        self.entries.append(Entry(f"E{len(self.entries):06d}", instruction,
                                  self.scheduler.now_ms, kind))

    def statement(self, account: str, after: int = 0) -> list[Entry]:
        """Booked entries on `account`, from position `after` of the books."""
        return [e for e in self.entries[after:]
                if account in (e.instruction.debtor, e.instruction.creditor)]
