"""Payouts the bank returns after booking — a SEPA pacs.004 and an ACH R-code return, both from a
real mock-bank — are shown on both nodes and at the arbiter with the bank's reason, and the payee
that names a corrected account (signed) is paid again there: one more payment under a new key,
never both.

mock-bank's ``return-later`` behaviour on the escrow account sends back every payment it makes
(here: both payouts) with the reason given, the day they settled (``days`` 0: later bank days
would put the nodes' next files in the bank's past).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from node.cluster import NodeHandle, meterline_argv
from tests.e2e.channel_run import (
    ACCOUNT_ID,
    OPENING,
    ChannelRun,
    Line,
    mock_bank,
    run_two_company_channel,
    wait_for,
)
from tests.e2e.mockbank_clearing import BankClient, iban

BIC = "MOCKNL2A"
ROUTING = "999999992"
KM = Line("km", Decimal("0.012345"), 1_000)
HOURS = Line("container-hour", Decimal("1.755"), 1)
HOLDER = {"manufacturer": "Manufacturer Inc", "carrier": "Carrier LLC", "escrow": "Escrow Agent"}
NUMBER = {"manufacturer": "0000000201", "carrier": "0000000202", "escrow": "0000000203",
          "corrected": "0000000209"}


@pytest.fixture
def bank(tmp_path: Path) -> Iterator[BankClient]:
    with mock_bank(tmp_path) as client:
        yield client


def sepa(bank: BankClient) -> tuple[Callable[[str, str], dict[str, Any]], dict[str, str]]:
    ibans = {who: iban("NL", f"MOCK{NUMBER[who]}") for who in NUMBER}
    for who, acct in ACCOUNT_ID.items():
        bank.call("POST", "/_mock/accounts", {
            "id": acct, "name": HOLDER[who], "iban": ibans[who], "bic": BIC,
            "currency": "EUR", "balance": OPENING[who]})
    bank.call("POST", "/_mock/accounts", {"id": "CORRECTED", "name": "Carrier LLC",
                                          "iban": ibans["corrected"], "bic": BIC,
                                          "currency": "EUR", "balance": 0})

    def config(gateway_url: str, who: str) -> dict[str, Any]:
        return {"rail": "sepa", "url": gateway_url, "scheme": "IBAN",
                "identification": ibans[who], "agent": BIC, "name": HOLDER[who],
                "poll_interval_ms": 200}

    return config, {"scheme": "IBAN", "identification": ibans["corrected"]}


def nacha(bank: BankClient) -> tuple[Callable[[str, str], dict[str, Any]], dict[str, str]]:
    for who, acct in ACCOUNT_ID.items():
        bank.call("POST", "/_mock/accounts", {
            "id": acct, "name": HOLDER[who], "iban": iban("NL", f"MOCK{NUMBER[who]}"),
            "bic": BIC, "currency": "USD", "balance": OPENING[who]})
        bank.call("PATCH", f"/_mock/accounts/{acct}", {
            "format": "nacha", "currency": "USD", "account_number": NUMBER[who]})
    bank.call("POST", "/_mock/accounts", {"id": "CORRECTED", "name": "Carrier LLC",
                                          "iban": iban("NL", f"MOCK{NUMBER['corrected']}"),
                                          "bic": BIC, "currency": "USD", "balance": 0})
    bank.call("PATCH", "/_mock/accounts/CORRECTED", {
        "format": "nacha", "currency": "USD", "account_number": NUMBER["corrected"]})

    def config(gateway_url: str, who: str) -> dict[str, Any]:
        return {"rail": "nacha", "url": gateway_url, "scheme": "US.ABA",
                "identification": f"{ROUTING}:{NUMBER[who]}", "agent": ROUTING,
                "name": HOLDER[who], "poll_interval_ms": 200,
                "immediate_destination": f" {ROUTING}", "immediate_destination_name": "MOCK BANK",
                "immediate_origin": NUMBER[who], "immediate_origin_name": HOLDER[who],
                "company_id": NUMBER[who], "company_name": HOLDER[who]}

    return config, {"scheme": "US.ABA", "identification": f"{ROUTING}:{NUMBER['corrected']}"}


def returned(run: ChannelRun) -> list[dict[str, Any]]:
    attempts = run.arb.api("GET", f"/api/escrows/{run.cid}")["payout_attempts"]
    return [a for a in attempts if a["status"] == "returned"]


def told(node: NodeHandle, cid: str) -> list[dict[str, Any]]:
    return list(node.api("GET", f"/api/channels/{cid}")["returned_payouts"])


@pytest.mark.parametrize(("rail", "currency", "reason"), [("sepa", "EUR", "MD07"),
                                                         ("nacha", "USD", "R02")])
def test_a_returned_payout_is_shown_and_repaid_to_a_corrected_account_never_both(
    tmp_path: Path, bank: BankClient, rail: str, currency: str, reason: str,
) -> None:
    config, corrected = (sepa if rail == "sepa" else nacha)(bank)
    # every payment out of escrow comes back the day it settled, with `reason`
    bank.call("PATCH", f"/_mock/accounts/{ACCOUNT_ID['escrow']}", {
        "behaviour": "return-later", "parameters": {"days": 0, "reason": reason}})
    with run_two_company_channel(tmp_path, bank, config, currency=currency, forward=KM,
                                 back=HOURS, settles=False) as run:
        wait_for("both payouts to show returned", lambda: len(returned(run)) == 2, 60, 0.3)
        assert {a["reason"] for a in returned(run)} == {reason}
        wait_for("both nodes to hear of both returns",
                 lambda: all(len(told(n, run.cid)) == 2 for n in (run.man, run.car)), 30, 0.3)
        assert {r["reason"] for r in told(run.car, run.cid)} == {reason}

        # the carrier names a corrected account; the escrow account pays normally again
        bank.call("PATCH", f"/_mock/accounts/{ACCOUNT_ID['escrow']}", {"behaviour": "accept"})
        named = subprocess.run([*meterline_argv(), "channel", "payout-account", run.cid[:10],
                                "--account", corrected["identification"], "--name",
                                "Carrier LLC", "--json", "--data-dir", str(run.car.directory)],
                               capture_output=True, text=True, timeout=60, check=False)
        assert named.returncode == 0, named.stderr

        def carrier_attempts() -> list[dict[str, Any]]:
            shown = run.arb.api("GET", f"/api/escrows/{run.cid}")["payout_attempts"]
            return [a for a in shown if a["party"] == "peer"]

        wait_for("the carrier's payout to be paid again and booked",
                 lambda: [a["status"] for a in carrier_attempts()] == ["returned", "booked"],
                 60, 0.3)
        first, again = carrier_attempts()
        assert again["account"]["identification"] == corrected["identification"]
        assert again["amount"] == first["amount"]
        assert again["reference"] != first["reference"]
        # the manufacturer named no new account: its returned payout waits in escrow, and the
        # channel is not settled
        shown = run.arb.api("GET", f"/api/escrows/{run.cid}")
        assert [a["status"] for a in shown["payout_attempts"]
                if a["party"] == "opener"] == ["returned"]
        assert shown["phase"] == "paying"
        cents = int(first["amount"]["amount"].replace(".", ""))
        # at the bank: the corrected account got the payout once; nothing else went out
        wait_for("the clearing to carry the new payment across",
                 lambda: bank.balances()["CORRECTED"] == cents, 30, 0.3)
        out_of_escrow = [p for p in bank.payments() if p["account_id"] == ACCOUNT_ID["escrow"]]
        assert sorted(p["status"] for p in out_of_escrow) == ["accepted", "returned",
                                                              "returned"], out_of_escrow
        (paid,) = [p for p in out_of_escrow if p["status"] == "accepted"]
        assert paid["amount"] == cents
        # what escrow still holds is exactly the manufacturer's returned payout
        manufacturer = int(shown["payouts"]["opener"]["amount"].replace(".", ""))
        assert bank.balances()[ACCOUNT_ID["escrow"]] == manufacturer


def test_a_payout_returned_days_after_settlement_is_still_seen_and_told(
    tmp_path: Path, bank: BankClient,
) -> None:
    """The return window: the channel settled, then the bank sends a pacs.004 (AC04) two bank
    days later; the arbiter, still asking about booked payouts, records it and tells both."""
    config, _ = sepa(bank)
    bank.call("PATCH", f"/_mock/accounts/{ACCOUNT_ID['escrow']}", {
        "behaviour": "return-later", "parameters": {"days": 2, "reason": "AC04"}})
    with run_two_company_channel(tmp_path, bank, config, currency="EUR", forward=KM,
                                 back=HOURS) as run:
        shown = run.arb.api("GET", f"/api/escrows/{run.cid}")
        assert shown["phase"] == "settled"
        assert {a["status"] for a in shown["payout_attempts"]} == {"booked"}
        bank.call("POST", "/_mock/advance?days=4")  # two business days and a weekend at most
        wait_for("the late returns to be seen", lambda: len(returned(run)) == 2, 60, 0.3)
        assert {(a["reason"], a["bank"]["status"]) for a in returned(run)} == {
            ("AC04", "returned")}
        wait_for("both nodes to hear of both returns",
                 lambda: all(len(told(n, run.cid)) == 2 for n in (run.man, run.car)), 30, 0.3)
        statement = run.car.api("GET", f"/api/channels/{run.cid}/statement")
        assert {r["reason"] for r in statement["returned_payouts"]} == {"AC04"}
