"""Node mode: payouts the arbiter's bank rejected or returned, as the arbiter signed them.

The arbiter sends both parties a :class:`protocol.messages.PayoutReturned` (``POST
/p2p/payout-returned``) when a payout comes back (AC04, AM04, R03…). The node keeps each one
it can verify — signed by the channel's arbiter, about one of the channel's parties — and
shows it in ``channel show`` with its reason; the payee then names a corrected account
(node.api.payout_account). A notice seen again changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from node.context import Context
from node.storage.models import PayoutReturn
from node.views import minor
from protocol import channel as ch
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import PayoutReturned


async def record(ctx: Context, state: ch.ChannelState | None, notice: PayoutReturned) -> None:
    """Keep a verified notice about our channel `state` (None: not a channel of ours)."""
    if state is None:
        raise RemoteProtocolError(ErrorCode.UNKNOWN_CHANNEL, "no such channel here")
    notice.verify_signature(state.terms.arbiter)
    state.terms.party_index(notice.party)  # NOT_A_PARTY for anyone else
    cid = state.channel_id.hex()
    async with ctx.repo.transaction() as session:
        if await session.get(PayoutReturn, (cid, notice.reference)) is None:
            session.add(PayoutReturn(
                channel_id=cid, reference=notice.reference, party=notice.party.hex(),
                amount_minor=notice.amount, reason=notice.reason,
                returned_ms=notice.returned_ms, notice=notice.encode()))


async def returns_json(ctx: Context, state: ch.ChannelState) -> list[dict[str, Any]]:
    """The channel's returned payouts, oldest first, as `channel show` lists them."""
    cid = state.channel_id.hex()
    async with ctx.db() as session:
        rows = (await session.scalars(select(PayoutReturn).where(
            PayoutReturn.channel_id == cid).order_by(PayoutReturn.returned_ms))).all()
    return render_returns(state, rows)


def render_returns(state: ch.ChannelState, rows: Sequence[PayoutReturn]) -> list[dict[str, Any]]:
    """Returned payouts as `channel show` lists them (node.api.detail_reads reads them)."""
    us = state.terms.parties()[state.us].hex()
    return [{"party": "ours" if r.party == us else "peer", "reference": r.reference,
             "amount": minor(r.amount_minor, state.terms.currency), "reason": r.reason,
             "returned_ms": r.returned_ms} for r in rows]
