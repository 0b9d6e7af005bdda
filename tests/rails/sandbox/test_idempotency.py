"""x-idempotency-key at the bank, and the adapter never paying twice, even across restarts."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from rails.errors import BankUnavailable, IdempotencyConflict
from rails.openbanking import OpenBankingRail
from rails.port import PaymentStatus
from tests.rails.sandbox.conftest import (
    PISP,
    Bank,
    OBValidator,
    Party,
    RawClient,
    consent_body,
    instruction,
)


async def test_bank_replays_same_key_and_body_and_refuses_another_body(
        bank: Bank, parties: tuple[Party, Party], ob: OBValidator) -> None:
    alice, bob = parties
    raw = RawClient(alice, ob)
    body = consent_body(alice, bob, "1.00")
    first = await raw.request("POST", f"{PISP}/domestic-payment-consents", body, idem_key="k-c")
    again = await raw.request("POST", f"{PISP}/domestic-payment-consents", body, idem_key="k-c")
    assert first.status == again.status == 201
    assert again.body == first.body
    other = await raw.request("POST", f"{PISP}/domestic-payment-consents",
                              consent_body(alice, bob, "2.00"), idem_key="k-c")
    assert other.status == 400
    assert other.body["Errors"][0]["ErrorCode"] == "UK.OBIE.Header.Invalid"
    assert other.body["Errors"][0]["Path"] == "x-idempotency-key"

    consent_id = first.body["Data"]["ConsentId"]
    payment = {"Data": {"ConsentId": consent_id,
                        "Initiation": body["Data"]["Initiation"]}, "Risk": body["Risk"]}
    p1 = await raw.request("POST", f"{PISP}/domestic-payments", payment, idem_key="k-p")
    p2 = await raw.request("POST", f"{PISP}/domestic-payments", payment, idem_key="k-p")
    assert p1.status == p2.status == 201
    assert p2.body == p1.body
    assert p1.body["Data"]["Status"] == "AcceptedCreditSettlementCompleted"
    assert len(bank.payments()) == 1
    assert bank.balance("acc-alice") == 10_000 - 100

    changed = {**payment, "Risk": {"PaymentContextCode": "BillPayment"}}
    conflict = await raw.request("POST", f"{PISP}/domestic-payments", changed, idem_key="k-p")
    assert conflict.status == 400
    assert conflict.body["Errors"][0]["ErrorCode"] == "UK.OBIE.Header.Invalid"
    # a new key on the consumed consent is not a second payment either
    second = await raw.request("POST", f"{PISP}/domestic-payments", payment, idem_key="k-p2")
    assert second.status == 400
    assert second.body["Errors"][0]["ErrorCode"] == "UK.OBIE.Resource.InvalidConsentStatus"
    # the consent replay now shows its current state
    replay = await raw.request("POST", f"{PISP}/domestic-payment-consents", body, idem_key="k-c")
    assert replay.body["Data"]["Status"] == "Consumed"
    assert len(bank.payments()) == 1

    too_long = await raw.request("POST", f"{PISP}/domestic-payment-consents", body,
                                 idem_key="x" * 41, validate_request=False)
    assert too_long.status == 400
    assert too_long.body["Errors"][0]["ErrorCode"] == "UK.OBIE.Header.Invalid"
    missing = await raw.request("POST", f"{PISP}/domestic-payment-consents", body,
                                validate_request=False)
    assert missing.status == 400
    assert missing.body["Errors"][0]["ErrorCode"] == "UK.OBIE.Header.Missing"


async def test_payment_must_match_its_consent(
        bank: Bank, parties: tuple[Party, Party], ob: OBValidator) -> None:
    alice, bob = parties
    raw = RawClient(alice, ob)
    body = consent_body(alice, bob, "1.00")
    consent = await raw.request("POST", f"{PISP}/domestic-payment-consents", body, idem_key="m")
    initiation = {**body["Data"]["Initiation"],
                  "InstructedAmount": {"Amount": "99.00", "Currency": "GBP"}}
    payment = {"Data": {"ConsentId": consent.body["Data"]["ConsentId"],
                        "Initiation": initiation}, "Risk": body["Risk"]}
    answer = await raw.request("POST", f"{PISP}/domestic-payments", payment, idem_key="m-p")
    assert answer.status == 400
    assert answer.body["Errors"][0]["ErrorCode"] == "UK.OBIE.Resource.ConsentMismatch"
    assert bank.payments() == []


async def test_adapter_submit_twice_is_one_payment(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail], ob: OBValidator) -> None:
    alice, bob = parties
    pay = rails_for(alice)
    instr = instruction(alice, bob, 500)
    first = await pay.submit(instr)
    second = await pay.submit(instr)
    assert first == second
    assert first.status is PaymentStatus.BOOKED
    assert len(bank.payments()) == 1
    posts = [e for e in ob.seen if e.method == "POST"]
    assert len(posts) == 2  # one consent, one payment: the repeat never reached the bank
    with pytest.raises(IdempotencyConflict):
        await pay.submit(instruction(alice, bob, 501, key=instr.idempotency_key))
    assert len(bank.payments()) == 1


@pytest.mark.parametrize("fault", [
    # the bank books the payment, then the answer never arrives in time
    {"kind": "delay", "delay_ms": 1_500, "after_processing": True},
    # the bank is down for the payment call altogether
    {"kind": "error", "status": 500},
], ids=["booked-but-answer-lost", "bank-errors"])
async def test_same_key_after_restarting_adapter_and_bank_is_one_payment(
        fault: dict[str, object], bank: Bank, parties: tuple[Party, Party],
        ob: OBValidator) -> None:
    alice, bob = parties
    instr = instruction(alice, bob, 2_500)
    bank.fault(path=f"{PISP}/domestic-payments", method="POST", count=10, **fault)

    rail = alice.rail(ob, request_timeout_s=0.5, max_attempts=3)
    try:
        with pytest.raises(BankUnavailable):
            await rail.submit(instr)
    finally:
        await rail.aclose()
    payment_posts = [e for e in ob.seen if e.path == f"{PISP}/domestic-payments"]
    assert len(payment_posts) == 3
    assert len({e.request_headers["x-idempotency-key"] for e in payment_posts}) == 1
    assert len({e.request_body for e in payment_posts}) == 1
    booked_before = 1 if fault["kind"] == "delay" else 0
    assert len(bank.payments()) == booked_before

    bank.restart()  # faults live in memory: the restarted bank is healthy
    assert bank.admin("GET", "/_sandbox/faults")["faults"] == []
    rail = alice.rail(ob)  # a new store object on the same SQLite file
    try:
        record = await rail.submit(instr)
        assert record.status is PaymentStatus.BOOKED
        assert (await rail.submit(instr)) == record
    finally:
        await rail.aclose()

    # exactly one payment, booked once on each side
    [payment] = bank.payments()
    assert payment["payment_id"] == record.bank_payment_id
    assert bank.balance("acc-alice") == 10_000 - 2_500
    assert bank.balance("acc-bob") == 2_500
    assert len(bank.transactions("acc-alice")) == 1
    assert len(bank.transactions("acc-bob")) == 1
    # and the retries after the restart reused the same keys
    keys = {e.request_headers["x-idempotency-key"]
            for e in ob.seen if e.path == f"{PISP}/domestic-payments"}
    assert len(keys) == 1
    consent_keys = {e.request_headers["x-idempotency-key"]
                    for e in ob.seen if e.path == f"{PISP}/domestic-payment-consents"}
    assert len(consent_keys) == 1


def test_bank_facing_ids_are_pure_functions_of_the_key_within_ob_limits() -> None:
    from rails.openbanking import derive_ids

    key = "ch-0123456789abcdef:close:attempt-1"
    ids = derive_ids(key)
    assert derive_ids(key) == ids
    assert derive_ids(key + "x") != ids
    assert len(ids.end_to_end_id) <= 31
    assert len(ids.instruction_id) <= 35
    assert len(ids.consent_key) <= 40
    assert len(ids.payment_key) <= 40
    assert ids.consent_key != ids.payment_key
