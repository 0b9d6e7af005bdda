"""The arbiter's machine tells both parties each payout attempt's outcome as a signed
TransferNotice (ADR 0320), and keeps the latest ones for its EscrowStatus — an effect of the
machine, never signed in the shell."""

from __future__ import annotations

from collections.abc import Callable

from protocol import arbiter as arb
from protocol.messages import (
    EMPTY_SIGNATURE,
    MAX_STATUS_TRANSFERS,
    BankAccount,
    EscrowStatus,
    PayoutAccount,
    TransferNotice,
)
from protocol.simulation import Simulation

CORRECTED = BankAccount("IBAN", "FR7630006000011234567890189", "Peer SA")


def notices(t: arb.Transition) -> list[TransferNotice]:
    return [e.notice for e in t.effects if isinstance(e, arb.SendTransferNotice)]


def checkpoint_payout(sim: Simulation) -> tuple[arb.Transition, arb.SubmitPayout]:
    sim.open()
    sim.pay(0, (300_000,))
    decided = sim.checkpoint(0)
    (payout,) = [e for e in decided.effects if isinstance(e, arb.SubmitPayout)]
    return decided, payout


def test_a_booked_checkpoint_payout_is_a_signed_notice_kept_for_the_status(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(peer_deposit=0)
    decided, payout = checkpoint_payout(sim)
    booked = arb.step(decided.state, arb.ObserveTransferBooked(sim.arbiter, payout.reference, 99),
                      now_ms=sim.tick())
    (notice,) = notices(booked)
    notice.verify_signature(sim.arbiter.node_id)
    assert (notice.checkpoint, notice.party, notice.amount, notice.status, notice.reason,
            notice.attempt, notice.reference, notice.time_ms) == (
        1, sim.peer.node_id, payout.amount, "booked", "", 0, payout.reference, 99)
    assert booked.state.outcomes == (notice,)
    status = arb.status(booked.state, sim.arbiter, bytes(16), now_ms=sim.tick())
    assert EscrowStatus.decode(status.encode()).transfers == (notice,)
    # the same booking seen again tells nothing more
    again = arb.step(booked.state, arb.ObserveTransferBooked(sim.arbiter, payout.reference, 100),
                     now_ms=sim.tick())
    assert not notices(again)
    assert again.state.outcomes == (notice,)


def test_a_rejected_checkpoint_payout_then_repaid_tells_rejected_then_booked_attempt_1(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(peer_deposit=0)
    decided, payout = checkpoint_payout(sim)
    rejected = arb.step(decided.state, arb.ObservePayoutReturned(
        payout.reference, "AC04", 50, sim.arbiter, rejected=True), now_ms=sim.tick())
    (first,) = notices(rejected)
    assert (first.status, first.reason, first.attempt) == ("rejected", "AC04", 0)
    named = PayoutAccount(sim.terms.channel_id, sim.peer.node_id, CORRECTED, sim.tick(),
                          EMPTY_SIGNATURE).signed_by(sim.peer)
    repaid = arb.step(rejected.state, arb.ReceivePayoutAccount(named), now_ms=sim.tick())
    (again,) = [e for e in repaid.effects if isinstance(e, arb.SubmitPayout)]
    assert again.attempt == 1
    assert again.reference != payout.reference
    booked = arb.step(repaid.state, arb.ObserveTransferBooked(sim.arbiter, again.reference, 60),
                      now_ms=sim.tick())
    (second,) = notices(booked)
    assert (second.status, second.attempt, second.reference) == ("booked", 1, again.reference)
    assert booked.state.outcomes == (first, second)


def test_a_returned_final_payout_notice_says_returned_and_without_a_key_nothing_is_told(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim()
    sim.open()
    sim.pay(0, (300_000,))
    decided = sim.close(0)
    peer = next(e for e in decided.effects if isinstance(e, arb.SubmitPayout) and e.party == 1)
    returned = arb.step(decided.state, arb.ObservePayoutReturned(
        peer.reference, "R03", 77, sim.arbiter), now_ms=sim.tick())
    (notice,) = notices(returned)
    assert (notice.checkpoint, notice.status, notice.reason) == (0, "returned", "R03")
    quiet = arb.step(decided.state, arb.ObservePayoutReturned(peer.reference, "R03", 77),
                     now_ms=sim.tick())
    assert not notices(quiet)
    assert quiet.state.outcomes == ()


def test_the_status_carries_only_the_latest_checkpoint_outcomes(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim(peer_deposit=0)
    sim.open()
    for _ in range(MAX_STATUS_TRANSFERS + 3):
        sim.pay(0, (30_000,))
        sim.book(sim.checkpoint(0))
    assert sim.escrow is not None
    kept = sim.escrow.outcomes
    assert len(kept) == MAX_STATUS_TRANSFERS
    assert [n.checkpoint for n in kept] == list(range(4, MAX_STATUS_TRANSFERS + 4))
