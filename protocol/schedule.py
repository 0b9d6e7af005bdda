"""When a node proposes the next checkpoint (specs/0003 §9.5): a pure function of the channel
state, the node's schedule and the time it is given — the machines never read a clock.

A schedule has a period (``every_ms``, e.g. daily) and a threshold (an amount at channel scale);
either may be 0 (off). A checkpoint is *due* when the channel is open, the next checkpoint would
pay at least one rail unit (what the payee is owed beyond its deposit and has not been paid yet,
on the totals both sides have receipted), and either the period has passed since the channel
opened or we last signed a checkpoint, or that unpaid amount has reached the threshold.

The schedule is each node's policy, not part of the signed terms (specs/adr/0110): a checkpoint
needs both signatures anyway, so either side may propose one whenever its own schedule says so,
and the other co-signs any checkpoint that meets the rules, whatever its own schedule.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import checkpoint as cp
from protocol.channel import ChannelState, Phase, checkpoint_body
from protocol.errors import ErrorCode, LocalProtocolError
from protocol.types import MAX_AMOUNT, MAX_TIME_MS, Amount


@dataclass(frozen=True, slots=True)
class SettleSchedule:
    every_ms: int = 0
    """Propose a checkpoint this long after the last one (0: never by time)."""
    threshold: Amount = Amount(0)
    """Propose one once this much (channel scale) is owed and unpaid (0: never by amount)."""

    def __post_init__(self) -> None:
        if not 0 <= self.every_ms <= MAX_TIME_MS or not 0 <= self.threshold <= MAX_AMOUNT:
            raise LocalProtocolError(ErrorCode.INVALID_FIELD, "a schedule out of range")


NEVER = SettleSchedule()


def unpaid(state: ChannelState) -> Amount:
    """What the next checkpoint would pay out now (channel scale)."""
    body = checkpoint_body(state)
    due = cp.payouts_at(state.terms, state.withdrawn, body)
    return Amount((due[0] + due[1]) * cp.rail_factor(state.terms))


def next_checkpoint_ms(state: ChannelState, schedule: SettleSchedule) -> int | None:
    """When the period next runs out, or None when the schedule has no period."""
    if not schedule.every_ms or state.phase is not Phase.OPEN:
        return None
    return state.settle_base_ms + schedule.every_ms


def checkpoint_due(state: ChannelState, schedule: SettleSchedule, *, now_ms: int) -> bool:
    """Whether to propose a checkpoint (``ActionCheckpoint``) now."""
    if state.phase is not Phase.OPEN:
        return False
    owed = unpaid(state)
    if owed == 0:
        return False
    deadline = next_checkpoint_ms(state, schedule)
    if deadline is not None and now_ms >= deadline:
        return True
    return bool(schedule.threshold) and owed >= schedule.threshold
