"""Attack 4 (issue 8): terms without bounds lock the victim's funds.

The manufacturer is on the carrier's allow-list. With its own key it proposes channels that put
nothing of its own in, ask the carrier for a large deposit, and name a dispute window of
2⁶⁴−1 ms (which crashed the arbiter's unilateral close with an OverflowError), 366 days, or 1 s
(which nobody can answer). It also registers such channels at the arbiter directly, with a
second key of its own as the other party.

Honest outcome: every such proposal is refused or held for the carrier's operator — never
auto-accepted, never funded, no money leaves the carrier's account; the arbiter refuses the
registrations with a 4xx (never a 5xx) and keeps serving.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from protocol.crypto import Signer
from protocol.messages import ChannelAcceptance, ChannelRegistration
from protocol.types import MAX_DISPUTE_WINDOW_MS
from tests.adversarial.arena import CARRIER, ESCROW, Arena, arena
from tests.adversarial.toolkit import (
    Answer,
    Attacker,
    Loop,
    account_of,
    peer_port_serves,
    terms,
)

U64_MAX = 2**64 - 1
LARGE_PEER_DEPOSIT = 40_000
"""400.00 EUR of the carrier's 500.00 EUR."""
WINDOWS = {"2^64-1 ms": U64_MAX, "366 days": MAX_DISPUTE_WINDOW_MS, "1 s": 1_000,
           "0 ms": 0}
"""Outside any sane range; the test policy allows 4 s to 14 days."""


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory, loop: Loop) -> Iterator[Arena]:
    with arena(tmp_path_factory.mktemp("terms"), loop=loop) as a:
        yield a


def test_unbounded_terms_are_never_accepted_nor_funded(a: Arena) -> None:
    opener = Attacker.of(a.manufacturer)
    carrier, arbiter = bytes.fromhex(a.carrier.node_id), bytes.fromhex(a.arbiter.node_id)
    accounts = {"opener_account": account_of(a.manufacturer.url),
                "peer_account": account_of(a.carrier.url),
                "escrow_account": account_of(a.arbiter.url)}
    before = a.balances()

    proposals: dict[str, tuple[str, Answer]] = {}
    for what, window in {**WINDOWS, "a sane window, 0 of its own": 6_000}.items():
        t = terms(opener=opener.signer, peer=carrier, arbiter=arbiter, opener_deposit=0,
                  peer_deposit=LARGE_PEER_DEPOSIT, window_ms=window, **accounts)
        answer = opener.post(a.carrier.url, "/p2p/proposal", opener.proposal(t))
        proposals[what] = (t.channel_id.hex(), answer)

    # The arbiter, handed such channels directly (the other party a second key of the
    # attacker's), refuses them: no 5xx, nothing registered.
    puppet = Signer.from_label("the attacker's second company")
    registrations: dict[str, tuple[str, Answer]] = {}
    for what, window in WINDOWS.items():
        t = terms(opener=opener.signer, peer=puppet.node_id, arbiter=arbiter,
                  opener_deposit=1_000, peer_deposit=0, window_ms=window, **accounts)
        reg = ChannelRegistration(opener.proposal(t), ChannelAcceptance.for_terms(t, puppet))
        answer = opener.post(a.arbiter.url, "/p2p/register", reg)
        closing = opener.post(a.arbiter.url, "/p2p/unilateral",
                              opener.unilateral(t.channel_id, proof=None))
        registrations[what] = (t.channel_id.hex(), answer)
        assert closing.status < 500, f"the arbiter failed on a unilateral close ({what})"

    time.sleep(2.0)  # long enough for an accepted channel's deposit to be paid (polls: 200 ms)
    problems = []
    accepted = sorted(what for what, (_, answer) in proposals.items()
                      if answer.status >= 500 or isinstance(answer.message, ChannelAcceptance))
    if accepted:
        problems.append(f"the carrier accepted unbounded terms: {accepted}")
    carrier_channels = {c["id"] for c in a.carrier.api("GET", "/api/channels")["channels"]}
    if carrier_channels & {cid for cid, _ in proposals.values()}:
        problems.append("the carrier keeps such channels as its own")
    taken = {what: answer.status for what, (_, answer) in registrations.items()
             if not 400 <= answer.status < 500}
    if taken:
        problems.append(f"the arbiter did not refuse with a 4xx: {taken}")
    held = {e["id"] for e in a.arbiter.api("GET", "/api/escrows")["escrows"]}
    if held & {cid for cid, _ in (*proposals.values(), *registrations.values())}:
        problems.append("the arbiter holds such channels in escrow")
    after = a.balances()
    if after[CARRIER] != before[CARRIER] or after[ESCROW] != before[ESCROW]:
        problems.append(f"{(before[CARRIER] - after[CARRIER]) / 100:.2f} EUR left the carrier's "
                        f"account for escrow (+{(after[ESCROW] - before[ESCROW]) / 100:.2f} EUR)")
    assert not problems, "; ".join(problems)
    assert peer_port_serves(a.arbiter.url)
    assert peer_port_serves(a.carrier.url)
