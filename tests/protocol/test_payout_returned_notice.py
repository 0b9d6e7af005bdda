"""The arbiter's machine tells both parties of a returned payout, signed, and catches up a party
that registers late — effects of the machine, never signed in the shell (ADR 0272)."""

from __future__ import annotations

from collections.abc import Callable

from protocol import arbiter as arb
from protocol.messages import EMPTY_SIGNATURE, UnilateralClose
from protocol.simulation import Simulation


def test_a_returned_payout_is_a_signed_notice_for_both_parties(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim()
    sim.open()
    sim.pay(0, (300_000,))
    decided = sim.close(0)
    payouts = [e for e in decided.effects if isinstance(e, arb.SubmitPayout)]
    peer = next(p for p in payouts if p.party == 1)
    returned = arb.step(decided.state, arb.ObservePayoutReturned(
        peer.reference, "AC04", 77, sim.arbiter), now_ms=sim.tick())
    (told,) = [e for e in returned.effects if isinstance(e, arb.SendPayoutReturned)]
    notice = told.notice
    assert (notice.party, notice.amount, notice.reference, notice.reason, notice.returned_ms) == (
        sim.peer.node_id, peer.amount, peer.reference, "AC04", 77)
    notice.verify_signature(sim.arbiter.node_id)
    # without the key (a replayed input, a test) the machine decides the same, tells nobody
    quiet = arb.step(decided.state, arb.ObservePayoutReturned(peer.reference, "AC04", 77),
                     now_ms=sim.tick())
    assert [(t.status, t.reason) for t in quiet.state.transfers] == [
        (t.status, t.reason) for t in returned.state.transfers]
    assert not quiet.effects
    # the same return seen again tells nothing more
    assert not arb.step(returned.state, arb.ObservePayoutReturned(
        peer.reference, "AC04", 78, sim.arbiter), now_ms=sim.tick()).effects


def test_catch_up_confirms_the_deposits_and_repeats_an_open_dispute(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim()
    sim.open()
    assert sim.escrow is not None
    caught = arb.step(sim.escrow, arb.CatchUp(sim.arbiter), now_ms=sim.tick())
    assert caught.state is sim.escrow  # nothing changes: only what was missed goes out
    confirmations = [e.confirmation for e in caught.effects
                     if isinstance(e, arb.SendFundingConfirmation)]
    assert [c.amount for c in confirmations] == list(sim.escrow.deposited)
    for c in confirmations:
        c.verify_signature(sim.arbiter.node_id)
    claim = UnilateralClose(sim.terms.channel_id, sim.opener.node_id, None,
                            EMPTY_SIGNATURE).signed_by(sim.opener)
    disputed = arb.step(sim.escrow, arb.ReceiveUnilateralClose(claim, sim.arbiter),
                        now_ms=sim.tick()).state
    again = arb.step(disputed, arb.CatchUp(sim.arbiter), now_ms=sim.tick())
    (forward,) = [e for e in again.effects if isinstance(e, arb.ForwardDispute)]
    assert forward.to == 1
    assert forward.notice is not None
    forward.notice.verify_signature(sim.arbiter.node_id)
    assert forward.deadline_ms == disputed.deadline_ms
