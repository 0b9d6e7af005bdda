"""Long-lived channels on SQLite and PostgreSQL (issue 9), real daemons on loopback: a top-up
during heavy streaming grows capacity only on the arbiter's confirmation; the arbiter killed
between a checkpoint payout's submission and the bank's answer pays exactly once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.cluster import ClusterError
from tests.e2e.cluster import CARRIER, ESCROW, MANUFACTURER, Companies, companies, wait_for
from tests.support import PG_URL, pg_databases

PISP_PAYMENTS = "/open-banking/v3.1/pisp/domestic-payments"



@pytest.fixture(params=["sqlite", "postgresql"])
def databases(request: pytest.FixtureRequest) -> Iterator[dict[str, str] | None]:
    """None: every daemon on its own SQLite file; else a PostgreSQL database per daemon."""
    if request.param == "sqlite":
        yield None
        return
    if not PG_URL:
        pytest.skip("METERLINE_TEST_PG_URL is not set: the PostgreSQL variant is skipped")
    with pg_databases("ll") as urls:
        yield urls


def bank_payments(c: Companies, debtor: str, creditor: str) -> list[dict[str, Any]]:
    import json
    import urllib.request

    with urllib.request.urlopen(f"{c.cluster.bank_url}/_sandbox/payments") as resp:
        payments = json.loads(resp.read())["payments"]
    return [p for p in payments
            if p["debtor_account_id"] == debtor and p["creditor_account_id"] == creditor]


def bank_fault(c: Companies, spec: dict[str, Any]) -> None:
    import json
    import urllib.request

    request = urllib.request.Request(f"{c.cluster.bank_url}/_sandbox/faults",
                                     data=json.dumps(spec).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request):
        pass


def test_topup_during_heavy_streaming_grows_capacity_only_once_confirmed(
        tmp_path: Path, databases: dict[str, str] | None) -> None:
    with companies(tmp_path, databases=databases) as c:
        cid = c.open_channel(deposit="10.00 EUR")
        funded = c.balances()
        errors: list[BaseException] = []

        def stream() -> None:  # 60 × 100 updates of 0.1 km (0.123 EUR a batch): 7.38 EUR
            try:
                for _ in range(60):
                    c.manufacturer.api("POST", f"/api/channels/{cid}/pay",
                                       {"units": {"km": "0.1"}, "repeat": 100})
            except BaseException as exc:
                errors.append(exc)

        payer = threading.Thread(target=stream)
        payer.start()
        c.arbiter.stop()  # nobody can confirm the top-up yet
        shown = c.manufacturer.api("POST", f"/api/channels/{cid}/topup",
                                   {"amount": "20.00 EUR"})
        assert shown["topped_up"]["ours"]["amount"] == "0.00"
        wait_for(lambda: c.balances()[ESCROW] == funded[ESCROW] + 2000,
                 "the top-up booked on the escrow account")
        streaming = payer.is_alive()
        payer.join(timeout=120)
        assert not errors, errors
        assert streaming, "the top-up was paid while updates were still streaming"
        # paid into escrow but not confirmed: capacity is the deposit's, 10.00 − 7.38 EUR
        for side, key in ((c.manufacturer, "ours"), (c.carrier, "peer")):
            assert side.api("GET", f"/api/channels/{cid}")["topped_up"][key]["amount"] == "0.00"
        with pytest.raises(ClusterError, match="CAPACITY"):
            c.manufacturer.api("POST", f"/api/channels/{cid}/pay", {"amount": "3.00 EUR"})

        c.arbiter.start()
        wait_for(lambda: c.manufacturer.api("GET", f"/api/channels/{cid}")["topped_up"]["ours"]
                 ["amount"] == "20.00" and c.carrier.api("GET", f"/api/channels/{cid}")
                 ["topped_up"]["peer"]["amount"] == "20.00", "the arbiter's confirmation")
        paid = c.manufacturer.api("POST", f"/api/channels/{cid}/pay", {"amount": "3.00 EUR"})
        assert paid["acked_nonce_sent"] == 6001
        topups = [t for t in paid["settlement"] if t["purpose"] == "topup"]
        assert [(t["amount"]["amount"], t["source"]) for t in topups] == [("20.00", "rail")]

        c.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
        wait_for(lambda: c.carrier.api("GET", f"/api/channels/{cid}")["phase"] == "settled",
                 "the payouts to book")
        final = c.balances()
        # 10.00 + 20.00 − 10.38 sent = 19.62 back to the manufacturer; 100 + 10.38 to the carrier
        assert final[MANUFACTURER] == funded[MANUFACTURER] - 2000 + 1962
        assert final[CARRIER] == funded[CARRIER] + 11038
        assert final[ESCROW] == 0


def test_arbiter_killed_between_checkpoint_payout_and_bank_answer_pays_once(
        tmp_path: Path, databases: dict[str, str] | None) -> None:
    with companies(tmp_path, databases=databases) as c:
        cid = c.open_channel()
        funded = c.balances()
        c.manufacturer.api("POST", f"/api/channels/{cid}/pay",
                           {"units": {"km": "100"}, "reference": "LEG"})
        # the bank books the next payment, then holds its answer for 60 s
        bank_fault(c, {"path": PISP_PAYMENTS, "method": "POST", "kind": "delay",
                       "delay_ms": 60_000, "after_processing": True, "count": 1})
        c.manufacturer.api("POST", f"/api/channels/{cid}/settle", {"wait": True})
        wait_for(lambda: len(bank_payments(c, ESCROW, CARRIER)) == 1,
                 "the bank to book the checkpoint payout")
        c.arbiter.stop(kill=True)  # SIGKILL while the bank's answer is still on its way
        assert c.balances()[CARRIER] == funded[CARRIER] + 123
        c.arbiter.start()
        wait_for(lambda: not c.arbiter.api("GET", "/api/outbox")["outbox"],
                 "the arbiter to resubmit the payout after its restart", timeout_s=90)
        payouts = bank_payments(c, ESCROW, CARRIER)
        assert len(payouts) == 1, payouts
        assert payouts[0]["amount_minor"] == 123
        assert c.balances()[CARRIER] == funded[CARRIER] + 123

        # the close pays exactly the rest: the checkpoint's 1.23 EUR is not paid again
        c.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
        wait_for(lambda: c.carrier.api("GET", f"/api/channels/{cid}")["phase"] == "settled",
                 "the final payouts to book", timeout_s=90)
        final = c.balances()
        assert final[CARRIER] == funded[CARRIER] + 10_000 + 123
        assert final[MANUFACTURER] == funded[MANUFACTURER] + 500_000 - 123
        assert final[ESCROW] == 0
        assert len(bank_payments(c, ESCROW, CARRIER)) == 2  # the checkpoint's and the close's
