"""Checkpoints, schedules, top-ups, refunds and returned payouts (specs/0003 §9, 0004 §7-10),
through the real machines wired by :class:`protocol.simulation.Simulation`."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from protocol import arbiter as arb
from protocol import channel as ch
from protocol import refunds as rf
from protocol.checkpoint import withdrawable
from protocol.errors import ErrorCode, LocalProtocolError, ProtocolError, RemoteProtocolError
from protocol.messages import (
    EMPTY_SIGNATURE,
    BankAccount,
    Checkpoint,
    CooperativeClose,
    PayoutAccount,
)
from protocol.payout import cumulative_shares
from protocol.references import (
    Purpose,
    bank_reference,
    idempotency_key,
    payout_seq,
    refund_idempotency_key,
)
from protocol.schedule import SettleSchedule, checkpoint_due, next_checkpoint_ms
from protocol.simulation import Simulation
from protocol.transfers import TransferStatus
from protocol.types import Amount, MinorUnits

from .conftest import KM

DAY_MS = 86_400_000
CORRECTED = BankAccount("IBAN", "FR7630006000011234567890189", "Peer SA")


def payouts_of(transition: arb.Transition) -> list[arb.SubmitPayout]:
    return [e for e in transition.effects if isinstance(e, arb.SubmitPayout)]


def paid_to(sim: Simulation, party: int) -> int:
    """What the bank moved from escrow to `party`'s account in the terms."""
    escrow, account = sim.terms.escrow_account.identification, sim.terms.accounts()[party]
    return sum(amount for debtor, creditor, amount, _ in sim.ledger.transfers
               if debtor == escrow and creditor == account.identification)


@pytest.fixture
def payer_only(make_sim: Callable[..., Simulation]) -> Simulation:
    """An open channel where only the opener deposited (100.00 EUR): the peer is the payee."""
    s = make_sim(peer_deposit=0)
    s.open()
    return s


def top_up_both(sim: Simulation, amount: int, entry_id: str, reference: str,
                booked_ms: int) -> None:
    """The opener's top-up booked at the arbiter, its confirmation taken by both nodes."""
    step = arb.step(sim.escrow,  # type: ignore[arg-type]
                    arb.ObserveTopUp(sim.arbiter, 0, MinorUnits(amount), entry_id, reference,
                                     booked_ms), now_ms=sim.tick())
    sim.escrow = step.state
    (send,) = step.effects
    assert isinstance(send, arb.SendTopUpConfirmation)
    for side in (0, 1):
        sim.states[side] = ch.step(sim.states[side], ch.ReceiveTopUp(send.confirmation),
                                   now_ms=sim.now_ms).state


def day_of_work(sim: Simulation, metres: int, trips: int) -> None:
    for _ in range(trips):
        sim.pay(0, (metres,))


# -- checkpoints ----------------------------------------------------------------------------------


def test_three_daily_checkpoints_and_the_close_pay_exactly_the_net(payer_only: Simulation) -> None:
    """Three days, each settled by a checkpoint; the sub-cent leftovers of each day are carried
    to the next and paid exactly once; the close pays the rest; the sum is the net."""
    sim = payer_only
    paid_each_day = []
    for _day in range(3):
        day_of_work(sim, 1_337, 7)  # 7 × 1.337 km × 0.0123 EUR: never a whole number of cents
        sim.tick(DAY_MS)
        decided = sim.checkpoint(0)
        (payout,) = payouts_of(decided)
        assert payout.party == 1
        assert payout.checkpoint == sim.escrow.checkpoint.seq
        paid_each_day.append(payout.amount)
        sim.book(decided)
    net = sim.states[0].sent.amount
    assert net % 10_000  # a leftover below one cent remains after the third day
    assert sum(paid_each_day) == net // 10_000  # every whole cent owed so far, none twice
    assert paid_each_day == [11, 12, 11]  # 11.5, 23.0, 34.5 cents: the half cent waits a day
    sim.pay(0, (500,))
    final = sim.close(0)
    sim.settle(final)
    total_net = sim.states[0].sent.amount
    assert paid_to(sim, 1) == total_net // 10_000  # payee rounded down once, on the whole net
    assert paid_to(sim, 0) == 10_000 - total_net // 10_000  # the payer keeps the residual
    assert paid_to(sim, 0) + paid_to(sim, 1) == 10_000  # nothing created, nothing rounded away
    assert sim.states[0].phase is ch.Phase.SETTLED
    assert sim.states[1].phase is ch.Phase.SETTLED
    expected = cumulative_shares(opener_deposit=MinorUnits(10_000), peer_deposit=MinorUnits(0),
                               opener_sent=Amount(total_net), peer_sent=Amount(0), scale=6,
                               exponent=2)
    assert (paid_to(sim, 0), paid_to(sim, 1)) == (expected.opener, expected.peer)


