"""Open Banking settles only through the account's transactions: the sandbox bank says
``AcceptedCreditSettlementCompleted`` but answers the transactions without the debit (``withhold``)
or with another amount (``misbook``); the payment stays ``accepted``, is raised as
``unreconciled`` (missing booking after the deadline, or the amount mismatch), shows in
:meth:`reconcile`'s differences, and is settled only once the statement does show it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta

from rails.openbanking import OpenBankingRail
from rails.port import PaymentStatus
from rails.reconcile import DifferenceKind
from tests.rails.sandbox.conftest import AISP, Bank, Party, instruction


def _transactions(party: Party) -> str:
    return f"{AISP}/accounts/{party.account_id}/transactions"


async def test_a_payment_the_statement_does_not_show_is_raised_not_settled(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail]) -> None:
    alice, bob = parties
    pay = rails_for(alice, booking_deadline=timedelta(seconds=1))
    bank.fault(path=_transactions(alice), method="GET", kind="withhold", count=100)
    instr = instruction(alice, bob, 1_500)
    record = await pay.submit(instr)
    assert [p["status"] for p in bank.payments()] == ["AcceptedCreditSettlementCompleted"]
    assert record.status is PaymentStatus.ACCEPTED  # the bank's word, not the statement's
    await asyncio.sleep(1.1)  # the booking deadline passes
    late = await pay.status(instr.idempotency_key)
    assert (late.status, late.reason_code) == (PaymentStatus.UNRECONCILED,
                                               DifferenceKind.MISSING_BOOKING.value)
    recon = await pay.reconcile()
    assert recon.booked == {}
    assert [(d.kind, d.key) for d in recon.differences] == [
        (DifferenceKind.MISSING_BOOKING, instr.idempotency_key)]
    # the statement catches up: a late booking still settles it
    bank.admin("DELETE", "/_sandbox/faults")
    settled = await pay.status(instr.idempotency_key)
    assert settled.status is PaymentStatus.BOOKED
    assert set((await pay.reconcile()).booked) == {instr.idempotency_key}


async def test_a_statement_with_another_amount_is_a_difference_never_settled(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail]) -> None:
    alice, bob = parties
    pay = rails_for(alice)
    bank.fault(path=_transactions(alice), method="GET", kind="misbook", count=100)
    instr = instruction(alice, bob, 700)
    record = await pay.submit(instr)
    assert (record.status, record.reason_code) == (PaymentStatus.UNRECONCILED,
                                                   DifferenceKind.AMOUNT_MISMATCH.value)
    assert "701" in (record.reason or "") or "7.01" in (record.reason or ""), record.reason
    recon = await pay.reconcile()
    assert recon.booked == {}
    assert [(d.kind, d.key) for d in recon.differences] == [
        (DifferenceKind.AMOUNT_MISMATCH, instr.idempotency_key)]
    assert (await pay.status(instr.idempotency_key)).status is PaymentStatus.UNRECONCILED
