"""Top-ups on the node: pay more into escrow without closing (specs/0003 §9.4, 0004 §8).

`meterline channel topup ID AMOUNT` pays AMOUNT into the channel's escrow account through this
node's rail, with the channel's top-up reference (`bank_reference(channel, "topup", party)`,
which the arbiter matches) and the key of the channel's n-th top-up
(`idempotency_key(channel, "topup", party, n)`: a retry after a crash pays once). The request
and its payment are one transaction (the top-up row and the outbox row). Capacity grows only
when the arbiter's signed `TopUpConfirmation` arrives (`ReceiveTopUp`): never on our own word.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import func, select

from node.context import now_ms
from node.deliveries import transfer_spec
from node.errors import Conflict, NodeError
from node.outbox import Delivery
from node.storage.models import TopUp
from protocol import channel as ch
from protocol.messages import TopUpConfirmation
from protocol.money import parse_rail_money
from protocol.references import Purpose, bank_reference, idempotency_key

if TYPE_CHECKING:
    from node.channels import ChannelService

log = structlog.get_logger()
MAX_TOPUPS = 400
"""Top-ups per channel (the arbiter counts at most 400 entries, specs/0004 §8)."""


class TopUps:
    def __init__(self, channels: ChannelService) -> None:
        self.channels = channels
        self.ctx = channels.ctx

    async def topup(self, cid: str, amount: str, *, wait: bool = False,
                    timeout_s: float = 60.0) -> ch.ChannelState:
        """Pay `amount` ("250.00 EUR", whole minor units) into escrow for this channel; with
        `wait`, until the arbiter confirmed it (our capacity grew)."""
        money = parse_rail_money(amount)
        async with self.channels.lock(cid):
            state = self.channels.get(cid)
            if state.phase is not ch.Phase.OPEN:
                raise Conflict(f"the channel is {state.phase.value}; only an open channel takes "
                               "a top-up (the arbiter would hold it for refund)",
                               code="INVALID_STATE")
            if money.currency != state.terms.currency:
                raise NodeError(f"the channel is in {state.terms.currency}, not {money.currency}",
                                code="WRONG_CURRENCY")
            if money.amount <= 0:
                raise NodeError("a top-up is a positive amount", code="INVALID_AMOUNT")
            async with self.ctx.db() as session:
                count = int(await session.scalar(
                    select(func.count()).select_from(TopUp).where(TopUp.channel_id == cid)) or 0)
            if count >= MAX_TOPUPS:
                raise Conflict(f"this channel has had {MAX_TOPUPS} top-ups; open a new one",
                               code="TOO_MANY_TOPUPS")
            seq, us, channel_id = count + 1, state.us, state.channel_id
            key = idempotency_key(channel_id, Purpose.TOPUP, us, seq)
            payment = Delivery("deposit", "", transfer_spec(
                key, bank_reference(channel_id, Purpose.TOPUP, us), Purpose.TOPUP, us,
                money.amount, money.currency, state.terms.escrow_account),
                recipient="", purpose=f"topup:{seq}")
            await self.channels.commit(state, outbox=[payment], rows=[TopUp(
                channel_id=cid, seq=seq, amount_minor=money.amount, idempotency_key=key,
                requested_ms=now_ms())])
        log.info("topup.requested", channel=cid[:16], seq=seq, amount_minor=money.amount)
        target = state.topped_up[us] + money.amount
        if wait:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.channels.until(
                    cid, lambda st: st.topped_up[us] >= target), timeout_s)
            if self.channels.get(cid).topped_up[us] < target:
                raise NodeError(f"the arbiter has not confirmed the top-up within "
                                f"{timeout_s:g} s (it is paid; the confirmation may still come)",
                                code="NOT_CONFIRMED", status=504)
        return self.channels.get(cid)

    async def on_topup(self, confirmation: TopUpConfirmation) -> None:
        """The arbiter's signed confirmation: the only thing that raises capacity."""
        cid = confirmation.channel_id.hex()
        before, t = await self.channels.apply(cid, ch.ReceiveTopUp(confirmation))
        if t.state is not before:
            log.info("topup.confirmed", channel=cid[:16], topped_up=list(t.state.topped_up))

    async def requested(self, cid: str) -> list[TopUp]:
        async with self.ctx.db() as session:
            rows = await session.scalars(select(TopUp).where(TopUp.channel_id == cid)
                                         .order_by(TopUp.seq))
            return list(rows.all())


__all__ = ["MAX_TOPUPS", "TopUps"]
