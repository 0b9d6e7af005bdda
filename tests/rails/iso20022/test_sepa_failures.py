"""Bad input and a broken bank: each is a typed RailError or a retry with the same file,
never a second payment."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from rails.errors import BankProtocolError, BankUnavailable, InvalidInstruction, RailError
from rails.iso20022 import SepaCreditTransferRail
from rails.port import Account, AccountScheme, PaymentStatus
from tests.rails.iso20022.harness import FlakyBank, MockBank
from tests.rails.iso20022.sepa_data import pay

Rails = Callable[..., SepaCreditTransferRail]
TX = "/Document/CstmrCdtTrfInitn/PmtInf[1]/CdtTrfTxInf[1]"


@pytest.fixture
async def flaky(bank: MockBank) -> AsyncIterator[FlakyBank]:
    proxy = await FlakyBank(bank.url).start()
    yield proxy
    await proxy.stop()


async def _refused(rail: SepaCreditTransferRail, **kw: object) -> InvalidInstruction:
    with pytest.raises(InvalidInstruction) as caught:
        await rail.submit(pay("bad-input", **kw))  # type: ignore[arg-type]
    return caught.value


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"amount": 0}, [("amount_minor", "AM12")]),
        ({"amount": -5}, [("amount_minor", "AM12")]),
        ({"amount": 12.5}, [("amount_minor", "AM12")]),
        ({"currency": "XQZ"}, [("currency", "AM03")]),
        ({"currency": "USD"}, [("currency", "AM03"), (f"{TX}/Amt/InstdAmt", "AM03")]),
        ({"creditor": Account("Peer", AccountScheme.IBAN, "NL31MOCK0000000005")},
         [(f"{TX}/CdtrAcct/Id/IBAN", "AC01")]),
        ({"reference": "R" * 141},
         [(f"{TX}/RmtInf/Ustrd", "FF01")]),
        ({"reference": "Zahlung für Kanal 7"},
         [(f"{TX}/RmtInf/Ustrd", "FF01")]),
    ],
)
async def test_bad_input_is_refused_with_findings_and_nothing_reaches_the_bank(
    rail: SepaCreditTransferRail, bank: MockBank, kw: dict[str, object],
    expected: list[tuple[str, str]],
) -> None:
    err = await _refused(rail, **kw)
    got = {(f.path, f.code) for f in err.findings}
    assert set(expected) <= got, err.findings
    assert await bank.payment_posts() == 0
    # Nothing was reserved either: a corrected instruction under the same key goes through.
    record = await rail.submit(pay("bad-input"))
    assert record.status is PaymentStatus.BOOKED


async def test_every_finding_is_reported_at_once(rail: SepaCreditTransferRail) -> None:
    err = await _refused(
        rail, creditor=Account("Peer", AccountScheme.IBAN, "NL31MOCK0000000005"),
        reference="x" * 150)
    codes = sorted({(f.path.rsplit("/", 2)[-1], f.code) for f in err.findings})
    assert ("IBAN", "AC01") in codes
    assert ("Ustrd", "FF01") in codes
    assert "Ustrd is 150 characters" in str(err)


async def test_5xx_then_success_retries_the_same_bytes(
    make_rail: Rails, bank: MockBank, flaky: FlakyBank
) -> None:
    flaky.plan = ["503", "503"]
    rail = make_rail(url=flaky.url)
    record = await rail.submit(pay("retry-5xx"))
    assert record.status is PaymentStatus.BOOKED
    assert len(flaky.posted) == 3
    assert len(set(flaky.posted)) == 1
    assert len(await bank.payments_with(record.end_to_end_id)) == 1


async def test_lost_answer_is_retried_and_the_duplicate_is_looked_up(
    make_rail: Rails, bank: MockBank, flaky: FlakyBank
) -> None:
    flaky.plan = ["lost"]  # the bank took the file; its answer never came back
    rail = make_rail(url=flaky.url)
    record = await rail.submit(pay("retry-lost"))
    assert record.status is PaymentStatus.BOOKED
    assert len(flaky.posted) == 2
    assert flaky.posted[0] == flaky.posted[1]
    assert len(await bank.payments_with(record.end_to_end_id)) == 1


async def test_bank_down_is_bank_unavailable_and_a_later_retry_pays_once(
    make_rail: Rails, bank: MockBank, flaky: FlakyBank
) -> None:
    flaky.plan = ["lost", "503", "503"]
    rail = make_rail(url=flaky.url, attempts=3)
    with pytest.raises(BankUnavailable) as caught:
        await rail.submit(pay("retry-later"))
    assert caught.value.retryable

    # Later, the caller retries with the same key (the bank is reachable again).
    record = await rail.submit(pay("retry-later"))
    assert record.status is PaymentStatus.BOOKED
    assert len(set(flaky.posted)) == 1  # four posts, one file
    assert len(await bank.payments_with(record.end_to_end_id)) == 1


async def test_timeout_is_bank_unavailable(make_rail: Rails, bank: MockBank,
                                           flaky: FlakyBank) -> None:
    flaky.plan = ["hang", "hang"]
    rail = make_rail(url=flaky.url, attempts=2, timeout_s=0.3)
    with pytest.raises(BankUnavailable, match="timed out"):
        await rail.submit(pay("slow-bank"))
    assert await bank.payment_posts() == 0


async def test_answer_that_is_not_json_is_a_protocol_error_then_a_retry_pays_once(
    make_rail: Rails, bank: MockBank, flaky: FlakyBank
) -> None:
    flaky.plan = ["garbage"]
    rail = make_rail(url=flaky.url)
    with pytest.raises(BankProtocolError):
        await rail.submit(pay("garbled"))
    record = await rail.submit(pay("garbled"))
    assert record.status is PaymentStatus.BOOKED
    assert len(await bank.payments_with(record.end_to_end_id)) == 1


@pytest.mark.parametrize("garbage", [
    "<Document><unclosed>",
    '<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaa">]><Document>&a;</Document>',
    '<Document xmlns="urn:iso:std:iso:20022:tech:xsd:camt.999.001.01"/>',
])
async def test_bank_xml_that_does_not_parse_is_a_protocol_error(
    make_rail: Rails, bank: MockBank, flaky: FlakyBank, garbage: str
) -> None:
    rail = make_rail(url=flaky.url)
    flaky.xml_garbage = garbage
    # The bank's answer says booked; the statement entries that would settle it do not parse.
    with pytest.raises(BankProtocolError):
        await rail.submit(pay("parse-me"))
    with pytest.raises(BankProtocolError):
        await rail.status("parse-me")
    with pytest.raises(BankProtocolError):
        await rail.incoming_credits()
    with pytest.raises(RailError):
        await rail.reconcile()
