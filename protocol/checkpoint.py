"""The money rules of checkpoints (specs/0003 §9, specs/0004 §7), shared by both machines.

A checkpoint fixes the cumulative totals ``sent_o``, ``sent_p`` of both directions. What a party
may take out of escrow while the channel stays open is what the payout rule (specs/0004 §4.1,
:func:`protocol.payout.cumulative_shares`) gives it beyond its own deposit — for the payee,
``floor((received − sent) / f)`` rail units, for the payer nothing — and the arbiter pays the
part of that it has not paid yet:

    withdrawable_i(k) = floor(max(0, sent_other(k) − sent_i(k)) / f)          (rail units)
    withdrawn_i(k)    = max(withdrawn_i(k−1), withdrawable_i(k))             (running maximum)
    payout_i(k)       = withdrawn_i(k) − withdrawn_i(k−1)

Because the rule is applied to *cumulative* totals, the part below one rail unit is never
rounded away: it is still in ``sent_other − sent_i`` at the next checkpoint, and the close pays
whatever is left (Interledger RFC 0038, "leftovers"). Nothing is paid twice: a party is only
ever paid the rise of its running maximum. The final close pays the payout rule on what escrow
still holds: each deposit plus its top-ups minus what was withdrawn (:func:`remaining_payouts`).

Capacity follows: a sender may have sent at most its deposit, plus its confirmed top-ups, plus
what it received, minus what it withdrew (:func:`capacity`).
"""

from __future__ import annotations

from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import ChannelTerms, Checkpoint
from protocol.money import currency_exponent, format_money, from_minor_units
from protocol.payout import Payouts
from protocol.types import MAX_AMOUNT, Amount, MinorUnits

Pair = tuple[MinorUnits, MinorUnits]
ZERO: Pair = (MinorUnits(0), MinorUnits(0))


def rail_factor(terms: ChannelTerms) -> int:
    """``f = 10^(scale − exponent)``: channel units per rail unit."""
    return int(10 ** (terms.scale - currency_exponent(terms.currency)))


def withdrawable(terms: ChannelTerms, sent: tuple[int, int]) -> Pair:
    """What each party may have taken out of escrow in total at these cumulative totals."""
    f = rail_factor(terms)
    net_opener = sent[1] - sent[0]
    return MinorUnits(max(0, net_opener) // f), MinorUnits(max(0, -net_opener) // f)


def withdrawn_after(terms: ChannelTerms, withdrawn: Pair, checkpoint: Checkpoint) -> Pair:
    """The running maximum of :func:`withdrawable` once `checkpoint` is counted."""
    w = withdrawable(terms, checkpoint.sent())
    return MinorUnits(max(withdrawn[0], w[0])), MinorUnits(max(withdrawn[1], w[1]))


def payouts_at(terms: ChannelTerms, withdrawn: Pair, checkpoint: Checkpoint) -> Pair:
    """What the arbiter pays each party at `checkpoint` (``payout_i(k)`` above)."""
    after = withdrawn_after(terms, withdrawn, checkpoint)
    return MinorUnits(after[0] - withdrawn[0]), MinorUnits(after[1] - withdrawn[1])


def held(terms: ChannelTerms, topped_up: Pair, withdrawn: Pair) -> Pair:
    """Each party's part of escrow as the rule counts it: deposit + top-ups − withdrawn (may be
    negative for a payee that withdrew more than it deposited: its gains back it)."""
    deposits = terms.deposits()
    return (
        MinorUnits(deposits[0] + topped_up[0] - withdrawn[0]),
        MinorUnits(deposits[1] + topped_up[1] - withdrawn[1]),
    )


def capacity(
    terms: ChannelTerms, topped_up: Pair, withdrawn: Pair, sender: int, received: int
) -> Amount:
    """The most `sender` may have sent in total, having received `received` (channel scale)."""
    part = held(terms, topped_up, withdrawn)[sender]
    exponent = currency_exponent(terms.currency)
    return Amount(from_minor_units(part, terms.scale, exponent) + received)


def check_within_capacity(
    terms: ChannelTerms, topped_up: Pair, withdrawn: Pair, sent: tuple[int, int]
) -> None:
    """CAPACITY_EXCEEDED unless both cumulative totals fit the capacity left after `withdrawn`:
    escrow then still backs every payment in them, so no payout can come out negative."""
    for sender in (0, 1):
        limit = capacity(terms, topped_up, withdrawn, sender, sent[1 - sender])
        if sent[sender] > limit:
            raise RemoteProtocolError(
                ErrorCode.CAPACITY_EXCEEDED,
                f"the {('opener', 'peer')[sender]} has sent "
                f"{format_money(sent[sender], terms.currency, terms.scale, precise=True)}, more "
                f"than the {format_money(limit, terms.currency, terms.scale, precise=True)} "
                "escrow backs after this checkpoint's payouts",
            )


def check_progress(previous: Checkpoint | None, checkpoint: Checkpoint) -> None:
    """The rules every checkpoint meets against the last one its checker holds: a number above
    it (NONCE_REPLAY: a stale or replayed checkpoint never wins) and no total below it
    (AMOUNT_REGRESSION); a nonce of 0 carries an amount of 0 (INVALID_AMOUNT)."""
    if checkpoint.seq < 1:
        raise RemoteProtocolError(ErrorCode.INVALID_FIELD, "checkpoints are numbered from 1")
    for sender in (0, 1):
        nonce, amount = checkpoint.point(sender)
        if (nonce == 0 and amount != 0) or amount > MAX_AMOUNT:
            raise RemoteProtocolError(ErrorCode.INVALID_AMOUNT, "an amount with no proof")
    if previous is None:
        return
    if checkpoint.seq <= previous.seq:
        raise RemoteProtocolError(
            ErrorCode.NONCE_REPLAY,
            f"checkpoint {checkpoint.seq} is not above checkpoint {previous.seq}",
        )
    for sender in (0, 1):
        (nonce, amount), (old_nonce, old_amount) = checkpoint.point(sender), previous.point(sender)
        if nonce < old_nonce or amount < old_amount:
            raise RemoteProtocolError(
                ErrorCode.AMOUNT_REGRESSION,
                f"checkpoint {checkpoint.seq} falls below checkpoint {previous.seq}",
            )


def remaining_payouts(
    terms: ChannelTerms, topped_up: Pair, withdrawn: Pair, opener_sent: int, peer_sent: int
) -> Payouts:
    """The final close: the payout rule of specs/0004 §4.1 on what escrow still holds for each
    party (deposit + top-ups − withdrawn). The payee — the party whose cumulative received
    exceeds its cumulative sent — is rounded down to the rail unit and the payer gets the rest,
    so the two add up to what escrow holds. With nothing topped up or withdrawn it is exactly
    :func:`protocol.payout.cumulative_shares` (tests/protocol/test_checkpoint_invariant.py checks
    it); it decides the payee by the sign of the net rather than "owed more than deposited",
    which says the same until a party has withdrawn more than it deposited.
    """
    f = rail_factor(terms)
    parts = held(terms, topped_up, withdrawn)
    total_minor = parts[0] + parts[1]
    total = total_minor * f
    owed_opener = min(max(0, parts[0] * f - opener_sent + peer_sent), total)
    owed_peer = total - owed_opener
    if peer_sent > opener_sent:  # the opener gained: it is the payee
        opener = owed_opener // f
        return Payouts(MinorUnits(opener), MinorUnits(total_minor - opener),
                       Amount(owed_opener - opener * f))
    peer = owed_peer // f
    return Payouts(MinorUnits(total_minor - peer), MinorUnits(peer), Amount(owed_peer - peer * f))
