"""Two companies settle through the pay-by-bank sandbox bank, with real processes on loopback."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from node.storage.codec import decode_channel
from tests.e2e.cluster import CARRIER, ESCROW, MANUFACTURER, Companies, companies, wait_for

CENT = 10_000  # channel scale 6 → one EUR cent


def expected_payouts(deposits: tuple[int, int], sent: tuple[int, int]) -> tuple[int, int]:
    """DESIGN §3 computed independently: the net payee rounded down to the cent."""
    owed = (deposits[0] * CENT - sent[0] + sent[1], deposits[1] * CENT - sent[1] + sent[0])
    payee = 0 if owed[0] > deposits[0] * CENT else 1
    paid = owed[payee] // CENT
    total = deposits[0] + deposits[1]
    return (paid, total - paid) if payee == 0 else (total - paid, paid)


def settle(c: Companies, cid: str) -> dict[str, Any]:
    closed = c.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
    assert closed["phase"] in ("closed", "settled")
    wait_for(lambda: c.manufacturer.api("GET", f"/api/channels/{cid}")["phase"] == "settled"
             and c.carrier.api("GET", f"/api/channels/{cid}")["phase"] == "settled",
             "the payouts to book")
    detail: dict[str, Any] = c.manufacturer.api("GET", f"/api/channels/{cid}")
    return detail


@pytest.fixture
def cos(tmp_path: Path) -> Any:
    with companies(tmp_path) as c:
        yield c


def test_ten_thousand_updates_settle_to_the_cent(cos: Companies) -> None:
    before = cos.balances()
    cid = cos.open_channel()
    after_funding = cos.balances()
    assert after_funding[MANUFACTURER] == before[MANUFACTURER] - 500_000
    assert after_funding[CARRIER] == before[CARRIER] - 10_000
    assert after_funding[ESCROW] == 510_000

    paid = cos.manufacturer.api("POST", f"/api/channels/{cid}/pay",
                                {"units": {"km": "1"}, "reference": "SHIPMENT-1",
                                 "repeat": 10_000})
    assert paid["nonce_sent"] == 10_000
    assert paid["acked_nonce_sent"] == 10_000
    back = cos.carrier.api("POST", f"/api/channels/{cid}/pay",
                           {"units": {"container-hour": "0.5"}, "reference": "RETURN-LEG",
                            "repeat": 7})
    assert back["acked_nonce_sent"] == 7
    refund = cos.carrier.api("POST", f"/api/channels/{cid}/pay",
                             {"amount": "0.333333 EUR", "reference": "CREDIT-NOTE"})
    assert refund["nonce_sent"] == 8

    receiver = cos.carrier.api("GET", f"/api/channels/{cid}")
    assert receiver["nonce_received"] == 10_000
    assert receiver["units"]["received"]["km"] == "10000"
    assert receiver["received"]["precise"] == "123.00"
    sent_by_manufacturer = 10_000 * 12_300  # 10,000 km × 0.0123 EUR at scale 6
    sent_by_carrier = 7 * 875_000 + 333_333  # 7 × 0.5 h × 1.75 EUR + 0.333333 EUR

    detail = settle(cos, cid)
    final = cos.balances()
    payouts = expected_payouts((500_000, 10_000), (sent_by_manufacturer, sent_by_carrier))
    assert final[MANUFACTURER] == after_funding[MANUFACTURER] + payouts[0]
    assert final[CARRIER] == after_funding[CARRIER] + payouts[1]
    assert final[ESCROW] == 0
    assert sum(payouts) == 510_000
    # the carrier is the net payee: 100 + 123 − 6.458333 = 216.541667 → 216.54 EUR
    assert payouts[1] == 21_654
    booked = [t for t in detail["settlement"] if t["purpose"] == "payout"]
    assert {t["status"] for t in booked} == {"booked"}

    statement = cos.carrier.api("GET", f"/api/channels/{cid}/statement")
    km = [i for i in statement["items"] if i["unit"] == "km"]
    assert km == [{"direction": "received", "unit": "km", "reference": "SHIPMENT-1",
                   "quantity": "10000", "unit_price": "0.0123", "graduated": False,
                   "updates": 10_000,
                   "amount": {"amount": "123.00", "precise": "123.00", "currency": "EUR"},
                   "allocated": "123.00"}]


def test_receiver_killed_mid_stream_loses_nothing(cos: Companies) -> None:
    cid = cos.open_channel()
    after_funding = cos.balances()
    result: dict[str, Any] = {}

    def pay() -> None:
        try:
            result["ok"] = cos.manufacturer.api(
                "POST", f"/api/channels/{cid}/pay",
                {"units": {"km": "0.5"}, "reference": "LONG-HAUL", "repeat": 20_000},
                timeout_s=180)
        except Exception as exc:  # reported by the assertion below
            result["error"] = exc

    payer = threading.Thread(target=pay)
    payer.start()
    wait_for(lambda: cos.carrier.api("GET", f"/api/channels/{cid}")["nonce_received"] > 3_000,
             "the stream to get going")
    cos.carrier.stop(kill=True)  # kill -9 in the middle of the stream
    acked_at_crash = cos.manufacturer.api("GET", f"/api/channels/{cid}")["acked_nonce_sent"]
    assert 0 < acked_at_crash < 20_000

    # Every update the sender holds a receipt for is in the receiver's committed state.
    db = cos.carrier.directory / "meterline.sqlite"
    import sqlite3

    with sqlite3.connect(db) as conn:
        (blob,) = conn.execute("SELECT state FROM channel WHERE id = ?", (cid,)).fetchone()
    assert decode_channel(blob).received.nonce >= acked_at_crash

    cos.carrier.start()
    payer.join(timeout=180)
    assert "error" not in result, result.get("error")
    assert result["ok"]["acked_nonce_sent"] == 20_000
    receiver = cos.carrier.api("GET", f"/api/channels/{cid}")
    assert receiver["nonce_received"] == 20_000
    assert receiver["units"]["received"]["km"] == "10000"

    settle(cos, cid)
    final = cos.balances()
    payouts = expected_payouts((500_000, 10_000), (20_000 * 6_150, 0))
    assert final[MANUFACTURER] == after_funding[MANUFACTURER] + payouts[0]
    assert final[CARRIER] == after_funding[CARRIER] + payouts[1]
    assert final[ESCROW] == 0
