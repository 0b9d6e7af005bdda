"""The pay-by-bank flow end to end against a real sandbox bank process."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from rails.errors import UnknownPayment
from rails.openbanking import CONSENT_REJECTED, OpenBankingRail
from rails.port import PaymentStatus, Rail
from rails.store import SqliteIdempotencyStore
from tests.rails.sandbox.conftest import (
    AISP,
    PISP,
    Bank,
    OBValidator,
    Party,
    RawClient,
    consent_body,
    instruction,
    make_party,
)
from tests.support import venv_bin


async def test_auto_approved_payment_books_both_sides_and_creditor_sees_it(
        bank: Bank, parties: tuple[Party, Party], rails_for: Callable[..., OpenBankingRail],
        ob: OBValidator) -> None:
    alice, bob = parties
    pay = rails_for(alice)
    recv = rails_for(bob)
    assert isinstance(pay, Rail)

    first = await recv.incoming_credits()
    assert first.credits == ()

    instr = instruction(alice, bob, 1_234, reference="ML CH7 NET 2026-11")
    record = await pay.submit(instr)
    assert record.status is PaymentStatus.BOOKED
    assert record.bank_payment_id
    assert len(record.end_to_end_id) <= 31
    assert record.amount_minor == 1_234
    assert (await pay.status(instr.idempotency_key)) == record

    # booked on both sides, once
    assert bank.balance("acc-alice") == 10_000 - 1_234
    assert bank.balance("acc-bob") == 1_234
    [payment] = bank.payments()
    assert payment["status"] == "AcceptedCreditSettlementCompleted"
    assert payment["end_to_end_id"] == record.end_to_end_id
    [debit] = bank.transactions("acc-alice")
    [credit] = bank.transactions("acc-bob")
    assert (debit["indicator"], credit["indicator"]) == ("Debit", "Credit")
    assert debit["booked_at"] == credit["booked_at"]
    assert credit["reference"] == "ML CH7 NET 2026-11"
    assert credit["counterparty_name"] == "Alice Ltd"
    assert credit["counterparty_id"] == "40000012345678"

    # the creditor sees it through AISP
    page = await recv.incoming_credits(first.cursor or None)
    [seen] = page.credits
    assert seen.amount_minor == 1_234
    assert seen.currency == "GBP"
    assert seen.reference == "ML CH7 NET 2026-11"
    assert seen.debtor_name == "Alice Ltd"
    assert seen.debtor_account == "40000012345678"
    assert seen.end_to_end_id == record.end_to_end_id
    assert seen.entry_id == credit["transaction_id"]
    # the booking time itself, not the day at midnight (a deposit's confirmation carries it)
    assert seen.booked_at == datetime.fromisoformat(credit["booked_at"])
    assert seen.booking_date == seen.booked_at.date()
    # the cursor hands out nothing twice, and later credits still arrive
    assert (await recv.incoming_credits(page.cursor)).credits == ()
    bank.admin("POST", "/_sandbox/accounts/acc-bob/credit",
               {"amount_minor": 50, "reference": "TOP UP", "debtor_name": "Carol"})
    later = await recv.incoming_credits(page.cursor)
    assert [(c.amount_minor, c.reference, c.debtor_name) for c in later.credits] == [
        (50, "TOP UP", "Carol")]

    # statements and reconciliation, from the bank
    statement = await pay.fetch_statement()
    assert statement.closing_balance_minor == 10_000 - 1_234
    recon = await pay.reconcile()
    assert recon.booked[instr.idempotency_key].amount_minor == 1_234
    assert recon.outstanding == ()
    bob_statement = await recv.fetch_statement()
    assert bob_statement.closing_balance_minor == 1_284

    # every request and answer above was checked against the published OpenAPI files
    paths = {(e.method, e.path.rsplit("/", 1)[0] if e.method == "GET" else e.path)
             for e in ob.seen}
    assert ("POST", f"{PISP}/domestic-payment-consents") in paths
    assert ("POST", f"{PISP}/domestic-payments") in paths
    assert any(e.path.endswith("/transactions") for e in ob.seen)
    assert any(e.path.endswith("/balances") for e in ob.seen)
    assert ob.validated == len(ob.seen) >= 6


async def test_manual_approval_returns_pending_then_status_completes(
        start_bank: Callable[..., Bank], tmp_path: Path, ob: OBValidator) -> None:
    bank = start_bank(manual=True)
    alice = make_party(bank, tmp_path, "acc-a", "Alice Ltd", "40000011111111", 5_000)
    bob = make_party(bank, tmp_path, "acc-b", "Bob Widgets", "40000022222222", 0)
    store = SqliteIdempotencyStore(tmp_path / "alice-store.sqlite3")
    pay = OpenBankingRail(alice.config(authorisation_wait_s=0.1), store=store, observer=ob.check)
    try:
        instr = instruction(alice, bob, 700)
        pending = await pay.submit(instr)
        assert pending.status is PaymentStatus.PENDING
        assert pending.bank_payment_id is None
        assert (await pay.status(instr.idempotency_key)).status is PaymentStatus.PENDING
        assert bank.balance("acc-a") == 5_000
        consent_id = store.get(instr.idempotency_key).meta["consent_id"]  # type: ignore[union-attr]

        bank.admin("POST", f"/_sandbox/consents/{consent_id}/authorise", {})
        done = await pay.status(instr.idempotency_key)
        assert done.status is PaymentStatus.BOOKED
        assert bank.balance("acc-a") == 4_300
        assert bank.balance("acc-b") == 700
        # submit again: the stored answer, nothing new
        assert (await pay.submit(instr)) == done
        assert len(bank.payments()) == 1

        # a consent the PSU rejects ends REJECTED and moves no money
        declined = instruction(alice, bob, 100)
        assert (await pay.submit(declined)).status is PaymentStatus.PENDING
        consent_id = store.get(declined.idempotency_key).meta["consent_id"]  # type: ignore[union-attr]
        bank.admin("POST", f"/_sandbox/consents/{consent_id}/reject", {})
        rejected = await pay.status(declined.idempotency_key)
        assert rejected.status is PaymentStatus.REJECTED
        assert rejected.reason_code == CONSENT_REJECTED
        assert bank.balance("acc-a") == 4_300
        assert len(bank.payments()) == 1

        try:
            await pay.status("never-submitted")
        except UnknownPayment:
            pass
        else:
            raise AssertionError("status of an unknown key must raise UnknownPayment")
    finally:
        await pay.aclose()
        store.close()


async def test_funds_confirmation_needs_an_authorised_consent(
        start_bank: Callable[..., Bank], tmp_path: Path, ob: OBValidator) -> None:
    bank = start_bank(manual=True)
    alice = make_party(bank, tmp_path, "acc-a", "Alice Ltd", "40000011111111", 1_000)
    bob = make_party(bank, tmp_path, "acc-b", "Bob Widgets", "40000022222222", 0)
    raw = RawClient(alice, ob)
    created = await raw.request("POST", f"{PISP}/domestic-payment-consents",
                                consent_body(alice, bob, "12.34"), idem_key="fc-1")
    assert created.status == 201
    assert created.body["Data"]["Status"] == "AwaitingAuthorisation"
    consent_id = created.body["Data"]["ConsentId"]
    early = await raw.request("GET", f"{PISP}/domestic-payment-consents/{consent_id}"
                              "/funds-confirmation")
    assert early.status == 400
    assert early.body["Errors"][0]["ErrorCode"] == "UK.OBIE.Resource.InvalidConsentStatus"

    bank.admin("POST", f"/_sandbox/consents/{consent_id}/authorise", {})
    funds = await raw.request("GET", f"{PISP}/domestic-payment-consents/{consent_id}"
                              "/funds-confirmation")
    assert funds.status == 200
    assert funds.body["Data"]["FundsAvailableResult"]["FundsAvailable"] is False  # 12.34 > 10.00

    small = await raw.request("POST", f"{PISP}/domestic-payment-consents",
                              consent_body(alice, bob, "9.99", e2e="E2E-2"), idem_key="fc-2")
    bank.admin("POST", f"/_sandbox/consents/{small.body['Data']['ConsentId']}/authorise", {})
    ok = await raw.request("GET", f"{PISP}/domestic-payment-consents/"
                           f"{small.body['Data']['ConsentId']}/funds-confirmation")
    assert ok.body["Data"]["FundsAvailableResult"]["FundsAvailable"] is True

    status = await raw.request("GET", f"{PISP}/domestic-payment-consents/{consent_id}")
    assert status.body["Data"]["Status"] == "Authorised"


async def test_aisp_transactions_filter_by_booking_time(
        bank: Bank, parties: tuple[Party, Party], ob: OBValidator) -> None:
    _, bob = parties
    first = bank.admin("POST", "/_sandbox/accounts/acc-bob/credit", {"amount_minor": 1})
    second = bank.admin("POST", "/_sandbox/accounts/acc-bob/credit", {"amount_minor": 2})
    raw = RawClient(bob, ob)
    accounts = await raw.request("GET", f"{AISP}/accounts")
    assert [a["AccountId"] for a in accounts.body["Data"]["Account"]] == ["acc-bob"]
    every = await raw.request("GET", f"{AISP}/accounts/acc-bob/transactions")
    assert [t["Amount"]["Amount"] for t in every.body["Data"]["Transaction"]] == ["0.01", "0.02"]
    since = await raw.request("GET", f"{AISP}/accounts/acc-bob/transactions",
                              query={"fromBookingDateTime": second["booked_at"]})
    assert [t["TransactionId"] for t in since.body["Data"]["Transaction"]] == [
        second["transaction_id"]]
    until = await raw.request("GET", f"{AISP}/accounts/acc-bob/transactions",
                              query={"toBookingDateTime": first["booked_at"]})
    assert [t["TransactionId"] for t in until.body["Data"]["Transaction"]] == [
        first["transaction_id"]]
    balances = await raw.request("GET", f"{AISP}/accounts/acc-bob/balances")
    assert {b["Type"]: b["Amount"]["Amount"] for b in balances.body["Data"]["Balance"]} == {
        "InterimAvailable": "0.03", "InterimBooked": "0.03"}
    other = await raw.request("GET", f"{AISP}/accounts/acc-alice/balances")
    assert other.status == 400
    assert other.body["Errors"][0]["ErrorCode"] == "UK.OBIE.Resource.NotFound"


def test_cli_help_has_examples() -> None:
    for args in (["bank", "--help"], ["bank", "start", "--help"]):
        out = subprocess.run([venv_bin("meterline"), *args], capture_output=True, text=True,
                             check=True).stdout
        assert "Example:" in out
        assert "meterline bank start" in out
