"""Bugs the crash suite found, pinned with real daemons so they stay fixed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from node.cluster import ClusterError
from tests.e2e.cluster import Companies, companies, wait_for
from tests.faults.crash import SHORT_WINDOWS
from tests.faults.crash_proxy import CuttingProxy


@pytest.fixture
def cos(tmp_path: Path) -> Iterator[Companies]:
    with companies(tmp_path, settings=SHORT_WINDOWS) as c:
        yield c


def pending_for(handle: Any, cid: str) -> list[dict[str, Any]]:
    return [r for r in handle.api("GET", "/api/outbox")["outbox"]
            if r["channel"] == cid and not r["refused"]]


def test_a_settled_channel_leaves_no_message_retried_for_ever(cos: Companies) -> None:
    """Found by the crash suite (a kill -9 during a cooperative close): the close a party asked
    for was still in its outbox when the channel settled another way; the peer, settled too,
    refuses it as INVALID_STATE ("not yet"), so it was retried every 2 s for ever. The arbiter
    had the same with the dispute notice and funding confirmations a party missed."""
    cid = cos.open_channel(dispute_window="3s")
    cos.manufacturer.api("POST", f"/api/channels/{cid}/pay", {"units": {"km": "1"},
                                                              "repeat": 5})
    cos.carrier.stop(kill=True)
    # the cooperative close cannot reach the carrier: its "close" row stays pending
    cos.manufacturer.api("POST", f"/api/channels/{cid}/close", {})
    wait_for(lambda: any(r["purpose"] == "close" for r in pending_for(cos.manufacturer, cid)),
             "the close to the carrier to wait in the outbox")
    # the manufacturer ends it unilaterally; the arbiter pays out after the window
    cos.manufacturer.api("POST", f"/api/channels/{cid}/close", {"force": True})
    wait_for(lambda: cos.manufacturer.api("GET", f"/api/channels/{cid}")["phase"] == "settled",
             "the arbiter to pay out", timeout_s=60)
    cos.carrier.start()
    wait_for(lambda: cos.carrier.api("GET", f"/api/channels/{cid}")["phase"] == "settled",
             "the carrier to learn of the payout", timeout_s=60)
    time.sleep(3)  # a few of the 2 s retries the close would get
    # the arbiter too: the dispute notice it could not push to the carrier is moot once paid
    # out (the carrier pulled it with the payout), and a settled carrier refuses it for ever
    for handle in (cos.manufacturer, cos.carrier, cos.arbiter):
        left = pending_for(handle, cid)
        assert left == [], (handle.name, left)



def test_an_acceptance_lost_in_the_answer_is_asked_for_again(cos: Companies) -> None:
    """Found by the crash suite (kill -9 of the payer just after it proposed): the acceptance
    travels in the answer to the proposal, so an opener that lost the answer (it died before
    committing it; here the answer is cut on the way) kept the channel `proposed` for ever,
    while the peer, having accepted, registered it and paid its deposit into escrow. The
    watch now asks again for a proposed channel the arbiter knows (ADR 0240)."""
    proxy = CuttingProxy(cos.carrier.port, b"POST /p2p/proposal ").start()
    try:
        cos.manufacturer.api("POST", "/api/peers", {"url": proxy.url})
        with pytest.raises(ClusterError, match="502"):
            cos.manufacturer.api("POST", "/api/channels", {
                "peer": cos.carrier.node_id, "arbiter": cos.arbiter.node_id,
                "deposit": "50.00 EUR", "peer_deposit": "10.00 EUR",
                "tariff": ["km=0.01"]})
        assert proxy.cuts == 1
        (cid,) = [c["id"] for c in cos.manufacturer.api("GET", "/api/channels")["channels"]]
        wait_for(lambda: cos.carrier.api("GET", f"/api/channels/{cid}")["phase"]
                 in ("accepted", "open"), "the carrier to have accepted")
        wait_for(lambda: all(h.api("GET", f"/api/channels/{cid}")["phase"] == "open"
                             for h in (cos.manufacturer, cos.carrier)),
                 "the channel to open on both sides", timeout_s=60)
        paid = cos.manufacturer.api("POST", f"/api/channels/{cid}/pay",
                                    {"units": {"km": "1"}, "repeat": 3})
        assert paid["acked_nonce_sent"] == 3
    finally:
        proxy.stop()


def test_two_copies_of_one_proposal_at_once_get_one_acceptance(cos: Companies) -> None:
    """Found by the crash suite while the opener asked again too eagerly: two copies of one
    proposal arriving together both passed "do we have it?", and the second insert failed:
    the peer answered 500. Now both get the same acceptance and the channel opens once."""
    proxy = CuttingProxy(cos.carrier.port, b"POST /p2p/proposal ", duplicate=True).start()
    try:
        cos.manufacturer.api("POST", "/api/peers", {"url": proxy.url})
        opened = cos.manufacturer.api("POST", "/api/channels", {
            "peer": cos.carrier.node_id, "arbiter": cos.arbiter.node_id,
            "deposit": "50.00 EUR", "peer_deposit": "10.00 EUR", "tariff": ["km=0.01"]})
        wait_for(lambda: proxy.answers, "the second copy's answer")
        assert proxy.answers == [b"HTTP/1.1 200 OK"], proxy.answers
        cid = opened["id"]
        wait_for(lambda: all(h.api("GET", f"/api/channels/{cid}")["phase"] == "open"
                             for h in (cos.manufacturer, cos.carrier)),
                 "the channel to open on both sides", timeout_s=60)
    finally:
        proxy.stop()
    deposits = [t for t in cos.carrier.api("GET", f"/api/channels/{cid}")["settlement"]
                if t["purpose"] == "deposit" and t["party"] == "peer"]
    assert len(deposits) == 1, deposits
