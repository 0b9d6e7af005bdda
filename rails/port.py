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
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from rails.reconcile import Difference


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


def payee_account(scheme: str, identification: str, name: str, *, agent: str | None = None
                  ) -> Account:
    """An account as channel terms and the config name it, as the port takes it.

    A ``US.ABA`` identification may carry its routing number (``ROUTING:ACCOUNT``, as terms
    write it); it becomes the agent. An unknown scheme is a ValueError.
    """
    kind = AccountScheme(scheme)
    if kind is AccountScheme.US_ABA and ":" in identification:
        agent, identification = identification.split(":", 1)
    return Account(name, kind, identification, agent or None)


class PaymentStatus(enum.StrEnum):
    PENDING = "pending"
    """Submitted; the bank has not decided yet."""
    ACCEPTED = "accepted"
    """The bank accepted it for execution; not booked yet."""
    BOOKED = "booked"
    """Our account's statement shows the debit, with this end-to-end id, amount and currency:
    the money moved (settled). A bank's status report alone never makes a payment booked
    (:mod:`rails.reconcile`)."""
    UNRECONCILED = "unreconciled"
    """The statement disagrees (another amount, no booking by the deadline): raised to the
    operator, never settled; `reason_code` is the :class:`rails.reconcile.DifferenceKind`.
    Not final: a late booking still settles it."""
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
class TransferInstruction:
    """What the node asks its rail to pay: the typed value that crosses from node to rail.

    The node builds it from a machine's effect (a deposit into escrow, a payout), stores it in
    its outbox with :meth:`encode` and hands it to :meth:`payment` with its own account as the
    debtor. `purpose` and `party` say what the payment is for in the channel (the transfer row
    keeps them); `idempotency_key` names it for ever.
    """

    idempotency_key: str
    purpose: str
    party: int
    amount_minor: int
    currency: str
    reference: str
    creditor: Account

    def payment(self, debtor: Account) -> PaymentInstruction:
        return PaymentInstruction(
            idempotency_key=self.idempotency_key, debtor=debtor, creditor=self.creditor,
            amount_minor=self.amount_minor, currency=self.currency, reference=self.reference)

    def creditor_json(self) -> dict[str, str]:
        c = self.creditor
        return {"scheme": c.scheme.value, "identification": c.identification, "name": c.name,
                **({"agent": c.agent} if c.agent else {})}

    def encode(self) -> bytes:
        """JSON, the shape outbox rows have always held (so rows written before still read)."""
        return json.dumps({
            "idempotency_key": self.idempotency_key, "purpose": self.purpose,
            "party": self.party, "amount_minor": self.amount_minor, "currency": self.currency,
            "reference": self.reference, "creditor": self.creditor_json(),
        }).encode()

    @classmethod
    def decode(cls, data: bytes | str) -> TransferInstruction:
        """Read :meth:`encode`'s JSON; anything else is a ValueError."""
        try:
            raw = json.loads(data)
            creditor = raw["creditor"]
            instruction = cls(
                idempotency_key=str(raw["idempotency_key"]), purpose=str(raw["purpose"]),
                party=int(raw["party"]), amount_minor=int(raw["amount_minor"]),
                currency=str(raw["currency"]), reference=str(raw["reference"]),
                creditor=payee_account(str(creditor["scheme"]), str(creditor["identification"]),
                                       str(creditor["name"]), agent=creditor.get("agent")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a transfer instruction: {exc}") from None
        return instruction


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
    differences: tuple[Difference, ...] = ()
    """What the operator must look at (:mod:`rails.reconcile`): never settled silently."""


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

    async def reconcile(self, statement: Statement | None = None, *,
                        since: date | None = None, until: date | None = None
                        ) -> Reconciliation:
        """Match a statement (everything the bank reported when None) against what we
        submitted (:mod:`rails.reconcile`); `since`/`until` (inclusive) limit it to what was
        booked and submitted in that period."""
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


@dataclass(frozen=True, slots=True)
class PendingAuthorisation:
    """A payment waiting for the account holder (the PSU) to authorise it at the bank."""

    idempotency_key: str
    consent_id: str
    amount_minor: int
    currency: str
    authorisation_url: str
    """Where to send the PSU; the bank redirects back to the configured redirect URI."""


@runtime_checkable
class PsuAuthorisation(Protocol):
    """A rail whose payments may need the account holder's own authorisation at the bank (an
    Open Banking consent, OAuth 2.0 authorization code): the node lists what waits and hands
    back where the bank redirected the PSU to. A rail without the step does not implement it."""

    async def awaiting_authorisation(self) -> list[PendingAuthorisation]:
        """Every payment whose consent awaits the PSU, with where to send the PSU."""
        ...

    async def authorised_by_redirect(self, redirect: str) -> PaymentRecord:
        """The bank redirected the PSU to `redirect` (the configured redirect URI with
        ``code`` and ``state``, or ``error``): carry on with that payment; its record."""
        ...
