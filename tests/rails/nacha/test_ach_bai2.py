"""ACH reconciliation by BAI2: mock-bank sends a NACHA account a BAI2 statement at the end of the
day, which the rail reads with the maintained ``bai2`` parser; a payment is booked by a
statement entry (camt.054 intraday, BAI2 end of day), never by the acknowledgement alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from rails.bai2 import parse_bai2
from rails.errors import BankProtocolError
from rails.nacha import AchCreditRail
from rails.port import EntryDirection, PaymentStatus
from rails.reconcile import DifferenceKind
from tests.rails.iso20022.harness import FlakyBank, MockBank
from tests.rails.nacha.ach_data import ACME, ACME_ORIGIN, COMPANY_IDS, bank_now, pay

BAI2_ACCOUNT = COMPANY_IDS["ACME"]
"""The account number mock-bank's BAI2 names ACME by in these fixtures (see ach_data)."""


@pytest.fixture
async def flaky(nacha_bank: MockBank) -> AsyncIterator[FlakyBank]:
    proxy = await FlakyBank(nacha_bank.url).start()
    yield proxy
    await proxy.stop()


@pytest.fixture
async def via_flaky(flaky: FlakyBank, tmp_path: Path) -> AsyncIterator[AchCreditRail]:
    made = AchCreditRail(base_url=flaky.url, account=ACME, clock=bank_now,
                         originator=ACME_ORIGIN, report_account=BAI2_ACCOUNT,
                         store_path=tmp_path / "ach-flaky.db", backoff_s=0.01)
    yield made
    await made.aclose()


async def test_the_banks_bai2_statement_parses_into_the_days_entries(
    rail: AchCreditRail, nacha_bank: MockBank
) -> None:
    record = await rail.submit(pay("bai2-1"))
    await nacha_bank.advance(1)  # the day ends: the BAI2 statement is released
    files = [m["body"].encode() for m in await nacha_bank.messages("bai2.statement")]
    assert files
    reports = [r for f in files for r in parse_bai2(f) if r.account == BAI2_ACCOUNT]
    debits = [e for r in reports for e in r.entries if e.end_to_end_id == record.end_to_end_id]
    assert [(e.direction, e.amount_minor, e.currency) for e in debits] == [
        (EntryDirection.DEBIT, 12_345, "USD")]
    day = next(r for r in reports if any(e in debits for e in r.entries))
    assert day.opening_balance_minor is not None
    assert day.closing_balance_minor == day.opening_balance_minor - 12_345
    # the camt.054 notification and the BAI2 statement show one booking, not two
    recon = await rail.reconcile()
    assert set(recon.booked) == {"bai2-1"}
    assert recon.differences == ()


async def test_without_a_notification_only_the_bai2_statement_books_the_payment(
    via_flaky: AchCreditRail, flaky: FlakyBank, nacha_bank: MockBank
) -> None:
    flaky.rewrite = lambda body: None if "camt.054" in body else body
    record = await via_flaky.submit(pay("bai2-2"))
    assert record.status is PaymentStatus.ACCEPTED  # acknowledged, not on a statement yet
    await nacha_bank.advance(1)
    assert (await via_flaky.status("bai2-2")).status is PaymentStatus.BOOKED


async def test_a_notification_amount_that_differs_is_unreconciled(
    flaky: FlakyBank, tmp_path: Path
) -> None:
    flaky.rewrite = lambda body: body.replace(">123.45<", ">123.40<") \
        if "camt.054" in body else body
    rail = AchCreditRail(base_url=flaky.url, account=ACME, clock=bank_now,
                         originator=ACME_ORIGIN, store_path=tmp_path / "ach-camt.db",
                         backoff_s=0.01)
    try:
        record = await rail.submit(pay("bai2-3"))
    finally:
        await rail.aclose()
    assert (record.status, record.reason_code) == (PaymentStatus.UNRECONCILED,
                                                   DifferenceKind.AMOUNT_MISMATCH.value)


async def test_a_tampered_bai2_statement_stops_the_rail_and_settles_nothing(
    via_flaky: AchCreditRail, flaky: FlakyBank, nacha_bank: MockBank
) -> None:
    def lie(body: str) -> str | None:
        if "camt.054" in body:
            return None
        return body.replace(",447,12345,", ",447,12344,") if body.startswith("01,") else body

    flaky.rewrite = lie
    await via_flaky.submit(pay("bai2-4"))
    await nacha_bank.advance(1)
    with pytest.raises(BankProtocolError, match="control total"):
        await via_flaky.status("bai2-4")
    flaky.rewrite = lambda body: None if "camt.054" in body else body
    assert (await via_flaky.status("bai2-4")).status is PaymentStatus.BOOKED


@pytest.mark.parametrize("garbage", [b"01,BANK/\n", b"\xff\xfe", b"01,A,B,261001,0900,1,,,2/\n"
                                     b"02,B,A,1,261001,0900,USD,/\n03,1,USD/\n16,447,x,Z,E,,T/\n"])
def test_a_bai2_file_that_does_not_hold_together_is_a_protocol_error(garbage: bytes) -> None:
    with pytest.raises(BankProtocolError):
        parse_bai2(garbage)
