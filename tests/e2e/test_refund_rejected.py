"""A refund the bank rejects is paid again as the next attempt under a new reference and key,
at most 16 attempts (ADR 0322) — real daemons and the sandbox bank, whose fault injection
creates the next payments ``Rejected`` with AC04 (rails/sandbox/faults.py).

Once: rejected twice, booked by the third attempt; exactly one refund moved the money, every
attempt a key and reference of its own, `escrow show` says which attempt it took. Always: all
16 attempts rejected, nothing moved, the credit left to the operator (`rejected`) and a further
`escrow refund` refused.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.cluster import meterline_argv
from protocol.references import Purpose, bank_reference, refund_reference
from rails.sandbox.common import PISP
from tests.e2e.cluster import ESCROW, MANUFACTURER, Companies, companies, wait_for
from tests.e2e.test_escrow_refunds import LATE, bank, cli, credits

PAYMENTS = f"{PISP}/domestic-payments"


@pytest.fixture
def late(tmp_path: Path) -> Iterator[tuple[Companies, str]]:
    """A settled channel whose manufacturer paid its deposit again: a late credit, held."""
    with companies(tmp_path) as c:
        cid = c.open_channel()
        c.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
        wait_for(lambda: c.arbiter.api("GET", f"/api/escrows/{cid}")["phase"] == "settled",
                 "the channel to settle at the arbiter")
        reference = bank_reference(bytes.fromhex(cid), Purpose.DEPOSIT, 0)
        bank(c, "POST", f"/_sandbox/accounts/{ESCROW}/credit",
             {"amount_minor": LATE, "reference": reference, "debtor_name": "Manufacturer GmbH"})
        wait_for(lambda: reference in credits(c), "the late credit to be held")
        yield c, reference


def refunds_at_bank(c: Companies) -> list[dict[str, Any]]:
    return [p for p in bank(c, "GET", "/_sandbox/payments")["payments"]
            if p["debtor_account_id"] == ESCROW and p["amount_minor"] == LATE]


def reject_next(c: Companies, count: int) -> None:
    bank(c, "POST", "/_sandbox/faults", {"path": PAYMENTS, "method": "POST", "kind": "reject",
                                          "count": count, "reason_code": "AC04",
                                          "reason": "creditor account closed"})


def test_a_refund_rejected_twice_is_booked_by_its_third_attempt_once(
    late: tuple[Companies, str],
) -> None:
    c, reference = late
    before = c.balances()
    entry = credits(c)[reference]["entry_id"]
    reject_next(c, 2)
    asked = cli(c, "escrow", "refund", entry)
    assert asked.returncode == 0, asked.stderr
    wait_for(lambda: credits(c)[reference]["status"] == "refunded",
             "the third attempt to book", timeout_s=90)
    refund = credits(c)[reference]["refund"]
    assert refund["attempt"] == 2
    assert refund["reference"] == refund_reference(entry, 2)
    assert refund["bank"]["status"] == "booked"
    paid = refunds_at_bank(c)
    assert [p["status"] for p in paid].count("Rejected") == 2, paid
    assert [p["reason_code"] for p in paid if p["status"] == "Rejected"] == ["AC04"] * 2
    assert len([p for p in paid if p["status"] != "Rejected"]) == 1, paid
    assert len({p["end_to_end_id"] for p in paid}) == 3  # a payment per attempt, none reused
    after = c.balances()
    assert after[MANUFACTURER] == before[MANUFACTURER] + LATE  # moved once
    assert after[ESCROW] == before[ESCROW] - LATE
    listed = [line for line in cli_text(c, "escrow", "list").splitlines() if entry in line]
    assert listed, "the credit is listed"
    assert "attempt 3 of 16" in listed[0], listed


def test_a_refund_rejected_16_times_is_left_to_the_operator(
    late: tuple[Companies, str],
) -> None:
    c, reference = late
    try:
        before = c.balances()
        entry = credits(c)[reference]["entry_id"]
        reject_next(c, 40)  # more than it will ever try
        asked = cli(c, "escrow", "refund", entry)
        assert asked.returncode == 0, asked.stderr
        wait_for(lambda: credits(c)[reference]["status"] == "rejected",
                 "all 16 attempts to be rejected", timeout_s=120)
        paid = refunds_at_bank(c)
        assert len(paid) == 16, paid
        assert {p["status"] for p in paid} == {"Rejected"}
        assert len({p["end_to_end_id"] for p in paid}) == 16
        refund = credits(c)[reference]["refund"]
        assert refund["attempt"] == 15
        assert refund["bank"]["status"] == "rejected"
        again = cli(c, "escrow", "refund", entry)
        assert again.returncode == 3
        assert json.loads(again.stderr)["error"]["code"] == "INVALID_STATE"
        assert len(refunds_at_bank(c)) == 16  # nothing more submitted
        assert c.balances() == before
    finally:
        bank(c, "DELETE", "/_sandbox/faults")


def cli_text(c: Companies, *args: str) -> str:
    done = subprocess.run([*meterline_argv(), *args, "--data-dir", str(c.arbiter.directory)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout
