"""The arbiter forgets old booked payout attempts beyond MAX_TRANSFERS (protocol.transfers.
bounded); what it forgets must never make a payout that was paid look unpaid again, nor hide a
payout whose return may still come."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocol import arbiter as arb
from protocol import transfers as tr
from protocol.messages import EMPTY_SIGNATURE, BankAccount, PayoutAccount
from protocol.simulation import Simulation

NEW = BankAccount("IBAN", "DE89370400440532013000", "Peer GmbH")
NEWER = BankAccount("IBAN", "FR1420041010050500013M02606", "Peer SARL")


def _name(sim: Simulation, account: BankAccount, issued_ms: int) -> arb.Transition:
    assert sim.escrow is not None
    named = PayoutAccount(sim.terms.channel_id, sim.peer.node_id, account, issued_ms,
                          EMPTY_SIGNATURE).signed_by(sim.peer)
    t = arb.step(sim.escrow, arb.ReceivePayoutAccount(named), now_ms=sim.tick())
    sim.escrow = t.state
    return t


def test_a_repaid_payout_whose_booked_attempt_was_forgotten_is_not_paid_a_third_time(
    make_sim: Callable[..., Simulation], monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tr, "MAX_TRANSFERS", 3)
    monkeypatch.setattr(tr, "RETURN_HORIZON_MS", 0)  # booked ones may be forgotten at once
    sim = make_sim(peer_deposit=0)
    sim.open()
    assert sim.escrow is not None
    sim.pay(0, (300_000,))
    (first,) = [e for e in sim.checkpoint(0).effects if isinstance(e, arb.SubmitPayout)]
    sim.escrow = arb.step(sim.escrow, arb.ObservePayoutReturned(first.reference, "AC04", 5),
                          now_ms=sim.tick()).state
    (again,) = [e for e in _name(sim, NEW, 10).effects if isinstance(e, arb.SubmitPayout)]
    assert (again.checkpoint, again.attempt) == (first.checkpoint, 1)
    sim.escrow = arb.step(sim.escrow, arb.ObserveTransferBooked(sim.arbiter, again.reference, 6),
                          now_ms=sim.tick()).state  # checkpoint 1 is paid, once
    for _ in range(3):  # later checkpoints, each booked: the oldest booked ones are forgotten
        sim.pay(0, (100_000,))
        sim.book(sim.checkpoint(0))
    assert len(sim.escrow.transfers) <= 4
    # the peer names yet another account: nothing of checkpoint 1 is owed any more
    later = _name(sim, NEWER, 20)
    assert [e for e in later.effects if isinstance(e, arb.SubmitPayout)] == []


def test_a_booked_payout_is_remembered_through_its_return_horizon_and_its_return_paid_again(
    make_sim: Callable[..., Simulation], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past MAX_TRANSFERS a booked payout is still remembered until RETURN_HORIZON_MS after its
    booking: the bank may return it for weeks (the node asks for returns for `[bank]
    return_window_s`, at most the horizon). Forgotten earlier, its return found no payout: the
    money went back to escrow, never paid again, and no one was told."""
    monkeypatch.setattr(tr, "MAX_TRANSFERS", 3)
    sim = make_sim(peer_deposit=0)
    sim.open()
    assert sim.escrow is not None
    sim.pay(0, (300_000,))
    (oldest,) = [e for e in sim.checkpoint(0).effects if isinstance(e, arb.SubmitPayout)]
    sim.escrow = arb.step(sim.escrow, arb.ObserveTransferBooked(sim.arbiter, oldest.reference,
                                                                sim.now_ms),
                          now_ms=sim.tick()).state
    for _ in range(4):  # more booked payouts than MAX_TRANSFERS, all inside the horizon
        sim.pay(0, (100_000,))
        sim.book(sim.checkpoint(0))
    assert len(sim.escrow.transfers) == 5  # none forgotten: each may still come back
    returned = arb.step(sim.escrow, arb.ObservePayoutReturned(oldest.reference, "AC04", 7,
                                                              sim.arbiter),
                        now_ms=sim.tick())
    assert any(isinstance(e, arb.SendPayoutReturned) for e in returned.effects)
    sim.escrow = returned.state
    (again,) = [e for e in _name(sim, NEW, sim.now_ms).effects
                if isinstance(e, arb.SubmitPayout)]
    assert (again.checkpoint, again.attempt, again.amount) == (
        oldest.checkpoint, 1, oldest.amount)

    # past the horizon, booked first attempts are forgotten again (the state stays bounded)
    sim.tick(tr.RETURN_HORIZON_MS)
    sim.pay(0, (100_000,))
    sim.book(sim.checkpoint(0))
    assert len(sim.escrow.transfers) <= 4
