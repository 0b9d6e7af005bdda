"""The ACH rail: CCD+ files that achkit, mock-bank and our checker all pass; R01/R02/R03 and a
late return through a real mock-bank; one payment per key across a restart."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import achkit
import pytest

from rails.errors import BankProtocolError, InvalidInstruction
from rails.nacha import (
    CHANGE_REASONS,
    RETURN_REASONS,
    AchCreditRail,
    aba_check_digit,
    aba_valid,
    check_nacha,
    derive_individual_id,
    parse_answer_file,
    parse_return_file,
)
from rails.port import Account, AccountScheme, PaymentStatus
from rails.store import SqliteIdempotencyStore
from tests.rails.iso20022.harness import FlakyBank, MockBank
from tests.rails.nacha.ach_data import EURODIS, GLOBEX, GLOBEX_ORIGIN, INITECH, pay

Rails = Callable[..., AchCreditRail]
T0 = datetime(2026, 10, 1, 9, 0, tzinfo=UTC)


def test_aba_check_digit_matches_known_routing_numbers() -> None:
    for routing in ("021000021", "011000015", "999999992", "122105278"):
        assert aba_valid(routing)
        assert aba_check_digit(routing[:8]) == int(routing[8])
    assert not aba_valid("021000022")
    assert achkit.is_valid_routing("999999992")


async def test_generated_file_passes_achkit_mock_bank_and_our_checker(
    rail: AchCreditRail, nacha_bank: MockBank
) -> None:
    data = rail.prepare(pay("chan-1/close"), T0, "A")
    lines = data.decode("ascii").splitlines()
    assert all(len(line) == 94 for line in lines)
    assert len(lines) % 10 == 0
    assert [line[0] for line in lines[:6]] == ["1", "5", "6", "7", "8", "9"]
    assert lines[6:] == ["9" * 94] * 4
    assert lines[1][50:53] == "CCD"
    assert lines[1][1:4] == "220"
    assert lines[2][1:3] == "22"
    assert lines[2][39:54] == derive_individual_id("chan-1/close")
    assert lines[3][1:3] == "05"
    assert lines[3][3:83].rstrip() == "ML CHANNEL 7F3A CLOSE"
    assert lines[4][10:20] == "0002100002"  # entry hash: RDFI 02100002

    assert check_nacha(data) == []
    assert achkit.validate(data.decode()) == {"ok": True, "errors": []}
    status, prose = await nacha_bank.validate(data)
    assert status == 200, prose
    assert "0 findings" in prose, prose


async def test_submit_books_and_restart_with_same_key_is_one_payment(
    make_rail: Rails, nacha_bank: MockBank
) -> None:
    first = make_rail()
    one = await first.submit(pay("chan-2/close"))
    assert one.status is PaymentStatus.BOOKED
    assert len(one.end_to_end_id) == 15
    await first.aclose()

    second = make_rail()
    two = await second.submit(pay("chan-2/close"))
    assert two == one
    assert (await second.status("chan-2/close")).status is PaymentStatus.BOOKED
    at_bank = await nacha_bank.payments_with(one.end_to_end_id)
    assert [(p["amount"], p["currency"]) for p in at_bank] == [(12_345, "USD")]
    assert await nacha_bank.payment_posts() == 1
    recon = await second.reconcile()
    assert set(recon.booked) == {"chan-2/close"}


async def test_crash_after_reserve_resends_identical_file_one_payment(
    make_rail: Rails, nacha_bank: MockBank, tmp_path: Path
) -> None:
    doomed = make_rail()
    instruction = pay("chan-3/close")
    data = doomed.prepare(instruction, T0, "A")
    store = SqliteIdempotencyStore(tmp_path / "ach.db")
    store.reserve(instruction, {
        "rail": "ach-ccd", "created": T0.isoformat(), "modifier": "A",
        "end_to_end_id": derive_individual_id(instruction.idempotency_key),
        "file_b64": base64.b64encode(data).decode()})
    store.close()
    status, body = await nacha_bank.call("POST", "/payments", data)
    assert status == 202, body
    await doomed.aclose()

    revived = make_rail()
    record = await revived.submit(instruction)
    assert record.status is PaymentStatus.BOOKED
    assert len(await nacha_bank.payments_with(record.end_to_end_id)) == 1
    assert await nacha_bank.payment_posts() == 2


async def test_two_keys_in_one_minute_get_distinct_file_identities(
    rail: AchCreditRail, nacha_bank: MockBank
) -> None:
    a = await rail.submit(pay("chan-4a/close", amount=100))
    b = await rail.submit(pay("chan-4b/close", amount=200))
    assert a.status is b.status is PaymentStatus.BOOKED
    assert a.bank_payment_id != b.bank_payment_id  # ...2610010900A vs ...B


@pytest.mark.parametrize(
    ("creditor", "code"),
    [(INITECH, "R02"),  # closed account
     (EURODIS, "R03")],  # bad bank id: no account / unable to locate
)
async def test_rejection_carries_the_return_code_and_the_return_file_confirms_it(
    rail: AchCreditRail, nacha_bank: MockBank, creditor: Account, code: str
) -> None:
    record = await rail.submit(pay(f"rej-{code}", creditor=creditor))
    assert (record.status, record.reason_code) == (PaymentStatus.REJECTED, code)

    await nacha_bank.advance(2)  # the return entry follows the next business day
    returns = [r for m in await nacha_bank.messages("nacha.return")
               for r in parse_return_file(m["body"].encode())]
    assert [(r.individual_id, r.reason_code) for r in returns] == [(record.end_to_end_id, code)]
    again = await rail.status(f"rej-{code}")
    assert (again.status, again.reason_code) == (PaymentStatus.REJECTED, code)


async def test_insufficient_funds_is_r01(make_rail: Rails, nacha_bank: MockBank) -> None:
    rail = make_rail(account=GLOBEX, originator=GLOBEX_ORIGIN)  # 12.50 on the account
    record = await rail.submit(pay("rej-R01", amount=50_00, debtor=GLOBEX))
    assert (record.status, record.reason_code) == (PaymentStatus.REJECTED, "R01")
    await nacha_bank.advance(2)
    assert (await rail.status("rej-R01")).reason_code == "R01"


async def test_late_return_marks_the_payment_returned(
    rail: AchCreditRail, nacha_bank: MockBank
) -> None:
    await nacha_bank.patch_account("ACME", behaviour="return-later",
                                   parameters={"days": 2, "reason": "R01"})
    record = await rail.submit(pay("late-return"))
    assert record.status is PaymentStatus.BOOKED
    await nacha_bank.advance(5)
    returned = await rail.status("late-return")
    assert (returned.status, returned.reason_code) == (PaymentStatus.RETURNED, "R01")
    files = [m["body"].encode() for m in await nacha_bank.messages("nacha.return")]
    # The bank's return file carries our individual id with the R code on a 21 (returned 22).
    # (achkit is not asked: it counts only x2/x3 as credits, so it misreads every return.)
    assert [(r.individual_id, r.reason_code, r.transaction_code)
            for f in files for r in parse_return_file(f)] == [(record.end_to_end_id, "R01", "21")]


@pytest.mark.parametrize(
    ("kw", "field", "code"),
    [({"currency": "EUR"}, "currency", "AM03"),
     ({"amount": 0}, "amount_minor", "AM12"),
     ({"amount": 10**10}, "amount_minor", "AM02"),
     ({"creditor": Account("X", AccountScheme.US_ABA, "1", "021000022")}, "creditor.agent",
      "RC01"),
     ({"reference": "R" * 81}, "reference", "FF01"),
     ({"creditor": Account("X", AccountScheme.IBAN, "NL30MOCK0000000005")},
      "creditor.scheme", "AC01")],
)
async def test_bad_input_is_refused_before_the_bank(
    rail: AchCreditRail, nacha_bank: MockBank, kw: dict[str, object], field: str, code: str
) -> None:
    with pytest.raises(InvalidInstruction) as caught:
        await rail.submit(pay("bad", **kw))  # type: ignore[arg-type]
    assert (field, code) in {(f.path, f.code) for f in caught.value.findings}
    assert await nacha_bank.payment_posts() == 0


async def test_incoming_credit_to_a_nacha_account_via_camt054(
    rail: AchCreditRail, nacha_bank: MockBank
) -> None:
    status, body = await nacha_bank.call("POST", "/_mock/credits", {
        "account": "ACME", "amount": 7_700, "reference": "ML-REF-ACH1",
        "debtor": {"name": "Peer Power Inc", "iban": "NL30MOCK0000000005"}})
    assert status in (200, 201), body
    page = await rail.incoming_credits()
    assert [(c.amount_minor, c.currency, c.reference) for c in page.credits] == [
        (7_700, "USD", "ML-REF-ACH1")]
    assert (await rail.incoming_credits(page.cursor)).credits == ()



def rec(*parts: str) -> str:
    """One NACHA record: its fields joined, 94 characters."""
    line = "".join(parts)
    assert len(line) == 94, (len(line), line)
    return line


def answer_heads(sec: str) -> list[str]:
    """The file header and batch header of an answer file the ODFI relays (`sec`: COR for
    notifications of change, CCD for returns)."""
    return [rec("101", " 999999992", "1470000001", "261002", "0900", "A094101",
                "ACME CORPORATION".ljust(23), "MOCK BANK".ljust(23), " " * 8),
            rec("5220", "ACME CORPORATION".ljust(16), " " * 20, "1470000001", sec,
                "SETTLEMENT", " " * 6, "261002", "   ", "1", "09999999", "0000001")]


def noc_file(individual_id: str, code: str, corrected: str, trace: str) -> bytes:
    """A return file as an ODFI relays an RDFI's notification of change: a COR batch, one
    entry (21: NOC for a checking credit, zero amount) and its 98 addenda."""
    lines = [
        *answer_heads("COR"),
        rec("621", "02100002", "1", "12345678901".ljust(17), "0" * 10, individual_id,
            "PEER POWER INC".ljust(22), "  ", "1", "099999990000001"),
        rec("798", code, trace, " " * 6, "02100002", corrected.ljust(29), " " * 15,
            "099999990000001"),
        rec("8220", "000002", "0002100002", "0" * 12, "0" * 12, "1470000001", " " * 25,
            "09999999", "0000001"),
        rec("9", "000001", "000001", "00000002", "0002100002", "0" * 12, "0" * 12, " " * 39),
    ]
    lines += ["9" * 94] * 4
    return ("\n".join(lines) + "\n").encode()


async def test_a_return_carries_its_reason_text(rail: AchCreditRail, nacha_bank: MockBank
                                                ) -> None:
    await nacha_bank.patch_account("ACME", behaviour="return-later",
                                   parameters={"days": 2, "reason": "R01"})
    await rail.submit(pay("late-return-text"))
    await nacha_bank.advance(5)
    returned = await rail.status("late-return-text")
    assert (returned.status, returned.reason_code, returned.reason) == (
        PaymentStatus.RETURNED, "R01", "returned by the RDFI: insufficient funds")
    assigned = [*range(1, 48), *range(50, 54), 61, 62, *range(67, 78), *range(80, 86)]
    assert set(RETURN_REASONS) == {f"R{n:02}" for n in assigned}
    assert set(CHANGE_REASONS) == {f"C{n:02}" for n in range(1, 14)}


async def test_a_notification_of_change_is_applied_to_the_booked_payment(
    make_rail: Rails, nacha_bank: MockBank, tmp_path: Path
) -> None:
    relay = await FlakyBank(nacha_bank.url).start()
    try:
        rail = make_rail(url=relay.url)
        record = await rail.submit(pay("noc-1"))
        assert record.status is PaymentStatus.BOOKED
        data = rail._store.get("noc-1").meta["file_b64"]  # the file we sent: its trace
        trace = base64.b64decode(data).decode().splitlines()[2][79:94]
        noc = noc_file(record.end_to_end_id, "C01", "98765432101", trace)
        answers = parse_answer_file(noc)
        assert answers.returns == ()
        assert [(c.individual_id, c.change_code, c.corrected_data, c.original_trace)
                for c in answers.corrections] == [
            (record.end_to_end_id, "C01", "98765432101", trace)]
        relay.extra_messages.append({"id": 10**9, "type": "nacha.return", "account": "ACME",
                                     "body": noc.decode()})
        corrected = await rail.status("noc-1")
        assert (corrected.status, corrected.reason_code) == (PaymentStatus.BOOKED, "C01")
        assert corrected.reason == ("notification of change: incorrect DFI account number; "
                                    "corrected data '98765432101'")
        assert (await make_rail(url=relay.url).status("noc-1")) == corrected  # saved
    finally:
        await relay.stop()


def test_an_unreadable_answer_file_is_a_bank_protocol_error() -> None:
    good = noc_file("MLAAAAAAAAAAAAA", "C02", "021000021", "099999990000001")
    with pytest.raises(BankProtocolError):
        parse_answer_file(good.replace(b"\n798", b"\n798xx", 1))
    with pytest.raises(BankProtocolError):
        parse_answer_file(b"\n".join(good.split(b"\n")[3:]))  # addenda without its entry


def return_file(individual_id: str, amount_cents: int, code: str, trace: str) -> bytes:
    """A return file as an ODFI relays an RDFI's return: one entry (21: a returned checking
    credit) and its 99 addenda with the R code."""
    lines = [
        *answer_heads("CCD"),
        rec("621", "02100002", "1", "12345678901".ljust(17), f"{amount_cents:010d}",
            individual_id, "PEER POWER INC".ljust(22), "  ", "1", "099999990000001"),
        rec("799", code, trace, " " * 6, "02100002", " " * 44, "099999990000001"),
        rec("8220", "000002", "0002100002", "0" * 12, f"{amount_cents:012d}", "1470000001",
            " " * 25, "09999999", "0000001"),
        rec("9", "000001", "000001", "00000002", "0002100002", "0" * 12,
            f"{amount_cents:012d}", " " * 39),
    ]
    lines += ["9" * 94] * 4
    return ("\n".join(lines) + "\n").encode()


async def test_a_return_of_another_amount_does_not_mark_the_payment_returned(
    make_rail: Rails, nacha_bank: MockBank
) -> None:
    relay = await FlakyBank(nacha_bank.url).start()
    try:
        rail = make_rail(url=relay.url)
        record = await rail.submit(pay("ret-amount", amount=12_345))
        assert record.status is PaymentStatus.BOOKED
        data = rail._store.get("ret-amount").meta["file_b64"]
        trace = base64.b64decode(data).decode().splitlines()[2][79:94]
        # our individual id, but one cent: not the return of our 123.45 payment
        wrong = return_file(record.end_to_end_id, 1, "R01", trace)
        assert [r.amount_cents for r in parse_return_file(wrong)] == [1]
        relay.extra_messages.append({"id": 10**9, "type": "nacha.return", "account": "ACME",
                                     "body": wrong.decode()})
        with pytest.raises(BankProtocolError, match="a return of 1 cents"):
            await rail.status("ret-amount")
        assert rail._store.get("ret-amount").record.status is PaymentStatus.BOOKED
        # the same return with the payment's amount is its return
        relay.extra_messages[:] = [{"id": 10**9, "type": "nacha.return", "account": "ACME",
                                    "body": return_file(record.end_to_end_id, 12_345, "R01",
                                                        trace).decode()}]
        fresh = make_rail(url=relay.url)  # parses the bank's messages anew
        returned = await fresh.status("ret-amount")
        assert (returned.status, returned.reason_code) == (PaymentStatus.RETURNED, "R01")
    finally:
        await relay.stop()


async def test_a_notification_for_an_account_whose_number_ends_in_ours_is_not_ours(
    make_rail: Rails, nacha_bank: MockBank
) -> None:
    relay = await FlakyBank(nacha_bank.url).start()
    try:
        rail = make_rail(url=relay.url)
        status, body = await nacha_bank.call("POST", "/_mock/credits", {
            "account": "ACME", "amount": 7_700, "reference": "ML-REF-ACH1",
            "debtor": {"name": "Peer Power Inc", "iban": "NL30MOCK0000000005"}})
        assert status in (200, 201), body
        [mine] = [m["body"] for m in await nacha_bank.messages("camt.054")]
        ours = "<IBAN>NL41MOCK0000000001</IBAN>"
        assert ours in mine
        # the same bank's account 70000000001 (ours is 0000000001): another account's credit
        other = mine.replace(ours, "<Othr><Id>70000000001</Id></Othr>").replace(
            "ML-REF-ACH1", "ML-REF-OTHER")
        relay.extra_messages.append({"id": 10**9, "type": "camt.054", "account": "ACME",
                                     "body": other})
        page = await rail.incoming_credits()
        assert [c.reference for c in page.credits] == ["ML-REF-ACH1"]
    finally:
        await relay.stop()
