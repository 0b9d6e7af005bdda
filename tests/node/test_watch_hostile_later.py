"""A hostile arbiter's `later` cannot keep the watch asking: each answer's `later` names
channels asked and not answered in it, so the re-asks shrink and end (node.watch). An answer
naming an answered channel again in `later` (statuses=[A], later=[A]) had the watch ask about A
again at once, forever — a recursion without end that held up every sweep of the node's
channels, the honest arbiters' too (a unilateral close there went unseen, its evidence not
submitted in the window)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from node.config import Config
from protocol.messages import EMPTY_SIGNATURE, EscrowStatuses
from tests.node.conftest import RunningNode, arbiter_holding_a_channel, make_config, seed


async def test_a_later_naming_an_answered_channel_is_refused_not_asked_forever(
        tmp_path: Path, start_node: Callable[[Config], Awaitable[RunningNode]]) -> None:
    sim, arbiter = await arbiter_holding_a_channel(tmp_path, start_node)
    config = make_config(tmp_path / "payee", sim.peer)
    await seed(config, [sim.states[1]], peers=[(sim.arbiter, arbiter.peer_url, "arbiter")])
    node = (await start_node(config)).node
    await node.watch.stop()  # only the sweep below asks (the node's own loop sweeps at start)
    send = node.ctx.peers.send
    asked: list[Any] = []

    async def hostile(url: str, path: str, message: Any, headers: Any = None) -> Any:
        answer = await send(url, path, message, headers)
        if path != "/p2p/status":
            return answer
        asked.append(message)
        assert isinstance(answer, EscrowStatuses)
        assert answer.statuses
        again = (answer.statuses[0].channel_id,)
        return replace(answer, later=again, signature=EMPTY_SIGNATURE).signed_by(sim.arbiter)

    node.ctx.peers.send = hostile  # type: ignore[method-assign]
    await asyncio.wait_for(node.watch.sweep(), 30)
    assert len(asked) == 1
