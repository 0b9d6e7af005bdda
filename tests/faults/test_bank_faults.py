"""Bank faults: the sandbox bank times out, answers 5xx, processes a payment and drops the
connection, receives it twice, books it late or rejects it; the rail retries under the same
idempotency key and the bank holds each payment exactly once (issue 14, "Bank faults").

The node-level cases run the demo topology (node.cluster) and check what the operator sees:
each payout once at the bank, the rejection's reason under ``transfers``.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from node.cluster import NodeHandle, meterline_argv
from rails.openbanking import OpenBankingRail
from rails.port import PaymentStatus
from tests.e2e.cluster import CARRIER, ESCROW, MANUFACTURER, Companies, companies, wait_for
from tests.rails.sandbox import conftest as sandbox
from tests.rails.sandbox.conftest import PISP, Bank, OBValidator, Party, instruction

# the sandbox suite's fixtures: a real bank process, two parties, validating rails
ob_apis, ob, start_bank, bank = sandbox.ob_apis, sandbox.ob, sandbox.start_bank, sandbox.bank
parties, rails_for = sandbox.parties, sandbox.rails_for

PAYMENTS = f"{PISP}/domestic-payments"
CONSENTS = f"{PISP}/domestic-payment-consents"


def _once(bank: Bank, alice: str, bob: str, amount: int) -> None:
    """One payment at the bank, and the money moved once."""
    assert len(bank.payments()) == 1, bank.payments()
    assert bank.balance(alice) == 10_000 - amount
    assert bank.balance(bob) == amount


async def booked_in_time(pay: OpenBankingRail, key: str) -> None:
    """The payment under `key`, asked about every 50 ms, is booked within 10 s."""
    for _ in range(200):
        if (await pay.status(key)).status is PaymentStatus.BOOKED:
            return
        await asyncio.sleep(0.05)
    assert (await pay.status(key)).status is PaymentStatus.BOOKED


@pytest.mark.parametrize("path", [CONSENTS, PAYMENTS], ids=["consent", "payment"])
async def test_processed_then_dropped_is_retried_under_the_same_key_and_paid_once(
        path: str, bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail], ob: OBValidator) -> None:
    alice, bob = parties
    bank.fault(path=path, method="POST", kind="drop", count=2)
    pay = rails_for(alice, request_timeout_s=2.0, max_attempts=5)
    record = await pay.submit(instruction(alice, bob, 700))
    assert record.status is PaymentStatus.BOOKED
    attempts = [e for e in ob.seen if e.path == path]
    assert [e.status for e in attempts] == [0, 0, 201]  # two lost answers, then the replay
    assert len({e.request_headers["x-idempotency-key"] for e in attempts}) == 1
    _once(bank, "acc-alice", "acc-bob", 700)


async def test_a_request_delivered_twice_is_paid_once(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail]) -> None:
    alice, bob = parties
    bank.fault(path=PAYMENTS, method="POST", kind="duplicate", count=1)
    bank.fault(path=CONSENTS, method="POST", kind="duplicate", count=1)
    record = await rails_for(alice).submit(instruction(alice, bob, 1_234))
    assert record.status is PaymentStatus.BOOKED
    _once(bank, "acc-alice", "acc-bob", 1_234)


async def test_the_answer_after_the_client_gave_up_is_replayed_not_repaid(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail], ob: OBValidator) -> None:
    alice, bob = parties
    bank.fault(path=PAYMENTS, method="POST", kind="delay", delay_ms=1_500,
               after_processing=True, count=1)
    pay = rails_for(alice, request_timeout_s=0.5, max_attempts=4)
    instr = instruction(alice, bob, 250)
    record = await pay.submit(instr)
    assert record.status is PaymentStatus.BOOKED
    assert [e.status for e in ob.seen if e.path == PAYMENTS] == [0, 201]
    # the same key again, later (the node's outbox after a restart): the bank's one payment
    assert (await pay.submit(instr)).bank_payment_id == record.bank_payment_id
    _once(bank, "acc-alice", "acc-bob", 250)


async def test_a_late_booking_is_accepted_first_and_booked_later(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail]) -> None:
    alice, bob = parties
    bank.fault(path=PAYMENTS, method="POST", kind="late", delay_ms=2_500)
    pay = rails_for(alice)
    instr = instruction(alice, bob, 900)
    record = await pay.submit(instr)
    assert record.status is PaymentStatus.ACCEPTED
    assert bank.balance("acc-bob") == 0  # not booked yet
    again = await pay.submit(instr)  # a retry under the same key adds nothing
    assert again.bank_payment_id == record.bank_payment_id

    await booked_in_time(pay, instr.idempotency_key)
    _once(bank, "acc-alice", "acc-bob", 900)


async def test_a_late_booking_the_debtor_cannot_cover_is_rejected_with_its_reason(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail]) -> None:
    alice, bob = parties
    bank.fault(path=PAYMENTS, method="POST", kind="late", delay_ms=2_000)
    pay = rails_for(alice)
    late = instruction(alice, bob, 6_000)
    assert (await pay.submit(late)).status is PaymentStatus.ACCEPTED
    # meanwhile another payment takes most of the balance
    assert (await pay.submit(instruction(alice, bob, 5_000))).status is PaymentStatus.BOOKED
    for _ in range(200):
        record = await pay.status(late.idempotency_key)
        if record.status is not PaymentStatus.ACCEPTED:
            break
        await asyncio.sleep(0.05)
    assert record.status is PaymentStatus.REJECTED
    assert record.reason_code == "AM04"
    assert "insufficient funds" in (record.reason or "")
    assert bank.balance("acc-alice") == 5_000
    assert bank.balance("acc-bob") == 5_000


async def test_the_fault_kinds_are_listed_and_nonsense_is_refused(bank: Bank) -> None:
    with pytest.raises(AssertionError, match="400"):
        bank.fault(path=PAYMENTS, kind="explode")
    bank.fault(path=PAYMENTS, kind="drop", count=3)
    [listed] = bank.admin("GET", "/_sandbox/faults")["faults"]
    assert (listed["kind"], listed["count"]) == ("drop", 3)


# -- the node over the faulty bank: the demo topology, real processes ---------------------------


class SandboxAdmin:
    """The sandbox bank's own admin API (faults, payments) as the node tests use it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def fault(self, **spec: Any) -> None:
        self.call("POST", "/_sandbox/faults", {"path": PAYMENTS, "method": "POST", **spec})

    def payments(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/_sandbox/payments")["payments"])


def _channel(c: Companies, node: NodeHandle, cid: str) -> dict[str, Any]:
    detail: dict[str, Any] = node.api("GET", f"/api/channels/{cid}")
    return detail


@pytest.fixture(scope="module")
def cos(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Companies]:
    """One topology for the node cases (each opens its own channel and counts only the bank
    payments made since)."""
    with companies(tmp_path_factory.mktemp("bankfaults")) as c:
        yield c


def test_payouts_through_drop_5xx_duplicate_and_late_booking_are_each_paid_once(
        cos: Companies) -> None:
    bank = SandboxAdmin(cos.cluster.bank_url)
    cid = cos.open_channel()
    funded = cos.balances()
    earlier = {p["payment_id"] for p in bank.payments()}
    cos.manufacturer.api("POST", f"/api/channels/{cid}/pay",
                         {"units": {"km": "1"}, "reference": "LEG-1", "repeat": 200})
    # the first payout: processed and cut off, then a 5xx, then delivered twice; the second
    # accepted at once and booked 1.5 s later
    for spec in ({"kind": "drop"}, {"kind": "error", "status": 503}, {"kind": "duplicate"},
                 {"kind": "late", "delay_ms": 1_500}):
        bank.fault(**spec)
    cos.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
    wait_for(lambda: all(_channel(cos, n, cid)["phase"] == "settled"
                         for n in (cos.manufacturer, cos.carrier)), "the payouts to book", 90)
    assert bank.call("GET", "/_sandbox/faults")["faults"] == []  # every fault was met

    payouts = [p for p in bank.payments() if p["debtor_account_id"] == ESCROW
               and p["payment_id"] not in earlier]
    assert len(payouts) == 2, payouts  # one per party, none twice
    assert {p["status"] for p in payouts} == {"AcceptedCreditSettlementCompleted"}
    final = cos.balances()
    paid = {MANUFACTURER: final[MANUFACTURER] - funded[MANUFACTURER],
            CARRIER: final[CARRIER] - funded[CARRIER]}
    assert paid[CARRIER] == 10_000 + 200 * 123 // 100  # 100.00 EUR back + 200 km × 0.0123
    assert paid[MANUFACTURER] + paid[CARRIER] == 510_000
    assert final[ESCROW] == 0
    assert sorted(p["amount_minor"] for p in payouts) == sorted(paid.values())


def test_a_rejected_payout_is_shown_with_its_reason_and_moves_no_money(
        cos: Companies) -> None:
    bank = SandboxAdmin(cos.cluster.bank_url)
    cid = cos.open_channel()
    funded = cos.balances()
    earlier = {p["payment_id"] for p in bank.payments()}
    bank.fault(kind="reject", reason_code="AC04", reason="creditor account closed")
    cos.manufacturer.api("POST", f"/api/channels/{cid}/close", {})

    def rejected() -> list[dict[str, Any]]:
        failed: list[dict[str, Any]] = cos.arbiter.api("GET", "/api/info")["transfers_failed"]
        return failed

    wait_for(rejected, "the payout's rejection", 60)
    [shown] = rejected()
    assert (shown["purpose"], shown["status"], shown["channel"]) == ("payout", "rejected", cid)
    assert shown["reason"] == "AC04 creditor account closed", shown
    # the operator's screen says it, with the reason
    out = subprocess.run(
        [*meterline_argv(), "node", "info", "--data-dir", str(cos.arbiter.directory)],
        capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    [line] = [ln for ln in out.stdout.splitlines() if ln.startswith("transfer ")]
    assert "payout" in line
    assert "rejected: AC04 creditor account closed" in line
    assert f"{shown['amount']['amount']} EUR" in line
    assert "storage   ok (sqlite)" in out.stdout
    # the bank holds the rejected payout once, and no money left the escrow for it
    refused = [p for p in bank.payments() if p["status"] == "Rejected"
               and p["payment_id"] not in earlier]
    assert len(refused) == 1
    assert refused[0]["reason_code"] == "AC04"
    held = cos.balances()
    booked = [p for p in bank.payments() if p["debtor_account_id"] == ESCROW
              and p["status"] == "AcceptedCreditSettlementCompleted"
              and p["payment_id"] not in earlier]
    assert held[ESCROW] == funded[ESCROW] - sum(p["amount_minor"] for p in booked)
    assert held[MANUFACTURER] + held[CARRIER] + held[ESCROW] == (
        funded[MANUFACTURER] + funded[CARRIER] + funded[ESCROW])


async def test_a_refused_status_query_of_a_payment_the_bank_holds_is_not_a_rejection(
        bank: Bank, parties: tuple[Party, Party],
        rails_for: Callable[..., OpenBankingRail]) -> None:
    """The payment exists (the bank gave its id) and is not settled yet; the bank then refuses
    the GET of it (a 403: a token or consent it no longer honours, a gateway's policy). That is
    not the bank's word on the payment: taken as a rejection, the node would pay the payout
    again elsewhere while this one is still booked (ADR 0153, amended). The rail says
    "asked again later" (transient, StatusRefused), and the payment is booked once."""
    from node.transfers import final
    from rails.errors import StatusRefused

    alice, bob = parties
    bank.fault(path=PAYMENTS, method="POST", kind="late", delay_ms=1_500)
    pay = rails_for(alice, max_attempts=2)
    instr = instruction(alice, bob, 800)
    record = await pay.submit(instr)
    assert record.status is PaymentStatus.ACCEPTED
    assert record.bank_payment_id
    bank.fault(path=f"{PAYMENTS}/{record.bank_payment_id}", method="GET", kind="error",
               status=403, count=1)
    with pytest.raises(StatusRefused, match="asked again later") as refused:
        await pay.status(instr.idempotency_key)
    assert refused.value.retryable
    assert not final(refused.value)  # the node's poll backs off; it infers nothing
    await booked_in_time(pay, instr.idempotency_key)
    _once(bank, "acc-alice", "acc-bob", 800)
