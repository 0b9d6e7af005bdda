"""A batched status answer (specs/0005 §4.1, ADR 0315) always fits into one message: each
status may carry 32 payout outcomes, so 16 full ones are far over MAX_MESSAGE_BYTES; those that
do not fit are named in `later`, in the order asked, and the node asks for them again."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable

from protocol import arbiter as arb
from protocol.encoding import MAX_MESSAGE_BYTES
from protocol.messages import (
    EMPTY_SIGNATURE,
    MAX_STATUS_BATCH,
    MAX_STATUS_TRANSFERS,
    EscrowStatuses,
    EscrowStatusQuery,
    TransferNotice,
)
from protocol.simulation import Simulation
from protocol.types import ChannelId


def _full_states(sim: Simulation, n: int) -> dict[ChannelId, arb.ArbiterState]:
    """`n` copies of an open escrow under other ids, each with 32 outcomes of the longest kind."""
    sim.open()
    assert sim.escrow is not None
    notice = TransferNotice(sim.escrow.channel_id, 1, sim.peer.node_id, 10**15, "returned",
                            "ABCDEFGH", 200, "R" * 64, 2**40, EMPTY_SIGNATURE
                            ).signed_by(sim.arbiter)
    held = {}
    for _ in range(n):
        cid = ChannelId(secrets.token_bytes(32))
        held[cid] = dataclasses.replace(
            sim.escrow, channel_id=cid, outcomes=(notice,) * MAX_STATUS_TRANSFERS)
    return held


def test_statuses_that_do_not_fit_are_named_later_in_order(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim()
    held = _full_states(sim, MAX_STATUS_BATCH - 2)
    strangers = [ChannelId(secrets.token_bytes(32)) for _ in range(2)]
    asked = (strangers[0], *held, strangers[1])
    answer = arb.statuses(held.get, EscrowStatusQuery(asked, bytes(16)), sim.arbiter,
                          now_ms=sim.tick())
    wire = answer.encode()
    assert len(wire) <= MAX_MESSAGE_BYTES
    decoded = EscrowStatuses.decode(wire)
    decoded.verify_signature(sim.arbiter.node_id)
    assert 1 <= len(decoded.statuses) < len(held)
    assert all(len(s.transfers) == MAX_STATUS_TRANSFERS for s in decoded.statuses)
    answered = [s.channel_id for s in decoded.statuses]
    assert answered + list(decoded.later) == list(held)  # nothing dropped, the order kept
    assert decoded.unknown == tuple(strangers)


def test_asking_again_for_later_reaches_every_channel(
    make_sim: Callable[..., Simulation],
) -> None:
    sim = make_sim()
    held = _full_states(sim, MAX_STATUS_BATCH)
    pending, seen = list(held), []
    for _ in range(MAX_STATUS_BATCH):
        answer = arb.statuses(held.get, EscrowStatusQuery(tuple(pending), bytes(16)),
                              sim.arbiter, now_ms=sim.tick())
        assert answer.statuses  # every round makes progress
        seen += [s.channel_id for s in answer.statuses]
        pending = list(answer.later)
        if not pending:
            break
    assert seen == list(held)


def test_small_statuses_all_fit_with_nothing_later(make_sim: Callable[..., Simulation]) -> None:
    sim = make_sim()
    held = {cid: dataclasses.replace(state, outcomes=())
            for cid, state in _full_states(sim, MAX_STATUS_BATCH).items()}
    answer = arb.statuses(held.get, EscrowStatusQuery(tuple(held), bytes(16)), sim.arbiter,
                          now_ms=sim.tick())
    assert [s.channel_id for s in answer.statuses] == list(held)
    assert answer.later == ()
