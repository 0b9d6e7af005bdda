"""Credits on the escrow account that no channel can take, and their refunds (specs/0004 §10).

A credit is *unapplied* when it names no channel (an unknown reference: ``unmatched``), arrives
for a channel that is closing or closed (``late``), or is a top-up before the channel opened
(``early``). The arbiter's channel machine hands late and early credits over as a
:class:`HoldCredit` effect; the shell's statement reader hands over unmatched ones itself. They
sit in one :class:`CreditLedger` until the operator refunds them (``ActionRefund``): one refund
per credit, to the account it came from, with a reference and idempotency key derived from the
bank entry id (:func:`protocol.references.refund_idempotency_key`), so a retry — or a second
refund command — never pays twice. A refund the bank rejects (``ObserveRefundRejected``), or
returns after booking it (``ObserveRefundReturned``), is paid again as attempt n + 1 under a new
reference and key, at most 16 attempts (ADR 0322); only the live attempt's answer counts.

Same shape as the other machines: ``step(ledger, input, *, now_ms) -> LedgerTransition``; a
refused input raises a typed error and changes nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import TypeAlias

from protocol.errors import ErrorCode, LocalProtocolError
from protocol.messages import BankAccount
from protocol.references import MAX_REFUND_ATTEMPT, refund_idempotency_key, refund_reference
from protocol.types import MAX_AMOUNT, MAX_TIME_MS, MinorUnits

MAX_CREDITS = 4096
"""Unrefunded credits held at once; beyond that a credit is refused (INVALID_STATE) and left to
the bank's own exception handling rather than growing the arbiter's state without end."""


class CreditReason(enum.StrEnum):
    UNMATCHED = "unmatched"
    LATE = "late"
    EARLY = "early"


class CreditStatus(enum.StrEnum):
    HELD = "held"
    REFUNDING = "refunding"
    REFUNDED = "refunded"
    REJECTED = "rejected"
    """The bank refused all 16 attempts: left to the operator (ADR 0322)."""


@dataclass(frozen=True, slots=True)
class UnappliedCredit:
    credit_id: str
    """The bank's entry id: unique per statement account, what the refund derives from."""
    amount: MinorUnits
    currency: str
    reason: CreditReason
    bank_reference: str
    booked_ms: int
    sender: BankAccount | None
    """Where it came from (the statement's debtor, or the party's account in the terms)."""
    channel_id: bytes = b""
    status: CreditStatus = CreditStatus.HELD
    refund_account: BankAccount | None = None
    attempt: int = 0
    """The live refund attempt: 0, or the n-th after the bank rejected the earlier ones."""
    rejection: str = ""
    """The bank's reason code for the latest rejected attempt ("" if none was rejected)."""


@dataclass(frozen=True, slots=True)
class CreditLedger:
    credits: tuple[UnappliedCredit, ...] = ()
    updated_ms: int = 0

    def get(self, credit_id: str) -> UnappliedCredit:
        for credit in self.credits:
            if credit.credit_id == credit_id:
                return credit
        raise LocalProtocolError(ErrorCode.INVALID_FIELD, f"no unapplied credit {credit_id!r}")


# Inputs


@dataclass(frozen=True, slots=True)
class HoldCredit:
    """A credit no channel takes (also the channel machine's effect that says so)."""

    credit: UnappliedCredit


@dataclass(frozen=True, slots=True)
class ActionRefund:
    """The operator refunds a held credit, to `account` or else to the account it came from."""

    credit_id: str
    account: BankAccount | None = None


@dataclass(frozen=True, slots=True)
class ObserveRefundBooked:
    credit_id: str


@dataclass(frozen=True, slots=True)
class ObserveRefundRejected:
    """The bank refused (or returned) the live refund attempt of `credit_id` for `reason`:
    paid again as attempt n + 1, with a new reference and key, at most 16 attempts."""

    credit_id: str
    attempt: int
    reason: str


@dataclass(frozen=True, slots=True)
class ObserveRefundReturned:
    """The bank returned the live refund attempt of `credit_id` after booking it (pacs.004, an
    ACH R-code), for `reason`: the money is back in escrow, so the credit is paid again as
    attempt n + 1, as after a rejection (at most 16 attempts). A refunded credit's status says
    where its money is: without this it stayed "refunded" with the money back in escrow."""

    credit_id: str
    attempt: int
    reason: str


LedgerInput: TypeAlias = (HoldCredit | ActionRefund | ObserveRefundBooked | ObserveRefundRejected
                          | ObserveRefundReturned)


# Effects


@dataclass(frozen=True, slots=True)
class SubmitRefund:
    credit_id: str
    amount: MinorUnits
    currency: str
    account: BankAccount
    reference: str
    idempotency_key: str
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class LedgerTransition:
    ledger: CreditLedger
    effects: tuple[SubmitRefund, ...] = field(default=())


