"""Refusals in the OB error shape become typed RailErrors; injected faults are survived."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from rails.errors import BankProtocolError, BankRejected, BankUnavailable, InvalidInstruction
from rails.openbanking import OpenBankingRail
from rails.port import Account, AccountScheme, PaymentStatus
from tests.rails.sandbox.conftest import (
    PISP,
    Bank,
    OBValidator,
    Party,
    instruction,
    make_party,
)


def _ob_error_codes(ob: OBValidator, path: str) -> list[str]:
    return [json.loads(e.response_body)["Errors"][0]["ErrorCode"]
            for e in ob.seen if e.path == path and e.status == 400]


async def test_overdraft_is_refused_then_succeeds_under_the_same_key_once_funded(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail], ob: OBValidator) -> None:
    alice, bob = parties
    pay = rails_for(alice)
    instr = instruction(alice, bob, 10_001)
    with pytest.raises(BankRejected) as info:
        await pay.submit(instr)
    assert info.value.reason_code == "UK.OBIE.Rules.InsufficientFunds"
    assert _ob_error_codes(ob, f"{PISP}/domestic-payments") == ["UK.OBIE.Rules.InsufficientFunds"]
    assert bank.balance("acc-alice") == 10_000
    assert bank.balance("acc-bob") == 0
    assert bank.payments() == []
    assert bank.transactions("acc-alice") == []

    bank.admin("POST", "/_sandbox/accounts/acc-alice/credit", {"amount_minor": 1})
    record = await pay.submit(instr)
    assert record.status is PaymentStatus.BOOKED
    assert bank.balance("acc-alice") == 0
    assert bank.balance("acc-bob") == 10_001
    assert len(bank.payments()) == 1


async def test_unknown_accounts_are_refused_in_the_ob_shape(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail], ob: OBValidator) -> None:
    alice, bob = parties
    pay = rails_for(alice)
    stranger = Account("Nobody", AccountScheme.SORT_CODE, "99999999999999")
    with pytest.raises(BankRejected) as info:
        await pay.submit(replace(instruction(alice, bob, 100), creditor=stranger))
    assert info.value.reason_code == "UK.OBIE.Resource.NotFound"
    with pytest.raises(BankRejected) as info:
        await pay.submit(replace(instruction(alice, bob, 100), debtor=stranger))
    assert info.value.reason_code == "UK.OBIE.Resource.NotFound"
    assert _ob_error_codes(ob, f"{PISP}/domestic-payment-consents") == [
        "UK.OBIE.Resource.NotFound", "UK.OBIE.Resource.NotFound"]
    # someone else's account as debtor: the client was not registered for it
    with pytest.raises(BankRejected) as info:
        await pay.submit(replace(instruction(alice, bob, 100), debtor=bob.account,
                                 creditor=alice.account))
    assert info.value.reason_code == "UK.OBIE.Resource.ConsentMismatch"
    assert bank.payments() == []
    assert bank.balance("acc-alice") == 10_000


async def test_wrong_currency_and_bad_fields_are_invalid_instructions(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail], ob: OBValidator, tmp_path: Path) -> None:
    alice, bob = parties
    pay = rails_for(alice)
    with pytest.raises(InvalidInstruction) as info:
        await pay.submit(replace(instruction(alice, bob, 100), currency="EUR"))
    assert [f.code for f in info.value.findings] == ["UK.OBIE.Unsupported.Currency"]
    sent = len(ob.seen)
    # refused locally, before the bank hears of it
    for bad in (
        replace(instruction(alice, bob, 100), reference="R" * 36),
        replace(instruction(alice, bob, 100), creditor=Account(
            "US Co", AccountScheme.US_ABA, "123456789", "021000021")),
        replace(instruction(alice, bob, 0)),
        replace(instruction(alice, bob, 100), idempotency_key="k" * 41),
    ):
        with pytest.raises(InvalidInstruction):
            await pay.submit(bad)
    assert len(ob.seen) == sent

    # an IBAN account at the same bank works too
    carol = make_party(bank, tmp_path, "acc-carol", "Carol GmbH", "GB82WEST12345698765432", 0,
                       scheme=AccountScheme.IBAN)
    record = await pay.submit(instruction(alice, carol, 42))
    assert record.status is PaymentStatus.BOOKED
    assert bank.balance("acc-carol") == 42


@pytest.mark.parametrize("fault", [
    {"kind": "timeout", "delay_ms": 1_500},
    {"kind": "error", "status": 500},
], ids=["timeout", "5xx"])
@pytest.mark.parametrize("path", ["domestic-payment-consents", "domestic-payments"])
async def test_transient_faults_are_retried_with_the_same_key(
        fault: dict[str, object], path: str, bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail], ob: OBValidator) -> None:
    alice, bob = parties
    bank.fault(path=f"{PISP}/{path}", method="POST", count=2, **fault)
    pay = rails_for(alice, request_timeout_s=0.5, max_attempts=4)
    record = await pay.submit(instruction(alice, bob, 300))
    assert record.status is PaymentStatus.BOOKED
    attempts = [e for e in ob.seen if e.path == f"{PISP}/{path}"]
    assert [e.status for e in attempts] == [0 if fault["kind"] == "timeout" else 500] * 2 + [201]
    assert len({e.request_headers["x-idempotency-key"] for e in attempts}) == 1
    assert len(bank.payments()) == 1
    assert bank.balance("acc-alice") == 9_700
    assert bank.balance("acc-bob") == 300


async def test_rejection_fault_gives_rejected_with_reason(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail]) -> None:
    alice, bob = parties
    bank.fault(path=f"{PISP}/domestic-payments", method="POST", kind="reject",
               reason_code="AC04", reason="creditor account closed")
    pay = rails_for(alice)
    instr = instruction(alice, bob, 800)
    record = await pay.submit(instr)
    assert record.status is PaymentStatus.REJECTED
    assert record.reason_code == "AC04"
    assert record.reason == "creditor account closed"
    assert record.bank_payment_id
    assert (await pay.status(instr.idempotency_key)) == record
    assert (await pay.submit(instr)) == record
    [payment] = bank.payments()
    assert payment["status"] == "Rejected"
    assert bank.balance("acc-alice") == 10_000
    assert bank.balance("acc-bob") == 0
    recon = await pay.reconcile()
    assert recon.booked == {}
    assert recon.outstanding == ()


async def test_an_answer_that_does_not_parse_is_a_protocol_error(
        bank: Bank, parties: tuple[Party, Party]) -> None:
    alice, bob = parties
    # this test's answers are deliberately off-spec, so its adapter has no validating observer
    pay = OpenBankingRail(alice.config())
    try:
        bank.fault(path=f"{PISP}/domestic-payment-consents", method="POST", kind="garbage")
        with pytest.raises(BankProtocolError):
            await pay.submit(instruction(alice, bob, 100))
        bank.fault(path="/open-banking/v3.1/aisp/accounts/acc-alice/transactions",
                   kind="garbage")
        with pytest.raises(BankProtocolError):
            await pay.incoming_credits()
    finally:
        await pay.aclose()
    assert bank.payments() == []


async def test_bank_down_for_good_is_bank_unavailable(
        bank: Bank, parties: tuple[Party, Party]) -> None:
    alice, bob = parties
    bank.stop()
    pay = OpenBankingRail(alice.config(max_attempts=2, backoff_s=0.01))
    try:
        with pytest.raises(BankUnavailable):
            await pay.submit(instruction(alice, bob, 100))
        with pytest.raises(BankUnavailable):
            await pay.incoming_credits()
    finally:
        await pay.aclose()
