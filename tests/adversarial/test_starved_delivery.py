"""Attack 1 (issue 8): starve the payee's delivery, then force-close with no proof.

The payer (the manufacturer) goes rogue: it stops its node and runs a black hole on its own
port (its peer URL, as the payee knows it), re-registers the channel at the arbiter 300 times
with a signed callback into that black hole, posts 300 bogus close requests to the payee (each
of which the payee answers towards the black hole), then asks the arbiter to close on no proof
at all. On the old serial outbox every one of those rows cost a 10 s timeout in front of the
dispute notice and the payee's evidence, and the window ended with the payer paid everything.

Honest outcome: the payee's evidence is in and it is paid by its proofs when the window ends;
the hostile rows are bounded (one pending row per channel, recipient and purpose). And the pull
path alone suffices: with every push to the payee dark, it learns of the dispute by asking.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.adversarial.arena import (
    ATTACKER,
    CARRIER,
    ESCROW,
    MANUFACTURER,
    Arena,
    arena,
    payouts_minor,
    phase,
    restart,
    wait_decided,
    wait_for,
    wait_settled_at_bank,
)
from tests.adversarial.toolkit import Attacker, BlackHole, Loop, TcpProxy, now_ms

WINDOW_S = 8
REREGISTRATIONS = 300
BOGUS_CLOSES = 300
MAX_ROWS_PER_TARGET = 20
"""Pending deliveries to one recipient on one channel: a handful of purposes, never hundreds."""


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory, loop: Loop) -> Iterator[Arena]:
    with arena(tmp_path_factory.mktemp("starve"), loop=loop, carrier_proxy=TcpProxy) as a:
        yield a


def outbox_rows(handle: Any) -> list[dict[str, Any]]:
    listing = handle.api("GET", "/api/outbox")
    rows = listing.get("outbox", listing) if isinstance(listing, dict) else listing
    assert isinstance(rows, list), listing
    return rows


def paid_km(a: Arena, cid: str, km: int) -> int:
    """Pay `km` × 1 km, one proof each; returns the cumulative amount sent (channel scale)."""
    a.pay(a.manufacturer, cid, km=1, repeat=km)
    return km * 12_300


def test_flooded_outboxes_cannot_starve_the_payees_evidence(a: Arena, loop: Loop) -> None:
    cid = a.open_channel(window=f"{WINDOW_S}s")
    sent = paid_km(a, cid, 500)
    funded = a.balances()
    payer = Attacker.of(a.manufacturer)
    a.manufacturer.stop()
    hole: BlackHole | None = None
    try:  # whatever fails here, the payer's node is back for the next test
        state = payer.stored_state(cid)
        assert (state.sent.nonce, state.sent.acked_nonce) == (500, 500)
        hole = BlackHole(loop, port=a.manufacturer.port)  # the payer's own peer URL goes dark
        # 300 re-registrations, each with a fresh signed callback into the black hole.
        base = now_ms()

        def register(i: int) -> int:
            reg, headers = payer.registration(state, f"{hole.url}/cb/{i}", base + i)
            return payer.post(a.arbiter.url, "/p2p/register", reg, headers=headers).status

        def bogus_close(i: int) -> int:
            close = payer.close_request(state, opener=(0, i), peer=(0, 0))
            return payer.post(a.carrier.url, "/p2p/close", close).status

        with ThreadPoolExecutor(8) as pool:
            registered = list(pool.map(register, range(REREGISTRATIONS)))
            closes = list(pool.map(bogus_close, range(BOGUS_CLOSES)))
        assert all(s < 500 for s in registered + closes), "the flood made a daemon fail"

        claim = payer.unilateral(state.channel_id, proof=None)  # "I hold nothing from you"
        started = time.monotonic()
        answer = payer.post(a.arbiter.url, "/p2p/unilateral", claim)
        assert answer.status < 300, answer
        opener_payout, peer_payout = payouts_minor(deposit=5000, opener_sent=sent, peer_sent=0)
        decided = wait_decided(a, cid, timeout_s=WINDOW_S + 10)
        assert decided == (opener_payout, peer_payout), (
            f"the arbiter decided {decided} (cents) instead of {(opener_payout, peer_payout)}: "
            "the payee's evidence did not reach it within the window")
        wait_settled_at_bank(a, cid, timeout_s=WINDOW_S + 20)
        elapsed = time.monotonic() - started

        final = a.balances()
        assert final[CARRIER] - funded[CARRIER] == peer_payout == 615, (
            "the payee was not paid by its proofs: its evidence never reached the arbiter")
        assert final[MANUFACTURER] - funded[MANUFACTURER] == opener_payout
        assert final[ESCROW] == funded[ESCROW] - 5000
        assert final[ATTACKER] == 0
        assert elapsed < WINDOW_S + 15, f"settled {elapsed:.1f} s after the claim"

        # The hostile traffic is bounded: a handful of pending rows towards the payer, not 600.
        for holder in (a.arbiter, a.carrier):
            towards_payer = [r for r in outbox_rows(holder)
                             if r.get("recipient") == payer.node_id and not r.get("refused")]
            assert len(towards_payer) <= MAX_ROWS_PER_TARGET, (
                f"{holder.name} keeps {len(towards_payer)} deliveries for the attacker")
        wait_for(lambda: phase(a.carrier, cid) == "settled", "the payee to see the payout",
                 timeout_s=20)
    finally:
        if hole is not None:
            hole.close()
        restart(a.manufacturer)


def test_the_payee_learns_of_the_dispute_by_asking(a: Arena, loop: Loop) -> None:
    """Every push to the payee goes dark (its callback URL holds connections unanswered): the
    payee's watch of the channel at the arbiter alone must bring its evidence in."""
    cid = a.open_channel(window=f"{WINDOW_S}s")
    sent = paid_km(a, cid, 300)
    funded = a.balances()
    carrier_callback = a.proxies[0]
    assert isinstance(carrier_callback, TcpProxy)
    carrier_callback.go_dark()

    payer = Attacker.of(a.manufacturer)
    state = payer.stored_state(cid)
    started = time.monotonic()
    answer = payer.post(a.arbiter.url, "/p2p/unilateral", payer.unilateral(state.channel_id))
    assert answer.status < 300, answer
    opener_payout, peer_payout = payouts_minor(deposit=5000, opener_sent=sent, peer_sent=0)
    wait_for(lambda: a.carrier.api("GET", f"/api/channels/{cid}")["dispute_deadline"]
             is not None, "the payee to learn of the dispute from the arbiter's status",
             timeout_s=WINDOW_S / 2)
    decided = wait_decided(a, cid, timeout_s=WINDOW_S + 10)
    assert decided == (opener_payout, peer_payout), (
        f"the arbiter decided {decided} (cents): the payee's evidence did not reach it")
    wait_settled_at_bank(a, cid, timeout_s=WINDOW_S + 20)
    assert time.monotonic() - started < WINDOW_S + 15

    final = a.balances()
    assert final[CARRIER] - funded[CARRIER] == peer_payout == 369
    assert final[MANUFACTURER] - funded[MANUFACTURER] == opener_payout
    wait_for(lambda: phase(a.carrier, cid) == "settled",
             "the payee to learn of the payout by asking", timeout_s=20)
