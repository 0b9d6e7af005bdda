"""A refund the bank rejects is paid again by the ledger machine as attempt n + 1, with a new
reference and idempotency key, at most 16 attempts; only the live attempt's answer counts
(ADR 0322)."""

from __future__ import annotations

import pytest

from protocol import refunds as rf
from protocol.errors import LocalProtocolError
from protocol.messages import BankAccount
from protocol.references import refund_idempotency_key, refund_reference
from protocol.types import MinorUnits

SENDER = BankAccount("IBAN", "DE89370400440532013000", "Late Payer GmbH")


def held() -> rf.CreditLedger:
    credit = rf.UnappliedCredit("2026-12-01-000042", MinorUnits(12_345), "EUR",
                                rf.CreditReason.UNMATCHED, "RF18WHATEVER", 1_000, SENDER)
    return rf.step(rf.CreditLedger(), rf.HoldCredit(credit), now_ms=1).ledger


def test_a_rejected_refund_is_retried_under_a_new_key_at_most_16_times() -> None:
    t = rf.step(held(), rf.ActionRefund("2026-12-01-000042"), now_ms=2)
    (first,) = t.effects
    assert (first.attempt, first.idempotency_key) == (
        0, refund_idempotency_key("2026-12-01-000042"))  # attempt 0: the key it always had
    keys = {first.idempotency_key}
    references = {first.reference}
    ledger = t.ledger
    for n in range(1, 16):
        t = rf.step(ledger, rf.ObserveRefundRejected("2026-12-01-000042", n - 1, "AC04"),
                    now_ms=2 + n)
        (again,) = t.effects
        assert again.attempt == n
        assert again.account == SENDER
        assert again.amount == 12_345
        assert again.reference == refund_reference("2026-12-01-000042", n)
        keys.add(again.idempotency_key)
        references.add(again.reference)
        ledger = t.ledger
        credit = ledger.get("2026-12-01-000042")
        assert (credit.status, credit.attempt, credit.rejection) == (
            rf.CreditStatus.REFUNDING, n, "AC04")
    assert len(keys) == len(references) == 16
    # the 16th attempt rejected: nothing more is submitted; the operator decides
    last = rf.step(ledger, rf.ObserveRefundRejected("2026-12-01-000042", 15, "AM04"), now_ms=40)
    assert last.effects == ()
    assert last.ledger.get("2026-12-01-000042").status is rf.CreditStatus.REJECTED
    with pytest.raises(LocalProtocolError):
        rf.step(last.ledger, rf.ActionRefund("2026-12-01-000042"), now_ms=41)


def test_refund_rejection_of_an_earlier_attempt_or_seen_again_changes_nothing() -> None:
    ledger = rf.step(held(), rf.ActionRefund("2026-12-01-000042"), now_ms=2).ledger
    once = rf.step(ledger, rf.ObserveRefundRejected("2026-12-01-000042", 0, "AC04"), now_ms=3)
    assert len(once.effects) == 1
    again = rf.step(once.ledger, rf.ObserveRefundRejected("2026-12-01-000042", 0, "AC04"),
                    now_ms=4)
    assert again.effects == ()
    assert again.ledger.credits == once.ledger.credits
    booked = rf.step(once.ledger, rf.ObserveRefundBooked("2026-12-01-000042"), now_ms=5)
    assert booked.ledger.get("2026-12-01-000042").status is rf.CreditStatus.REFUNDED
    late = rf.step(booked.ledger, rf.ObserveRefundRejected("2026-12-01-000042", 1, "AC04"),
                   now_ms=6)
    assert late.effects == ()
    assert late.ledger.get("2026-12-01-000042").status is rf.CreditStatus.REFUNDED
    with pytest.raises(LocalProtocolError):  # never submitted: nothing to reject
        rf.step(held(), rf.ObserveRefundRejected("2026-12-01-000042", 0, "AC04"), now_ms=7)


def test_a_refund_returned_after_its_booking_is_paid_again_once() -> None:
    """Booked, then returned by the bank (pacs.004, an ACH R-code): the money is back in
    escrow, so "refunded" would be untrue. The live attempt's return pays it again as the next
    attempt; the same return seen again, or an earlier attempt's, changes nothing."""
    cid = "2026-12-01-000042"
    ledger = rf.step(held(), rf.ActionRefund(cid), now_ms=2).ledger
    refunded = rf.step(ledger, rf.ObserveRefundBooked(cid), now_ms=3).ledger
    assert refunded.get(cid).status is rf.CreditStatus.REFUNDED
    # a rejection answered after the booking is a stale answer, not a return
    stale = rf.step(refunded, rf.ObserveRefundRejected(cid, 0, "AC04"), now_ms=4)
    assert (stale.effects, stale.ledger.credits) == ((), refunded.credits)

    returned = rf.step(refunded, rf.ObserveRefundReturned(cid, 0, "AC04"), now_ms=5)
    (again,) = returned.effects
    assert (again.attempt, again.amount, again.account) == (1, 12_345, SENDER)
    assert again.idempotency_key == refund_idempotency_key(cid, 1)
    credit = returned.ledger.get(cid)
    assert (credit.status, credit.attempt, credit.rejection) == (
        rf.CreditStatus.REFUNDING, 1, "AC04")
    seen_again = rf.step(returned.ledger, rf.ObserveRefundReturned(cid, 0, "AC04"), now_ms=6)
    assert (seen_again.effects, seen_again.ledger.credits) == ((), returned.ledger.credits)
    booked = rf.step(returned.ledger, rf.ObserveRefundBooked(cid), now_ms=7).ledger
    assert booked.get(cid).status is rf.CreditStatus.REFUNDED
    with pytest.raises(LocalProtocolError):  # never submitted: nothing to return
        rf.step(held(), rf.ObserveRefundReturned(cid, 0, "AC04"), now_ms=8)
