"""The one payout rule (specs/0004 §4, DESIGN §3): what each party is paid out of escrow.

Every place that shows or pays a share calls this module: the arbiter's machine when it decides
the payouts, the node's balance and expected payouts, the statement. Two functions, one rule:

- :func:`cumulative_shares` — each party's share of the terms' deposits, in rail minor units, for
  given cumulative sent totals: ``deposit − sent + received`` at channel scale, the payee rounded
  down to the rail unit, the payer the rest. A checkpoint pays "the cumulative share at this point
  minus what was already paid out", so it is exposed on its own.
- :func:`payouts` — the rule on what escrow actually holds: a channel that never opened refunds
  what each side paid in; past the terms, an over-deposit goes back to whoever paid it.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol.messages import ChannelTerms, Checkpoint
from protocol.money import currency_exponent, from_minor_units, to_minor_units
from protocol.types import Amount, MinorUnits


@dataclass(frozen=True, slots=True)
class Payouts:
    """What the arbiter pays each side, in rail minor units. Always sums to what escrow holds."""

    opener: MinorUnits
    peer: MinorUnits
    residual: Amount
    """The sub-rail-unit remainder the payee's rounding left with the payer (0 ≤ r < 1 unit)."""

    def of(self, party: int) -> MinorUnits:
        """Party 0 (opener) or 1 (peer)."""
        return (self.opener, self.peer)[party]


def owed(deposits: tuple[MinorUnits, MinorUnits], sent: tuple[Amount, Amount], scale: int,
         exponent: int) -> tuple[Amount, Amount]:
    """Each side's exact share of the deposits at channel scale, before any rounding:
    ``deposit − sent + received``, floored at zero (a side whose own evidence is missing cannot
    be owed less than nothing; its counterparty is owed the rest)."""
    total = from_minor_units(deposits[0] + deposits[1], scale, exponent)
    opener_owed = max(0, from_minor_units(deposits[0], scale, exponent) - sent[0] + sent[1])
    opener_owed = min(opener_owed, total)
    return Amount(opener_owed), Amount(total - opener_owed)


def cumulative_shares(
    *,
    opener_deposit: MinorUnits,
    peer_deposit: MinorUnits,
    opener_sent: Amount,
    peer_sent: Amount,
    scale: int,
    exponent: int,
) -> Payouts:
    """Each side's share of the deposits for these cumulative sent totals (specs/0004 §4).

    The exact shares are :func:`owed`. The *payee* — the side owed more than it deposited — is
    rounded down to the rail unit; the payer receives the remainder of the deposits, so the two
    always add up exactly.
    """
    total_minor = opener_deposit + peer_deposit
    opener_owed, peer_owed = owed((opener_deposit, peer_deposit), (opener_sent, peer_sent),
                                  scale, exponent)
    if opener_owed > from_minor_units(opener_deposit, scale, exponent):
        opener_minor = to_minor_units(opener_owed, scale, exponent)
        residual = opener_owed - from_minor_units(opener_minor, scale, exponent)
        return Payouts(opener_minor, MinorUnits(total_minor - opener_minor), Amount(residual))
    peer_minor = to_minor_units(peer_owed, scale, exponent)
    residual = peer_owed - from_minor_units(peer_minor, scale, exponent)
    return Payouts(MinorUnits(total_minor - peer_minor), peer_minor, Amount(residual))


def opened(terms: ChannelTerms, held: tuple[MinorUnits, MinorUnits]) -> bool:
    """A channel is open once escrow holds every deposit its terms name."""
    required = terms.deposits()
    return all(held[i] >= required[i] for i in (0, 1))


Pair = tuple[MinorUnits, MinorUnits]
ZERO: Pair = (MinorUnits(0), MinorUnits(0))


def exact_share(
    terms: ChannelTerms, held: Pair, party: int, opener_sent: int, peer_sent: int, *,
    checkpoint: Checkpoint | None = None, topped_up: Pair = ZERO, withdrawn: Pair = ZERO,
) -> Amount:
    """`party`'s share at channel scale before the payee's rounding (what :func:`payouts`
    rounds): ``deposit + top-ups − withdrawn − sent + received`` plus any over-deposit, or the
    refund of a channel that never opened."""
    exponent = currency_exponent(terms.currency)
    if not opened(terms, held):
        return from_minor_units(held[party], terms.scale, exponent)
    sent = floor_sent(checkpoint, opener_sent, peer_sent)
    deposits = terms.deposits()
    parts = (MinorUnits(deposits[0] + topped_up[0] - withdrawn[0]),
             MinorUnits(deposits[1] + topped_up[1] - withdrawn[1]))
    share = owed(parts, (Amount(sent[0]), Amount(sent[1])), terms.scale, exponent)[party]
    extra = from_minor_units(held[party] - deposits[party], terms.scale, exponent)
    return Amount(share + extra)


def floor_sent(checkpoint: Checkpoint | None, opener_sent: int, peer_sent: int
                ) -> tuple[int, int]:
    """The totals a close decides on: never below the last checkpoint both parties signed (a
    close or evidence older than it does not undo it; specs/0004 §7.3)."""
    if checkpoint is None:
        return opener_sent, peer_sent
    return max(opener_sent, checkpoint.opener_amount), max(peer_sent, checkpoint.peer_amount)


def payouts(
    terms: ChannelTerms, held: Pair, opener_sent: int, peer_sent: int, *,
    checkpoint: Checkpoint | None = None, topped_up: Pair = ZERO, withdrawn: Pair = ZERO,
) -> Payouts:
    """What escrow pays out of `held` (each side's confirmed deposit) for these sent totals.

    A channel opens once every deposit the terms name is held; one that never opened refunds
    each side what it paid in (nothing was sent over it). Once open, the deposits are shared by
    :func:`cumulative_shares` — after checkpoints and top-ups, on what escrow still holds
    (protocol.checkpoint.remaining_payouts, the same rule on deposit + top-ups − withdrawn) and
    on totals never below the last checkpoint — and whatever was paid in beyond the terms goes
    back to its payer.
    """
    required = terms.deposits()
    if not opened(terms, held):
        return Payouts(held[0], held[1], Amount(0))
    if checkpoint is None and topped_up == ZERO and withdrawn == ZERO:
        base = cumulative_shares(
            opener_deposit=terms.opener_deposit, peer_deposit=terms.peer_deposit,
            opener_sent=Amount(opener_sent), peer_sent=Amount(peer_sent),
            scale=terms.scale, exponent=currency_exponent(terms.currency))
    else:
        from protocol import checkpoint as cp  # it builds on Payouts: imported when needed

        sent = floor_sent(checkpoint, opener_sent, peer_sent)
        base = cp.remaining_payouts(terms, topped_up, withdrawn, sent[0], sent[1])
    return Payouts(
        MinorUnits(base.opener + held[0] - required[0]),
        MinorUnits(base.peer + held[1] - required[1]),
        base.residual,
    )
