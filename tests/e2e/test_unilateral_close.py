"""Unilateral close through the arbiter: a vanished peer cannot block the other side (DESIGN §9)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import CARRIER, ESCROW, MANUFACTURER, Companies, companies, wait_for

SHORT_WINDOWS = {"policy": {"min_dispute_window_ms": 2_000, "watch_interval_ms": 200}}
"""A 3 s dispute window is far below the 1 h default minimum: these tests allow it."""


@pytest.fixture
def cos(tmp_path: Path) -> Any:
    with companies(tmp_path, settings=SHORT_WINDOWS) as c:
        yield c


def metered(c: Companies) -> tuple[str, dict[str, int]]:
    cid = c.open_channel(dispute_window="3s")
    funded = c.balances()
    c.manufacturer.api("POST", f"/api/channels/{cid}/pay",
                       {"units": {"km": "1"}, "reference": "SHIP-1", "repeat": 500})
    c.carrier.api("POST", f"/api/channels/{cid}/pay",
                  {"units": {"container-hour": "1"}, "reference": "RETURN", "repeat": 3})
    return cid, funded


def settled(handle: Any, cid: str) -> bool:
    return bool(handle.api("GET", f"/api/channels/{cid}")["phase"] == "settled")


def test_both_hand_in_evidence_and_the_window_decides(cos: Companies) -> None:
    cid, funded = metered(cos)
    forced = cos.manufacturer.api("POST", f"/api/channels/{cid}/close", {"force": True})
    assert forced["phase"] == "disputed"
    wait_for(lambda: cos.carrier.api("GET", f"/api/channels/{cid}")["dispute_deadline"]
             is not None, "the arbiter's signed dispute notice to reach the carrier")
    carrier_view = cos.carrier.api("GET", f"/api/channels/{cid}")
    assert carrier_view["phase"] == "disputed"
    wait_for(lambda: settled(cos.manufacturer, cid) and settled(cos.carrier, cid),
             "the dispute window to end and the payouts to book", timeout_s=60)
    final = cos.balances()
    # Both proofs count: 500 km × 0.0123 = 6.15 EUR one way, 3 h × 1.75 = 5.25 EUR back.
    assert final[MANUFACTURER] - funded[MANUFACTURER] == 500_000 - 615 + 525
    assert final[CARRIER] - funded[CARRIER] == 10_000 + 615 - 525
    assert final[ESCROW] == 0


def test_a_vanished_peer_cannot_block_the_close(cos: Companies) -> None:
    cid, funded = metered(cos)
    cos.carrier.stop(kill=True)  # the carrier disappears with everything it was sent
    forced = cos.manufacturer.api("POST", f"/api/channels/{cid}/close", {"force": True})
    assert forced["phase"] == "disputed"
    wait_for(lambda: settled(cos.manufacturer, cid), "the arbiter to pay out without the carrier",
             timeout_s=60)
    final = cos.balances()
    # The manufacturer handed in the carrier's proof (5.25 EUR owed to it); the carrier handed in
    # nothing, so what it was sent does not count: silence only hurts the silent party.
    assert final[MANUFACTURER] - funded[MANUFACTURER] == 500_000 + 525
    assert final[CARRIER] - funded[CARRIER] == 10_000 - 525
    assert final[ESCROW] == 0
    detail = cos.manufacturer.api("GET", f"/api/channels/{cid}")
    assert detail["dispute_deadline"] is not None
    # When the carrier comes back, the arbiter's outbox delivers what it missed.
    cos.carrier.start()
    wait_for(lambda: settled(cos.carrier, cid), "the carrier to learn of the payout", timeout_s=60)