def test_checkpoint_reference_and_key_derive_from_channel_and_number(sim: Simulation) -> None:
    sim.pay(0, (100_000,))
    first = payouts_of(sim.checkpoint(0))
    sim.pay(0, (100_000,))
    second = payouts_of(sim.checkpoint(1))
    cid = sim.terms.channel_id
    for seq, (payout,) in ((1, first), (2, second)):
        assert payout.reference == bank_reference(cid, Purpose.PAYOUT, 1, payout_seq(seq))
        assert payout.idempotency_key == idempotency_key(cid, Purpose.PAYOUT, 1, payout_seq(seq))
    assert first[0].idempotency_key != second[0].idempotency_key
    assert payout_seq(0) == 0  # the close's payout keeps the reference it always had


def test_checkpoint_capacity_shrinks_by_what_was_withdrawn(payer_only: Simulation) -> None:
    """The payee's gains left escrow: it can no longer send them back over the channel."""
    sim = payer_only
    sim.pay(0, (400_000,))  # 4.92 EUR to the peer
    before = sim.states[1].capacity(1)
    sim.book(sim.checkpoint(0))
    assert sim.states[1].capacity(1) == before - 492 * 10_000
    assert sim.states[0].capacity(1) == sim.states[1].capacity(1)  # both sides agree
    with pytest.raises(LocalProtocolError) as info:
        sim.pay(1, (0,), direct=10_000)  # one cent back: escrow no longer holds it for the peer
    assert info.value.code is ErrorCode.CAPACITY_EXCEEDED


def test_checkpoint_replayed_or_stale_is_refused_and_never_wins(sim: Simulation) -> None:
    sim.pay(0, (100_000,))
    sim.book(sim.checkpoint(0))
    first = sim.escrow.checkpoint  # type: ignore[union-attr]
    assert first is not None
    sim.pay(0, (100_000,))
    sim.book(sim.checkpoint(0))
    second = sim.escrow.checkpoint  # type: ignore[union-attr]
    assert second is not None
    assert second.seq == 2
    escrow, states = sim.escrow, list(sim.states)
    # The first checkpoint again, at the arbiter and at either node: refused, nothing changes.
    with pytest.raises(RemoteProtocolError) as info:
        arb.step(escrow, arb.ReceiveCheckpoint(first), now_ms=sim.tick())  # type: ignore[arg-type]
    assert info.value.code is ErrorCode.NONCE_REPLAY
    assert arb.step(escrow, arb.ReceiveCheckpoint(second),  # type: ignore[arg-type]
                    now_ms=sim.tick()).state.withdrawn == escrow.withdrawn  # type: ignore[union-attr]
    # A peer-signed replay of an old number with higher totals is stale too.
    sim.pay(0, (100_000,))
    sim.acknowledge(1)
    f0, f1 = sim.states[0].flows
    stale = Checkpoint(sim.terms.channel_id, 2, f0.nonce, f0.amount, f1.nonce, f1.amount,
                       EMPTY_SIGNATURE, EMPTY_SIGNATURE).signed_by(sim.peer, "peer_signature")
    with pytest.raises(RemoteProtocolError) as info:
        ch.step(sim.states[0], ch.ReceiveCheckpoint(stale), now_ms=sim.tick())
    assert info.value.code is ErrorCode.NONCE_REPLAY
    # A close handed in below the checkpoint decides on the checkpoint's totals, not its own.
    old = ch.close_body(states[0])
    low = old.__class__(old.channel_id, 0, 0, 0, 0, EMPTY_SIGNATURE, EMPTY_SIGNATURE)
    low = low.signed_by(sim.opener, "opener_signature").signed_by(sim.peer, "peer_signature")
    decided = arb.step(escrow, arb.ReceiveCooperativeClose(low), now_ms=sim.tick())  # type: ignore[arg-type]
    payouts = decided.state.payouts
    assert payouts is not None
    owed = (second.opener_amount - second.peer_amount) // 10_000
    assert payouts.peer == 5_000 + owed - decided.state.withdrawn[1]
    assert payouts.opener + payouts.peer + sum(decided.state.withdrawn) == 15_000


