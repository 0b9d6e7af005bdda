"""rails.reconcile: statement entries against expected transfers, as a plain function."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from rails.port import EntryDirection, PaymentStatus, StatementEntry
from rails.reconcile import DifferenceKind, Expected, Outcome, match, verdict

T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)
PAYOUT = Expected("chan-1/payout/0", "ML-E-1", 21_818, "EUR", T0)


def entry(entry_id: str, e2e: str | None, amount: int = 21_818, *, currency: str = "EUR",
          direction: EntryDirection = EntryDirection.DEBIT, booked: bool = True,
          return_reason: str | None = None) -> StatementEntry:
    return StatementEntry(entry_id=entry_id, direction=direction, amount_minor=amount,
                          currency=currency, booked=booked, booking_date=date(2026, 10, 1),
                          end_to_end_id=e2e, return_reason=return_reason)


def test_a_debit_with_our_id_amount_and_currency_settles_the_payment() -> None:
    m = match([entry("N1", "ML-E-1")], [PAYOUT], now=T0)
    assert [(x.key, x.outcome) for x in m.matches] == [(PAYOUT.key, Outcome.BOOKED)]
    assert m.differences == ()
    assert m.waiting == ()
    assert verdict(m, PAYOUT.key).status is PaymentStatus.BOOKED


def test_the_same_entry_in_a_notification_and_a_statement_counts_once() -> None:
    m = match([entry("N1", "ML-E-1"), entry("N1", "ML-E-1")], [PAYOUT], now=T0)
    assert len(m.matches) == 1
    assert m.differences == ()


@pytest.mark.parametrize(("seen", "kind"), [
    (entry("N1", "ML-E-1", 21_817), DifferenceKind.AMOUNT_MISMATCH),
    (entry("N1", "ML-E-1", currency="USD"), DifferenceKind.CURRENCY_MISMATCH),
])
def test_another_amount_or_currency_is_a_difference_and_never_settles(
    seen: StatementEntry, kind: DifferenceKind
) -> None:
    m = match([seen], [PAYOUT], now=T0)
    assert m.matches == ()
    assert [(d.kind, d.key) for d in m.differences] == [(kind, PAYOUT.key)]
    said = verdict(m, PAYOUT.key)
    assert (said.status, said.reason_code) == (PaymentStatus.UNRECONCILED, kind.value)
    assert "N1" in (said.reason or "")
    assert "21818 EUR" in (said.reason or "")


def test_no_booking_by_the_deadline_is_raised_and_before_it_the_payment_waits() -> None:
    before = match([], [PAYOUT], now=T0 + timedelta(days=3), deadline=timedelta(days=3))
    assert before.waiting == (PAYOUT.key,)
    assert before.differences == ()
    assert verdict(before, PAYOUT.key).status is None
    after = match([entry("P1", "ML-E-1", booked=False)], [PAYOUT],
                  now=T0 + timedelta(days=3, seconds=1), deadline=timedelta(days=3))
    assert [d.kind for d in after.differences] == [DifferenceKind.MISSING_BOOKING]
    assert verdict(after, PAYOUT.key).status is PaymentStatus.UNRECONCILED
    # a payment with no submission time never goes missing
    timeless = Expected("k", "ML-E-9", 1, "EUR", None)
    assert match([], [timeless], now=T0 + timedelta(days=400)).waiting == ("k",)


def test_a_debit_nobody_made_is_an_unknown_entry_and_a_peers_credit_is_not() -> None:
    m = match([entry("X1", "SOMEONE-ELSE", 500),
               entry("C1", "PEER-DEPOSIT", 500, direction=EntryDirection.CREDIT),
               entry("R1", None, 500, direction=EntryDirection.CREDIT, return_reason="AC04")],
              [], now=T0)
    assert [(d.kind, d.entry.entry_id if d.entry else None) for d in m.differences] == [
        (DifferenceKind.UNKNOWN_ENTRY, "X1"), (DifferenceKind.UNKNOWN_ENTRY, "R1")]
    assert all(d.key is None for d in m.differences)


def test_a_second_debit_for_one_payment_is_a_duplicate_booking() -> None:
    m = match([entry("N1", "ML-E-1"), entry("N2", "ML-E-1")], [PAYOUT], now=T0)
    assert [d.kind for d in m.differences] == [DifferenceKind.DUPLICATE_BOOKING]
    assert verdict(m, PAYOUT.key).status is PaymentStatus.UNRECONCILED


def test_a_return_credit_after_the_booking_makes_the_payment_returned() -> None:
    m = match([entry("N1", "ML-E-1"),
               entry("R1", "ML-E-1", direction=EntryDirection.CREDIT, return_reason="MD07")],
              [PAYOUT], now=T0)
    assert {x.outcome for x in m.matches} == {Outcome.BOOKED, Outcome.RETURNED}
    said = verdict(m, PAYOUT.key)
    assert (said.status, said.reason_code) == (PaymentStatus.RETURNED, "MD07")
