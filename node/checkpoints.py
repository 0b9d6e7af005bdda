"""Checkpoints on the node: settle without closing (specs/0003 §9, 0004 §7).

The machine decides everything: what the next checkpoint holds (`ActionCheckpoint`), whether a
peer's proposal is acceptable (`ReceiveCheckpoint`), what it pays (`protocol.checkpoint`) and
whether one is due (`protocol.schedule.checkpoint_due`, time an input). This module only feeds
it: by hand (`meterline channel settle`), when the channel's schedule says so (a run at a given
time — the node's own clock every watch interval, or the time an operator or a test passes),
and on the peer's `POST /p2p/checkpoint`. The co-signing answer to a peer's proposal is the
node's POLICY in node.channels (a body the machine accepts is co-signed at once).

Every fully signed checkpoint the node stores is written down, in the same transaction, as the
payouts it makes (:func:`settlement_rows`): what `channel show` and the statement list, with
the outcome the arbiter tells of each (node.transfer_notices: booked, rejected, returned).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from node.background import stop_tasks
from node.context import now_ms
from node.errors import Conflict, NodeError
from node.storage.models import Settlement
from node.storage.models import SettleSchedule as ScheduleRow
from node.transfer_notices import TransferNotices
from protocol import channel as ch
from protocol import checkpoint as cp
from protocol import schedule as sch
from protocol.errors import ProtocolError
from protocol.messages import Checkpoint
from protocol.references import Purpose, bank_reference, payout_seq
from protocol.types import Amount, MinorUnits

if TYPE_CHECKING:
    from node.channels import ChannelService

log = structlog.get_logger()


def newly_checkpointed(before: ch.ChannelState | None, after: ch.ChannelState) -> bool:
    """Whether `after` holds a fully signed checkpoint `before` did not (its payouts are due)."""
    new, old = after.checkpoint, before.checkpoint if before is not None else None
    return new is not None and (old is None or new.seq > old.seq)


async def settlement_rows(session: AsyncSession, before: ch.ChannelState | None,
                          after: ch.ChannelState) -> list[Settlement]:
    """The payouts of a checkpoint `after` holds fully signed and `before` did not: the rise
    of each party's running maximum over the checkpoints recorded so far (0004 §7.2)."""
    new = after.checkpoint
    if new is None or not newly_checkpointed(before, after):
        return []
    cid = after.channel_id.hex()
    rows = (await session.scalars(select(Settlement).where(Settlement.channel_id == cid))).all()
    paid = [MinorUnits(0), MinorUnits(0)]
    for row in rows:
        if row.seq:  # checkpoint 0: the final close's payout (node.transfer_notices)
            paid[row.party] = MinorUnits(paid[row.party] + row.amount_minor)
    amounts = cp.payouts_at(after.terms, (paid[0], paid[1]), new)
    return [Settlement(channel_id=cid, seq=new.seq, party=party, amount_minor=amounts[party],
                       reference=bank_reference(after.channel_id, Purpose.PAYOUT, party,
                                                payout_seq(new.seq)),
                       signed_ms=now_ms(), status="submitted", reason="", attempt=0,
                       changed_ms=0)
            for party in (0, 1) if amounts[party] > 0]