def test_checkpoint_of_unreceipted_totals_is_refused(sim: Simulation) -> None:
    """A point its receiver never receipted is not one both sides hold."""
    sim.pay(0, (100_000,), acknowledge=False)  # the peer holds the proof but has not receipted
    f0 = sim.states[1].flows[0]
    ahead = Checkpoint(sim.terms.channel_id, 1, f0.nonce, f0.amount, 0, 0, EMPTY_SIGNATURE,
                       EMPTY_SIGNATURE).signed_by(sim.opener, "opener_signature")
    with pytest.raises(RemoteProtocolError) as info:
        ch.step(sim.states[1], ch.ReceiveCheckpoint(ahead), now_ms=sim.tick())
    assert info.value.code is ErrorCode.CLOSE_MISMATCH
    inflated = Checkpoint(sim.terms.channel_id, 1, 0, 0, 0, 0, EMPTY_SIGNATURE, EMPTY_SIGNATURE)
    sim.acknowledge(1)
    f0 = sim.states[1].flows[0]
    inflated = Checkpoint(sim.terms.channel_id, 1, f0.nonce, f0.amount + 1, 0, 0,
                          EMPTY_SIGNATURE, EMPTY_SIGNATURE).signed_by(sim.opener,
                                                                      "opener_signature")
    with pytest.raises(RemoteProtocolError) as info:
        ch.step(sim.states[1], ch.ReceiveCheckpoint(inflated), now_ms=sim.tick())
    assert info.value.code is ErrorCode.CLOSE_MISMATCH


def test_checkpoint_refused_while_it_would_unback_payments_in_flight(sim: Simulation) -> None:
    """The peer earned 10 EUR, then paid 55 EUR on (beyond its own 50 EUR deposit): a
    checkpoint paying it the 10 EUR now would leave part of those 55 EUR without backing."""
    sim.pay(0, (0,), direct=10_000_000)
    sim.pay(1, (0,), direct=55_000_000, acknowledge=False)  # not receipted yet
    with pytest.raises(LocalProtocolError) as info:
        ch.step(sim.states[0], ch.ActionCheckpoint(sim.opener), now_ms=sim.tick())
    assert info.value.code is ErrorCode.CAPACITY_EXCEEDED
    sim.acknowledge(0)
    sim.checkpoint(0)  # once the 55 EUR are receipted the net is the other way: nothing unbacked


def test_checkpoint_at_once_by_both_sides_settles_on_the_opener_body(sim: Simulation) -> None:
    sim.pay(0, (100_000,))
    a = ch.step(sim.states[0], ch.ActionCheckpoint(sim.opener), now_ms=sim.tick())
    sim.pay(0, (1_000,))
    b = ch.step(sim.states[1], ch.ActionCheckpoint(sim.peer), now_ms=sim.tick())
    (ours,) = [e.checkpoint for e in a.effects if isinstance(e, ch.SendCheckpoint)]
    (theirs,) = [e.checkpoint for e in b.effects if isinstance(e, ch.SendCheckpoint)]
    assert ours.seq == theirs.seq == 1
    assert not ours.same_state(theirs)
    with pytest.raises(RemoteProtocolError):
        ch.step(a.state, ch.ReceiveCheckpoint(theirs), now_ms=sim.tick())  # the opener's stands
    asked = ch.step(b.state, ch.ReceiveCheckpoint(ours), now_ms=sim.tick())
    signed = ch.step(asked.state, ch.ActionCheckpoint(sim.peer), now_ms=sim.tick())
    full = next(e.checkpoint for e in signed.effects if isinstance(e, ch.SubmitCheckpoint))
    assert full.same_state(ours)
    assert full.fully_signed()
    done = ch.step(a.state, ch.ReceiveCheckpoint(full), now_ms=sim.tick())
    assert done.state.checkpoint == full
    assert signed.state.checkpoint == full
    # The peer counted its own crossed body too: its capacity is the more careful one.
    assert signed.state.withdrawn >= done.state.withdrawn


def test_checkpoint_during_a_dispute_floors_the_evidence(sim: Simulation) -> None:
    sim.pay(0, (200_000,))
    sim.book(sim.checkpoint(0))
    taken = sim.escrow.checkpoint  # type: ignore[union-attr]
    assert taken is not None
    # The opener force-closes showing nothing, hoping the peer's evidence never arrives.
    forced = ch.step(sim.states[0], ch.ActionForceClose(sim.opener), now_ms=sim.tick())
    claim = next(e.claim for e in forced.effects if isinstance(e, ch.SubmitUnilateralClose))
    escrow = arb.step(sim.escrow, arb.ReceiveUnilateralClose(claim),  # type: ignore[arg-type]
                      now_ms=sim.tick()).state
    end = escrow.deadline_ms
    assert end is not None
    decided = arb.step(escrow, arb.Tick(), now_ms=end)
    payouts = decided.state.payouts
    assert payouts is not None
    owed_cents = taken.opener_amount // 10_000
    # The peer is paid on the checkpoint both signed, not on the missing evidence.
    assert sim.escrow.withdrawn[1] + payouts.peer == 5_000 + owed_cents  # type: ignore[union-attr]


