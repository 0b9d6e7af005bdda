"""Attacks 5 and 6 (issue 8), with an HTTP proxy on the path between the nodes and the arbiter.

Both companies know the arbiter by the proxy's URL (the arbiter's public URL is the proxy's):
identity is checked by signature, and a proxy in the middle is exactly what signatures are for.

Attack 5, deliveries dropped on transient answers: the proxy answers the first attempts of a
delivery with a 502 HTML page, an empty 503, a body that is not msgpack, and an unsigned
``Error`` that looks final — then forwards. The old outbox marked the row done on any of these
and the close (or the evidence) was lost. Honest outcome: it is retried, lands, and the channel
settles on what was signed.

Attack 6, a node in ``closed`` that hears of a dispute: a cooperative close is co-signed but
its submissions never reach the arbiter (the proxy blocks ``/p2p/close``); the payer then goes
rogue and asks the arbiter to close on no proof. Honest outcome: the payee, although closed,
hands in its evidence at once and its close lands; the channel settles on the cooperative
close's amounts.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from protocol.messages import DisputeEvidence
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
from tests.adversarial.toolkit import FAILURES, Attacker, HttpProxy, Loop

WINDOW_S = 8
KM = 12_300
"""1 km in channel units (scale 6)."""
HOUR = 1_750_000
"""1 container-hour in channel units."""


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory, loop: Loop) -> Iterator[Arena]:
    with arena(tmp_path_factory.mktemp("proxy"), loop=loop, arbiter_proxy=HttpProxy) as a:
        yield a


@pytest.fixture
def proxy(a: Arena) -> Iterator[HttpProxy]:
    p = a.proxies[0]
    assert isinstance(p, HttpProxy)
    p.reset()
    yield p
    p.reset()


def check_failures_then_forwarded(proxy: HttpProxy, path: str, sender: str,
                                  since: float) -> None:
    """`sender` met every transient failure on `path`, retried, and got through."""
    outcomes = [p.outcome for p in proxy.passed(path, sender=sender, since=since)]
    assert list(outcomes[:len(FAILURES)]) == list(FAILURES), f"the proxy answered {outcomes}"
    assert any(o.startswith("forwarded:2") for o in outcomes[len(FAILURES):]), (
        f"{sender[:16]}… never got through after the transient failures: {outcomes}")


def test_a_close_survives_transient_answers(a: Arena, proxy: HttpProxy) -> None:
    cid = a.open_channel(window=f"{WINDOW_S}s")
    a.pay(a.manufacturer, cid, km=1, repeat=500)
    funded = a.balances()
    since = time.monotonic()
    both = [a.manufacturer.node_id, a.carrier.node_id]
    proxy.fail_next("/p2p/close", both)  # each side's submission meets every failure first
    a.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
    expected = payouts_minor(deposit=5000, opener_sent=500 * KM, peer_sent=0)
    assert wait_decided(a, cid, timeout_s=30) == expected, "the arbiter paid out on another state"
    wait_for(lambda: all(any(p.outcome.startswith("forwarded:2") for p in proxy.passed(
        "/p2p/close", sender=s, since=since)) for s in both),
        "both sides' close submissions to get through", timeout_s=20)
    for sender in both:
        check_failures_then_forwarded(proxy, "/p2p/close", sender, since)
    wait_settled_at_bank(a, cid, timeout_s=20)
    final = a.balances()
    assert final[CARRIER] - funded[CARRIER] == expected[1] == 615
    assert final[MANUFACTURER] - funded[MANUFACTURER] == expected[0]
    wait_for(lambda: phase(a.carrier, cid) == "settled" == phase(a.manufacturer, cid),
             "both companies to see the payout", timeout_s=20)


def test_evidence_survives_transient_answers(a: Arena, proxy: HttpProxy) -> None:
    cid = a.open_channel(window=f"{WINDOW_S}s")
    a.pay(a.manufacturer, cid, km=1, repeat=400)
    funded = a.balances()
    since = time.monotonic()
    proxy.fail_next("/p2p/evidence", [a.carrier.node_id])
    a.manufacturer.api("POST", f"/api/channels/{cid}/close", {"force": True})
    expected = payouts_minor(deposit=5000, opener_sent=400 * KM, peer_sent=0)
    decided = wait_decided(a, cid, timeout_s=WINDOW_S + 10)
    assert decided == expected, (
        f"the arbiter decided {decided} (cents), not {expected}: the payee's evidence was lost")
    check_failures_then_forwarded(proxy, "/p2p/evidence", a.carrier.node_id, since)
    wait_settled_at_bank(a, cid, timeout_s=20)
    final = a.balances()
    assert final[CARRIER] - funded[CARRIER] == expected[1] == 492


def test_a_closed_payee_answers_a_dispute_with_its_close_and_evidence(
        a: Arena, proxy: HttpProxy) -> None:
    window_s = 10
    cid = a.open_channel(window=f"{window_s}s")
    a.pay(a.manufacturer, cid, km=1, repeat=500)
    a.pay(a.carrier, cid, hours=1, repeat=3)
    funded = a.balances()
    proxy.block("/p2p/close")
    a.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
    wait_for(lambda: phase(a.carrier, cid) == "closed" == phase(a.manufacturer, cid),
             "both sides to sign the cooperative close", timeout_s=20)
    wait_for(lambda: proxy.passed("/p2p/close"), "a close submission to be blocked",
             timeout_s=10)
    assert a.escrow(cid)["phase"] == "open"  # type: ignore[index]

    payer = Attacker.of(a.manufacturer)
    a.manufacturer.stop()  # the payer goes rogue
    try:
        state = payer.stored_state(cid)
        since = time.monotonic()
        claim = payer.unilateral(state.channel_id)  # straight to the arbiter, no proof
        answer = payer.post(a.arbiter.url, "/p2p/unilateral", claim)
        assert answer.status < 300, answer
        carrier = bytes.fromhex(a.carrier.node_id)

        def evidence_handed_in() -> bool:
            return any(isinstance(p.message, DisputeEvidence)
                       and p.message.submitter == carrier
                       and p.outcome.startswith("forwarded:2")
                       for p in proxy.passed("/p2p/evidence", since=since))

        wait_for(evidence_handed_in, "the closed payee to hand in its evidence",
                 timeout_s=window_s / 2)
        proxy.unblock("/p2p/close")
        coop = payouts_minor(deposit=5000, opener_sent=500 * KM, peer_sent=3 * HOUR)
        decided = wait_decided(a, cid, timeout_s=window_s + 10)
        assert decided == coop, (
            f"the arbiter decided {decided} (cents), not the cooperative close's {coop}")
        wait_settled_at_bank(a, cid, timeout_s=20)
        final = a.balances()
        assert final[CARRIER] - funded[CARRIER] == coop[1] == 90
        assert final[MANUFACTURER] - funded[MANUFACTURER] == coop[0]
        assert final[ESCROW] == funded[ESCROW] - 5000
        assert final[ATTACKER] == 0
    finally:
        restart(a.manufacturer)
