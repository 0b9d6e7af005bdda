"""Attack 2 (issue 8): the second-close bypass of the close-race fix.

The payer (the manufacturer) pays nonce 1 with its node, then goes rogue: it stops its node,
serves its own port itself (recording everything the payee sends it) and, with its own key and
stored state, posts a close request that does not match (the payee signs its view, C1 at
nonce 1), pays nonces 2–101 over the plain-POST fallback (the payee's receipts stay at 1), posts
a second close request (the old payee signed its view at 101 and let its receipts follow),
collects a receipt for 101 if it can, co-signs C1 and hands it to the arbiter.

Honest outcome: the payee never signs two different close bodies, and the arbiter never pays it
less than the highest cumulative amount it receipted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from protocol.messages import CooperativeClose, Receipt
from tests.adversarial.arena import (
    ATTACKER,
    CARRIER,
    ESCROW,
    MANUFACTURER,
    Arena,
    arena,
    payouts_minor,
    wait_decided,
    wait_settled_at_bank,
)
from tests.adversarial.toolkit import (
    Answer,
    Attacker,
    Loop,
    PeerServer,
    closes_signed_by,
    receipts_in,
    request,
)

WINDOW_S = 6
KM = 1000
"""1 km at the km line's quantity scale (10⁻³)."""


@pytest.fixture(scope="module")
def a(tmp_path_factory: pytest.TempPathFactory, loop: Loop) -> Iterator[Arena]:
    with arena(tmp_path_factory.mktemp("second-close"), loop=loop) as a:
        yield a


def test_a_payee_never_signs_a_second_close_nor_is_paid_below_its_receipts(
        a: Arena, loop: Loop) -> None:
    cid = a.open_channel(window=f"{WINDOW_S}s")
    a.pay(a.manufacturer, cid, km=1)
    funded = a.balances()
    payer = Attacker.of(a.manufacturer)
    a.manufacturer.stop()
    state = payer.stored_state(cid)
    assert (state.sent.nonce, state.sent.acked_nonce) == (1, 1)
    own_port = PeerServer(loop, a.manufacturer.port)  # what the payee sends the payer lands here
    payee = bytes.fromhex(a.carrier.node_id)
    answers: list[Answer] = []
    try:
        # 1. A close request the payee cannot match: it answers with its own view, C1 at nonce 1.
        answers.append(payer.post(a.carrier.url, "/p2p/close",
                                  payer.close_request(state, opener=(0, 0), peer=(0, 0))))
        # 2. Nonces 2..101 over the plain-POST fallback, each answered with a receipt.
        for _ in range(100):
            state, proof = payer.pay(state, (KM, 0))
            answers.append(payer.post(a.carrier.url, "/p2p/proof", proof))
        # 3. A second close request: the old payee re-signed its view at 101 and let its
        #    receipts follow it.
        answers.append(payer.post(a.carrier.url, "/p2p/close",
                                  payer.close_request(state, opener=(1, 0), peer=(0, 0))))
        # 4. Collect a receipt for 101 if the payee gives one.
        answers.append(payer.post(a.carrier.url, "/p2p/proof", proof))
        answers.append(request("GET", f"{a.carrier.url}/p2p/channels/{cid}/receipt"))
        time.sleep(1.0)  # let the payee's own deliveries to the payer's port arrive

        # Everything the payee signed and the payer holds: inline answers and deliveries.
        messages = [m for m in (x.message for x in answers) if m is not None]
        messages += own_port.messages()
        signed = closes_signed_by(messages, state.channel_id, payee, 1)
        receipts = receipts_in(answers, state.channel_id, payee)
        receipts += [m for m in own_port.messages() if isinstance(m, Receipt)
                     and m.receiver == payee]
        receipted = max((r.amount for r in receipts), default=0)

        # 5. Co-sign the first close the payee signed and hand it to the arbiter.
        if signed:
            first = signed[0]
            full = payer.sign_close(
                next(m for m in messages if isinstance(m, CooperativeClose)
                     and m.body() == first.body() and m.peer_signature), 0)
            payer.post(a.arbiter.url, "/p2p/close", full)
        try:
            decided = wait_decided(a, cid, timeout_s=3)
        except AssertionError:
            # The arbiter did not pay on it: the payer's remaining lever is a close on no proof.
            payer.post(a.arbiter.url, "/p2p/unilateral", payer.unilateral(state.channel_id))
            decided = wait_decided(a, cid, timeout_s=WINDOW_S + 10)

        owed = payouts_minor(deposit=5000, opener_sent=receipted, peer_sent=0)
        problems = []
        if decided[1] < owed[1]:
            problems.append(f"the payee receipted {receipted} (scale 6) but the arbiter pays it "
                            f"{decided[1]} cents, less than the {owed[1]} its receipts say")
        if len(signed) > 1:
            bodies = [(c.opener_nonce, c.opener_amount) for c in signed]
            problems.append(f"the payee signed {len(signed)} different close bodies (opener "
                            f"nonce, amount): {bodies}")
        assert not problems, "; ".join(problems)
        # The bank agrees with what the arbiter decided, to the cent.
        wait_settled_at_bank(a, cid, timeout_s=WINDOW_S + 20)
        final = a.balances()
        assert final[CARRIER] - funded[CARRIER] == decided[1]
        assert final[MANUFACTURER] - funded[MANUFACTURER] == decided[0]
        assert final[ESCROW] == funded[ESCROW] - 5000
        assert final[ATTACKER] == 0
    finally:
        own_port.close()  # the only test here: the manufacturer's node stays stopped