# -- schedules ------------------------------------------------------------------------------------


def test_checkpoint_threshold_triggers_during_heavy_streaming(payer_only: Simulation) -> None:
    """A threshold of 1.00 EUR: due as soon as a euro is owed and unpaid, not before; paying it
    resets what is unpaid; streaming on makes it due again."""
    sim = payer_only
    schedule = SettleSchedule(threshold=Amount(1_000_000))
    due_at = []
    for i in range(400):
        sim.pay(0, (1_000,))  # 0.0123 EUR a trip
        if checkpoint_due(sim.states[0], schedule, now_ms=sim.now_ms):
            due_at.append(i)
            sim.book(sim.checkpoint(0))
    # 82 trips are 1.0086 EUR (81 are 0.9963 EUR); then every further whole euro owed.
    assert due_at == [81, 162, 243, 325]
    escrow = sim.escrow
    assert escrow is not None
    assert [t.amount for t in escrow.transfers] == [100, 100, 100, 100]
    assert escrow.withdrawn == (0, 400)


def test_checkpoint_daily_schedule_counts_from_the_last_one(payer_only: Simulation) -> None:
    sim = payer_only
    daily = SettleSchedule(every_ms=DAY_MS)
    start = next_checkpoint_ms(sim.states[0], daily)
    assert start is not None
    sim.pay(0, (100_000,))
    assert not checkpoint_due(sim.states[0], daily, now_ms=start - 1)
    assert checkpoint_due(sim.states[0], daily, now_ms=start)
    sim.now_ms = start
    sim.book(sim.checkpoint(0))
    assert not checkpoint_due(sim.states[0], daily, now_ms=start + DAY_MS)  # nothing owed
    sim.pay(0, (100_000,))
    following = next_checkpoint_ms(sim.states[0], daily)
    assert following is not None
    assert following > start
    assert checkpoint_due(sim.states[0], daily, now_ms=following)


# -- top-ups --------------------------------------------------------------------------------------


def test_topup_grows_capacity_only_after_the_arbiter_confirms_it(payer_only: Simulation) -> None:
    sim = payer_only
    sim.pay(0, (0,), direct=99_000_000)  # 99 of its 100 EUR
    with pytest.raises(LocalProtocolError) as info:
        sim.pay(0, (0,), direct=2_000_000)
    assert info.value.code is ErrorCode.CAPACITY_EXCEEDED
    # The money is at the bank, but until the arbiter confirms it nothing changes.
    reference = bank_reference(sim.terms.channel_id, Purpose.TOPUP, 0)
    sim.ledger.move(sim.terms.accounts()[0].identification,
                    sim.terms.escrow_account.identification, 5_000, reference)
    with pytest.raises(LocalProtocolError):
        sim.pay(0, (0,), direct=2_000_000)
    entry = arb.ObserveTopUp(sim.arbiter, 0, MinorUnits(5_000), "topup-1", reference, sim.now_ms)
    confirmed = arb.step(sim.escrow, entry, now_ms=sim.tick())  # type: ignore[arg-type]
    (send,) = [e for e in confirmed.effects if isinstance(e, arb.SendTopUpConfirmation)]
    assert send.confirmation.amount == 5_000
    # Not the depositor's word: only the arbiter's signature raises capacity.
    forged = send.confirmation.signed_by(sim.opener)
    with pytest.raises(RemoteProtocolError) as info:
        ch.step(sim.states[1], ch.ReceiveTopUp(forged), now_ms=sim.tick())
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    sim.escrow = confirmed.state
    for i in (0, 1):
        sim.states[i] = ch.step(sim.states[i], ch.ReceiveTopUp(send.confirmation),
                                now_ms=sim.tick()).state
    sim.pay(0, (0,), direct=2_000_000)
    assert sim.states[1].capacity(0) == 150_000_000
    again = arb.step(sim.escrow, entry, now_ms=sim.tick())  # the same bank entry again
    assert again.state.topped_up == (5_000, 0)
    assert not again.effects
    sim.settle(sim.close(0))
    assert paid_to(sim, 1) == 10_100
    assert paid_to(sim, 0) == 4_900


