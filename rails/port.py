"""The rail port: the small typed interface every adapter implements.

A caller builds a :class:`PaymentInstruction` with an idempotency key derived from what the
payment is for (a channel id and a purpose), and hands it to :meth:`Rail.submit`. Submitting the
same key again returns the original :class:`PaymentRecord` and never creates a second payment,
including after a process restart: the adapter writes the key to its
:class:`~rails.store.IdempotencyStore` *before* it talks to the bank, and the answer after.

Amounts are integers in the currency's ISO 4217 minor units (EUR cents, JPY yen, KWD fils).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Protocol, runtime_checkable


class AccountScheme(enum.StrEnum):
    """How an account is identified."""

    IBAN = "IBAN"
    """`identification` is an IBAN; `agent` is the BIC (optional where the IBAN implies it)."""
    SORT_CODE = "UK.OBIE.SortCodeAccountNumber"
    """`identification` is a 6-digit sort code followed by an 8-digit account number."""
    US_ABA = "US.ABA"
    """`identification` is the account number (≤ 17 digits); `agent` the 9-digit routing number."""


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    scheme: AccountScheme
    identification: str
    agent: str | None = None


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    """Submitted; the bank has not decided yet."""
    ACCEPTED = "accepted"
    """The bank accepted it for execution; not booked yet."""
    BOOKED = "booked"
    """The bank booked the debit (and, on us, the credit): the money moved."""
    REJECTED = "rejected"
    """The bank refused it; `reason_code` says why. No money moved."""
    RETURNED = "returned"
    """It was booked, then came back (a pacs.004 or an ACH return); `reason_code` says why."""

    @property
    def final(self) -> bool:
        return self in (PaymentStatus.BOOKED, PaymentStatus.REJECTED, PaymentStatus.RETURNED)


@dataclass(frozen=True, slots=True)
class PaymentInstruction:
    """Pay `amount_minor` of `currency` from `debtor` to `creditor`.

    `reference` is the remittance reference the creditor sees (a channel's bank reference);
    `idempotency_key` names this payment for ever: a retry MUST reuse it.
    """

    idempotency_key: str
    debtor: Account
    creditor: Account
    amount_minor: int
    currency: str
    reference: str
    execution_date: date | None = None


@dataclass(frozen=True, slots=True)
class PaymentRecord:
    """What the rail knows about one submitted payment."""

    idempotency_key: str
    end_to_end_id: str
    status: PaymentStatus
    amount_minor: int
    currency: str
    bank_payment_id: str | None = None
    reason_code: str | None = None
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class IncomingCredit:
    """A credit booked to the rail's own account."""

    entry_id: str
    """Unique per account at the bank (an entry reference or transaction id)."""
    amount_minor: int
    currency: str
    debtor_name: str | None
    debtor_account: str | None
    reference: str | None
    """The remittance reference the payer gave (structured or unstructured)."""
    booking_date: date
    end_to_end_id: str | None = None
    booked_at: datetime | None = None
    """The booking time (timezone-aware) when the bank reports one (Open Banking
    ``BookingDateTime``); None when it reports only a date. A deposit's confirmation carries
    this time, or the booking date at 00:00 UTC without it (specs/0004 §2)."""


@dataclass(frozen=True, slots=True)
class CreditPage:
    credits: tuple[IncomingCredit, ...]
    cursor: str
    """Hand this back to :meth:`Rail.incoming_credits` to get only later credits."""


class EntryDirection(enum.StrEnum):
    CREDIT = "CRDT"
    DEBIT = "DBIT"


@dataclass(frozen=True, slots=True)
class StatementEntry:
    entry_id: str
    direction: EntryDirection
    amount_minor: int
    currency: str
    booked: bool
    booking_date: date | None
    end_to_end_id: str | None = None
    reference: str | None = None
    return_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Statement:
    """A bank statement in neutral form (from camt.053, BAI2 or OB transactions)."""

    account: str
    currency: str
    entries: tuple[StatementEntry, ...]
    opening_balance_minor: int | None = None
    closing_balance_minor: int | None = None
    statement_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """Submitted instructions matched against a statement by end-to-end id.

    `booked` maps idempotency keys to the entry that booked them; `outstanding` lists the keys
    of submitted payments the statement does not show; `unmatched` the entries nobody submitted.
    """

    booked: dict[str, StatementEntry] = field(default_factory=dict)
    returned: dict[str, StatementEntry] = field(default_factory=dict)
    outstanding: tuple[str, ...] = ()
    unmatched: tuple[StatementEntry, ...] = ()


@runtime_checkable
class Rail(Protocol):
    """The port. Every method raises only :class:`rails.errors.RailError` subclasses."""

    name: str

    async def submit(self, instruction: PaymentInstruction) -> PaymentRecord:
        """Submit once per key; a repeat returns the stored record (same key, other body →
        :class:`~rails.errors.IdempotencyConflict`)."""
        ...

    async def status(self, idempotency_key: str) -> PaymentRecord:
        """Refresh and return the payment's status from the bank."""
        ...

    async def incoming_credits(self, cursor: str | None = None) -> CreditPage:
        """Credits booked to our account after `cursor` (all of them when None)."""
        ...

    async def reconcile(self, statement: Statement | None = None) -> Reconciliation:
        """Match a statement (fetched from the bank when None) against what we submitted."""
        ...

    async def aclose(self) -> None: ...


def validate_instruction_basics(instruction: PaymentInstruction) -> None:
    """Rules every rail shares; adapters add their scheme's own on top."""
    from rails.errors import Finding, InvalidInstruction
    from rails.money import currency_exponent

    findings: list[Finding] = []
    if not instruction.idempotency_key or len(instruction.idempotency_key) > 40:
        findings.append(Finding("idempotency_key", "FF01", "must be 1 to 40 characters"))
    if instruction.amount_minor <= 0:
        findings.append(Finding("amount_minor", "AM12", "amount must be positive"))
    try:
        currency_exponent(instruction.currency)
    except ValueError as exc:
        findings.append(Finding("currency", "AM03", str(exc)))
    if findings:
        raise InvalidInstruction("invalid payment instruction", findings)


def sum_minor(records: Sequence[PaymentRecord]) -> int:
    return sum(r.amount_minor for r in records)
