"""A payout the bank rejects (AC04, a closed account) is shown with its reason and paid again to
the account the payee corrects — never both — with real daemons and the sandbox bank."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from node.cluster import meterline_argv
from tests.e2e.cluster import ESCROW, companies, wait_for
from tests.e2e.test_escrow_refunds import bank, databases, stores

__all__ = ["databases", "stores"]  # fixtures: SQLite and PostgreSQL daemons

PISP_PAYMENTS = "/open-banking/v3.1/pisp/domestic-payments"
NEW_ACCOUNT = "40000100000099"


def test_a_rejected_payout_is_returned_with_its_reason_and_repaid_to_a_corrected_account(
    tmp_path: Path, stores: dict[str, str] | None,
) -> None:
    with companies(tmp_path, databases=stores) as c:
        cid = c.open_channel()
        c.manufacturer.api("POST", f"/api/channels/{cid}/pay", {"units": {"km": "1000"}})
        # the bank refuses the next payment it is asked for: the arbiter's first payout
        bank(c, "POST", "/_sandbox/faults", {"path": PISP_PAYMENTS, "method": "POST",
                                             "kind": "reject", "count": 1,
                                             "reason_code": "AC04", "reason": "account closed"})
        c.manufacturer.api("POST", f"/api/channels/{cid}/close", {})

        def returned() -> list[dict[str, Any]]:
            shown = c.arbiter.api("GET", f"/api/escrows/{cid}")
            return [a for a in shown["payout_attempts"] if a["status"] == "returned"]

        wait_for(lambda: len(returned()) == 1, "the rejected payout to show as returned")
        (bounced,) = returned()
        assert bounced["reason"] == "AC04"
        assert bounced["bank"]["status"] == "rejected"
        assert "AC04" in bounced["bank"]["reason"]
        party = bounced["party"]
        payee = c.manufacturer if party == "opener" else c.carrier
        shown = c.arbiter.api("GET", f"/api/escrows/{cid}")
        assert shown["phase"] == "paying"  # not settled while a payout is returned
        human = subprocess.run([*meterline_argv(), "escrow", "show", cid[:10], "--data-dir",
                                str(c.arbiter.directory)], capture_output=True, text=True,
                               check=True, timeout=60).stdout
        assert "returned" in human
        assert "AC04" in human

        # both nodes are told, signed by the arbiter, and show it with its reason
        def told(node: Any) -> list[dict[str, Any]]:
            return list(node.api("GET", f"/api/channels/{cid}")["returned_payouts"])

        wait_for(lambda: all(told(n) for n in (c.manufacturer, c.carrier)),
                 "both nodes to hear of the returned payout")
        for node in (c.manufacturer, c.carrier):
            (seen,) = told(node)
            assert seen["reason"] == "AC04"
            assert seen["reference"] == bounced["reference"]
            assert seen["amount"] == bounced["amount"]
            assert seen["party"] == ("ours" if node is payee else "peer")
        human = subprocess.run([*meterline_argv(), "channel", "show", cid[:10], "--data-dir",
                                str(payee.directory)], capture_output=True, text=True,
                               check=True, timeout=60).stdout
        assert "returned" in human
        assert "AC04" in human

        # the payee opens a new account and names it, signed; the arbiter pays again there
        bank(c, "POST", "/_sandbox/accounts", {
            "account_id": "payee-new", "name": "Payee New", "currency": "EUR",
            "identification": NEW_ACCOUNT})
        named = subprocess.run([*meterline_argv(), "channel", "payout-account", cid[:10],
                                "--account", NEW_ACCOUNT, "--name", "Payee New", "--json",
                                "--data-dir", str(payee.directory)], capture_output=True,
                               text=True, timeout=60, check=False)
        assert named.returncode == 0, named.stderr
        assert json.loads(named.stdout)["account"]["identification"] == NEW_ACCOUNT
        wait_for(lambda: c.arbiter.api("GET", f"/api/escrows/{cid}")["phase"] == "settled",
                 "the payout paid again and settled")
        attempts = [a for a in c.arbiter.api("GET", f"/api/escrows/{cid}")["payout_attempts"]
                    if a["party"] == party]
        assert [(a["attempt"], a["status"]) for a in attempts] == [(0, "returned"),
                                                                    (1, "booked")]
        assert attempts[1]["account"]["identification"] == NEW_ACCOUNT
        assert attempts[1]["reference"] != attempts[0]["reference"]
        assert attempts[1]["amount"] == attempts[0]["amount"]

        # at the bank: the rejected payment moved nothing, the new one paid exactly once
        paid = [p for p in bank(c, "GET", "/_sandbox/payments")["payments"]
                if p["debtor_account_id"] == ESCROW]
        cents = int(attempts[0]["amount"]["amount"].replace(".", ""))
        to_new = [p for p in paid if p["creditor_account_id"] == "payee-new"]
        assert [p["amount_minor"] for p in to_new] == [cents]
        assert sum(p["status"] == "Rejected" for p in paid) == 1
        balances = c.balances()
        assert balances["payee-new"] == cents
        assert balances[ESCROW] == 0
        # both nodes settle on the arbiter's payout notice
        wait_for(lambda: all(n.api("GET", f"/api/channels/{cid}")["phase"] == "settled"
                             for n in (c.manufacturer, c.carrier)), "both nodes to settle")