def test_topup_during_heavy_streaming_then_checkpoint(payer_only: Simulation) -> None:
    """0.40 EUR an update, 320 updates: the top-up is paid at update 100 but confirmed only at
    update 260, so updates 250-259 are refused; after the confirmation 50 more fit."""
    sim = payer_only
    reference = bank_reference(sim.terms.channel_id, Purpose.TOPUP, 0)
    refused: list[tuple[int, ErrorCode]] = []
    for i in range(320):
        if i == 100:
            sim.ledger.move(sim.terms.accounts()[0].identification,
                            sim.terms.escrow_account.identification, 2_000, reference)
        if i == 260:
            top_up_both(sim, 2_000, "top-1", reference, sim.now_ms)
        try:
            sim.pay(0, (0,), direct=400_000)
        except LocalProtocolError as exc:
            refused.append((i, exc.code))
    codes = {code for _, code in refused}
    refused = [i for i, _ in refused]  # type: ignore[misc]
    assert codes == {ErrorCode.CAPACITY_EXCEEDED}
    assert refused == [*range(250, 260), *range(310, 320)]
    assert sim.states[0].sent.amount == 120_000_000  # 100 EUR + the 20 EUR top-up, no more
    sim.book(sim.checkpoint(0))
    assert sim.escrow is not None
    assert sim.escrow.withdrawn == (0, 12_000)
    sim.settle(sim.close(0))
    assert paid_to(sim, 1) == 12_000
    assert paid_to(sim, 0) == 0


def test_topup_after_the_close_is_held_for_refund(sim: Simulation) -> None:
    decided = sim.close(0)
    reference = bank_reference(sim.terms.channel_id, Purpose.TOPUP, 1)
    late = arb.step(sim.escrow,  # type: ignore[arg-type]
                    arb.ObserveTopUp(sim.arbiter, 1, MinorUnits(700), "t-9", reference, 5),
                    now_ms=sim.tick())
    (hold,) = late.effects
    assert isinstance(hold, rf.HoldCredit)
    assert hold.credit.reason is rf.CreditReason.LATE
    assert hold.credit.sender == sim.terms.peer_account
    assert late.state.topped_up == (0, 0)
    assert late.state.payouts == decided.state.payouts


def _sign_close_both(sim: Simulation) -> CooperativeClose:
    """Both nodes sign the final state (CLOSED); the arbiter does not have it yet."""
    first = ch.step(sim.states[0], ch.ActionClose(sim.opener), now_ms=sim.tick())
    sim.states[0] = first.state
    (request,) = [e.close for e in first.effects if isinstance(e, ch.SendClose)]
    sim.states[1] = ch.step(sim.states[1], ch.ReceiveClose(request), now_ms=sim.now_ms).state
    cosigned = ch.step(sim.states[1], ch.ActionClose(sim.peer), now_ms=sim.now_ms)
    sim.states[1] = cosigned.state
    full = next(e.close for e in cosigned.effects if isinstance(e, ch.SubmitClose))
    sim.states[0] = ch.step(sim.states[0], ch.ReceiveClose(full), now_ms=sim.now_ms).state
    return full


@pytest.mark.parametrize("ending", ["cooperative", "unilateral"])
def test_topup_confirmed_while_the_close_travels_counts_in_the_payout(
        sim: Simulation, ending: str) -> None:
    """The arbiter, still open, confirms a top-up after both nodes signed the close (or after
    one handed in a unilateral close that has not reached it): escrow pays it out at the close,
    so a node that refused the confirmation would refuse its own payout notice."""
    sim.pay(0, (100_000,))
    if ending == "cooperative":
        close = _sign_close_both(sim)
        assert [s.phase for s in sim.states] == [ch.Phase.CLOSED, ch.Phase.CLOSED]
    else:
        forced = ch.step(sim.states[1], ch.ActionForceClose(sim.peer), now_ms=sim.tick())
        sim.states[1] = forced.state
        (claim,) = [e.claim for e in forced.effects if isinstance(e, ch.SubmitUnilateralClose)]
    reference = bank_reference(sim.terms.channel_id, Purpose.TOPUP, 0)
    top_up_both(sim, 700, "t-1", reference, 5)
    assert [sim.states[i].topped_up for i in (0, 1)] == [(700, 0), (700, 0)]
    if ending == "cooperative":
        decided = arb.step(sim.escrow, arb.ReceiveCooperativeClose(close),  # type: ignore[arg-type]
                           now_ms=sim.tick())
        sim.escrow = decided.state
        sim.settle(decided)
    else:
        opened = arb.step(sim.escrow, arb.ReceiveUnilateralClose(claim),  # type: ignore[arg-type]
                          now_ms=sim.tick())
        decided = arb.step(opened.state, arb.Tick(sim.arbiter),
                           now_ms=sim.tick(sim.terms.dispute_window_ms + 1))
        sim.escrow = decided.state
        sim.settle(decided)
    assert [s.phase for s in sim.states] == [ch.Phase.SETTLED, ch.Phase.SETTLED]
    assert paid_to(sim, 0) + paid_to(sim, 1) == 15_700


