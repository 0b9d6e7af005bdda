"""Attack 8 (issue 8): a flood of proposals from fresh keys.

Anyone can make an Ed25519 key and sign a channel proposal. The victim here is the
manufacturer (no allow-list: every proposal waits for its operator). One fresh key sends many
proposals, then 120 fresh keys send one each; then the carrier — a peer the manufacturer knows
— proposes a real channel. The old node held the first 100 proposals from anyone and refused
everything after, the known peer's included.

Honest outcome: one key cannot fill more than its quota, the strangers together cannot take
more than the room kept for strangers, and the known peer's proposal is still held, can be
accepted by the operator, and opens.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

import node.proposals
from protocol.crypto import Signer
from protocol.messages import ChannelProposal
from tests.adversarial.arena import Arena, arena, phase, wait_for
from tests.adversarial.toolkit import Loop, account_of, request, terms

FRESH_KEYS = 120
FROM_ONE_KEY = 20
MAX_HELD_FROM_STRANGERS = getattr(node.proposals, "MAX_HELD_PROPOSALS", 100)
PER_PROPOSER = getattr(node.proposals, "MAX_HELD_PER_PROPOSER", 3)
"""The per-proposer quota of this build (the node's own constant; 3 when it has none)."""


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory, loop: Loop) -> Iterator[Arena]:
    with arena(tmp_path_factory.mktemp("flood"), loop=loop) as a:
        yield a


def held(a: Arena) -> list[dict[str, str]]:
    proposals: list[dict[str, str]] = a.manufacturer.api("GET", "/api/channels")["proposals"]
    return proposals


def test_fresh_keys_cannot_crowd_out_a_known_peer(a: Arena) -> None:
    victim = bytes.fromhex(a.manufacturer.node_id)
    arbiter = bytes.fromhex(a.arbiter.node_id)
    accounts = {"opener_account": account_of(a.carrier.url),
                "peer_account": account_of(a.manufacturer.url),
                "escrow_account": account_of(a.arbiter.url)}

    def propose(signer: Signer) -> int:
        t = terms(opener=signer, peer=victim, arbiter=arbiter, opener_deposit=1_000,
                  peer_deposit=0, window_ms=6_000, **accounts)
        proposal = ChannelProposal(t, b"").signed_by(signer)  # type: ignore[arg-type]
        return request("POST", f"{a.manufacturer.url}/p2p/proposal", proposal).status

    # One key, many proposals: it gets its quota, no more.
    greedy = Signer.from_label("greedy stranger")
    statuses = [propose(greedy) for _ in range(FROM_ONE_KEY)]
    assert all(s < 500 for s in statuses)
    from_greedy = [p for p in held(a) if p["peer"] == greedy.node_id.hex()]
    assert 1 <= len(from_greedy) <= PER_PROPOSER, (
        f"one fresh key holds {len(from_greedy)} of the victim's proposal slots")

    # 120 fresh keys, one proposal each.
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(propose, [Signer.from_label(f"stranger {i}")
                                           for i in range(FRESH_KEYS)]))
    assert all(s < 500 for s in statuses)
    strangers = [p for p in held(a) if p["peer"] != a.carrier.node_id]
    assert len(strangers) <= MAX_HELD_FROM_STRANGERS

    # The known peer's real proposal is still held for the operator, who accepts it.
    body = {"peer": a.manufacturer.node_id, "arbiter": a.arbiter.node_id,
            "deposit": "10.00 EUR", "tariff": ["km=0.0123"], "dispute_window": "6s"}
    cid = a.carrier.api("POST", "/api/channels", body)["id"]
    assert cid in {p["id"] for p in held(a)}, "the known peer's proposal was not held"
    a.manufacturer.api("POST", f"/api/channels/{cid}/accept")
    wait_for(lambda: phase(a.manufacturer, cid) == "open" == phase(a.carrier, cid),
             "the known peer's channel to open", timeout_s=30)
