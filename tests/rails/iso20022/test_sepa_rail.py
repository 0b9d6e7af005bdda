"""The SEPA rail against a real mock-bank: happy path, the bank's failures, and idempotency."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

import xmlschema

from rails.errors import IdempotencyConflict, UnknownPayment
from rails.iso20022 import SepaCreditTransferRail, sepa
from rails.iso20022.pain001 import XSD_DIR, check_pain001
from rails.port import PaymentStatus
from rails.store import SqliteIdempotencyStore
from rails.testing.mockbank import MockBankHttpTransport
from tests.rails.iso20022.harness import MockBank
from tests.rails.iso20022.sepa_data import ACME, GLOBEX, INITECH, PEER, pay

Rails = Callable[..., SepaCreditTransferRail]


def _xsd(name: str) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD_DIR / f"{name}.xsd"))


async def test_submit_books_and_every_answer_names_our_end_to_end_id(
    rail: SepaCreditTransferRail, bank: MockBank
) -> None:
    record = await rail.submit(pay("chan-1/close"))

    assert record.status is PaymentStatus.BOOKED  # executes today, before the cutoff
    assert record.end_to_end_id.startswith("ML-E-")
    assert len(record.end_to_end_id) <= 31
    at_bank = await bank.payments_with(record.end_to_end_id)
    assert [(p["amount"], p["currency"], p["creditor_iban"]) for p in at_bank] == [
        (12_345, "EUR", PEER.identification)]

    pain002 = [m for m in await bank.messages("pain.002")
               if record.end_to_end_id in m["body"]]
    assert len(pain002) == 1
    assert "<TxSts>ACCP</TxSts>" in pain002[0]["body"]
    camt054 = [m for m in await bank.messages("camt.054")
               if record.end_to_end_id in m["body"]]
    assert len(camt054) == 1
    assert _xsd("camt.054.001.08").is_valid(camt054[0]["body"])

    refreshed = await rail.status("chan-1/close")
    assert refreshed.status is PaymentStatus.BOOKED

    await bank.advance(1)  # the day ends: camt.053
    statement = await rail.latest_statement()
    assert statement is not None
    assert statement.account == ACME.identification
    assert statement.opening_balance_minor is not None
    assert statement.closing_balance_minor == statement.opening_balance_minor - 12_345
    recon = await rail.reconcile()
    assert set(recon.booked) == {"chan-1/close"}
    assert recon.booked["chan-1/close"].amount_minor == 12_345
    assert recon.outstanding == ()
    # the camt.054 and the camt.053 show one booking (one entry reference), not two
    assert recon.differences == ()
    camt053 = [m for m in await bank.messages("camt.053") if record.end_to_end_id in m["body"]]
    assert camt053
    assert _xsd("camt.053.001.08").is_valid(camt053[0]["body"])


async def test_file_sent_is_the_stored_file_and_passes_xsd_and_the_bank(
    rail: SepaCreditTransferRail, bank: MockBank, tmp_path: Path
) -> None:
    await rail.submit(pay("chan-2/close", creditor=PEER))
    store = SqliteIdempotencyStore(tmp_path / "rail.db")
    try:
        stored = store.get("chan-2/close")
    finally:
        store.close()
    assert stored is not None
    data = base64.b64decode(stored.meta["file_b64"])
    assert _xsd("pain.001.001.09").is_valid(data.decode())
    assert check_pain001(data) == []
    status, prose = await bank.validate(data)
    assert status == 200, prose
    assert "0 findings" in prose, prose


async def test_closed_creditor_account_is_rejected_ac04(
    rail: SepaCreditTransferRail, bank: MockBank
) -> None:
    record = await rail.submit(pay("chan-3/close", creditor=INITECH))
    assert (record.status, record.reason_code) == (PaymentStatus.REJECTED, "AC04")
    # status() reads it back from the pain.002 alone, and agrees.
    again = await rail.status("chan-3/close")
    assert (again.status, again.reason_code) == (PaymentStatus.REJECTED, "AC04")
    pain002 = [m["body"] for m in await bank.messages("pain.002")
               if record.end_to_end_id in m["body"]]
    assert len(pain002) == 1
    assert "<Cd>AC04</Cd>" in pain002[0]


async def test_insufficient_funds_is_rejected_am04(make_rail: Rails, bank: MockBank) -> None:
    rail = make_rail(account=GLOBEX)  # 12.50 EUR, behaviour insufficient-funds
    record = await rail.submit(pay("chan-4/close", amount=5_000, debtor=GLOBEX))
    assert (record.status, record.reason_code) == (PaymentStatus.REJECTED, "AM04")
    at_bank = await bank.payments_with(record.end_to_end_id)
    assert [p["status"] for p in at_bank] == ["rejected"]
    assert (await rail.status("chan-4/close")).reason_code == "AM04"


async def test_late_return_arrives_as_pacs004_and_marks_the_payment_returned(
    rail: SepaCreditTransferRail, bank: MockBank
) -> None:
    await bank.patch_account("ACME", behaviour="return-later",
                             parameters={"days": 2, "reason": "MD07"})
    record = await rail.submit(pay("chan-5/close"))
    assert record.status is PaymentStatus.BOOKED

    await bank.advance(5)
    pacs004 = [m["body"] for m in await bank.messages("pacs.004")
               if record.end_to_end_id in m["body"]]
    assert len(pacs004) == 1
    returned = await rail.status("chan-5/close")
    assert (returned.status, returned.reason_code) == (PaymentStatus.RETURNED, "MD07")

    # The statement of the day the money came back shows a CRDT with RtrInf; reconcile sees it.
    statement = await rail.latest_statement()
    assert statement is not None
    days = [s for _, reps in await rail._fetch("camt.053") for s in reps
            if rail._ours(s) and any(e.end_to_end_id == record.end_to_end_id
                                     and e.return_reason for e in s.entries)]
    assert len(days) == 1
    recon = await rail.reconcile(days[0].to_statement())
    assert set(recon.returned) == {"chan-5/close"}
    assert recon.returned["chan-5/close"].return_reason == "MD07"
    # A return is the payment's status, not money a peer sent.
    page = await rail.incoming_credits()
    assert all(c.end_to_end_id != record.end_to_end_id for c in page.credits)


async def test_same_key_twice_across_a_restart_is_one_payment_at_the_bank(
    make_rail: Rails, bank: MockBank
) -> None:
    first = make_rail()
    one = await first.submit(pay("chan-6/close"))
    await first.aclose()  # closes its session and its SQLite store

    second = make_rail()  # a new process, the same SQLite file
    two = await second.submit(pay("chan-6/close"))

    assert two == one
    assert len(await bank.payments_with(one.end_to_end_id)) == 1
    assert await bank.payment_posts() == 1  # the second submit never reached the bank


async def test_crash_after_reserve_resends_the_identical_file_and_the_bank_dedupes(
    make_rail: Rails, bank: MockBank, tmp_path: Path
) -> None:
    # A process reserves the key and posts the file, then dies before saving the answer.
    doomed = make_rail()
    instruction = pay("chan-7/close")
    data = doomed.prepare(instruction)
    store = SqliteIdempotencyStore(tmp_path / "rail.db")
    key = instruction.idempotency_key
    store.reserve(instruction, {
        "rail": "sepa-ct", "msg_id": sepa.derive_id(key, "M"),
        "pmt_inf_id": sepa.derive_id(key, "P"), "end_to_end_id": sepa.derive_id(key, "E"),
        "file_b64": base64.b64encode(data).decode()})
    store.close()
    client = MockBankHttpTransport(bank.url)
    answer = await client.send("resend.xml", data, "application/xml")
    await client.aclose()
    assert answer.status == 202
    await doomed.aclose()

    # Restarted, the caller retries with the same key: the bank says DUPL, we look it up.
    revived = make_rail()
    record = await revived.submit(instruction)
    assert record.status is PaymentStatus.BOOKED
    assert len(await bank.payments_with(record.end_to_end_id)) == 1
    assert await bank.payment_posts() == 2  # the original and the identical resend
    dupl = [m["body"] for m in await bank.messages("pain.002")
            if sepa.derive_id(key, "M") in m["body"] and "DUPL" in m["body"]]
    assert len(dupl) == 1
    # The DUPL group rejection is not mistaken for a rejected payment.
    assert (await revived.status(key)).status is PaymentStatus.BOOKED


async def test_same_key_different_instruction_is_a_conflict(
    rail: SepaCreditTransferRail, bank: MockBank
) -> None:
    await rail.submit(pay("chan-8/close", amount=100))
    try:
        await rail.submit(pay("chan-8/close", amount=101))
    except IdempotencyConflict:
        pass
    else:
        raise AssertionError("a changed amount under a used key must be refused")
    assert await bank.payment_posts() == 1


async def test_status_of_an_unknown_key_is_unknown_payment(rail: SepaCreditTransferRail) -> None:
    try:
        await rail.status("never-submitted")
    except UnknownPayment:
        return
    raise AssertionError("status() of an unknown key must raise UnknownPayment")


async def test_incoming_credits_come_from_camt054_with_a_cursor(
    rail: SepaCreditTransferRail, bank: MockBank
) -> None:
    # The clearing system relays a peer's payment to us as a credit.
    status, body = await bank.call("POST", "/_mock/credits", {
        "account": "ACME", "amount": 4_200, "reference": "ML-REF-CHAN9",
        "end_to_end_id": "PEER-E2E-1", "note": "channel 9 settlement",
        "debtor": {"name": "Peer Energie B.V.", "iban": PEER.identification}})
    assert status in (200, 201), body
    await bank.advance(0)  # release what is due now

    page = await rail.incoming_credits()
    assert len(page.credits) == 1
    credit = page.credits[0]
    assert (credit.amount_minor, credit.currency, credit.reference, credit.end_to_end_id) == (
        4_200, "EUR", "ML-REF-CHAN9", "PEER-E2E-1")
    assert credit.debtor_name == "Peer Energie B.V."
    assert credit.debtor_account == PEER.identification
    assert credit.booking_date.isoformat() == "2026-10-01"

    assert (await rail.incoming_credits(page.cursor)).credits == ()
    status, body = await bank.call("POST", "/_mock/credits", {
        "account": "ACME", "amount": 1, "reference": "ML-REF-CHAN10",
        "debtor": {"name": "Other", "iban": GLOBEX.identification}})
    assert status in (200, 201), body
    later = await rail.incoming_credits(page.cursor)
    assert [c.reference for c in later.credits] == ["ML-REF-CHAN10"]
    # A statement repeats the same entries; they are not reported twice.
    await bank.advance(1)
    assert (await rail.incoming_credits(later.cursor)).credits == ()
    assert len((await rail.incoming_credits()).credits) == 2