# -- refunds --------------------------------------------------------------------------------------


def test_refund_of_a_late_deposit(sim: Simulation) -> None:
    sim.settle(sim.close(0))
    reference = bank_reference(sim.terms.channel_id, Purpose.DEPOSIT, 0)
    late = arb.step(sim.escrow,  # type: ignore[arg-type]
                    arb.ObserveDeposit(sim.arbiter, 0, MinorUnits(2_500), "e-77", reference, 9),
                    now_ms=sim.tick())
    assert late.state.deposited == sim.escrow.deposited  # type: ignore[union-attr]
    (hold,) = late.effects
    assert isinstance(hold, rf.HoldCredit)
    ledger = rf.step(rf.CreditLedger(), hold, now_ms=1).ledger
    ledger = rf.step(ledger, hold, now_ms=2).ledger  # the statement read again
    assert len(ledger.credits) == 1
    refunded = rf.step(ledger, rf.ActionRefund("e-77"), now_ms=3)
    (submit,) = refunded.effects
    assert submit.amount == 2_500
    assert submit.account == sim.terms.opener_account
    assert submit.idempotency_key == refund_idempotency_key("e-77")
    again = rf.step(refunded.ledger, rf.ActionRefund("e-77"), now_ms=4)  # a second command
    assert again.effects == (submit,)  # the same transfer, the same key: never paid twice
    booked = rf.step(again.ledger, rf.ObserveRefundBooked("e-77"), now_ms=5).ledger
    assert booked.get("e-77").status is rf.CreditStatus.REFUNDED
    with pytest.raises(LocalProtocolError):
        rf.step(booked, rf.ActionRefund("e-77"), now_ms=6)


def test_refund_of_an_unmatched_credit_needs_an_account() -> None:
    credit = rf.UnappliedCredit("e-1", MinorUnits(100), "EUR", rf.CreditReason.UNMATCHED,
                                "WHATEVER", 1, None)
    ledger = rf.step(rf.CreditLedger(), rf.HoldCredit(credit), now_ms=1).ledger
    with pytest.raises(LocalProtocolError) as info:
        rf.step(ledger, rf.ActionRefund("e-1"), now_ms=2)
    assert info.value.code is ErrorCode.INVALID_STATE
    with pytest.raises(LocalProtocolError):
        rf.step(ledger, rf.ActionRefund("nope"), now_ms=2)
    sender = BankAccount("IBAN", "DE02120300000000202051", "Someone")
    (submit,) = rf.step(ledger, rf.ActionRefund("e-1", sender), now_ms=3).effects
    assert submit.account == sender


# -- returned payouts -----------------------------------------------------------------------------


def corrected(sim: Simulation, issued_ms: int, account: BankAccount = CORRECTED) -> PayoutAccount:
    return PayoutAccount(sim.terms.channel_id, sim.peer.node_id, account, issued_ms,
                         EMPTY_SIGNATURE).signed_by(sim.peer)