class Checkpoints:
    def __init__(self, channels: ChannelService) -> None:
        self.channels = channels
        self.ctx = channels.ctx
        self.notices = TransferNotices(self.ctx, channels)
        """What the arbiter says its bank did with each payout (pushed, or in its status)."""
        self._task: asyncio.Task[None] | None = None

    # -- by hand and from the peer ----------------------------------------------------------------

    async def settle(self, cid: str, *, now: int | None = None, wait: bool = False,
                     timeout_s: float = 30.0) -> ch.ChannelState:
        """Propose the next checkpoint (or co-sign the peer's pending one); with `wait`, until
        we hold it signed by both."""
        state = self.channels.get(cid)
        if state.phase is not ch.Phase.OPEN:
            raise Conflict(f"the channel is {state.phase.value}; only an open channel settles "
                           "without closing", code="INVALID_STATE")
        try:
            _, t = await self.channels.apply(cid, ch.ActionCheckpoint(self.ctx.signer),
                                             at_ms=now)
        except ProtocolError as exc:
            code = "NOTHING_TO_SETTLE" if "nothing new" in exc.message else exc.code.name
            raise Conflict(exc.message, code=code) from None
        signed = t.state.checkpoint_signed
        log.info("checkpoint.proposed", channel=cid[:16],
                 seq=None if signed is None else signed.seq)
        if wait and signed is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.channels.until(cid, lambda st: _holds(st, signed)),
                                       timeout_s)
            if not _holds(self.channels.get(cid), signed):
                raise NodeError(f"the peer has not co-signed checkpoint {signed.seq} within "
                                f"{timeout_s:g} s (it goes on trying)", code="NOT_COSIGNED",
                                status=504)
        return self.channels.get(cid)

    async def on_checkpoint(self, checkpoint: Checkpoint) -> None:
        cid = checkpoint.channel_id.hex()
        before, t = await self.channels.apply(cid, ch.ReceiveCheckpoint(checkpoint))
        if t.state.checkpoint is not None and t.state.checkpoint is not before.checkpoint:
            log.info("checkpoint.signed", channel=cid[:16], seq=t.state.checkpoint.seq)

    # -- schedules --------------------------------------------------------------------------------

    async def schedule(self, cid: str) -> sch.SettleSchedule:
        async with self.ctx.db() as session:
            row = await session.get(ScheduleRow, cid)
        if row is None:
            return sch.NEVER
        return sch.SettleSchedule(row.every_ms, Amount(row.threshold))

    async def set_schedule(self, cid: str, schedule: sch.SettleSchedule) -> None:
        self.channels.get(cid)
        async with self.ctx.db() as session, session.begin():
            row = await session.get(ScheduleRow, cid)
            if row is None:
                session.add(ScheduleRow(channel_id=cid, every_ms=schedule.every_ms,
                                        threshold=schedule.threshold))
            else:
                row.every_ms, row.threshold = schedule.every_ms, schedule.threshold

    async def schedules(self) -> dict[str, sch.SettleSchedule]:
        async with self.ctx.db() as session:
            rows = (await session.scalars(select(ScheduleRow))).all()
        return {r.channel_id: sch.SettleSchedule(r.every_ms, Amount(r.threshold)) for r in rows}

    async def run_due(self, at_ms: int) -> list[str]:
        """Propose a checkpoint on every open channel whose schedule says one is due at
        `at_ms`; the channels it proposed on. One channel's failure stops no other."""
        proposed = []
        for cid, schedule in (await self.schedules()).items():
            state = self.channels.states.get(cid)
            if state is None or not sch.checkpoint_due(state, schedule, now_ms=at_ms):
                continue
            try:
                await self.settle(cid, now=at_ms)
            except (NodeError, ProtocolError) as exc:
                log.info("checkpoint.not_proposed", channel=cid[:16], error=str(exc)[:300])
                continue
            proposed.append(cid)
        return proposed

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="checkpoint-schedule")

    async def stop(self) -> None:
        await stop_tasks(self._task)

    async def _run(self) -> None:
        interval = self.ctx.config.policy.watch_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            try:
                await self.run_due(now_ms())
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the next run tries again
                log.warning("checkpoint.schedule_failed", error=str(exc)[:300])

    # -- what channel show and the statement list ---------------------------------------------

    async def settlements(self, cid: str) -> list[Settlement]:
        async with self.ctx.db() as session:
            rows = await session.scalars(select(Settlement).where(Settlement.channel_id == cid)
                                         .order_by(Settlement.seq, Settlement.party))
            return list(rows.all())

    async def detail(self, cid: str) -> dict[str, Any]:
        """The schedule, the next scheduled checkpoint and every settlement so far."""
        from node.views import longlived_json  # views renders; this module only reads

        state = self.channels.get(cid)
        return longlived_json(state, await self.schedule(cid), await self.settlements(cid))


def _holds(state: ch.ChannelState, signed: Checkpoint) -> bool:
    return state.checkpoint is not None and state.checkpoint.seq >= signed.seq


__all__ = ["Checkpoints", "settlement_rows"]
