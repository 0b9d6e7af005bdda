"""The arbiter's operator refunds credits no channel took — real daemons and the sandbox bank.

A deposit that arrives after its channel settled (late) and a credit whose reference names no
channel (unmatched) are held, listed by `meterline escrow list`, and refunded by
`meterline escrow refund` to the account each came from: exactly one refund at the bank, also
when the arbiter is killed right after the refund was asked for and asked again after restart.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.cluster import meterline_argv
from protocol.references import Purpose, bank_reference
from tests.e2e.cluster import CARRIER, ESCROW, MANUFACTURER, Companies, companies, wait_for
from tests.e2e.test_settlement_postgres import PG_URL, databases

LATE, STRAY = 12_345, 678
__all__ = ["databases"]  # the PostgreSQL databases fixture, used through `stores`


def bank(c: Companies, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    request = urllib.request.Request(
        c.cluster.bank_url + path, method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.loads(resp.read())


def cli(c: Companies, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*meterline_argv(), *args, "--data-dir", str(c.arbiter.directory),
                           "--json"], capture_output=True, text=True, timeout=120, check=False)


def credits(c: Companies) -> dict[str, dict[str, Any]]:
    return {x["reference"]: x for x in c.arbiter.api("GET", "/api/escrows")["unapplied_credits"]}


def refunds_at_bank(c: Companies) -> list[dict[str, Any]]:
    """Payments out of the escrow account that are not a channel's payouts."""
    return [p for p in bank(c, "GET", "/_sandbox/payments")["payments"]
            if p["debtor_account_id"] == ESCROW and p["amount_minor"] in (LATE, STRAY)]


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest) -> Iterator[dict[str, str] | None]:
    """Each daemon on its own SQLite file, or on its own PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    if not PG_URL:
        pytest.skip("METERLINE_TEST_PG_URL is not set: PostgreSQL daemon test skipped")
    yield request.getfixturevalue("databases")


@pytest.fixture
def settled(tmp_path: Path, stores: dict[str, str] | None) -> Any:
    with companies(tmp_path, databases=stores) as c:
        cid = c.open_channel()
        c.manufacturer.api("POST", f"/api/channels/{cid}/pay", {"units": {"km": "100"}})
        c.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
        wait_for(lambda: c.arbiter.api("GET", f"/api/escrows/{cid}")["phase"] == "settled",
                 "the channel to settle at the arbiter")
        yield c, cid


def test_a_late_deposit_and_an_unmatched_credit_are_refunded_once_across_a_restart(
    settled: tuple[Companies, str],
) -> None:
    c, cid = settled
    late_ref = bank_reference(bytes.fromhex(cid), Purpose.DEPOSIT, 0)
    before = c.balances()
    # the manufacturer pays its deposit again, after the channel settled; a stranger pays in
    # with a reference no channel has
    bank(c, "POST", f"/_sandbox/accounts/{ESCROW}/credit",
         {"amount_minor": LATE, "reference": late_ref, "debtor_name": "Manufacturer GmbH"})
    bank(c, "POST", f"/_sandbox/accounts/{ESCROW}/credit",
         {"amount_minor": STRAY, "reference": "INVOICE 4711", "debtor_name": "Carrier Ltd",
          "debtor_scheme": "UK.OBIE.SortCodeAccountNumber",
          "debtor_identification": "40000100000003"})
    wait_for(lambda: {late_ref, "INVOICE 4711"} <= set(credits(c)), "both credits to be held")
    held = credits(c)
    late, stray = held[late_ref], held["INVOICE 4711"]
    assert (late["kind"], late["status"], late["channel"]) == ("late", "held", cid)
    assert late["sender"]["identification"] == "40000100000002"  # the party's account
    assert (stray["kind"], stray["channel"]) == ("unmatched", None)
    assert stray["sender"]["identification"] == "40000100000003"  # the statement's debtor
    assert late["amount"] == {"amount": "123.45", "currency": "EUR"}
    listed = cli(c, "escrow", "list")
    assert listed.returncode == 0, listed.stderr
    shown = cli(c, "escrow", "show", cid[:12])
    assert shown.returncode == 0, shown.stderr
    assert [x["entry_id"] for x in json.loads(shown.stdout)["credits"]] == [late["entry_id"]]

    # the operator refunds the late deposit; the arbiter dies at once and is restarted
    asked = cli(c, "escrow", "refund", late["entry_id"])
    assert asked.returncode == 0, asked.stderr
    assert json.loads(asked.stdout)["status"] in ("refunding", "refunded")
    c.arbiter.stop(kill=True)
    c.arbiter.start()
    again = cli(c, "escrow", "refund", late["entry_id"])  # asked again after the restart
    assert again.returncode in (0, 3), again.stderr  # the same transfer, or "refunded already"
    wait_for(lambda: credits(c)[late_ref]["status"] == "refunded", "the refund to book")
    # the stray credit goes back to the account the bank named, with --wait
    waited = cli(c, "escrow", "refund", stray["entry_id"], "--wait")
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["status"] == "refunded"

    twice = cli(c, "escrow", "refund", late["entry_id"])
    assert twice.returncode == 3  # refused: refunded already
    assert json.loads(twice.stderr)["error"]["code"] == "INVALID_STATE"
    paid = refunds_at_bank(c)
    assert sorted((p["creditor_account_id"], p["amount_minor"]) for p in paid) == [
        (CARRIER, STRAY), (MANUFACTURER, LATE)]
    after = c.balances()
    assert after[MANUFACTURER] == before[MANUFACTURER] + LATE
    assert after[CARRIER] == before[CARRIER] + STRAY
    assert after[ESCROW] == before[ESCROW]
    refund = credits(c)[late_ref]["refund"]
    assert refund["bank"]["status"] == "booked"
    assert refund["account"]["identification"] == "40000100000002"


def test_a_refund_of_an_unknown_credit_or_to_a_bad_account_is_refused(
    settled: tuple[Companies, str],
) -> None:
    c, _ = settled
    missing = cli(c, "escrow", "refund", "no-such-entry")
    assert missing.returncode == 3
    assert json.loads(missing.stderr)["error"]["code"] == "UNKNOWN_CREDIT"
    bank(c, "POST", f"/_sandbox/accounts/{ESCROW}/credit",
         {"amount_minor": STRAY, "reference": "NO SENDER", "debtor_name": "Someone"})
    wait_for(lambda: "NO SENDER" in credits(c), "the credit to be held")
    entry = credits(c)["NO SENDER"]["entry_id"]
    # the bank named no account it came from: the operator must say where it goes
    nowhere = cli(c, "escrow", "refund", entry)
    assert nowhere.returncode == 3
    assert json.loads(nowhere.stderr)["error"]["code"] == "INVALID_STATE"
    bad = cli(c, "escrow", "refund", entry, "--account", "DROP TABLE", "--name", "x")
    assert bad.returncode == 3
    assert json.loads(bad.stderr)["error"]["code"] == "BAD_ACCOUNT"
    assert credits(c)["NO SENDER"]["status"] == "held"
    assert refunds_at_bank(c) == []