def test_returned_checkpoint_payout_is_repaid_to_the_corrected_account_once(
    payer_only: Simulation,
) -> None:
    sim = payer_only
    sim.pay(0, (300_000,))
    decided = sim.checkpoint(0)
    (first,) = payouts_of(decided)
    escrow = arb.step(sim.escrow, arb.ObservePayoutReturned(first.reference, "AC04", 1),  # type: ignore[arg-type]
                      now_ms=sim.tick())
    assert not escrow.effects  # no corrected account yet: nothing is paid again
    (attempt,) = escrow.state.transfers
    assert attempt.status is TransferStatus.RETURNED
    assert attempt.reason == "AC04"
    # Someone other than the payee cannot redirect its money.
    forged = corrected(sim, 10).signed_by(sim.opener)
    with pytest.raises(RemoteProtocolError) as info:
        arb.step(escrow.state, arb.ReceivePayoutAccount(forged), now_ms=sim.tick())
    assert info.value.code is ErrorCode.BAD_SIGNATURE
    repaid = arb.step(escrow.state, arb.ReceivePayoutAccount(corrected(sim, 10)),
                      now_ms=sim.tick())
    (second,) = payouts_of(repaid)
    assert second.account == CORRECTED
    assert second.amount == first.amount
    assert second.attempt == 1
    assert second.idempotency_key != first.idempotency_key
    assert second.reference != first.reference
    # The payee's account message again, or an older one: nothing more is paid.
    assert not arb.step(repaid.state, arb.ReceivePayoutAccount(corrected(sim, 10)),
                        now_ms=sim.tick()).effects
    assert not arb.step(repaid.state, arb.ReceivePayoutAccount(corrected(sim, 9)),
                        now_ms=sim.tick()).effects
    # The return reported again changes nothing; a late booking of the returned attempt
    # counts nothing; the new attempt's booking is what counts.
    state = repaid.state
    again = arb.step(state, arb.ObservePayoutReturned(first.reference, "AC04", 2), now_ms=3)
    assert again.state.transfers == state.transfers
    assert not again.effects
    late = arb.step(state, arb.ObserveTransferBooked(sim.arbiter, first.reference, 4), now_ms=4)
    assert late.state.transfers == state.transfers
    booked = arb.step(state, arb.ObserveTransferBooked(sim.arbiter, second.reference, 5),
                      now_ms=5).state
    statuses = sorted((t.attempt, t.status) for t in booked.transfers)
    assert statuses == [(0, TransferStatus.RETURNED), (1, TransferStatus.BOOKED)]
    assert booked.withdrawn == (0, first.amount)  # owed once, whatever the attempts


def test_returned_final_payout_is_repaid_and_settles_only_then(sim: Simulation) -> None:
    sim.pay(0, (300_000,))
    decided = sim.close(0)
    by_party = {p.party: p for p in payouts_of(decided)}
    state = decided.state
    state = arb.step(state, arb.ObserveTransferBooked(sim.arbiter, by_party[0].reference, 1),
                     now_ms=1).state
    # The peer's account was closed: the bank rejects the payout (AC04).
    state = arb.step(state, arb.ObservePayoutReturned(by_party[1].reference, "AC04", 2),
                     now_ms=2).state
    assert state.phase is arb.ArbiterPhase.PAYING
    # The old "party 1 booked" report names the returned attempt: it cannot settle the channel.
    state = arb.step(state, arb.ObservePayoutBooked(sim.arbiter, 1, 3), now_ms=3).state
    assert state.phase is arb.ArbiterPhase.PAYING
    repaid = arb.step(state, arb.ReceivePayoutAccount(corrected(sim, 10)), now_ms=4)
    (again,) = payouts_of(repaid)
    assert again.amount == by_party[1].amount
    assert again.account == CORRECTED
    settled = arb.step(repaid.state, arb.ObserveTransferBooked(sim.arbiter, again.reference, 5),
                       now_ms=5)
    assert settled.state.phase is arb.ArbiterPhase.SETTLED
    (notice,) = [e.notice for e in settled.effects if isinstance(e, arb.SendPayoutNotice)]
    assert notice.peer_payout == by_party[1].amount


def test_returned_payout_with_an_unknown_reference_changes_nothing(sim: Simulation) -> None:
    sim.pay(0, (300_000,))
    decided = sim.checkpoint(0)
    with pytest.raises(LocalProtocolError) as info:
        arb.step(decided.state, arb.ObservePayoutReturned("MLFFFFFFFFFFFFFFFF", "AC04", 1),
                 now_ms=1)
    assert info.value.code is ErrorCode.INVALID_FIELD
    (payout,) = payouts_of(decided)
    with pytest.raises(ProtocolError):
        arb.step(decided.state, arb.ObservePayoutReturned(payout.reference, "no reason!", 1),
                 now_ms=1)


def test_checkpoint_withdrawable_is_the_payout_rule_beyond_the_deposit() -> None:
    """withdrawable = the payee's share by the one payout rule, less its own deposit."""
    s = Simulation.create(tariff=(KM,), opener_deposit=10_000, peer_deposit=3_000)
    for opener_sent, peer_sent in ((0, 0), (153_750, 0), (0, 29_999_999), (50_000, 40_001)):
        share = cumulative_shares(opener_deposit=MinorUnits(10_000), peer_deposit=MinorUnits(3_000),
                                opener_sent=Amount(opener_sent), peer_sent=Amount(peer_sent),
                                scale=6, exponent=2)
        w = withdrawable(s.terms, (opener_sent, peer_sent))
        assert w == (max(0, share.opener - 10_000), max(0, share.peer - 3_000))


