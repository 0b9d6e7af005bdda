"""Node mode: what the arbiter's bank did with each payout, as the arbiter signed it (ADR 0320).

The arbiter sends both parties a :class:`protocol.messages.TransferNotice` for every payout
attempt its bank booked, rejected or returned (``POST /p2p/transfer-notice``, through its
outbox), and carries its latest ones in every EscrowStatus, so a node that missed a push learns
it from the watch. A notice is applied under the channel's lock: its signature must be the
channel's arbiter's and its party one of the channel's; then, for a checkpoint's payout, the
settlement row (node.checkpoints; for the final close's payouts, a row of checkpoint 0 written
on the first notice) takes its status, reason, attempt and bank reference, and the
node's events-out get ``checkpoint.paid`` / ``payout.booked|rejected|returned`` (ADR 0321), in
one transaction.

What a notice may change is decided by :func:`supersedes`: a higher attempt always wins (it is
the payment that counts now); within one attempt an outcome only moves forward (submitted →
booked → rejected/returned: a booked payout can still be returned later, a returned one is
never booked again). A notice seen again, or an older one, changes nothing (idempotent).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.context import Context
from node.event_changes import notice_change
from node.storage.models import Settlement
from protocol import channel as ch
from protocol.errors import ErrorCode, RemoteProtocolError
from protocol.messages import EscrowStatus, TransferNotice

if TYPE_CHECKING:
    from node.channels import ChannelService

log = structlog.get_logger()
RANK = {"submitted": 0, "booked": 1, "rejected": 2, "returned": 2}
"""How far along one attempt's outcome is: it only ever moves up."""


def supersedes(notice: TransferNotice, attempt: int, status: str) -> bool:
    """Whether `notice` is newer than what a settlement at (`attempt`, `status`) holds."""
    if notice.attempt != attempt:
        return notice.attempt > attempt
    return RANK[notice.status] > RANK.get(status, 0)


def check(state: ch.ChannelState, notice: TransferNotice) -> int:
    """BAD_SIGNATURE unless the channel's arbiter signed it; NOT_A_PARTY unless it is about
    one of the channel's parties. The party's index (0 opener, 1 peer)."""
    notice.verify_signature(state.terms.arbiter)
    return state.terms.party_index(notice.party)


class TransferNotices:
    def __init__(self, ctx: Context, channels: ChannelService) -> None:
        self.ctx = ctx
        self.channels = channels

    async def on_notice(self, notice: TransferNotice, *, pushed: bool = True) -> bool:
        """Apply one notice (True: it changed something). A pushed notice for a checkpoint
        this node does not hold signed yet is refused "not yet" (INVALID_STATE: the arbiter
        retries); from the watch it is simply left for the next sweep."""
        cid = notice.channel_id.hex()
        if cid not in self.channels.states:
            raise RemoteProtocolError(ErrorCode.UNKNOWN_CHANNEL, "no such channel here")
        async with self.channels.lock(cid):
            state = self.channels.get(cid)
            party = check(state, notice)
            async with self.ctx.repo.transaction() as session:
                changed = await self._apply(session, state, party, notice, pushed=pushed)
        if changed:
            log.info("transfer.notice", channel=cid[:16], checkpoint=notice.checkpoint,
                     party=party, status=notice.status, reason=notice.reason,
                     attempt=notice.attempt)
        return changed

    async def on_status(self, status: EscrowStatus) -> None:
        """The outcomes an EscrowStatus carries (the watch: already verified as the arbiter's
        answer), each applied as if pushed. The status repeats the latest 32 at every watch,
        so the channel's rows are read once and only a notice that would change one of them
        is verified and applied (its own lock and transaction); one that cannot be applied
        yet stops no other."""
        if not status.transfers:
            return  # nothing to apply: the state is not decoded for it
        cid = status.channel_id.hex()
        state = self.channels.states.get(cid)
        if state is None:
            return
        async with self.ctx.db() as session:
            rows = {(r.seq, r.party): (r.attempt, r.status) for r in (await session.scalars(
                select(Settlement).where(Settlement.channel_id == cid))).all()}
        parties = state.terms.parties()
        for notice in status.transfers:
            if notice.party not in parties:
                continue  # about nobody of this channel: nothing to apply
            held = rows.get((notice.checkpoint, parties.index(notice.party)))
            if held is None and notice.checkpoint:
                continue  # a checkpoint not held yet: the next watch brings it again
            if held is None or supersedes(notice, *held):
                await self.on_notice(notice, pushed=False)

    async def _apply(self, session: AsyncSession, state: ch.ChannelState, party: int,
                     notice: TransferNotice, *, pushed: bool) -> bool:
        cid = state.channel_id.hex()
        row = await session.get(Settlement, (cid, notice.checkpoint, party))
        if row is None and notice.checkpoint == 0:
            # the final close's payout: written down on the arbiter's first word of it
            row = Settlement(channel_id=cid, seq=0, party=party, amount_minor=notice.amount,
                             reference=notice.reference, signed_ms=notice.time_ms,
                             status="submitted", reason="", attempt=0, changed_ms=0)
            session.add(row)
        elif row is None:
            if not pushed:
                return False
            raise RemoteProtocolError(ErrorCode.INVALID_STATE,
                                      f"checkpoint {notice.checkpoint} is not held here yet")
        if not supersedes(notice, row.attempt, row.status):
            return False  # seen already, or older than what we hold
        if notice.amount != row.amount_minor:
            log.warning("transfer.notice_amount", channel=cid[:16], seq=notice.checkpoint,
                        party=party, ours=row.amount_minor, arbiter=notice.amount)
        row.status, row.reason, row.attempt = notice.status, notice.reason, notice.attempt
        row.reference, row.changed_ms = notice.reference, notice.time_ms
        await self.ctx.events.append(session, cid, [notice_change(state, party, notice)])
        return True


__all__ = ["TransferNotices", "check", "supersedes"]
