"""The SEPA rail settles a payment only when our account's statement entries show it.

A real mock-bank books the payments; a :class:`FlakyBank` in front of it shows the rail reports
that disagree with what the bank did (another amount, no notification at all), as a faulty or
hostile bank would. Each difference is raised as ``unreconciled`` with the reason, and never
becomes ``booked``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from rails.errors import BankProtocolError
from rails.iso20022 import SepaCreditTransferRail
from rails.port import PaymentStatus
from rails.reconcile import DifferenceKind
from rails.testing.mockbank import MockBankHttpTransport
from tests.rails.iso20022.harness import FlakyBank, MockBank
from tests.rails.iso20022.sepa_data import ACME, bank_now, pay
from tests.rails.mockbank_fixtures import bank

__all__ = ["bank"]


class Clock:
    def __init__(self) -> None:
        self.now = bank_now()

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
async def flaky(bank: MockBank) -> AsyncIterator[FlakyBank]:
    proxy = await FlakyBank(bank.url).start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def clock() -> Clock:
    return Clock()


@pytest.fixture
async def rail(flaky: FlakyBank, tmp_path: Path, clock: Clock
               ) -> AsyncIterator[SepaCreditTransferRail]:
    made = SepaCreditTransferRail(base_url=flaky.url, account=ACME, clock=clock,
                                  store_path=tmp_path / "rail.db", backoff_s=0.01,
                                  booking_deadline=timedelta(days=2))
    yield made
    await made.aclose()


def _statements(body: str) -> bool:
    return "camt.054" in body or "camt.053" in body


async def test_a_notification_with_another_amount_is_unreconciled_not_booked(
    rail: SepaCreditTransferRail, flaky: FlakyBank, bank: MockBank
) -> None:
    flaky.rewrite = lambda body: body.replace(">123.45<", ">123.40<") if _statements(body) \
        else body
    record = await rail.submit(pay("chan-1/payout/1"))  # the bank's answer says booked
    assert record.status is PaymentStatus.UNRECONCILED
    assert record.reason_code == DifferenceKind.AMOUNT_MISMATCH.value
    assert "12340 EUR" in (record.reason or "")
    assert "12345 EUR" in (record.reason or "")
    assert not record.status.final  # still asked about, still shown
    assert (await rail.status("chan-1/payout/1")).status is PaymentStatus.UNRECONCILED
    recon = await rail.reconcile()
    assert recon.booked == {}
    assert [(d.kind, d.key) for d in recon.differences] == [
        (DifferenceKind.AMOUNT_MISMATCH, "chan-1/payout/1")]


async def test_no_booking_by_the_deadline_is_raised_and_a_late_booking_still_settles(
    rail: SepaCreditTransferRail, flaky: FlakyBank, clock: Clock
) -> None:
    flaky.rewrite = lambda body: None if _statements(body) else body
    record = await rail.submit(pay("chan-2/payout/0"))
    assert record.status is PaymentStatus.ACCEPTED  # pain.002 ACSC alone settles nothing
    clock.now += timedelta(days=2, minutes=1)
    late = await rail.status("chan-2/payout/0")
    assert (late.status, late.reason_code) == (PaymentStatus.UNRECONCILED,
                                               DifferenceKind.MISSING_BOOKING.value)
    assert "not booked on the statement" in (late.reason or "")
    recon = await rail.reconcile()
    assert [d.kind for d in recon.differences] == [DifferenceKind.MISSING_BOOKING]
    flaky.rewrite = None  # the notification arrives after all
    assert (await rail.status("chan-2/payout/0")).status is PaymentStatus.BOOKED


async def test_a_debit_we_never_sent_is_an_unknown_entry(
    rail: SepaCreditTransferRail, bank: MockBank
) -> None:
    ours = await rail.submit(pay("chan-3/payout/0"))
    assert ours.status is PaymentStatus.BOOKED
    # Someone else pays 7.00 EUR from our account (another system with the same credentials).
    other = SepaCreditTransferRail(base_url=bank.url, account=ACME, clock=bank_now,
                                   store_path=bank.log.parent / "other.db")
    try:
        stranger = await other.submit(pay("not-ours", amount=700))
    finally:
        await other.aclose()
    recon = await rail.reconcile()
    assert set(recon.booked) == {"chan-3/payout/0"}
    unknown = [d for d in recon.differences if d.kind is DifferenceKind.UNKNOWN_ENTRY]
    assert [(d.entry.end_to_end_id, d.entry.amount_minor) for d in unknown if d.entry] == [
        (stranger.end_to_end_id, 700)]


async def test_a_period_reconciliation_counts_only_what_was_booked_and_submitted_in_it(
    rail: SepaCreditTransferRail, bank: MockBank, clock: Clock
) -> None:
    await rail.submit(pay("chan-4/payout/0"))
    day = bank_now().date()
    inside = await rail.reconcile(since=day, until=day)
    assert set(inside.booked) == {"chan-4/payout/0"}
    before = await rail.reconcile(until=day - timedelta(days=1))
    assert before.booked == {}
    assert before.differences == ()
    assert before.outstanding == ()


def test_the_transport_port_is_met_by_the_test_transport() -> None:
    from rails.transport import FileTransport

    assert isinstance(MockBankHttpTransport("http://127.0.0.1:1"), FileTransport)


@pytest.mark.parametrize(("was", "now"), [(">123.45<", ">0.01<"),
                                          ('Ccy="EUR">123.45<', 'Ccy="USD">123.45<')])
async def test_a_return_of_another_amount_or_currency_does_not_mark_the_payment_returned(
    rail: SepaCreditTransferRail, flaky: FlakyBank, bank: MockBank, was: str, now: str
) -> None:
    await bank.patch_account("ACME", behaviour="return-later",
                             parameters={"days": 2, "reason": "MD07"})
    record = await rail.submit(pay("chan-1/payout/ret"))
    assert record.status is PaymentStatus.BOOKED
    await bank.advance(5)
    pacs004 = [m["body"] for m in await bank.messages("pacs.004")
               if record.end_to_end_id in m["body"]]
    assert len(pacs004) == 1
    assert was in pacs004[0]
    # our end-to-end id and MsgId, but another amount (currency): not our payment's return
    flaky.rewrite = lambda body: body.replace(was, now) if "pacs.004" in body else body
    with pytest.raises(BankProtocolError, match=r"pacs\.004 returns"):
        await rail.status("chan-1/payout/ret")
    stored = rail._store.get("chan-1/payout/ret")
    assert stored is not None
    assert stored.record is not None
    assert stored.record.status is PaymentStatus.BOOKED