def test_checkpoint_after_one_whose_receipt_is_still_in_flight(sim: Simulation) -> None:
    """The peer's checkpoint acknowledged our payment before its receipt reached us: our next
    proposal starts from the checkpoint, not from the older receipt we hold."""
    sim.pay(0, (100_000,))
    sim.pay(0, (100_000,), acknowledge=False)
    ack = ch.step(sim.states[1], ch.ActionAcknowledge(sim.peer), now_ms=sim.tick())
    sim.states[1] = ack.state  # the receipt for nonce 2 is never delivered to the opener
    sim.book(sim.checkpoint(1))
    assert sim.states[0].checkpoint is not None
    assert sim.states[0].checkpoint.opener_nonce == 2
    assert sim.states[0].sent.acked_nonce == 1
    sim.pay(1, (0,), direct=10_000)
    decided = sim.checkpoint(0)  # would fall below checkpoint 1 if built from the receipt
    taken = decided.state.checkpoint
    assert taken is not None
    assert taken.seq == 2
    assert taken.opener_nonce == 2


def test_checkpoint_co_signed_back_is_not_pending_for_its_proposer(sim: Simulation) -> None:
    """Found between real daemons: the proposer that receives its body co-signed holds it as
    signed, so settling again with nothing new is refused instead of resending the old body."""
    sim.pay(0, (100_000,))
    sim.checkpoint(0)
    proposer = sim.states[0]
    assert proposer.checkpoint is not None
    assert proposer.checkpoint_signed == proposer.checkpoint
    with pytest.raises(LocalProtocolError) as err:
        ch.step(proposer, ch.ActionCheckpoint(sim.opener), now_ms=sim.now_ms + 1)
    assert err.value.code is ErrorCode.INVALID_STATE


@pytest.mark.parametrize("phase", [ch.Phase.CLOSING, ch.Phase.DISPUTED])
def test_checkpoint_co_signed_back_after_the_proposer_began_closing_is_held(
        sim: Simulation, phase: ch.Phase) -> None:
    """The opener proposed a checkpoint, then began to close (or handed in a unilateral close);
    the peer, still open, co-signed it and handed it to the arbiter, which paid it out. The
    co-signed body coming back is one the opener signed: it holds it (its settlement rows, the
    arbiter's notices of those payouts), but a new proposal from the peer it still refuses."""
    sim.pay(0, (300_000,))
    proposed = ch.step(sim.states[0], ch.ActionCheckpoint(sim.opener), now_ms=sim.tick())
    sim.states[0] = proposed.state
    (ours,) = [e.checkpoint for e in proposed.effects if isinstance(e, ch.SendCheckpoint)]
    action = (ch.ActionClose(sim.opener) if phase is ch.Phase.CLOSING
              else ch.ActionForceClose(sim.opener))
    sim.states[0] = ch.step(sim.states[0], action, now_ms=sim.tick()).state
    assert sim.states[0].phase is phase
    sim.states[1] = ch.step(sim.states[1], ch.ReceiveCheckpoint(ours), now_ms=sim.now_ms).state
    cosigned = ch.step(sim.states[1], ch.ActionCheckpoint(sim.peer), now_ms=sim.now_ms)
    full = next(e.checkpoint for e in cosigned.effects if isinstance(e, ch.SubmitCheckpoint))
    paid = arb.step(sim.escrow, arb.ReceiveCheckpoint(full), now_ms=sim.tick())  # type: ignore[arg-type]
    assert payouts_of(paid)  # the arbiter pays it out while the opener is not open
    sim.escrow = paid.state
    sim.book(paid)
    held = ch.step(sim.states[0], ch.ReceiveCheckpoint(full), now_ms=sim.tick())
    assert held.state.phase is phase
    assert held.state.checkpoint == full
    assert held.state.withdrawn == sim.states[0].withdrawn  # counted when it signed
    # A peer-only proposal is still refused outside `open`.
    f0 = held.state.flows[0]
    new = Checkpoint(sim.terms.channel_id, full.seq + 1, f0.nonce, f0.amount, 0, 0,
                     EMPTY_SIGNATURE, EMPTY_SIGNATURE).signed_by(sim.peer, "peer_signature")
    with pytest.raises(RemoteProtocolError) as info:
        ch.step(held.state, ch.ReceiveCheckpoint(new), now_ms=sim.tick())
    assert info.value.code is ErrorCode.INVALID_STATE
