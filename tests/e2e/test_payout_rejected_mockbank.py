"""Payouts a real mock-bank *rejects* (pain.002 RJCT) — AC04, the creditor account closed, and
AM04, the escrow account short of funds — are shown to the operator with the bank's reason
(`escrow show`, `node info`'s transfers_failed, `channel show`'s returned_payouts), are never
submitted again under the same key, and the payee that names a corrected account (signed) is paid
there once.

How mock-bank is told to reject (its README, "Behaviour"): ``closed-account`` on a creditor
account the bank holds rejects every payment to it ``AC04``; ``insufficient-funds`` on the debtor
account rejects a payment that would take its balance below zero ``AM04``. The escrow account is
brought short by a ``PATCH`` of its balance once both deposits are in (and put back before the
payee names its corrected account), so the close's payouts are what the bank refuses.
"""

from __future__ import annotations

import subprocess
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from node.cluster import NodeHandle, meterline_argv
from tests.e2e.channel_run import ACCOUNT_ID, DEPOSIT, ChannelRun, run_two_company_channel, wait_for
from tests.e2e.mockbank_clearing import BankClient
from tests.e2e.test_payout_returned_mockbank import HOURS, KM, bank, sepa  # noqa: F401 (fixture)

ESCROW = ACCOUNT_ID["escrow"]


def attempts(run: ChannelRun, party: str | None = None) -> list[dict[str, Any]]:
    shown = run.arb.api("GET", f"/api/escrows/{run.cid}")["payout_attempts"]
    return [a for a in shown if party is None or a["party"] == party]


def cli(node: NodeHandle, *args: str) -> str:
    done = subprocess.run([*meterline_argv(), *args, "--data-dir", str(node.directory)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


class ShortEscrow:
    """Once both deposits are in the escrow account, empty it and make it refuse (AM04)."""

    def __init__(self, client: BankClient) -> None:
        self.bank = client
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.held = sum(DEPOSIT.values())
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                if self.bank.balances()[ESCROW] >= self.held:
                    self.bank.call("PATCH", f"/_mock/accounts/{ESCROW}",
                                   {"behaviour": "insufficient-funds", "balance": 0})
                    self.done.set()
                    return
                time.sleep(0.02)
        except BaseException as exc:  # said by the test
            self.error = exc

    def restore(self) -> None:
        self.bank.call("PATCH", f"/_mock/accounts/{ESCROW}",
                       {"behaviour": "accept", "balance": self.held})


@pytest.mark.parametrize("reason", ["AC04", "AM04"])
def test_a_rejected_payout_is_shown_never_resubmitted_and_repaid_to_a_corrected_account_once(
    tmp_path: Path, bank: BankClient, reason: str,  # noqa: F811
) -> None:
    config, corrected = sepa(bank)
    short: ShortEscrow | None = None
    if reason == "AC04":  # every payment to the carrier's account is refused: closed
        bank.call("PATCH", f"/_mock/accounts/{ACCOUNT_ID['carrier']}",
                  {"behaviour": "closed-account"})
    else:
        short = ShortEscrow(bank)
    with run_two_company_channel(tmp_path, bank, config, currency="EUR", forward=KM,
                                 back=HOURS, settles=False) as run:
        if short is not None:
            assert short.error is None, short.error
            assert short.done.is_set(), "the deposits never reached the escrow account"
        refused = ["peer"] if reason == "AC04" else ["opener", "peer"]
        wait_for(f"the {reason} rejection to be seen",
                 lambda: sorted(a["party"] for a in attempts(run)
                                if a["status"] == "returned") == refused, 60, 0.3)
        (first,) = attempts(run, "peer")
        assert first["reason"] == reason, first
        assert first["bank"]["status"] == "rejected", first

        # shown to the operator, with the reason: escrow show, node info, channel show
        shown = cli(run.arb, "escrow", "show", run.cid[:10])
        assert reason in shown, shown
        assert "returned" in shown, shown
        failed = run.arb.api("GET", "/api/info")["transfers_failed"]
        assert any(t["reference"] == first["reference"] and t["reason"].startswith(reason)
                   and t["status"] == "rejected" for t in failed), failed
        wait_for("the carrier to hear of the rejection", lambda: any(
            r["reason"] == reason for r in run.car.api(
                "GET", f"/api/channels/{run.cid}")["returned_payouts"]), 30, 0.3)
        assert reason in cli(run.car, "channel", "show", run.cid[:10])

        # never submitted again under its key: a while later the bank saw it once, refused
        time.sleep(3)
        out = [p for p in bank.payments() if p["account_id"] == ESCROW]
        assert [p["status"] for p in out].count("rejected") == len(refused), out
        assert len(attempts(run, "peer")) == 1

        # the carrier names a corrected account: paid there once, under a new key
        if short is not None:
            short.restore()
        named = subprocess.run([*meterline_argv(), "channel", "payout-account", run.cid[:10],
                                "--account", corrected["identification"], "--name",
                                "Carrier LLC", "--json", "--data-dir", str(run.car.directory)],
                               capture_output=True, text=True, timeout=60, check=False)
        assert named.returncode == 0, named.stderr
        wait_for("the carrier's payout to be paid again and booked",
                 lambda: [a["status"] for a in attempts(run, "peer")] == ["returned",
                                                                         "booked"], 60, 0.3)
        first, again = attempts(run, "peer")
        assert again["account"]["identification"] == corrected["identification"]
        assert again["amount"] == first["amount"]
        assert again["reference"] != first["reference"]
        cents = int(Decimal(first["amount"]["amount"]) * 100)
        wait_for("the clearing to carry the new payment across",
                 lambda: bank.balances()["CORRECTED"] == cents, 30, 0.3)
        time.sleep(3)  # and nothing more arrives there
        assert bank.balances()["CORRECTED"] == cents
        # both nodes were told each outcome, signed (ADR 0320): the carrier's payout of the
        # close (checkpoint 0) rejected for the reason, then booked as attempt 1
        for node in (run.car, run.man):
            wait_for(f"{node.name} to hear the re-payment booked", lambda node=node: [
                (s["status"], s["attempt"]) for s in node.api(
                    "GET", f"/api/channels/{run.cid}")["settlements"]
                if (s["checkpoint"], s["party"]) == (0, "peer")] == [("booked", 1)], 30, 0.3)
            events = node.api("GET", "/api/events?limit=500")["events"]
            told = [(e["type"], e["data"].get("reason"), e["data"]["attempt"]) for e in events
                    if e["type"].startswith("payout.") and e["data"]["party"] == "peer"]
            assert ("payout.rejected", reason, 0) in told, told
            assert ("payout.booked", None, 1) in told, told
        out = [p for p in bank.payments() if p["account_id"] == ESCROW]
        accepted = [p for p in out if p["status"] not in ("rejected", "returned")]
        # AC04: the manufacturer's payout and the carrier's re-payment; AM04: the re-payment
        assert len(accepted) == (2 if reason == "AC04" else 1), out
        assert sum(1 for p in accepted if p["amount"] == cents) >= 1