def step(ledger: CreditLedger, event: LedgerInput, *, now_ms: int) -> LedgerTransition:
    if isinstance(event, HoldCredit):
        result = _hold(ledger, event.credit)
    elif isinstance(event, ActionRefund):
        result = _refund(ledger, event)
    elif isinstance(event, ObserveRefundBooked):
        result = _booked(ledger, event.credit_id)
    elif isinstance(event, ObserveRefundRejected | ObserveRefundReturned):
        result = _rejected(ledger, event)
    else:
        raise LocalProtocolError(ErrorCode.INVALID_STATE, f"{type(event).__name__}?")
    return LedgerTransition(replace(result.ledger, updated_ms=now_ms), result.effects)


def _with(ledger: CreditLedger, old: UnappliedCredit, new: UnappliedCredit) -> CreditLedger:
    return replace(ledger, credits=tuple(new if c is old else c for c in ledger.credits))


def _hold(ledger: CreditLedger, credit: UnappliedCredit) -> LedgerTransition:
    if not 0 < credit.amount <= MAX_AMOUNT or not 0 <= credit.booked_ms <= MAX_TIME_MS:
        raise LocalProtocolError(ErrorCode.INVALID_AMOUNT, "a credit is a positive booked amount")
    refund_reference(credit.credit_id)  # ValueError for an id no reference can derive from
    if any(c.credit_id == credit.credit_id for c in ledger.credits):
        return LedgerTransition(ledger)  # the same bank entry seen again
    if sum(c.status is not CreditStatus.REFUNDED for c in ledger.credits) >= MAX_CREDITS:
        raise LocalProtocolError(ErrorCode.INVALID_STATE, "too many unapplied credits held")
    held = replace(credit, status=CreditStatus.HELD, refund_account=None)
    return LedgerTransition(replace(ledger, credits=(*ledger.credits, held)))


def _submit(credit: UnappliedCredit) -> SubmitRefund:
    assert credit.refund_account is not None
    return SubmitRefund(credit.credit_id, credit.amount, credit.currency, credit.refund_account,
                        refund_reference(credit.credit_id, credit.attempt),
                        refund_idempotency_key(credit.credit_id, credit.attempt),
                        credit.attempt)


def _refund(ledger: CreditLedger, event: ActionRefund) -> LedgerTransition:
    credit = ledger.get(event.credit_id)
    if credit.status is CreditStatus.REFUNDED:
        raise LocalProtocolError(ErrorCode.INVALID_STATE, "that credit was refunded already")
    if credit.status is CreditStatus.REJECTED:
        raise LocalProtocolError(ErrorCode.INVALID_STATE,
                                 "the bank refused every refund attempt: left to the operator")
    if credit.status is CreditStatus.REFUNDING:
        # Asked again: the same transfer, the same key (a retry can never pay twice).
        if event.account is not None and event.account != credit.refund_account:
            raise LocalProtocolError(
                ErrorCode.INVALID_STATE, "the refund is under way to another account"
            )
        return LedgerTransition(ledger, (_submit(credit),))
    account = event.account or credit.sender
    if account is None:
        raise LocalProtocolError(
            ErrorCode.INVALID_STATE, "the bank named no sender: give the account to refund to"
        )
    new = replace(credit, status=CreditStatus.REFUNDING, refund_account=account)
    return LedgerTransition(_with(ledger, credit, new), (_submit(new),))


def _booked(ledger: CreditLedger, credit_id: str) -> LedgerTransition:
    credit = ledger.get(credit_id)
    if credit.status is CreditStatus.HELD:
        raise LocalProtocolError(ErrorCode.INVALID_STATE, "no refund was submitted for it")
    if credit.status is CreditStatus.REFUNDED:
        return LedgerTransition(ledger)
    return LedgerTransition(_with(ledger, credit, replace(credit, status=CreditStatus.REFUNDED)))


def _rejected(ledger: CreditLedger, event: ObserveRefundRejected | ObserveRefundReturned
              ) -> LedgerTransition:
    credit = ledger.get(event.credit_id)
    if credit.status is CreditStatus.HELD:
        raise LocalProtocolError(ErrorCode.INVALID_STATE, "no refund was submitted for it")
    live = (CreditStatus.REFUNDING, CreditStatus.REFUNDED) if isinstance(
        event, ObserveRefundReturned) else (CreditStatus.REFUNDING,)
    if credit.status not in live or event.attempt != credit.attempt:
        return LedgerTransition(ledger)  # an earlier attempt's answer, or one seen already
    if credit.attempt >= MAX_REFUND_ATTEMPT:
        failed = replace(credit, status=CreditStatus.REJECTED, rejection=event.reason)
        return LedgerTransition(_with(ledger, credit, failed))
    again = replace(credit, status=CreditStatus.REFUNDING, attempt=credit.attempt + 1,
                    rejection=event.reason)
    return LedgerTransition(_with(ledger, credit, again), (_submit(again),))
